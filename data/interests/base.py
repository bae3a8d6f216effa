"""What every LLM backend shares: the prompt, the retry loop and how a reply becomes phrases."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from config import Config
from data.interests.parse import parse_interests
from data.interests.prompt import EXAMPLE_INTERESTS, Messages, build_messages

MAX_BACKOFF_S = 60.0
ECHOES = frozenset(EXAMPLE_INTERESTS)  # the prompt's worked example, not the shopper's interests


class InterestError(RuntimeError):
    """No interests for this history; the message says why (and never holds an API key)."""


class FatalError(InterestError):
    """No retry can help (a rejected API key, a model that will not load): a whole run stops."""


class TransientError(Exception):
    """Worth another try after a pause: throttling, a 5xx, a timeout, a dropped connection."""


@dataclass
class Outcome:
    """One prompt's result: ``phrases`` empty means failure, and ``error`` says why."""

    phrases: list[str]
    retries: int
    error: str = ""


class LLMExtractor:
    """Base of the LLM backends; a subclass supplies ``_complete`` (one reply to one prompt)."""

    backend = ""
    parallelism = 1  # prompts a batch run keeps in flight

    def __init__(self, icfg: Config, model: str) -> None:
        self.model = model
        self.num_interests = int(icfg.num_interests)
        # phrases that end the asking: all of them for a history; for an item, the items recipe
        # lowers it (the composition adds up phrases over the history's items)
        self.enough = int(icfg.get("min_phrases") or self.num_interests)
        self.max_prompt_tokens = int(icfg.max_prompt_tokens)
        self.max_items = int(icfg.max_items)
        self.max_retries = int(icfg.max_retries)
        self.backoff_s = float(icfg.backoff_s)

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.model}"

    def messages(self, history_items: list[dict]) -> Messages:
        return build_messages(
            history_items, self.num_interests, self.max_prompt_tokens, self.max_items
        )

    async def _complete(self, messages: Messages, attempt: int) -> str:
        """The model's reply; raise TransientError to retry after a pause, InterestError to stop."""
        raise NotImplementedError

    def _parse(self, reply: str, messages: Messages) -> list[str]:
        return parse_interests(reply, self.num_interests, ECHOES)

    def _backoff(self, attempt: int) -> float:
        """Exponential with jitter, so throttled workers do not all come back at once."""
        return min(MAX_BACKOFF_S, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.5)

    async def ask(self, messages: Messages) -> Outcome:
        """Ask until ``enough`` distinct phrases are in (at most ``num_interests`` are kept) or
        the retries are spent.

        Phrases from every reply to the same prompt are pooled, so a reply with too few (or
        none) triggers another try rather than an empty result. FatalError propagates.
        """
        phrases: list[str] = []
        error = ""
        for attempt in range(self.max_retries + 1):
            try:
                reply = await self._complete(messages, attempt)
            except TransientError as err:
                error = str(err)
                if attempt < self.max_retries:
                    await asyncio.sleep(self._backoff(attempt))
                continue
            except FatalError:
                raise
            except InterestError as err:
                return Outcome(phrases, attempt, str(err))
            found = self._parse(reply, messages)
            phrases += [p for p in found if p not in phrases]
            if len(phrases) >= self.enough:
                return Outcome(phrases[: self.num_interests], attempt)
            snippet = " ".join(reply.split())[:80]
            error = f"{len(phrases)} of {self.num_interests} phrases; last reply: {snippet!r}"
        return Outcome(phrases, self.max_retries, error)

    async def extract(self, history_items: list[dict]) -> list[str]:
        """Interest phrases for one history; InterestError when none could be had."""
        messages = self.messages(history_items)
        if not messages:
            raise InterestError("no item in the history has a title or category")
        outcome = await self.ask(messages)
        if not outcome.phrases:
            raise InterestError(f"{self.label}: no interests: {outcome.error}")
        return outcome.phrases

    async def aclose(self) -> None:
        """Release connections (DashScope's HTTP session); by default there are none."""

"""The model behind the pages and the API, run off the event loop.

Inference is CPU-bound torch code; running it on the event loop would stall every other
request (and the interest tasks). One worker thread serialises model calls: on a small CPU box
parallel calls only fight over the same cores, and the model need not be thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from demo.catalogue import ShopCatalogue

log = logging.getLogger("demo.ranking")


class RecommenderLike(Protocol):
    """The parts of model.Recommender the demo uses."""

    dataset: str
    data_folder: Path
    max_history: int
    max_interests: int
    uses_interests: bool
    item_tokens: list[str]

    def recommend(
        self,
        history: list[str],
        interests: list[str] | None = None,
        k: int = 10,
        *,
        exclude: Iterable[str] = (),
    ) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class Ranking:
    """Ranked items, best first, and what produced them."""

    items: list[tuple[str, float]]
    source: Literal["model", "popular"]
    history_used: list[str]
    interests_used: list[str]
    history_excluded: bool


def _own_thread_count(threads: int) -> None:
    """Give the calling thread ``threads`` torch threads of its own. torch sets a thread's count
    from the process-wide last-set value at its first parallel call, so that first call (here,
    get_num_threads) must come before the thread's own setting, or it would undo it."""
    torch.get_num_threads()
    torch.set_num_threads(threads)


class Ranker:
    """Model recommendations for a history, or the popularity list when there is no history."""

    def __init__(
        self, recommender: RecommenderLike, catalogue: ShopCatalogue, threads: int = 1
    ) -> None:
        """``threads``: torch threads of the ranking thread only. OpenMP's count is per calling
        thread, but torch also keeps the last count set as the one later threads begin with: it
        is put back once the ranking thread has its own, so the local LLM's thread keeps all
        cores. (Phrases new to the interest table are encoded in the ranking thread too: a few
        short ones per request.)"""
        self.recommender = recommender
        self.catalogue = catalogue
        before = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="recommend",
            initializer=_own_thread_count,
            initargs=(threads,),
        )
        self._pool.submit(lambda: None).result()  # start the thread now, with its count
        torch.set_num_threads(before)

    @property
    def uses_interests(self) -> bool:
        return bool(self.recommender.uses_interests)

    def _rank(self, history: list[str], interests: list[str], k: int, exclude: bool) -> Ranking:
        if not history:
            popular = [(t, float(c)) for t, c in self.catalogue.popular[:k]]
            return Ranking(popular, "popular", [], [], exclude)
        recent = history[-self.recommender.max_history :]
        used = list(interests)[: self.recommender.max_interests] if self.uses_interests else []
        items = self.recommender.recommend(
            recent, used or None, k=k, exclude=history if exclude else ()
        )
        return Ranking(items, "model", recent, used, exclude)

    async def rank(
        self, history: list[str], interests: list[str], k: int, exclude_history: bool = True
    ) -> Ranking:
        """Off the event loop; ``exclude_history`` leaves purchased items out."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self._rank, list(history), list(interests), k, exclude_history
        )

    async def warm_up(self) -> None:
        """Rank once with an interest at startup, so the first visitor does not pay for loading
        the phrase-embedding model (seconds); a failure here only costs that time later."""
        if not self.uses_interests or not self.catalogue.popular:
            return
        try:
            await self.rank([self.catalogue.popular[0][0]], ["warm up"], 1)
        except Exception as err:
            log.warning("ranking warm-up failed: %s: %s", type(err).__name__, str(err)[:200])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

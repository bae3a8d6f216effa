"""Per-visitor state kept on the server: purchase history, interests and their freshness.

Every change of history bumps ``version``; an interest result is stamped with the version it was
computed for and is applied only if the history has not changed since, so a slow answer for an
older history can never overwrite a newer one.

The store holds state only for visitors who changed something (reading pages creates nothing),
and no single client can push real visitors out: each client address may create only a few
visitors per window, and when the store is full only a visitor idle for ``min_idle_s`` is
dropped to make room; otherwise the newcomer is refused (``StoreFull``), not an active visitor.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

InterestStatus = Literal["idle", "pending", "ready", "failed"]
MAX_HISTORY = 1000  # purchases kept per visitor (the oldest go first), as for the JSON API


@dataclass
class Visitor:
    """One visitor's history (oldest first) and the interests last extracted from it."""

    sid: str
    history: list[str] = field(default_factory=list)
    version: int = 0
    interests: list[str] = field(default_factory=list)
    interests_version: int = 0  # the history version ``interests`` were computed for
    status: InterestStatus = "idle"
    notice: str | None = None
    flash: str | None = None  # item id of the purchase to announce once, on the next home page
    task: asyncio.Task | None = None
    ranking: tuple[tuple, Any] | None = None  # (history+interests key, Ranking) last shown
    last_seen: float = field(default_factory=time.monotonic)

    def _changed(self) -> None:
        self.version += 1
        self.notice = None
        if not self.history:  # nothing to infer from: forget interests of a history now gone
            self.interests = []
            self.interests_version = self.version
            self.status = "idle"

    def add(self, item: str) -> None:
        self.history.append(item)
        del self.history[:-MAX_HISTORY]
        self._changed()

    def remove(self, item: str) -> bool:
        """Remove every purchase of ``item``; False (nothing changed) when there is none, so a
        double click or a stale page can never remove a different item."""
        kept = [t for t in self.history if t != item]
        if len(kept) == len(self.history):
            return False
        self.history = kept
        self._changed()
        return True

    def clear(self) -> None:
        self.history.clear()
        self._changed()

    def pop_flash(self) -> str | None:
        """The purchase to announce, once: a reload of the page no longer shows it."""
        flash, self.flash = self.flash, None
        return flash

    def apply_interests(self, version: int, phrases: list[str]) -> bool:
        """Store a result computed for ``version``; False (discarded) when it is stale."""
        if version != self.version:
            return False
        self.interests = list(phrases)
        self.interests_version = version
        self.status = "ready"
        self.notice = None
        return True

    def apply_failure(self, version: int, notice: str) -> bool:
        """Record a failed extraction for ``version``; the last known interests stay in use."""
        if version != self.version:
            return False
        self.status = "failed"
        self.notice = notice
        return True

    def cancel_task(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None


class StoreFull(Exception):
    """No room for a new visitor: every stored visitor was active within ``min_idle_s``."""


class TooManyNewVisitors(Exception):
    """This client address has created its quota of visitors for the current window."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class VisitorStore:
    """Session id -> Visitor, bounded; creation is rate-limited per client address."""

    def __init__(
        self,
        max_visitors: int = 10_000,
        min_idle_s: float = 3600.0,
        new_per_client: int = 20,
        window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_visitors = max_visitors
        self.min_idle_s = min_idle_s
        self.new_per_client = new_per_client
        self.window_s = window_s
        self.clock = clock
        self._visitors: OrderedDict[str, Visitor] = OrderedDict()
        self._created: dict[str, tuple[float, int]] = {}  # client -> (window start, count)

    def __len__(self) -> int:
        return len(self._visitors)

    def find(self, sid: str | None) -> Visitor | None:
        """The stored visitor with this id (now the most recently seen), or None."""
        visitor = self._visitors.get(sid) if sid else None
        if visitor is not None:
            self._visitors.move_to_end(visitor.sid)
            visitor.last_seen = self.clock()
        return visitor

    def create(self, sid: str, client: str) -> Visitor:
        """A new empty visitor under ``sid``, created for ``client`` (its address).

        Raises TooManyNewVisitors past the client's quota and StoreFull when making room would
        drop a visitor seen within ``min_idle_s``.
        """
        now = self.clock()
        self._check_quota(client, now)
        if len(self._visitors) >= self.max_visitors:
            oldest = next(iter(self._visitors.values()))
            if now - oldest.last_seen < self.min_idle_s:
                raise StoreFull()
            del self._visitors[oldest.sid]
            oldest.cancel_task()
        start, count = self._created.get(client, (now, 0))
        self._created[client] = (start, count + 1)
        visitor = self._visitors[sid] = Visitor(sid, last_seen=now)
        return visitor

    def _check_quota(self, client: str, now: float) -> None:
        if len(self._created) > self.max_visitors:  # forget finished windows (bounded memory)
            self._created = {c: w for c, w in self._created.items() if now - w[0] < self.window_s}
        start, count = self._created.get(client, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
            self._created[client] = (start, count)
        if count >= self.new_per_client:
            raise TooManyNewVisitors(start + self.window_s - now)

    def all(self) -> list[Visitor]:
        return list(self._visitors.values())

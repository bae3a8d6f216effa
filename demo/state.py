"""Per-visitor state kept on the server: purchase history, interests and their freshness.

Every change of history bumps ``version``; an interest result is stamped with the version it was
computed for and is applied only if the history has not changed since, so a slow answer for an
older history can never overwrite a newer one. The store is bounded (least recently seen
visitors are dropped) so a crawler cannot grow memory without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
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

    def remove_at(self, pos: int) -> str:
        """Remove the purchase at ``pos`` (0 = oldest); IndexError when there is none."""
        if not 0 <= pos < len(self.history):
            raise IndexError(pos)
        item = self.history.pop(pos)
        self._changed()
        return item

    def clear(self) -> None:
        self.history.clear()
        self._changed()

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


class VisitorStore:
    """Session id -> Visitor, least recently seen dropped beyond ``max_visitors``."""

    def __init__(self, max_visitors: int = 10_000) -> None:
        self.max_visitors = max_visitors
        self._visitors: OrderedDict[str, Visitor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._visitors)

    def get(self, sid: str) -> Visitor:
        """The visitor with this id, created empty when unknown (e.g. after a restart)."""
        visitor = self._visitors.get(sid)
        if visitor is None:
            visitor = self._visitors[sid] = Visitor(sid)
            while len(self._visitors) > self.max_visitors:
                _, dropped = self._visitors.popitem(last=False)
                dropped.cancel_task()
        else:
            self._visitors.move_to_end(sid)
        visitor.last_seen = time.monotonic()
        return visitor

    def all(self) -> list[Visitor]:
        return list(self._visitors.values())

"""Append-only JSONL cache of extraction results, durable line by line.

Each finished prompt is one line, flushed and fsync'd before the next result is taken, so a run
killed at any moment (SIGKILL included) loses at most the prompts that were still in flight. A
torn last line is ignored on load and the next append starts on a fresh line. Failures are
recorded for the record but do not count as finished: the next run asks again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ResultCache:
    """``done`` maps a prompt key to its phrases; ``failed`` holds keys whose last try failed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, list[str]] = {}
        self.failed: set[str] = set()
        self.torn = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()
        self._file = open(path, "ab")
        if self._file.tell() > 0 and not self._ends_with_newline():
            self._file.write(b"\n")  # close a torn line so the next record stays parseable

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                    key = record["key"]
                except (ValueError, KeyError, TypeError):
                    self.torn += 1
                    continue
                if isinstance(record.get("phrases"), list):
                    self.done[key] = record["phrases"]
                    self.failed.discard(key)
                elif key not in self.done:
                    self.failed.add(key)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def add_success(self, key: str, phrases: list[str]) -> None:
        self._append({"key": key, "phrases": phrases})
        self.done[key] = phrases
        self.failed.discard(key)

    def add_failure(self, key: str, error: str) -> None:
        self._append({"key": key, "error": error})
        self.failed.add(key)

    def close(self) -> None:
        self._file.close()

"""Helpers for the demo tests: a tiny trained run built once per test process, a live server.

The tiny run is ``demo.sample_run`` with the tiny preset on the first 500 users. Both demo test
files share the one build through a module-level cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.sample_run import DATASET, REPO, build_run

N_USERS = 500
RUN_DIR_ENV = "GENREC_DEMO_RUN_DIR"  # reuse an already-built tiny run folder instead of building

_cache: dict[str, Any] = {}


def tiny_run_dir(root: Path) -> Path:
    """Build (once per process) a tiny trained run folder under ``root``; return its path."""
    if "run_dir" not in _cache and os.environ.get(RUN_DIR_ENV):
        _cache["run_dir"] = Path(os.environ[RUN_DIR_ENV])
    if "run_dir" not in _cache:
        _cache["run_dir"] = build_run(root, N_USERS, [f"--config={REPO / 'config' / 'tiny.yaml'}"])
    return _cache["run_dir"]


def load_tiny(root: Path) -> tuple[Any, dict[str, dict]]:
    """The tiny run's Recommender and its catalogue (loaded once per process)."""
    if "rec" not in _cache:
        from data.splits import load_items
        from model import Recommender

        rec = Recommender.load(tiny_run_dir(root))
        _cache["rec"] = rec
        _cache["items"] = load_items(Path(rec.data_folder), rec.dataset)
    return _cache["rec"], _cache["items"]


def model_ranking(
    rec: Any, history: list[str], interests: list[str] | None, k: int, exclude: bool = True
) -> list[tuple[str, float]]:
    """What the demo should show: the model's own top ``k``; with ``exclude``, the best items
    outside the history (purchases are left out inside the beam search)."""
    recent = history[-rec.max_history :]
    used = (interests or None) if rec.uses_interests else None
    return rec.recommend(recent, used, k=k, exclude=history if exclude else ())


def keywords_extractor() -> Any:
    from demo.interests import make_demo_extractor

    return make_demo_extractor("keywords", DATASET)


class SlowExtractor:
    """Wraps an extractor and answers ``delay_s`` later (makes "arrives later" observable)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.label = inner.label
        self.calls = 0

    async def extract(self, history_items: list[dict]) -> list[str]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return await self.inner.extract(history_items)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    base_url: str
    server: Any
    thread: threading.Thread


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[LiveServer]:
    """Run ``app`` under uvicorn in a background thread on a free loopback port."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def chromium_path() -> str:
    return os.environ.get("GENREC_CHROMIUM", "/usr/bin/chromium")

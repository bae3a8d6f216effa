"""Helpers for the demo tests: a tiny trained run built once per test process, a live server.

The tiny run is real and built the way a user builds one: ``data_process.py`` (keyword
interests) then ``train.py`` with the tiny preset, in subprocesses. To keep it to seconds it
uses the first users of amazon18-scientific (real histories and item text) and random item
vectors in place of SASRec embeddings: the demo needs a working model, not an accurate one.
Both demo test files share the one build through a module-level cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the tests import demo/ and model/ from the repository root
    sys.path.insert(0, str(REPO))

DATASET = "demoshop"
N_USERS = 500
RAW_NAME = "Scientific"
BUILD_TIMEOUT_S = 1800
RUN_DIR_ENV = "GENREC_DEMO_RUN_DIR"  # reuse an already-built tiny run folder instead of building

_cache: dict[str, Any] = {}


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{tail}")


def _write_raw_subset(raw: Path, n_users: int) -> None:
    """The first ``n_users`` users of amazon18-scientific and the items they bought."""
    from data.paths import datasets_root

    src = datasets_root() / "amazon18-scientific" / "raw"
    inter = json.loads((src / f"{RAW_NAME}.inter.json").read_text())
    users = {u: inter[u] for u in list(inter)[:n_users]}
    used = {str(i) for seq in users.values() for i in seq}
    items = json.loads((src / f"{RAW_NAME}.item.json").read_text())
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{RAW_NAME}.inter.json").write_text(json.dumps(users))
    (raw / f"{RAW_NAME}.item.json").write_text(
        json.dumps({k: v for k, v in items.items() if k in used})
    )


def build_run(root: Path, n_users: int, train_args: list[str], run_name: str = "tiny") -> Path:
    """Process the first ``n_users`` users (keyword interests, random item vectors) and train.

    ``train_args`` picks the model size and schedule; the run folder is ``root/runs/<run_name>``.
    """
    raw, data_dir, runs_dir = root / "raw", root / "data", root / "runs"
    _write_raw_subset(raw, n_users)
    py = sys.executable
    _run(
        [
            py,
            "data_process.py",
            f"--dataset={DATASET}",
            "--source=lcrec",
            f"--category={RAW_NAME}",
            f"--raw_dir={raw}",
            f"--out_dir={data_dir}",
            "--interests.backend=keywords",
            f"--interests.cache_dir={root / 'cache'}",
            "--embeddings.kind=none",
        ],
        "data_process.py",
    )
    folder = data_dir / DATASET
    n_items = len(json.loads((folder / f"{DATASET}.emb_map.json").read_text())) - 1
    vectors = np.random.default_rng(0).normal(size=(n_items + 1, 32)).astype(np.float32)
    vectors[0] = 0
    np.save(folder / f"{DATASET}_emb_rand.npy", vectors)
    _run(
        [
            py,
            "train.py",
            f"--dataset={DATASET}",
            f"--data_dir={data_dir}",
            f"--out_dir={runs_dir}",
            f"--run_name={run_name}",
            "--semantic_emb=emb_rand",
            "--device=cpu",
            "--seed=7",
            *train_args,
        ],
        "train.py",
    )
    return runs_dir / run_name


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
    """What the demo should show: the model's own top ``k``; with ``exclude``, the purchased
    items left out (the model is asked for as many items as its beam search keeps anyway, then
    for more only if purchases crowd the top)."""
    recent = history[-rec.max_history :]
    used = (interests or None) if rec.uses_interests else None
    if not exclude or not history:
        return rec.recommend(recent, used, k=k)
    bought = set(history)
    for ask in (max(k, rec.config.num_beams), min(k + len(bought), len(rec.item_tokens))):
        ranked = rec.recommend(recent, used, k=ask)
        kept = [(t, s) for t, s in ranked if t not in bought]
        if len(kept) >= k or len(ranked) < ask:
            break
    return kept[:k]


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

"""A small trained run to serve, built the way a user builds one: ``data_process.py`` (keyword
interests) then ``train.py``, in subprocesses, on the first users of amazon18-scientific.

Random item vectors stand in for SASRec embeddings, which keeps the build to seconds: serving
needs a working model, not an accurate one (the demo's tests and its load benchmark use it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from data.paths import datasets_root

REPO = Path(__file__).resolve().parent.parent  # where data_process.py and train.py are
DATASET = "demoshop"
RAW_NAME = "Scientific"
BUILD_TIMEOUT_S = 1800


def _run_script(cmd: list[str], what: str) -> None:
    done = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{tail}")


def _write_raw_subset(raw: Path, n_users: int) -> None:
    """The first ``n_users`` users of amazon18-scientific and the items they bought."""
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
    _run_script(
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
    _run_script(
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

"""Top-k metrics with one relevant item per user (ETEGRec / RecBole definitions).

``ranks`` holds, per user, the 0-based position of the target in the returned list, or -1 when it
is absent. Recall@k = share of users with rank < k; NDCG@k = mean of 1/log2(rank + 2) over those.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.jsonl import write_json


def ranking_metrics(ranks: np.ndarray, topk: list[int]) -> dict[str, float]:
    ranks = np.asarray(ranks)
    hit = ranks >= 0
    gain = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)
    out: dict[str, float] = {}
    for k in topk:
        within = hit & (ranks < k)
        out[f"recall@{k}"] = float(within.mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(np.where(within, gain, 0.0).mean()) if len(ranks) else 0.0
    return out


def rank_of_target(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target under full-ranking scores (ties count against the target)."""
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores > target_scores[:, None]).sum(axis=1) + (
        (scores == target_scores[:, None]).sum(axis=1) - 1
    )


def write_ranks(path: Path, split: str, rows: np.ndarray, ranks: np.ndarray) -> None:
    """Each evaluated row's place in the ``split`` file and its target's 0-based rank (-1: not
    returned), one compact line, for per-group metrics (``experiments/breakdown.py``)."""
    saved = {"split": split, "rows": np.asarray(rows).tolist(), "ranks": np.asarray(ranks).tolist()}
    write_json(path, saved, indent=None)


def read_ranks(path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """``(split, rows, ranks)`` as ``write_ranks`` stored them."""
    saved = json.loads(path.read_text())
    rows, ranks = (np.asarray(saved[k], dtype=np.int64) for k in ("rows", "ranks"))
    return saved["split"], rows, ranks

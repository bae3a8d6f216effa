"""How often each item was bought in training, and the popularity groups the analyses report.

One definition serves the shop's popular items (the demo), the search-time adjustment
(``evaluate.py --popularity_adjust``) and the per-group reports (``experiments/breakdown.py``,
``experiments/code_levels.py``): purchases over the train split, each interaction counted once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from data.splits import load_split

# (label, lowest, highest) purchase count of each group; None: no upper bound
POPULARITY = (("0-4", 0, 4), ("5-9", 5, 9), ("10-19", 10, 19), ("20-49", 20, 49), ("50+", 50, None))


def train_counts(folder: Path, name: str, processed: bool = False) -> Counter[str]:
    """Purchases per item id over the train split, each interaction once: train rows are
    prefixes of one sequence, so every item after the first is one row's target and the first
    is the whole history of the user's first row. ``processed`` reads the interest-annotated
    split (the file a fusing run's fingerprint names; same rows)."""
    counts: Counter[str] = Counter()
    for row in load_split(folder, name, "train", processed=processed):
        counts[row["target_id"]] += 1
        if len(row["inter_history"]) == 1:
            counts[row["inter_history"][0]] += 1
    return counts


def by_emb_id(counts: Counter[str], emb_map: dict[str, int]) -> np.ndarray:
    """``[len(emb_map)]`` counts indexed by emb id ([PAD], id 0, has none)."""
    out = np.zeros(len(emb_map), dtype=np.int64)
    for token, idx in emb_map.items():
        out[idx] = counts.get(token, 0)
    return out


def group_masks(
    values: np.ndarray, groups: tuple[tuple[str, int, int | None], ...]
) -> dict[str, np.ndarray]:
    """``{label: rows whose value lies in [lowest, highest]}`` per ``(label, lowest, highest)``."""
    return {
        label: (values >= lo) & (values <= (np.inf if hi is None else hi))
        for label, lo, hi in groups
    }

"""Training and evaluation batches: item ids, interest vectors, and length-bucketed batching.

Most real histories are short but a few reach the cap; padding every batch to the longest
history in the data costs most of the compute. Batches are therefore formed from rows of similar
length: shuffle, cut into large pools, sort each pool by length, cut the pool into batches, shuffle
the batches. Each batch is padded only to its own longest history.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from data.interest_features import InterestFeatures
from data.jsonl import DataError
from data.splits import load_emb_map, load_split

POOL_BATCHES = 50  # batches per sorting pool: large enough to bucket, small enough to stay random


@dataclass
class SplitTensors:
    """One split as padded arrays: ``history [N, H]`` (0 = pad, oldest first), ``target [N]``,
    ``interest_idx [N, M]`` (rows of the interest matrix; -1 = none)."""

    history: np.ndarray
    lengths: np.ndarray
    target: np.ndarray
    interest_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


def load_split_tensors(
    folder: Path,
    name: str,
    split: str,
    emb_map: dict[str, int],
    max_history: int,
    max_interests: int,
    features: InterestFeatures | None,
) -> SplitTensors:
    rows = load_split(folder, name, split, processed=features is not None, emb_map=emb_map)
    n = len(rows)
    history = np.zeros((n, max_history), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    target = np.zeros(n, dtype=np.int64)
    interest_idx = np.full((n, max_interests), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        ids = [emb_map[t] for t in row["inter_history"][-max_history:]]
        history[i, : len(ids)] = ids
        lengths[i] = len(ids)
        target[i] = emb_map[row["target_id"]]
        if features is not None:
            found = features.rows(row.get("interests", [])[:max_interests])
            interest_idx[i, : len(found)] = found
    return SplitTensors(history, lengths, target, interest_idx)


INTEREST_VIEWS = ("own", "shuffled", "none")


def with_interests(data: SplitTensors, view: str, seed: int = 0) -> SplitTensors:
    """The split with each row's ``own`` interests, another row's (``shuffled``: a fixed random
    permutation of the rows' interest lists), or ``none``: evaluating a trained run under the three
    measures how much its rankings depend on the interests it reads."""
    if view == "own":
        return data
    if view == "none":
        idx = np.full_like(data.interest_idx, -1)
    elif view == "shuffled":
        idx = data.interest_idx[np.random.default_rng(seed).permutation(len(data))]
    else:
        raise ValueError(f"unknown interests view '{view}' (choose {' | '.join(INTEREST_VIEWS)})")
    return SplitTensors(data.history, data.lengths, data.target, idx)


def _cut(sorted_rows: np.ndarray, lengths: np.ndarray, batch_size: int, max_items: int) -> list:
    """Cut length-sorted rows into batches of at most ``batch_size`` rows and, when
    ``max_items`` > 0, at most ``max_items`` padded history items (rows x longest history): long
    histories come in smaller batches, so peak memory stays bounded."""
    batches, start = [], 0
    while start < len(sorted_rows):
        longest = max(int(lengths[sorted_rows[min(start + batch_size, len(sorted_rows)) - 1]]), 1)
        size = batch_size if max_items <= 0 else max(1, min(batch_size, max_items // longest))
        batches.append(sorted_rows[start : start + size])
        start += size
    return batches


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, max_items: int = 0
) -> list[np.ndarray]:
    """Row indices per batch, grouped by similar length, in random order."""
    order = rng.permutation(len(lengths))
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        batches += _cut(
            chunk[np.argsort(lengths[chunk], kind="stable")], lengths, batch_size, max_items
        )
    return [batches[i] for i in rng.permutation(len(batches))]


def sequential_batches(
    lengths: np.ndarray, batch_size: int, max_items: int = 0
) -> list[np.ndarray]:
    """Evaluation order: sorted by length (less padding), every row exactly once."""
    return _cut(np.argsort(lengths, kind="stable"), lengths, batch_size, max_items)


@dataclass
class Batch:
    """What the model reads for a batch of rows. ``history_codes [B, H, depth]`` are the items'
    codes under the current tokenizer (``history_mask [B, H]``: True = an item; ``history_ids``
    their emb_map ids, 0 = padding, for leaving purchased items out of a ranking); targets are
    absent when serving; ``interests [B, M, interest_dim]`` with ``interest_mask [B, M]`` only
    when the model fuses interests."""

    history_codes: torch.Tensor
    history_mask: torch.Tensor
    history_ids: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    target_codes: torch.Tensor | None = None
    interests: torch.Tensor | None = None
    interest_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: None if v is None else v.to(device) for k, v in moved.items()})


def make_batch(
    data: SplitTensors,
    rows: np.ndarray,
    item_codes: torch.Tensor,
    features: InterestFeatures | None,
) -> Batch:
    """Gather the rows' codes (current tokenizer) and interest vectors, padded to this batch."""
    width = max(int(data.lengths[rows].max()), 1)
    history = torch.from_numpy(data.history[rows, :width])
    target = torch.from_numpy(data.target[rows])
    batch = Batch(
        history_codes=item_codes[history],
        history_mask=history > 0,
        history_ids=history,
        target_ids=target,
        target_codes=item_codes[target],
    )
    if features is not None:
        idx = torch.from_numpy(data.interest_idx[rows])
        batch.interests = features.matrix[idx.clamp(min=0)]
        batch.interest_mask = idx >= 0
    return batch


def load_dataset(
    folder: Path, name: str, max_history: int, max_interests: int, with_interests: bool
) -> tuple[dict[str, SplitTensors], dict[str, int], InterestFeatures | None]:
    """All three splits, the emb_map and (when asked) the interest phrase table."""
    emb_map = load_emb_map(folder, name)
    features = InterestFeatures.load(folder, name) if with_interests else None
    splits = {
        split: load_split_tensors(
            folder, name, split, emb_map, max_history, max_interests, features
        )
        for split in ("train", "valid", "test")
    }
    return splits, emb_map, features


def resolve_semantic_stem(folder: Path, name: str, stem: str) -> str:
    """``stem`` itself, or for ``auto`` the one item table ``data_process.py`` wrote into the
    folder (``<name>_emb_<dim>.npy``, SASRec or text): ``train.py`` uses what was built instead of
    assuming a dimension. Several tables are ambiguous and must be named."""
    if stem != "auto":
        return stem
    found = sorted(folder.glob(f"{name}_emb_*.npy"))
    if not found:
        raise DataError(
            f"{folder}: no {name}_emb_<dim>.npy item table "
            "(run data_process.py with --embeddings.kind=sasrec|text)"
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(
            f"{folder}: several item tables ({names}): choose one with --semantic_emb=emb_<dim>"
        )
    return found[0].stem[len(name) + 1 :]


def load_semantic_embeddings(folder: Path, name: str, stem: str, n_items: int) -> torch.Tensor:
    """The tokenizer's input ``[n_items + 1, D]`` (row 0 = padding), aligned with emb_map ids."""
    path = folder / f"{name}_{stem}.npy"
    if not path.exists():
        raise DataError(
            f"{path}: not found (run data_process.py with --embeddings.kind=sasrec|text)"
        )
    matrix = np.load(path)
    if matrix.ndim != 2 or matrix.shape[0] != n_items + 1:
        raise DataError(
            f"{path}: expected shape [{n_items + 1}, D] (items + padding), got {matrix.shape}"
        )
    return torch.from_numpy(matrix).float()

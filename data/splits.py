"""ETEGRec splits: train on every prefix, leave the last two items out for valid and test.

For a user's chronological sequence ``s`` of length ``n``: train rows ``s[:t] -> s[t]`` for
``t = 1..n-3``, valid ``s[:n-2] -> s[n-2]``, test ``s[:n-1] -> s[n-1]``; histories keep the most
recent ``max_history`` items. Files are ETEGRec's own format, so its released files drop in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data.jsonl import DataError, read_jsonl, write_json, write_jsonl
from data.raw import Catalogue, Sequences

SPLITS = ("train", "valid", "test")
PAD = "[PAD]"


def build_emb_map(sequences: Sequences) -> dict[str, int]:
    """Item token -> id with ``[PAD]`` = 0; numeric tokens sort numerically, others lexically."""
    tokens = {t for seq in sequences.values() for t in seq}
    key = (lambda t: (int(t), t)) if all(t.isdigit() for t in tokens) else (lambda t: (0, t))
    return {PAD: 0} | {t: i for i, t in enumerate(sorted(tokens, key=key), 1)}


def _row(user: str, seq: list[str], t: int, max_history: int) -> dict:
    return {"user_id": user, "inter_history": seq[max(0, t - max_history) : t], "target_id": seq[t]}


def make_rows(sequences: Sequences, max_history: int) -> dict[str, list[dict]]:
    """Rows per split (every sequence must have at least 3 items)."""
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for user, seq in sequences.items():
        n = len(seq)
        rows["train"].extend(_row(user, seq, t, max_history) for t in range(1, n - 2))
        rows["valid"].append(_row(user, seq, n - 2, max_history))
        rows["test"].append(_row(user, seq, n - 1, max_history))
    return rows


def split_stats(
    sequences: Sequences, rows: dict[str, list[dict]], dropped: int, min_items: int, n_items: int
) -> dict:
    lengths = np.array([len(s) for s in sequences.values()])
    return {
        "users": len(rows["test"]),
        "users_dropped_short": dropped,
        "min_items": min_items,
        "items": n_items,
        "interactions": int(lengths.sum()),
        "seq_len": {
            "min": int(lengths.min()),
            "p25": float(np.percentile(lengths, 25)),
            "median": float(np.median(lengths)),
            "mean": round(float(lengths.mean()), 3),
            "p75": float(np.percentile(lengths, 75)),
            "p90": float(np.percentile(lengths, 90)),
            "p99": float(np.percentile(lengths, 99)),
            "max": int(lengths.max()),
        },
        "rows": {s: len(r) for s, r in rows.items()},
    }


def split_path(folder: Path, name: str, split: str, processed: bool = False) -> Path:
    return folder / f"{name}.{split}{'.processed' if processed else ''}.jsonl"


def write_dataset(
    folder: Path,
    name: str,
    sequences: Sequences,
    items: Catalogue,
    max_history: int,
    min_items: int,
) -> tuple[dict[str, list[dict]], dict]:
    """Write splits, emb_map, item catalogue and stats; return the rows and the stats.

    Users with fewer than ``min_items`` items are dropped before anything is counted or numbered.
    With a catalogue (``items`` not empty), items it lacks are written without text and counted
    (``items_without_metadata``), never dropped silently.
    """
    kept = {u: s for u, s in sequences.items() if len(s) >= max(min_items, 3)}
    dropped = len(sequences) - len(kept)
    emb_map = build_emb_map(kept)
    rows = make_rows(kept, max_history)
    for split in SPLITS:
        write_jsonl(split_path(folder, name, split), rows[split])
    write_json(folder / f"{name}.emb_map.json", emb_map)
    write_jsonl(
        folder / f"{name}.items.jsonl",
        ({"item_id": t, **items.get(t, {})} for t in emb_map if t != PAD),
    )
    stats = split_stats(kept, rows, dropped, min_items, len(emb_map) - 1)
    if items:
        stats["items_without_metadata"] = [t for t in emb_map if t != PAD and t not in items]
    write_json(folder / "stats.json", stats)
    return rows, stats


def _check_row(path: Path, lineno: int, obj: dict, emb_map: dict[str, int] | None) -> dict:
    for field in ("inter_history", "target_id"):
        if field not in obj:
            raise DataError(f"{path}:{lineno}: missing field '{field}'")
    history = obj["inter_history"]
    if not isinstance(history, list):
        raise DataError(f"{path}:{lineno}: field 'inter_history' must be a list")
    history = [str(t) for t in history]
    target = str(obj["target_id"])
    if emb_map is not None:
        for token in [*history, target]:
            if token not in emb_map:
                raise DataError(f"{path}:{lineno}: item '{token}' has no id in emb_map")
    row = {
        "user_id": str(obj.get("user_id", lineno)),
        "inter_history": history,
        "target_id": target,
    }
    if "interests" in obj:
        interests = obj["interests"]
        if isinstance(interests, str):  # the seed's format: one string joined by newlines
            interests = [s.strip() for s in interests.split("\n") if s.strip()]
        if not isinstance(interests, list) or not all(isinstance(s, str) for s in interests):
            raise DataError(f"{path}:{lineno}: field 'interests' must be a list of strings")
        row["interests"] = interests
    return row


def load_split(
    folder: Path,
    name: str,
    split: str,
    processed: bool = False,
    emb_map: dict[str, int] | None = None,
) -> list[dict]:
    """Read a split; with ``emb_map`` every item must have an id (else an error naming the line)."""
    path = split_path(folder, name, split, processed)
    if not path.exists():
        raise DataError(f"{path}: not found (run data_process.py for dataset '{name}')")
    return [_check_row(path, lineno, obj, emb_map) for lineno, obj in read_jsonl(path)]


def load_emb_map(folder: Path, name: str) -> dict[str, int]:
    path = folder / f"{name}.emb_map.json"
    if not path.exists():
        raise DataError(f"{path}: not found (run data_process.py for dataset '{name}')")
    emb_map = json.loads(path.read_text())
    if emb_map.get(PAD) != 0:
        raise DataError(f"{path}: '[PAD]' must map to 0")
    return emb_map


def load_items(folder: Path, name: str) -> Catalogue:
    path = folder / f"{name}.items.jsonl"
    if not path.exists():
        raise DataError(f"{path}: not found (run data_process.py for dataset '{name}')")
    items: Catalogue = {}
    for lineno, obj in read_jsonl(path):
        if "item_id" not in obj:
            raise DataError(f"{path}:{lineno}: missing field 'item_id'")
        items[str(obj.pop("item_id"))] = obj
    return items

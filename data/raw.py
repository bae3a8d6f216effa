"""Readers for the two raw formats: Amazon Reviews 2023 benchmark CSVs and LC-Rec JSON.

Both return the same thing: each user's chronological item sequence (item tokens as strings) and
an item catalogue ``token -> {"title", "brand", "categories", "description", "features"}``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from data.jsonl import DataError

Sequences = dict[str, list[str]]
Catalogue = dict[str, dict]

AMAZON23_HEADER = ["user_id", "parent_asin", "rating", "timestamp", "history"]


def open_text(path: Path) -> io.TextIOBase:
    """Open ``.gz`` or plain text transparently."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def find_file(raw_dir: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` inside ``raw_dir``, whichever exists."""
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_benchmark_csv(path: Path) -> Iterator[tuple[int, str, str, list[str]]]:
    """Yield ``(line, user_id, target, history)`` from a last_out_w_his CSV."""
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != AMAZON23_HEADER:
            raise DataError(f"{path}:1: expected header {','.join(AMAZON23_HEADER)}, got {header}")
        for row in reader:
            line = reader.line_num
            if len(row) != 5:
                raise DataError(f"{path}:{line}: expected 5 fields, got {len(row)}")
            user, target, _, _, history = row
            if not user or not target:
                raise DataError(f"{path}:{line}: empty user_id or parent_asin")
            yield line, user, target, history.split()


def read_amazon23(raw_dir: Path, category: str) -> Sequences:
    """Full sequences from ``<category>.test.csv(.gz)``: each row is history + [last item].

    When the valid file is present it is cross-checked: valid.history + [valid target] must equal
    test.history for every user, so a mismatched pair of files is caught, not averaged over.
    """
    test_path = find_file(raw_dir, f"{category}.test.csv")
    if test_path is None:
        raise DataError(f"{raw_dir}: missing {category}.test.csv(.gz)")
    sequences: Sequences = {}
    for line, user, target, history in _read_benchmark_csv(test_path):
        if user in sequences:
            raise DataError(f"{test_path}:{line}: user {user} appears twice")
        sequences[user] = history + [target]
    valid_path = find_file(raw_dir, f"{category}.valid.csv")
    if valid_path is not None:
        seen: set[str] = set()
        for line, user, target, history in _read_benchmark_csv(valid_path):
            seq = sequences.get(user)
            if user in seen or seq is None or seq[:-1] != history + [target]:
                raise DataError(
                    f"{valid_path}:{line}: user {user} disagrees with {test_path.name} "
                    "(each user once; valid history + target must equal the test history)"
                )
            seen.add(user)
        if len(seen) != len(sequences):
            missing = next(u for u in sequences if u not in seen)
            raise DataError(f"{valid_path}: user {missing} of {test_path.name} is missing")
    return sequences


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value if str(v).strip()]


def read_amazon23_meta(path: Path, wanted: set[str]) -> Catalogue:
    """Stream the official metadata JSONL (1.1 GB) and keep only the items in ``wanted``."""
    items: Catalogue = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg})") from err
            asin = obj.get("parent_asin")
            if asin is None:
                raise DataError(f"{path}:{lineno}: missing field 'parent_asin'")
            if asin not in wanted:
                continue
            items[asin] = {
                "title": obj.get("title") or "",
                "brand": obj.get("store") or "",
                "categories": _as_list(obj.get("categories")) or _as_list(obj.get("main_category")),
                "description": " ".join(_as_list(obj.get("description"))),
                "features": _as_list(obj.get("features")),
            }
    return items


def _load_json_object(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}:1: expected a JSON object")
    return obj


def read_lcrec(raw_dir: Path, name: str) -> tuple[Sequences, Catalogue]:
    """LC-Rec / LETTER format: ``<name>.inter.json`` and ``<name>.item.json``."""
    inter_path = raw_dir / f"{name}.inter.json"
    item_path = raw_dir / f"{name}.item.json"
    for p in (inter_path, item_path):
        if not p.exists():
            raise DataError(f"{raw_dir}: missing {p.name}")
    sequences: Sequences = {}
    for user, seq in _load_json_object(inter_path).items():
        if not isinstance(seq, list):
            raise DataError(f"{inter_path}: user '{user}': expected a list of item indices")
        sequences[str(user)] = [str(i) for i in seq]
    items: Catalogue = {}
    for token, meta in _load_json_object(item_path).items():
        if not isinstance(meta, dict):
            raise DataError(f"{item_path}: item '{token}': expected an object")
        items[str(token)] = {
            "title": meta.get("title") or "",
            "brand": meta.get("brand") or "",
            "categories": [
                c.strip() for c in (meta.get("categories") or "").split(",") if c.strip()
            ],
            "description": meta.get("description") or "",
            "features": [],
        }
    return sequences, items

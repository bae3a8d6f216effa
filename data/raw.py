"""Readers for the two raw formats: Amazon Reviews 2023 benchmark CSVs and LC-Rec JSON.

Both return the same thing: each user's chronological item sequence (item tokens as strings) and
an item catalogue ``token -> {"title", "brand", "categories", "description", "features"}``.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

from data.jsonl import DataError, decode_line, read_jsonl

Sequences = dict[str, list[str]]
Catalogue = dict[str, dict]

AMAZON23_HEADER = ["user_id", "parent_asin", "rating", "timestamp", "history"]


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a ``.gz`` or plain UTF-8 file, decoded one at a time so that a bad byte is
    reported with its file and line instead of a decoder traceback."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            yield decode_line(raw, path, lineno)


def find_file(raw_dir: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` inside ``raw_dir``, whichever exists."""
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_benchmark_csv(path: Path) -> Iterator[tuple[int, str, str, list[str]]]:
    """Yield ``(line, user_id, target, history)`` from a last_out_w_his CSV."""
    lines = text_lines(path)
    try:
        reader = csv.reader(lines)
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
    finally:
        lines.close()


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
    for lineno, obj in read_jsonl(path):
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


def _load_json_object(path: Path) -> tuple[dict, str]:
    """The object and the file's text (to find a key's line for an error message)."""
    text = "".join(text_lines(path))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}:1: expected a JSON object")
    return obj, text


def line_of(text: str, key: str) -> int:
    """The line where ``"key":`` first appears in a JSON text (1 when not found)."""
    found = re.search(re.escape(json.dumps(key)) + r"\s*:", text)
    return text.count("\n", 0, found.start()) + 1 if found else 1


def _item_token(value: object) -> str:
    """An item index as a string; null, booleans, floats and nested values are refused, never
    turned into items such as ``"None"`` or ``"[2]"``."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"item {json.dumps(value)} is not an item index (an int or a string)")


def _sequence(seq: object) -> list[str]:
    if not isinstance(seq, list):
        raise DataError("expected a list of item indices")
    return [_item_token(i) for i in seq]


def _text_field(meta: dict, field: str) -> str:
    value = meta.get(field) or ""
    if not isinstance(value, str):
        raise DataError(f"field '{field}' must be a string, got {json.dumps(value)}")
    return value


def _categories(meta: dict) -> list[str]:
    """A comma-separated string (LC-Rec) or a list of strings."""
    value = meta.get("categories") or ""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DataError(
            f"field 'categories' must be a string or a list of strings, got {json.dumps(value)}"
        )
    return [c.strip() for c in value if c.strip()]


def _lcrec_item(meta: object) -> dict:
    if not isinstance(meta, dict):
        raise DataError("expected an object")
    return {
        "title": _text_field(meta, "title"),
        "brand": _text_field(meta, "brand"),
        "categories": _categories(meta),
        "description": _text_field(meta, "description"),
        "features": [],
    }


def read_lcrec(raw_dir: Path, name: str) -> tuple[Sequences, Catalogue]:
    """LC-Rec / LETTER format: ``<name>.inter.json`` and ``<name>.item.json``."""
    inter_path = raw_dir / f"{name}.inter.json"
    item_path = raw_dir / f"{name}.item.json"
    for p in (inter_path, item_path):
        if not p.exists():
            raise DataError(f"{raw_dir}: missing {p.name}")
    inter, text = _load_json_object(inter_path)
    sequences: Sequences = {}
    for user, seq in inter.items():
        try:
            sequences[str(user)] = _sequence(seq)
        except DataError as err:
            raise DataError(f"{inter_path}:{line_of(text, user)}: user '{user}': {err}") from None
    catalogue, text = _load_json_object(item_path)
    items: Catalogue = {}
    for token, meta in catalogue.items():
        try:
            items[str(token)] = _lcrec_item(meta)
        except DataError as err:
            raise DataError(f"{item_path}:{line_of(text, token)}: item '{token}': {err}") from None
    return sequences, items

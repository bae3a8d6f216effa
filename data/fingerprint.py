"""A run's record of the data files it was trained on (``data.json`` in the run folder).

A dataset regenerated under the same name (other items, other rows) would otherwise be read by a
resumed run or by evaluate.py as if nothing had changed: item ids shift, and the result is wrong
metrics or an IndexError. Each file is recorded by its SHA-256 and a count (items, rows, phrases),
so a mismatch is refused with a message that says which file differs and how.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from data.jsonl import DataError, write_json
from data.splits import split_path

FINGERPRINT = "data.json"


def data_files(
    folder: Path, name: str, splits: tuple[str, ...], interests: bool, semantic_emb: str = ""
) -> list[Path]:
    """The files a run reads: the item map, the splits (with interests when fused), the interest
    phrase table, and the tokenizer's input vectors (training only: ``semantic_emb``)."""
    files = [folder / f"{name}.emb_map.json"]
    files += [split_path(folder, name, s, processed=interests) for s in splits]
    if interests:
        files += [folder / f"{name}.interest_phrases.json", folder / f"{name}.interest_emb.npy"]
    if semantic_emb:
        files.append(folder / f"{name}_{semantic_emb}.npy")
    return files


def _count(path: Path, data: bytes) -> tuple[int, str]:
    if path.suffix == ".npy":
        return int(np.load(path, mmap_mode="r").shape[0]), "rows"
    if path.name.endswith(".emb_map.json"):
        return len(json.loads(data)) - 1, "items"  # [PAD] is not an item
    if path.suffix == ".json":
        return len(json.loads(data)), "entries"
    return data.count(b"\n"), "rows"


def fingerprint(files: list[Path]) -> dict[str, dict]:
    """File name -> SHA-256, byte size and count, for each file that exists (a missing one is
    left to the loader that needs it, whose error says how to make it)."""
    out = {}
    for path in files:
        if not path.exists():
            continue
        data = path.read_bytes()
        count, unit = _count(path, data)
        out[path.name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "count": count,
            "unit": unit,
        }
    return out


def _difference(name: str, then: dict, now: dict) -> str:
    if then["count"] != now["count"]:
        return f"{name} has {now['count']:,} {now['unit']} now, {then['count']:,} at training"
    return f"{name} has the same number of {now['unit']} but other content"


def check_fingerprint(run_dir: Path, folder: Path, current: dict[str, dict]) -> None:
    """Refuse data that differs from what ``run_dir`` recorded; files it did not record (a run
    made before fingerprints) are not checked."""
    path = run_dir / FINGERPRINT
    if not path.exists():
        return
    recorded = json.loads(path.read_text())["files"]
    for name, now in current.items():
        then = recorded.get(name)
        if then is not None and then["sha256"] != now["sha256"]:
            raise DataError(
                f"{folder}: not the data run {run_dir} was trained on "
                f"({_difference(name, then, now)}; see {path}): point --data_dir at that data "
                "or recreate it with the same data_process.py settings, or train a new run"
            )


def record_fingerprint(run_dir: Path, folder: Path, current: dict[str, dict]) -> None:
    write_json(run_dir / FINGERPRINT, {"folder": str(folder), "files": current})

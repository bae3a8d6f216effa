"""experiments/match_coverage.py on hand-written folders: interests kept exactly where the
reference has some, everything training reads copied, mismatched rows refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.jsonl import DataError
from data.splits import SPLITS, load_split
from experiments import match_coverage


def write_folder(folder: Path, interests: list[list[str]], histories: list[list[str]]) -> None:
    folder.mkdir(parents=True)
    for split in SPLITS:
        rows = [
            {"user_id": f"u{i}", "inter_history": h, "target_id": "9"}
            for i, h in enumerate(histories)
        ]
        with open(folder / f"toy.{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(folder / f"toy.{split}.processed.jsonl", "w") as f:
            for row, found in zip(rows, interests, strict=True):
                f.write(json.dumps(row | {"interests": found}) + "\n")
    for extra in (
        "toy.emb_map.json",
        "toy.items.jsonl",
        "toy.interest_phrases.json",
        "toy_emb_256.npy",
    ):
        (folder / extra).write_text("{}")


def test_interests_follow_the_reference_coverage(tmp_path: Path, capsys) -> None:
    histories = [["1"], ["1", "2"], ["3"]]
    write_folder(tmp_path / "kw", [["glue"], ["tape"], ["wire"]], histories)
    write_folder(tmp_path / "llm", [["adhesives"], [], ["cables"]], histories)
    argv = [f"--source={tmp_path / 'kw'}", f"--like={tmp_path / 'llm'}", "--name=toy"]
    match_coverage.main([*argv, f"--out={tmp_path / 'out'}"])
    out = tmp_path / "out" / "toy"
    for split in SPLITS:
        rows = load_split(out, "toy", split, processed=True)
        assert [r["interests"] for r in rows] == [["glue"], [], ["wire"]]
    assert (out / "toy_emb_256.npy").exists() and (out / "toy.interest_phrases.json").exists()
    assert "kept on 6 of 9 rows" in capsys.readouterr().out


def test_different_rows_are_refused(tmp_path: Path) -> None:
    write_folder(tmp_path / "kw", [["glue"]], [["1"]])
    write_folder(tmp_path / "llm", [["glue"]], [["2"]])
    argv = [f"--source={tmp_path / 'kw'}", f"--like={tmp_path / 'llm'}", "--name=toy"]
    with pytest.raises(DataError, match="rows differ"):
        match_coverage.main([*argv, f"--out={tmp_path / 'out'}"])

"""experiments/breakdown.py on a hand-written dataset and rank files: which rows fall in which
group, the per-group metrics over seeds, and a rank file that misses rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from config import ConfigError
from experiments import breakdown
from model.metrics import write_ranks


def toy_dataset(folder: Path) -> None:
    """Eighteen train rows, 12 with target a and 6 with b (f: none), and four test rows: targets
    f, b, a, a with histories of 4, 5, 11 and 4 items."""
    folder.mkdir(parents=True)
    emb_map = {"[PAD]": 0} | {t: i for i, t in enumerate("abcdef", start=1)}
    (folder / "toy.emb_map.json").write_text(json.dumps(emb_map))
    train = [
        {"user_id": f"u{i}", "inter_history": ["c", "d"], "target_id": "a" if i < 12 else "b"}
        for i in range(18)
    ]
    test = [
        {"user_id": "u0", "inter_history": ["a", "b", "a", "b"], "target_id": "f"},
        {"user_id": "u1", "inter_history": ["a", "b", "a", "b", "c"], "target_id": "b"},
        {"user_id": "u2", "inter_history": ["a"] * 11, "target_id": "a"},
        {"user_id": "u3", "inter_history": ["b", "b", "b", "c"], "target_id": "a"},
    ]
    for split, rows in (("train", train), ("test", test)):
        (folder / f"toy.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def ranks_file(
    path: Path, ranks: list[int], order: list[int] | None = None, split: str = "test"
) -> str:
    """A rank file whose rows may be stored out of order (as a multi-process evaluation might)."""
    rows = np.array(order if order is not None else range(len(ranks)))
    write_ranks(path, split, rows, np.array(ranks)[rows])
    return str(path)


def gain(rank: int) -> float:
    return 1 / math.log2(rank + 2) if 0 <= rank < 10 else 0.0


def test_groups_and_per_group_metrics(tmp_path: Path) -> None:
    toy_dataset(tmp_path / "toy")
    ranks_file(tmp_path / "x-s1.json", [0, -1, 1, 3], order=[3, 1, 0, 2])
    ranks_file(tmp_path / "x-s2.json", [0, -1, 1, 12])  # 12: outside the top 10 (a full ranking)
    ranks_file(tmp_path / "y-s1.json", [-1, 0, 0, 0])
    out = tmp_path / "out" / "bd"
    breakdown.main(
        [
            f"--data={tmp_path / 'toy'}",
            "--name=toy",
            f"--models=x={tmp_path}/x-s*.json;y={tmp_path}/y-s*.json",
            f"--out={out}",
        ]
    )
    saved = json.loads(out.with_suffix(".json").read_text())
    by = {(r["feature"][:7], r["group"]): r for r in saved["table"]}
    pop = {g: by["target ", g] for g in ("0-4", "5-9", "10-19", "20-49", "50+")}
    assert [pop[g]["rows"] for g in pop] == [1, 1, 2, 0, 0]
    assert [by["history", g]["rows"] for g in ("1-4", "5", "6-7", "8-10", "11+")] == [2, 1, 0, 0, 1]
    assert by["target ", "all"]["rows"] == 4
    # targets a (12 occurrences), rows 2 and 3: x's seeds give (g(1) + g(3)) / 2 and g(1) / 2
    x_seeds = [(gain(1) + gain(3)) / 2, gain(1) / 2]
    assert pop["10-19"]["x ndcg@10"] == pytest.approx(np.mean(x_seeds))
    assert pop["10-19"]["x ndcg@10 std"] == pytest.approx(np.std(x_seeds, ddof=1))
    assert pop["10-19"]["x recall@10"] == pytest.approx(0.75)
    assert pop["10-19"]["y ndcg@10"] == pytest.approx(1.0)
    assert pop["0-4"]["x ndcg@10"] == pytest.approx(1.0) and pop["0-4"]["y ndcg@10"] == 0
    assert by["history", "1-4"]["x ndcg@10"] == pytest.approx(np.mean([(1 + gain(3)) / 2, 0.5]))
    table = out.with_suffix(".md").read_text()
    assert "| 10-19 | 2 |" in table and "| 20-49 | 0 |" in table
    assert "y / x" in table


def test_a_rank_file_of_other_rows_or_split_is_named(tmp_path: Path) -> None:
    toy_dataset(tmp_path / "toy")
    short = ranks_file(tmp_path / "short.json", [0, 1, 2])
    argv = [f"--data={tmp_path / 'toy'}", "--name=toy", f"--out={tmp_path / 'o'}"]
    with pytest.raises(ConfigError, match="short.json: ranks 3 rows, the test split has 4"):
        breakdown.main([*argv, f"--models=x={short}"])
    valid = ranks_file(tmp_path / "valid.json", [0, 1, 2, 3], split="valid")
    with pytest.raises(ConfigError, match="valid.json: ranks the valid split, not test"):
        breakdown.main([*argv, f"--models=x={valid}"])
    with pytest.raises(ConfigError, match="no file matches"):
        breakdown.main([*argv, f"--models=x={tmp_path}/none-*.json"])

"""ETEGRec splits from the real raw files: exact counts, the split rule on every row, bad input.

The rule is checked against sequences rebuilt here straight from the raw files (csv / json), not
through data.raw, so a bug in the reader cannot hide behind the same bug in the check.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config import Config
from data.jsonl import DataError
from data.paths import REPO_ROOT, datasets_root
from data.pipeline import build_dataset
from data.raw import read_amazon23, read_lcrec
from data.splits import PAD, load_emb_map, load_items, load_split

MAX_HISTORY = 50


def amazon23_sequences() -> dict[str, list[str]]:
    """Full sequences from the official test.csv: history + [last item], per user."""
    path = datasets_root() / "amazon23-scientific" / "raw" / "Industrial_and_Scientific.test.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return {r["user_id"]: r["history"].split() + [r["parent_asin"]] for r in csv.DictReader(f)}


def lcrec_sequences() -> dict[str, list[str]]:
    path = datasets_root() / "amazon18-scientific" / "raw" / "Scientific.inter.json"
    return {u: [str(i) for i in seq] for u, seq in json.loads(path.read_text()).items()}


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def check_etegrec_rule(folder: Path, name: str, sequences: dict[str, list[str]]) -> None:
    """Every row of every split against the rule; every user's rows exactly once."""
    positions = {u: {item: t for t, item in enumerate(seq)} for u, seq in sequences.items()}
    for seq, pos in zip(sequences.values(), positions.values(), strict=True):
        assert len(pos) == len(seq), "a user repeats an item: targets would be ambiguous"
    seen: dict[str, dict[str, list[int]]] = {}
    for split in ("train", "valid", "test"):
        seen[split] = {}
        for row in read_rows(folder / f"{name}.{split}.jsonl"):
            assert set(row) == {"user_id", "inter_history", "target_id"}
            user = row["user_id"]
            seq = sequences[user]
            t = positions[user][row["target_id"]]
            # History: exactly the items before the target, the most recent 50, oldest first.
            assert row["inter_history"] == seq[max(0, t - MAX_HISTORY) : t], (split, row)
            seen[split].setdefault(user, []).append(t)
    assert set(seen["valid"]) == set(seen["test"]) == set(sequences)
    for user, seq in sequences.items():
        n = len(seq)
        assert seen["valid"][user] == [n - 2]
        assert seen["test"][user] == [n - 1]
        # Every prefix target 1..n-3 once, in order; never one of the last two items.
        assert seen["train"].get(user, []) == list(range(1, n - 2))


def check_emb_map(folder: Path, name: str, sequences: dict[str, list[str]]) -> dict[str, int]:
    emb_map = load_emb_map(folder, name)
    assert emb_map[PAD] == 0
    assert sorted(emb_map.values()) == list(range(len(emb_map)))
    assert set(emb_map) - {PAD} == {item for seq in sequences.values() for item in seq}
    return emb_map


# --- amazon23-scientific (the ETEGRec benchmark) ------------------------------------------------


def test_scientific_counts(scientific_dir: Path) -> None:
    stats = json.loads((scientific_dir / "stats.json").read_text())
    assert stats["rows"] == {"train": 259_992, "valid": 50_985, "test": 50_985}
    assert stats["users"] == 50_985
    assert stats["items"] == 25_848
    assert stats["interactions"] == 412_947
    assert stats["users_dropped_short"] == 0
    assert (stats["seq_len"]["min"], stats["seq_len"]["median"], stats["seq_len"]["max"]) == (
        5,
        6.0,
        204,
    )
    for split, n in stats["rows"].items():
        with open(scientific_dir / f"scientific.{split}.jsonl", "rb") as f:
            assert sum(1 for _ in f) == n


def test_scientific_rule_on_every_row(scientific_dir: Path) -> None:
    sequences = amazon23_sequences()
    check_etegrec_rule(scientific_dir, "scientific", sequences)
    # Long users exist, so the 50-item cut is exercised, not just allowed.
    test_rows = read_rows(scientific_dir / "scientific.test.jsonl")
    assert max(len(r["inter_history"]) for r in test_rows) == MAX_HISTORY


def test_scientific_valid_csv_agrees_with_splits(scientific_dir: Path) -> None:
    """The official valid.csv rows are our valid rows (before the 50-item cut)."""
    path = (
        datasets_root() / "amazon23-scientific" / "raw" / "Industrial_and_Scientific.valid.csv.gz"
    )
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        official = {
            r["user_id"]: (r["history"].split(), r["parent_asin"]) for r in csv.DictReader(f)
        }
    ours = read_rows(scientific_dir / "scientific.valid.jsonl")
    assert len(ours) == len(official)
    for row in ours:
        history, target = official[row["user_id"]]
        assert row["target_id"] == target
        assert row["inter_history"] == history[-MAX_HISTORY:]


def test_scientific_emb_map(scientific_dir: Path) -> None:
    emb_map = check_emb_map(scientific_dir, "scientific", amazon23_sequences())
    assert len(emb_map) == 25_848 + 1
    rows = load_split(scientific_dir, "scientific", "test", emb_map=emb_map)
    assert len(rows) == 50_985  # every item of every row has an id
    items = load_items(scientific_dir, "scientific")
    assert set(items) == set(emb_map) - {PAD}


# --- amazon18-scientific (LC-Rec format) --------------------------------------------------------


def test_scientific18_counts(scientific18_dir: Path) -> None:
    stats = json.loads((scientific18_dir / "stats.json").read_text())
    assert stats["users"] == 8_317
    assert stats["items"] == 4_344
    assert stats["interactions"] == 58_492
    assert stats["rows"] == {"train": 58_492 - 3 * 8_317, "valid": 8_317, "test": 8_317}


def test_scientific18_rule_on_every_row(scientific18_dir: Path) -> None:
    check_etegrec_rule(scientific18_dir, "scientific18", lcrec_sequences())


def test_scientific18_emb_map_and_text(scientific18_dir: Path) -> None:
    emb_map = check_emb_map(scientific18_dir, "scientific18", lcrec_sequences())
    # Numeric LC-Rec indices keep their order: item i gets id i + 1.
    assert all(emb_map[str(i)] == i + 1 for i in range(4_344))
    items = load_items(scientific18_dir, "scientific18")
    assert items["0"]["title"].startswith("SUPCO SPP6 Relay/Capacitor Hard Start Kit")
    assert items["0"]["categories"][:2] == ["Industrial & Scientific", "Industrial Electrical"]
    assert sum(bool(m["title"]) for m in items.values()) == 4_344
    assert sum(bool(m["brand"]) for m in items.values()) == 4_332


def data_process(*argv: str) -> subprocess.CompletedProcess:
    """Run data_process.py as a user would, from the repository root."""
    return subprocess.run(
        [sys.executable, "data_process.py", *argv],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_data_process_script_prints_summary(tmp_path: Path) -> None:
    out = data_process(
        "--dataset=scientific18",
        f"--out_dir={tmp_path}",
        "--interests.backend=none",
        "--embeddings.kind=none",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        "[scientific18] users 8,317 (dropped <3 items: 0) | items 4,344 | interactions 58,492"
    )
    assert lines[1].startswith("  sequence length: min 5 p25 5 median 6 mean 7.033")
    assert lines[1].endswith("max 78")
    assert lines[2] == "  rows: train 33,541 / valid 8,317 / test 8,317"
    assert lines[3].startswith(f"  splits written to {tmp_path / 'scientific18'} in ")
    assert (tmp_path / "scientific18" / "scientific18.train.jsonl").exists()


def test_data_process_script_reports_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    out = data_process(f"--raw_dir={missing}", f"--out_dir={tmp_path}")
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {missing}: missing Scientific.inter.json"
    bad = data_process("--interests.strid=2")
    assert bad.returncode == 1
    assert "unknown config key 'interests.strid'" in bad.stderr


# --- bad input -----------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "toy.train.jsonl",
        ['{"inter_history": ["a"], "target_id": "b"}', '{"inter_history": ["a"], "target_id": '],
    )
    with pytest.raises(DataError, match=rf"^{path}:2: malformed JSON"):
        load_split(tmp_path, "toy", "train")


def test_missing_field_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "toy.valid.jsonl", ['{"inter_history": ["a"]}'])
    with pytest.raises(DataError, match=rf"^{path}:1: missing field 'target_id'"):
        load_split(tmp_path, "toy", "valid")


def test_item_without_id_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "toy.test.jsonl",
        [
            '{"inter_history": ["a"], "target_id": "b"}',
            "",
            '{"inter_history": ["a", "zz"], "target_id": "b"}',
        ],
    )
    emb_map = {PAD: 0, "a": 1, "b": 2}
    with pytest.raises(DataError, match=rf"^{path}:3: item 'zz' has no id in emb_map"):
        load_split(tmp_path, "toy", "test", emb_map=emb_map)
    assert len(load_split(tmp_path, "toy", "test")) == 2  # without emb_map only JSON is checked


def test_missing_split_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found \\(run data_process.py for dataset 'toy'\\)"):
        load_split(tmp_path, "toy", "train")


def test_emb_map_pad_must_be_zero(tmp_path: Path) -> None:
    (tmp_path / "toy.emb_map.json").write_text(json.dumps({PAD: 1, "a": 0}))
    with pytest.raises(DataError, match="'\\[PAD\\]' must map to 0"):
        load_emb_map(tmp_path, "toy")


def test_seed_interests_string_is_read_as_a_list(tmp_path: Path) -> None:
    rows = [
        {"inter_history": ["a"], "target_id": "b", "interests": "Lab safety\n Soldering \n\n"},
        {"inter_history": ["a"], "target_id": "c", "interests": ["Adhesives", "Tape"]},
    ]
    write_lines(tmp_path / "toy.train.processed.jsonl", [json.dumps(r) for r in rows])
    loaded = load_split(tmp_path, "toy", "train", processed=True)
    assert loaded[0]["interests"] == ["Lab safety", "Soldering"]
    assert loaded[1]["interests"] == ["Adhesives", "Tape"]
    assert loaded[0]["user_id"] == "1"  # rows without user_id are numbered by line
    bad = tmp_path / "toy.valid.processed.jsonl"
    write_lines(bad, [json.dumps({"inter_history": [], "target_id": "b", "interests": [1, 2]})])
    with pytest.raises(DataError, match=rf"^{bad}:1: field 'interests' must be a list of strings"):
        load_split(tmp_path, "toy", "valid", processed=True)


HEADER = "user_id,parent_asin,rating,timestamp,history"


def write_amazon23(raw: Path, test: list[str], valid: list[str] | None = None) -> None:
    write_lines(raw / "Tiny.test.csv", [HEADER, *test])
    if valid is not None:
        write_lines(raw / "Tiny.valid.csv", [HEADER, *valid])


def test_hand_made_amazon23_reads_full_sequences(tmp_path: Path) -> None:
    write_amazon23(
        tmp_path,
        ["u1,E,5.0,5,A B C D", "u2,C,4.0,3,B A"],
        ["u1,D,5.0,4,A B C", "u2,A,4.0,2,B"],
    )
    assert read_amazon23(tmp_path, "Tiny") == {"u1": list("ABCDE"), "u2": list("BAC")}


def test_malformed_csv_row_names_file_and_line(tmp_path: Path) -> None:
    write_amazon23(tmp_path, ["u1,E,5.0,5,A B C D", "u2,C,4.0,B A"])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'Tiny.test.csv'}:3: expected 5 fields"):
        read_amazon23(tmp_path, "Tiny")


def test_wrong_csv_header_is_an_error(tmp_path: Path) -> None:
    write_lines(tmp_path / "Tiny.test.csv", ["user,item,rating,timestamp,history", "u1,E,5,5,A"])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'Tiny.test.csv'}:1: expected header"):
        read_amazon23(tmp_path, "Tiny")


def test_duplicate_user_is_an_error(tmp_path: Path) -> None:
    write_amazon23(tmp_path, ["u1,E,5.0,5,A B C D", "u1,F,5.0,6,A B"])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'Tiny.test.csv'}:3: user u1 appears twice"):
        read_amazon23(tmp_path, "Tiny")


@pytest.mark.parametrize(
    "valid_row",
    ["u1,X,5.0,4,A B C", "u1,D,5.0,4,A C B", "u9,D,5.0,4,A B C"],
    ids=["other-target", "other-order", "unknown-user"],
)
def test_valid_test_disagreement_is_detected(tmp_path: Path, valid_row: str) -> None:
    write_amazon23(tmp_path, ["u1,E,5.0,5,A B C D"], [valid_row])
    with pytest.raises(DataError, match=rf"^{tmp_path / 'Tiny.valid.csv'}:2: user u\d disagrees"):
        read_amazon23(tmp_path, "Tiny")


def test_short_users_are_dropped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture, data_config: Callable[..., Config]
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Tiny.inter.json").write_text(
        json.dumps({"0": [0, 1, 2, 3], "1": [4, 5], "2": [1, 2, 4]})
    )
    (raw / "Tiny.item.json").write_text(
        json.dumps({str(i): {"title": f"item {i}", "categories": "A, B"} for i in range(6)})
    )
    cfg = data_config("tiny", tmp_path / "out", f"--raw_dir={raw}", "--category=Tiny")
    folder = build_dataset(cfg)
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["users"] == 2
    assert stats["users_dropped_short"] == 1
    assert stats["rows"] == {"train": 1, "valid": 2, "test": 2}
    assert "(dropped <3 items: 1)" in capsys.readouterr().out
    rows = {s: load_split(folder, "tiny", s) for s in ("train", "valid", "test")}
    assert all(r["user_id"] != "1" for split in rows.values() for r in split)
    assert rows["train"] == [{"user_id": "0", "inter_history": ["0"], "target_id": "1"}]
    assert rows["valid"][1] == {"user_id": "2", "inter_history": ["1"], "target_id": "2"}
    assert rows["test"][1] == {"user_id": "2", "inter_history": ["1", "2"], "target_id": "4"}
    assert load_items(folder, "tiny")["3"]["categories"] == ["A", "B"]


@pytest.mark.parametrize("arg", ["--interests.backend=keywords", "--embeddings.kind=text"])
def test_missing_metadata_is_a_clear_error(
    tmp_path: Path, arg: str, data_config: Callable[..., Config]
) -> None:
    raw = tmp_path / "raw"
    write_amazon23(raw, ["u1,E,5.0,5,A B C D"])
    out = tmp_path / "out"
    cfg = data_config(
        "tiny23", out, "--source=amazon23", f"--raw_dir={raw}", "--category=Tiny", arg
    )
    with pytest.raises(DataError, match=rf"^{raw}: missing meta_Tiny\.jsonl\(\.gz\)"):
        build_dataset(cfg)
    assert not out.exists()  # nothing half-built


def write_lcrec(raw: Path, inter: str, items: dict | None = None) -> Path:
    """``Tiny.inter.json`` as given (text, so a test can put any byte or layout in it) and an
    item file for items 0-5 unless ``items`` is given."""
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "Tiny.inter.json").write_text(inter)
    catalogue = items or {str(i): {"title": f"item {i}", "categories": "A, B"} for i in range(6)}
    (raw / "Tiny.item.json").write_text(json.dumps(catalogue, indent=1))
    return raw


@pytest.mark.parametrize(
    "sequence, shown",
    [("[0, 1, null, 2]", "item null"), ("[0, [2], 1]", "item [2]"), ("[0, 1.5, 2]", "item 1.5")],
    ids=["null", "nested-list", "float"],
)
def test_sequence_items_that_are_not_indices_are_refused(
    tmp_path: Path, sequence: str, shown: str, data_config: Callable[..., Config]
) -> None:
    raw = write_lcrec(tmp_path / "raw", '{\n "0": [0, 1, 2, 3],\n "7": ' + sequence + "\n}\n")
    cfg = data_config("tiny", tmp_path / "out", f"--raw_dir={raw}", "--category=Tiny")
    where = f"{raw / 'Tiny.inter.json'}:3: user '7': "
    with pytest.raises(DataError, match="^" + re.escape(where + shown)):
        build_dataset(cfg)
    assert not (tmp_path / "out").exists()


def test_non_utf8_bytes_name_file_and_line(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_lcrec(raw, '{"0": [0, 1, 2]}')
    (raw / "Tiny.item.json").write_bytes(b'{\n "0": {"title": "caf\xe9"}\n}\n')
    with pytest.raises(DataError, match=rf"^{raw / 'Tiny.item.json'}:2: not UTF-8 text"):
        read_lcrec(raw, "Tiny")
    (tmp_path / "Tiny.test.csv").write_bytes(f"{HEADER}\nu1,E,5.0,5,A B\xff C\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^{tmp_path / 'Tiny.test.csv'}:2: not UTF-8 text"):
        read_amazon23(tmp_path, "Tiny")
    (tmp_path / "toy.train.jsonl").write_bytes(b'{"inter_history": [], "target_id": "\xff"}\n')
    with pytest.raises(DataError, match=rf"^{tmp_path / 'toy.train.jsonl'}:1: not UTF-8 text"):
        load_split(tmp_path, "toy", "train")


def test_categories_as_a_list_are_read_and_other_types_refused(tmp_path: Path) -> None:
    raw = write_lcrec(
        tmp_path / "raw",
        '{"0": [0, 1, 2]}',
        {"0": {"title": "a", "categories": ["Lab ", "Glass"]}, "1": {"title": "b"}},
    )
    _, items = read_lcrec(raw, "Tiny")
    assert items["0"]["categories"] == ["Lab", "Glass"] and items["1"]["categories"] == []
    write_lcrec(raw, '{"0": [0, 1, 2]}', {"0": {"title": "a"}, "1": {"categories": 5}})
    with pytest.raises(DataError, match=rf"^{raw / 'Tiny.item.json'}:5: item '1': field 'categ"):
        read_lcrec(raw, "Tiny")


def test_items_missing_from_the_metadata_are_counted_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture, data_config: Callable[..., Config]
) -> None:
    items = {str(i): {"title": f"item {i}"} for i in (0, 1, 3)}
    raw = write_lcrec(tmp_path / "raw", '{"0": [0, 1, 2, 3], "1": [3, 4, 0]}', items)
    cfg = data_config("tiny", tmp_path / "out", f"--raw_dir={raw}", "--category=Tiny")
    folder = build_dataset(cfg)
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["items_without_metadata"] == ["2", "4"]
    out = capsys.readouterr().out
    assert f"2 of 5 items have no entry in {raw / 'Tiny.item.json'}: written without text" in out
    assert load_items(folder, "tiny")["2"] == {}


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--interests.backend=keyword", "--interests.backend: unknown value 'keyword'"),
        ("--interests.stride=0", "--interests.stride: must be at least 1, got 0"),
        ("--embeddings.kind=sasrek", "--embeddings.kind: unknown value 'sasrek'"),
    ],
)
def test_bad_values_stop_data_process_before_any_file_is_written(
    tmp_path: Path, arg: str, message: str
) -> None:
    out = data_process(f"--out_dir={tmp_path / 'out'}", arg)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()

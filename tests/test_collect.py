"""experiments/collect.py on hand-written run folders: means, spreads, the paired comparison, and
which files are copied for committing."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from experiments import collect

METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10")


def fake_run(runs: Path, name: str, ndcg10: float, seconds: float) -> None:
    run = runs / name
    run.mkdir(parents=True)
    test = {m: ndcg10 for m in METRICS} | {"best_valid_ndcg@10": ndcg10 + 0.01, "users": 10}
    (run / "test_metrics.json").write_text(json.dumps(test))
    log = [{"epoch": 0, "seconds": seconds, "valid_seconds": 6.0}, {"stage": "tokenizer"}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    (run / "config.yaml").write_text("seed: 1\nnum_beams: 20\n")
    (run / "last.pt").write_bytes(b"checkpoint")


def test_table_numbers_and_copied_files(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base, new, worse = [0.030, 0.034, 0.032], [0.036, 0.037, 0.038], [0.024, 0.025, 0.026]
    for seed, (b, n, w) in enumerate(zip(base, new, worse, strict=True), start=1):
        fake_run(runs, f"etegrec-s{seed}", b, 54.0)
        fake_run(runs, f"kw-simple-s{seed}", n, 114.0)
        fake_run(runs, f"kw-stale-s{seed}", w, 114.0)
    for seed in (1, 2):  # skip-history figures on only two of etegrec's three seeds
        skip = {"recall@10": 0.05, "ndcg@10": 0.04 + seed / 1000, "num_beams": 20}
        (runs / f"kw-simple-s{seed}" / collect.SKIP_FILE).write_text(json.dumps(skip))
    (runs / "kw-simple-s3" / collect.SKIP_FILE).write_text(json.dumps(skip))
    (runs / "etegrec-s1" / collect.SKIP_FILE).write_text(json.dumps(skip))
    for seed, beams in ((1, 50), (2, 20), (3, 20)):  # seed 1 evaluated with other beams
        skipped = skip | {"num_beams": beams}
        (runs / f"kw-stale-s{seed}" / collect.SKIP_FILE).write_text(json.dumps(skipped))
    none_file = collect.VIEW_FILES["no_interests_ndcg@10"]
    for seed in (1, 2, 3):  # kw-simple ranked without its interests, seed 3 over part of the split
        view = {"ndcg@10": 0.02 + seed / 1000, "num_beams": 20, "max_eval_users": 100 * (seed == 3)}
        (runs / f"kw-simple-s{seed}" / none_file).write_text(json.dumps(view))
        view = {"ndcg@10": 0.014 + seed / 1000, "num_beams": 20}
        (runs / f"kw-stale-s{seed}" / none_file).write_text(json.dumps(view))
    sasrec = {"test": {m: 0.06 for m in METRICS}, "valid": {"ndcg@10": 0.07}, "seconds": 60}
    sasrec["test_skip_history"] = {"recall@10": 0.08, "ndcg@10": 0.07}
    (runs / "sasrec-s1.json").write_text(json.dumps(sasrec))
    collect.main([f"--runs={runs}", f"--out={tmp_path / 'out'}", "--tag=t"])

    summary = json.loads((tmp_path / "out" / "t.json").read_text())
    kw = summary["kw-simple"]
    assert kw["ndcg@10"]["mean"] == pytest.approx(statistics.fmean(new))
    assert kw["ndcg@10"]["std"] == pytest.approx(statistics.stdev(new))
    assert kw["train_minutes"]["mean"] == pytest.approx(2.0)  # (114 + 6) s
    cmp = kw["vs_baseline_ndcg@10"]
    diffs = [n - b for b, n in zip(base, new, strict=True)]
    assert cmp["mean_diff"] == pytest.approx(statistics.fmean(diffs))
    assert cmp["diffs"] == pytest.approx(diffs)  # what the plot's paired panel draws
    spread = max(statistics.stdev(base), statistics.stdev(new))
    assert cmp["seed_spread"] == pytest.approx(spread)  # the plot's 2σ band is the verdict's
    assert cmp["exceeds_2x_seed_std"] is (statistics.fmean(diffs) > 2 * statistics.stdev(base))
    assert (
        summary["sasrec"]["ndcg@10"]["std"] == 0.0
        and "vs_baseline_ndcg@10" not in summary["sasrec"]
    )

    assert kw["skip_ndcg@10"]["mean"] == pytest.approx(statistics.fmean([0.041, 0.042, 0.042]))
    assert summary["sasrec"]["skip_ndcg@10"]["mean"] == 0.07
    assert "skip_ndcg@10" not in summary["etegrec"]  # one seed of three: no mean of a subset
    assert "skip_ndcg@10" not in summary["kw-stale"]  # made with other beams: not comparable

    per_seed = summary["kw-simple"]["per_seed"]
    without = [per_seed[s].get("no_interests_ndcg@10") for s in ("1", "2", "3")]
    assert without == [0.021, 0.022, None]
    assert "no_interests_ndcg@10" not in kw  # seed 3's is not comparable: no mean of a subset
    assert summary["kw-stale"]["no_interests_ndcg@10"]["mean"] == pytest.approx(0.016)
    assert "| no_interests_ndcg@10 |" in (tmp_path / "out" / "t.md").read_text()

    copied = tmp_path / "out" / "t"
    assert sorted(p.name for p in (copied / "kw-simple-s2").iterdir()) == sorted(
        (*collect.SMALL_FILES, collect.SKIP_FILE, none_file)
    )
    assert sorted(p.name for p in (copied / "etegrec-s2").iterdir()) == sorted(collect.SMALL_FILES)
    assert (copied / "sasrec-s1.json").exists()
    table = (tmp_path / "out" / "t.md").read_text()
    assert "| kw-simple | 3 |" in table
    assert summary["kw-stale"]["vs_baseline_ndcg@10"]["below_2x_seed_std"] is True
    assert "-0.0070 (-21.9%) ± 0.0017 **worse, > 2σ**" in table


def item_head_run(runs: Path, name: str, ndcg10: float, files: dict[str, dict]) -> Path:
    """A finished run with an item head trained at weight 1 (test NDCG@10 ``ndcg10``, best valid
    0.07, its skip-history pass inside test_metrics.json) and evaluate.py's ``files``."""
    fake_run(runs, name, ndcg10, 60.0)
    run = runs / name
    test = json.loads((run / "test_metrics.json").read_text())
    test |= {"best_valid_ndcg@10": 0.07, "skip_history": {"recall@10": 0.5, "ndcg@10": 0.5}}
    (run / "test_metrics.json").write_text(json.dumps(test))
    (run / "config.yaml").write_text("num_beams: 20\nitem_head: true\nitem_score_weight: 1.0\n")
    for file, metrics in files.items():
        (run / file).write_text(json.dumps(metrics | {"num_beams": 20}))
    return run


def test_item_head_runs_count_at_their_valid_chosen_weight(tmp_path: Path) -> None:
    """A run that chose its weight itself (item_weights.json) counts as trained; an older one gets
    the same rule from evaluate.py's valid passes, and its test pass, skip-history and interest
    views at that weight (never the trained weight's); without a test pass at the chosen weight,
    or when its own weight wins a tie, it stays at the trained weight."""
    runs = tmp_path / "runs"
    chose = item_head_run(runs, "new-s1", 0.05, {})
    (chose / "item_weights.json").write_text(
        json.dumps({"valid_ndcg@10": {"1": 0.07, "4": 0.08}, "chosen": 4.0})
    )
    (chose / "config.yaml").write_text("num_beams: 20\nitem_head: true\nitem_score_weight: 4.0\n")
    at = {m: 0.06 for m in METRICS}
    item_head_run(
        runs,
        "old-s1",
        0.04,
        {
            "eval_valid_w4_metrics.json": {"ndcg@10": 0.08},
            "eval_valid_w8_metrics.json": {"ndcg@10": 0.075},
            "eval_valid_w16_metrics.json": {"ndcg@10": 0.09, "max_eval_users": 10},  # not whole
            "eval_test_w4_metrics.json": at,
            "eval_test_w8_metrics.json": {m: 0.07 for m in METRICS},
            "eval_test_interests-none_w4_metrics.json": {"ndcg@10": 0.055},
            "eval_test_interests-none_metrics.json": {"ndcg@10": 0.03},
        },
    )
    item_head_run(runs, "untested-s1", 0.04, {"eval_valid_w2_metrics.json": {"ndcg@10": 0.09}})
    item_head_run(runs, "tie-s1", 0.04, {"eval_valid_w2_metrics.json": {"ndcg@10": 0.07}})
    figure = tmp_path / "t.png"
    args = [f"--runs={runs}", f"--out={tmp_path / 'out'}", "--tag=t", "--baseline=new"]
    collect.main([*args, f"--plot={figure}"])
    assert figure.read_bytes().startswith(b"\x89PNG")  # the paired panel drew each variant

    summary = json.loads((tmp_path / "out" / "t.json").read_text())
    new, old = summary["new"]["per_seed"]["1"], summary["old"]["per_seed"]["1"]
    assert (new["ndcg@10"], new["item_weight"], new["best_valid_ndcg@10"]) == (0.05, 4.0, 0.08)
    assert new["skip_ndcg@10"] == 0.5  # train.py's skip pass ranked at the chosen weight
    assert (old["ndcg@10"], old["item_weight"], old["best_valid_ndcg@10"]) == (0.06, 4.0, 0.08)
    assert old["no_interests_ndcg@10"] == 0.055
    assert "skip_ndcg@10" not in old  # only at weight 1, which is not this row's ranking
    untested = summary["untested"]["per_seed"]["1"]
    assert untested["ndcg@10"] == 0.04 and "item_weight" not in untested
    tie = summary["tie"]["per_seed"]["1"]
    assert (tie["ndcg@10"], tie["item_weight"]) == (0.04, 1.0)
    assert "- old: s1: 0.0600 (w4)" in (tmp_path / "out" / "t.md").read_text()
    copied = {p.name for p in (tmp_path / "out" / "t" / "old-s1").iterdir()}
    assert {"eval_valid_w4_metrics.json", "eval_test_interests-none_w4_metrics.json"} <= copied
    assert "item_weights.json" in {p.name for p in (tmp_path / "out" / "t" / "new-s1").iterdir()}


def test_a_missing_runs_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--runs=.*nowhere: no such folder"):
        collect.main([f"--runs={tmp_path / 'nowhere'}", f"--out={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()

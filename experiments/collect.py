"""Collect experiment run folders into the results table, a JSON file and a plot.

    python experiments/collect.py --runs=runs/exp --out=results [--baseline=etegrec]

Writes ``OUT/<tag>.md`` (the table), ``OUT/<tag>.json`` (every number) and ``OUT/<tag>/`` (each
run's config, metrics log and test metrics; never checkpoints).

Run folders are named ``<variant>-s<seed>`` (experiments/run_table.sh does this). For each
variant: mean and standard deviation over seeds of the test metrics, the best validation NDCG@10
and the training time, plus every seed's value; and a paired comparison with the baseline variant
over the seeds both have (mean difference, its standard deviation, and whether the mean gain
exceeds twice the seed-to-seed spread). The SASRec rows come from ``sasrec-s<seed>.json`` files
written by the same script (its test metrics).

A run with an item head counts at the item-head weight chosen on valid, as train.py's
``--item_weight_grid`` does (``item_weights.json``; its test metrics are at that weight). A run
trained before that key existed gets the same rule applied to evaluate.py's valid passes at each
weight (``eval_valid_wW_metrics.json``; its own weight scored its best valid NDCG@10), and its
metrics come from the test pass at the chosen weight (``eval_test_wW...``, its skip-history and
interest views too). The per-seed list names each run's weight.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from config import split_argv
from model.checkpoint import ITEM_WEIGHTS_FILE, eval_label, eval_metrics_file
from model.report import epoch_records, record_seconds

METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10")
NAME = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)$")


SMALL_FILES = ("config.yaml", "metrics.jsonl", "test_metrics.json")
WEIGHT_FILE = re.compile(r"^eval_(valid|test)[\w.-]*?_w(?P<weight>[\d.]+)_metrics\.json$")
# The test ranking with each user's history left out (SASRec's metrics file: test_skip_history):
# in test_metrics.json since train.py reports it, for older runs from evaluate.py
# --skip_history=true; a variant with a seed that has neither gets no such column
SKIP_FILE = eval_metrics_file(eval_label("test", skip_history=True))
SKIP_METRICS = {"skip_recall@10": "recall@10", "skip_ndcg@10": "ndcg@10"}
# A fusing run's test NDCG@10 from evaluate.py --eval_interests=none|shuffled: how much of its
# accuracy rests on the interests it reads (without them; with another user's)
# An item-head run's test NDCG@10 ranked by its codes alone and by its item head alone
# (evaluate.py --rank_by=codes|items): what each half of its ranking is worth
VIEW_FILES = {
    "no_interests_ndcg@10": eval_metrics_file(eval_label("test", interests="none")),
    "shuffled_interests_ndcg@10": eval_metrics_file(eval_label("test", interests="shuffled")),
    "codes_only_ndcg@10": eval_metrics_file(eval_label("test", rank_by="codes")),
    "items_only_ndcg@10": eval_metrics_file(eval_label("test", rank_by="items")),
}
INTEREST_VIEWS = {"no_interests_ndcg@10": "none", "shuffled_interests_ndcg@10": "shuffled"}


def training_seconds(run_dir: Path) -> float:
    """Seconds of the training epochs and their validation passes (tokenizer pretraining and the
    test pass are not logged with a duration)."""
    return sum(record_seconds(r) for r in epoch_records(run_dir))


def finished(runs: Path) -> list[tuple[Path, str, int]]:
    """(path, variant, seed) of each finished run folder (it has test metrics) and each
    baseline's metrics file ``<variant>-s<seed>.json`` under ``runs``."""
    out = []
    for path in sorted(runs.iterdir()):
        match = NAME.match(path.stem)
        done = (path / "test_metrics.json").exists() if path.is_dir() else path.suffix == ".json"
        if match and done:
            out.append((path, match["variant"], int(match["seed"])))
    return out


def copy_small_files(runs: Path, dest: Path) -> None:
    """Each run's config, metrics log and test metrics (not its checkpoints), for committing."""
    for path, _, _ in finished(runs):
        if path.is_dir():
            (dest / path.name).mkdir(parents=True, exist_ok=True)
            extra = [n for n in (SKIP_FILE, *VIEW_FILES.values()) if (path / n).exists()]
            extra += sorted(
                p.name
                for p in path.iterdir()
                if WEIGHT_FILE.match(p.name) or p.name == ITEM_WEIGHTS_FILE
            )
            for name in (*SMALL_FILES, *extra):
                shutil.copy(path / name, dest / path.name / name)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / path.name)


def evaluated(run_dir: Path, name: str, beams: int) -> dict:
    """Test metrics evaluate.py wrote to ``name``, if made as the run's test pass was: the run's
    ``beams`` and the whole split (else they are not comparable, and left out)."""
    path = run_dir / name
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())
    if metrics.get("num_beams") != beams or metrics.get("max_eval_users", 0):
        print(f"note: {path} ignored (not {beams} beams over the whole split)")
        return {}
    return metrics


def chosen_weight(path: Path, cfg: dict, test: dict) -> tuple[float, float] | None:
    """``(weight, valid NDCG@10 at it)`` chosen on valid for an item-head run (see the module
    docstring); None without an item head or with fewer than two weights scored on valid."""
    if not cfg.get("item_head"):
        return None
    if (path / ITEM_WEIGHTS_FILE).exists():
        grid = json.loads((path / ITEM_WEIGHTS_FILE).read_text())
        return grid["chosen"], grid["valid_ndcg@10"][f"{grid['chosen']:g}"]
    own = float(cfg.get("item_score_weight", 1.0))
    valid = {own: test["best_valid_ndcg@10"]}
    for p in path.glob(eval_metrics_file("valid_w*")):  # the plain valid ranking at weight W
        scored = evaluated(path, p.name, cfg.get("num_beams"))
        if scored:
            valid[float(WEIGHT_FILE.match(p.name)["weight"])] = scored["ndcg@10"]
    if len(valid) < 2:
        return None
    best = max(valid[w] for w in sorted(valid))
    chosen = min(w for w in valid if valid[w] == best)  # ties: the smaller, as the grid's order
    return chosen, valid[chosen]


def run_row(path: Path) -> dict:
    """A finished run's row: its test metrics, at its valid-chosen item-head weight if it has one
    (module docstring), with the skip-history and view figures made at that same ranking."""
    test = json.loads((path / "test_metrics.json").read_text())
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    beams = cfg.get("num_beams")
    row = {"best_valid_ndcg@10": test["best_valid_ndcg@10"]}
    at = None  # the weight suffix of evaluate.py's files at the chosen weight (None: the run's own)
    picked = chosen_weight(path, cfg, test)
    if picked and picked[0] != float(cfg.get("item_score_weight", 1.0)):
        name = eval_metrics_file(eval_label("test", item_score_weight=picked[0]))
        moved = evaluated(path, name, beams)
        if moved:
            test, at = moved, picked[0]
        else:
            print(f"note: {path}: no {name}; its row stays at the trained weight")
            picked = None
    if picked:
        row["item_weight"], row["best_valid_ndcg@10"] = picked
    row.update({k: test[k] for k in METRICS})
    row["train_minutes"] = training_seconds(path) / 60
    skip_name = eval_metrics_file(eval_label("test", skip_history=True, item_score_weight=at))
    skip = (at is None and test.get("skip_history")) or evaluated(path, skip_name, beams)
    row.update({k: skip[m] for k, m in SKIP_METRICS.items() if m in skip})
    for key, name in VIEW_FILES.items():
        if key in INTEREST_VIEWS:  # made at the ranking's weight; codes or items alone have none
            name = eval_metrics_file(
                eval_label("test", interests=INTEREST_VIEWS[key], item_score_weight=at)
            )
        view = evaluated(path, name, beams)
        if view:
            row[key] = view["ndcg@10"]
    return row


def load_runs(runs: Path) -> dict[str, dict[int, dict]]:
    table: dict[str, dict[int, dict]] = {}
    for path, variant, seed in finished(runs):
        if path.is_dir():
            row = run_row(path)
        else:  # a baseline's metrics file (SASRec)
            data = json.loads(path.read_text())
            row = {k: data["test"][k] for k in METRICS if k in data["test"]}
            row["best_valid_ndcg@10"] = data["valid"].get("ndcg@10")
            row["train_minutes"] = data.get("seconds", 0.0) / 60
            skip = data.get("test_skip_history", {})
            row.update({k: skip[m] for k, m in SKIP_METRICS.items() if m in skip})
        table.setdefault(variant, {})[seed] = row
    return table


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(table: dict[str, dict[int, dict]], baseline: str) -> dict:
    out = {}
    base = table.get(baseline, {})
    for variant, seeds in table.items():
        keys = [
            k
            for k in (*METRICS, *SKIP_METRICS, *VIEW_FILES, "best_valid_ndcg@10", "train_minutes")
            if all(k in row for row in seeds.values())  # a mean over some seeds misleads
        ]
        summary = {"seeds": sorted(seeds), "per_seed": seeds}
        for k in keys:
            vals = [seeds[s][k] for s in sorted(seeds) if seeds[s].get(k) is not None]
            if vals:
                summary[k] = dict(zip(("mean", "std"), mean_std(vals), strict=True))
        common = sorted(set(seeds) & set(base))
        if variant != baseline and len(common) >= 2:
            diffs = [seeds[s]["ndcg@10"] - base[s]["ndcg@10"] for s in common]
            d_mean, d_std = mean_std(diffs)
            spread = max(
                summary["ndcg@10"]["std"], mean_std([base[s]["ndcg@10"] for s in common])[1]
            )
            summary["vs_baseline_ndcg@10"] = {
                "seeds": common,
                "diffs": diffs,  # per seed of ``seeds``
                "mean_diff": d_mean,
                "std_diff": d_std,
                "relative": d_mean / statistics.fmean(base[s]["ndcg@10"] for s in common),
                "seed_spread": spread,  # the larger seed std of the two, over ``seeds``
                "exceeds_2x_seed_std": d_mean > 2 * spread,  # a gain beyond the spread
                "below_2x_seed_std": d_mean < -2 * spread,  # a loss beyond it
            }
        out[variant] = summary
    return out


def markdown(summary: dict, baseline: str) -> str:
    extra = [k for k in (*SKIP_METRICS, *VIEW_FILES) if any(k in s for s in summary.values())]
    cols = [*METRICS, *extra, "best_valid_ndcg@10", "train_minutes"]
    head = "| variant | seeds | " + " | ".join(cols) + f" | NDCG@10 vs {baseline} |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for variant, s in summary.items():
        cells = []
        for c in cols:
            if c in s:
                fmt = ".1f" if c == "train_minutes" else ".4f"
                cells.append(f"{s[c]['mean']:{fmt}} ± {s[c]['std']:{fmt}}")
            else:
                cells.append("–")
        cmp = s.get("vs_baseline_ndcg@10")
        verdict = (
            f"{cmp['mean_diff']:+.4f} ({cmp['relative']:+.1%}) ± {cmp['std_diff']:.4f}"
            + (
                " **> 2σ**"
                if cmp["exceeds_2x_seed_std"]
                else " **worse, > 2σ**"
                if cmp["below_2x_seed_std"]
                else " (within spread)"
            )
            if cmp
            else "–"
        )
        lines.append(f"| {variant} | {len(s['seeds'])} | " + " | ".join(cells) + f" | {verdict} |")
    lines.append("")
    lines.append("Per-seed test NDCG@10:")
    lines.append("")
    for variant, s in summary.items():
        vals = ", ".join(
            f"s{seed}: {row['ndcg@10']:.4f}"
            + (f" (w{row['item_weight']:g})" if "item_weight" in row else "")
            for seed, row in sorted(s["per_seed"].items())
        )
        lines.append(f"- {variant}: {vals}")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, title: str, baseline: str) -> None:
    """Left: each variant's seeds and mean ± std (the axis is zoomed: it does not start at 0).
    Right: each seed's paired difference from ``baseline``, with the mean and the 2σ band of
    the seed spread that the table's verdict uses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, (left, right) = plt.subplots(1, 2, figsize=(2.4 * len(names) + 4, 4.2))
    for i, name in enumerate(names):
        vals = [row["ndcg@10"] for row in summary[name]["per_seed"].values()]
        left.errorbar(
            i,
            statistics.fmean(vals),
            yerr=summary[name]["ndcg@10"]["std"],
            fmt="_",
            ms=24,
            color="tab:blue",
            capsize=8,
        )
        left.scatter([i] * len(vals), vals, color="k", s=12, zorder=3)
    left.set_xticks(range(len(names)), names, rotation=20, ha="right")
    left.set_ylabel("test NDCG@10 (mean ± std; dots = seeds)")
    left.set_title(title, fontsize=10)
    for i, name in enumerate(names):
        cmp = summary[name].get("vs_baseline_ndcg@10")
        if not cmp:
            continue
        diffs, spread = cmp["diffs"], cmp["seed_spread"]
        right.add_patch(
            plt.Rectangle((i - 0.3, -2 * spread), 0.6, 4 * spread, color="tab:gray", alpha=0.25)
        )
        right.scatter([i] * len(diffs), diffs, color="k", s=12, zorder=3)
        right.plot([i - 0.3, i + 0.3], [cmp["mean_diff"]] * 2, color="tab:red")
    right.axhline(0, color="k", lw=0.8)
    right.set_xticks(range(len(names)), names, rotation=20, ha="right")
    right.set_xlim(-0.5, len(names) - 0.5)
    right.set_ylabel(f"paired difference from {baseline}")
    right.set_title("per seed (dots), mean (red), ±2σ of the seed spread (grey)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    args = split_argv(argv)
    runs, out = Path(args.get("runs", "runs/exp")), Path(args.get("out", "results"))
    baseline = args.get("baseline", "etegrec")
    if not runs.is_dir():
        sys.exit(f"error: --runs={runs}: no such folder (run folders named <variant>-s<seed>)")
    summary = summarise(load_runs(runs), baseline)
    if not summary:
        sys.exit(f"error: no finished runs named <variant>-s<seed> under {runs}")
    out.mkdir(parents=True, exist_ok=True)
    tag = args.get("tag", runs.name)
    (out / f"{tag}.json").write_text(json.dumps(summary, indent=1))
    copy_small_files(runs, out / tag)
    text = markdown(summary, baseline)
    (out / f"{tag}.md").write_text(text)
    if "plot" in args:
        plot(summary, Path(args["plot"]), args.get("title", tag), baseline)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

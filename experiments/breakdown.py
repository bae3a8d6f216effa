r"""Where one model wins and another loses: test NDCG@10 and Recall@10 per group of rows.

    python experiments/breakdown.py --data=data/scientific18 --name=scientific18 \
        --models="etegrec=runs/base/cpu-long-s*/eval_test_ranks.json;\
sasrec=runs/base/sasrec-s*.ranks.json" --out=results/breakdown_base

Each model is ``label=glob``; the files it matches are its seeds, each holding every test row's
target rank (``evaluate.py --save_ranks=true``; ``experiments/sasrec_seed.py --ranks_out=...``).
Rows are grouped by the target's purchases in the train split (``data/popularity.py``) and by
history length; every row falls in one group of each. Per group and model: the mean and spread
over seeds, and the ratio to the first model. Writes ``OUT.md`` and ``OUT.json``.
"""

from __future__ import annotations

import glob
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from config import ConfigError, split_argv
from data.jsonl import DataError
from data.popularity import POPULARITY, by_emb_id, group_masks, train_counts
from data.splits import load_emb_map, load_split
from model.metrics import ranking_metrics, read_ranks

# (label, lowest, highest) history length; a test row of 5-core data has 4+ items of history
HISTORY = (("1-4", 1, 4), ("5", 5, 5), ("6-7", 6, 7), ("8-10", 8, 10), ("11+", 11, None))
METRICS = ("ndcg@10", "recall@10")


def row_features(folder: Path, name: str) -> dict[str, tuple[np.ndarray, tuple]]:
    """Per feature of a test row (its target's and its last history item's train purchases,
    its history length): the row values and the groups to split them into. A test row's last
    history item is the user's valid target, so it is rarer in train than a valid row's is."""
    emb_map = load_emb_map(folder, name)
    counts = by_emb_id(train_counts(folder, name), emb_map)
    rows = load_split(folder, name, "test", emb_map=emb_map)
    targets = [emb_map[r["target_id"]] for r in rows]
    last = [emb_map[r["inter_history"][-1]] for r in rows]
    return {
        "target popularity (train purchases)": (counts[targets], POPULARITY),
        "last history item's popularity (train purchases)": (counts[last], POPULARITY),
        "history length": (np.array([len(r["inter_history"]) for r in rows]), HISTORY),
    }


def seed_ranks(pattern: str, n_rows: int) -> list[tuple[str, np.ndarray]]:
    """``(file, ranks in split order)`` per file matching ``pattern``; each must rank every row."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise ConfigError(f"no file matches '{pattern}'")
    out = []
    for file in files:
        split, rows, ranks = read_ranks(Path(file))
        if split != "test":
            raise ConfigError(f"{file}: ranks the {split} split, not test")
        if len(rows) != n_rows:
            raise ConfigError(f"{file}: ranks {len(rows)} rows, the test split has {n_rows}")
        if not np.array_equal(np.sort(rows), np.arange(n_rows)):
            raise ConfigError(f"{file}: its rows are not the test split's rows 0..{n_rows - 1}")
        ordered = np.empty(n_rows, dtype=np.int64)
        ordered[rows] = ranks
        out.append((file, ordered))
    return out


def breakdown(features: dict, models: dict[str, list[np.ndarray]]) -> list[dict]:
    """One record per (feature, group): its row count and each model's metrics over seeds."""
    table = []
    for feature, (values, groups) in features.items():
        masks = group_masks(values, groups)
        if not np.logical_or.reduce(list(masks.values())).all():
            raise ConfigError(f"the {feature} groups {[g[0] for g in groups]} miss some rows")
        for label, mask in ({"all": np.ones(len(values), dtype=bool)} | masks).items():
            record = {"feature": feature, "group": label, "rows": int(mask.sum())}
            for model, seeds in models.items():
                per_seed = [ranking_metrics(ranks[mask], [10]) for ranks in seeds]
                for metric in METRICS:
                    vals = [m[metric] for m in per_seed]
                    record[f"{model} {metric}"] = statistics.mean(vals)
                    record[f"{model} {metric} std"] = statistics.stdev(vals) if len(vals) > 1 else 0
            table.append(record)
    return table


def markdown(table: list[dict], models: dict[str, list], files: dict[str, list[str]]) -> str:
    """The tables of ``breakdown``, NDCG@10 only, each model also as a ratio to the first."""
    first, *others = models
    head = ["group", "rows"] + [f"{m} NDCG@10" for m in models] + [f"{m} / {first}" for m in others]
    lines = []
    for feature in dict.fromkeys(r["feature"] for r in table):
        lines += [f"\n### by {feature}\n", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in (r for r in table if r["feature"] == feature):
            cells = [r["group"], f"{r['rows']:,}"]
            cells += [f"{r[f'{m} ndcg@10']:.4f} ± {r[f'{m} ndcg@10 std']:.4f}" for m in models]
            base = r[f"{first} ndcg@10"]
            cells += [f"{r[f'{m} ndcg@10'] / base:.2f}" if base else "–" for m in others]
            lines.append("| " + " | ".join(cells) + " |")
    seeds = "; ".join(f"{m}: {len(f)} seed(s) ({', '.join(f)})" for m, f in files.items())
    return f"# Test NDCG@10 by group (mean ± std over seeds)\n\nFiles: {seeds}\n" + "\n".join(lines)


def main(argv: list[str]) -> None:
    args = split_argv(argv)
    missing = {"data", "name", "models", "out"} - set(args)
    if missing:
        raise ConfigError(f"missing --{', --'.join(sorted(missing))}")
    features = row_features(Path(args["data"]), args["name"])
    n_rows = len(next(iter(features.values()))[0])
    models, files = {}, {}
    for spec in args["models"].split(";"):
        label, sep, pattern = spec.partition("=")
        if not sep:
            raise ConfigError(f"--models: '{spec}' is not label=glob")
        found = seed_ranks(pattern, n_rows)
        files[label] = [f for f, _ in found]
        models[label] = [r for _, r in found]
    table = breakdown(features, models)
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"files": files, "table": table}, indent=1))
    text = markdown(table, models, files)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")

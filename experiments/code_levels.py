r"""Where a trained run loses a target, level by level of its code, per target-popularity group.

    python experiments/code_levels.py --ckpt=runs/base/cpu-long-s1 [--data_dir=data/] \
        --out=results/code_levels/cpu-long-s1

Teacher-forced on the test split: at each code level, the target's rank among the codes the trie
allows after its true prefix (0 = the model's first choice), so one can tell a model that picks
the wrong cluster (first level) from one that finds the cluster but prefers a sibling. Also the
share of the variance of the items' log popularity that their first code explains: codes that
sort items by popularity put rare items in clusters that are rarely right. Groups as in
``data/popularity.py``. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from config import ConfigError, split_argv
from data.batches import make_batch
from data.jsonl import DataError
from data.paths import dataset_dir, resolve
from data.popularity import POPULARITY, by_emb_id, group_masks, train_counts
from model.checkpoint import CheckpointError, read_config
from model.item_codes import PrefixTrie
from model.recommender import Recommender


@torch.no_grad()
def level_ranks(rec: Recommender, data, batch_size: int = 512) -> np.ndarray:
    """``[rows, depth]``: each test target's code rank among the valid codes after its prefix."""
    rec.model.eval()
    trie: PrefixTrie = rec.trie
    out = []
    for start in range(0, len(data.target), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data.target)))
        batch = make_batch(data, rows, rec.item_codes, rec.features)
        logits = rec.model(batch, with_items=False)["logits"]
        codes, node, ranks = batch.target_codes, torch.zeros(len(rows), dtype=torch.long), []
        for level, table in enumerate(trie.child):
            valid = table[node] >= 0
            scores = logits[:, level].masked_fill(~valid, float("-inf"))
            target = scores.gather(1, codes[:, level : level + 1])
            ranks.append(((scores > target) & valid).sum(1))
            node = table[node, codes[:, level]].long()
        out.append(torch.stack(ranks, 1))
    return torch.cat(out).numpy()


def explained_by_first_code(first_codes: np.ndarray, values: np.ndarray) -> float:
    """Share of the variance of ``values`` explained by the group means of ``first_codes``."""
    means = np.zeros_like(values, dtype=np.float64)
    for code in np.unique(first_codes):
        means[first_codes == code] = values[first_codes == code].mean()
    return float(1 - ((values - means) ** 2).sum() / ((values - values.mean()) ** 2).sum())


def main(argv: list[str]) -> None:
    args = split_argv(argv)
    if not {"ckpt", "out"} <= set(args):
        raise ConfigError("--ckpt=RUN_DIR and --out=FILE_STEM are required")
    run_dir = resolve(args["ckpt"])
    saved = read_config(run_dir)
    folder = dataset_dir(args.get("data_dir", saved["data_dir"]), saved["dataset"])
    rec = Recommender.load(run_dir, folder.parent)
    counts = by_emb_id(train_counts(folder, saved["dataset"]), rec.emb_map)
    data = rec.split_tensors(folder, "test")
    ranks = level_ranks(rec, data)
    popularity = counts[data.target]
    siblings = [float((t >= 0).sum(1).float().mean()) for t in rec.trie.child]
    groups = []
    for label, mask in ({"all": popularity >= 0} | group_masks(popularity, POPULARITY)).items():
        groups.append(
            {
                "group": label,
                "rows": int(mask.sum()),
                "median_rank": np.median(ranks[mask], 0).tolist() if mask.any() else [],
                "top1_share": (ranks[mask] == 0).mean(0).round(4).tolist() if mask.any() else [],
            }
        )
    n_items = len(rec.item_codes) - 1
    item_pop = np.log1p(counts[1 : n_items + 1])
    first = rec.item_codes[1:, 0].numpy()
    result = {
        "run": str(run_dir),
        "valid_codes_per_prefix": siblings,
        "popularity_variance_explained_by_first_code": explained_by_first_code(first, item_pop),
        "groups": groups,
    }
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# Target code rank per level, {run_dir.name} (test, teacher-forced)\n",
        "Valid codes per prefix, by level: " + ", ".join(f"{s:.1f}" for s in siblings),
        "Share of the items' log-popularity variance explained by their first code: "
        f"{result['popularity_variance_explained_by_first_code']:.3f}\n",
        "| target's train purchases | rows | median rank per level | top-1 share per level |",
        "|---|---|---|---|",
    ]
    for g in groups:
        median = ", ".join(f"{r:g}" for r in g["median_rank"])
        top1 = ", ".join(f"{r:.2f}" for r in g["top1_share"])
        lines.append(f"| {g['group']} | {g['rows']:,} | {median} | {top1} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError, CheckpointError) as err:
        sys.exit(f"error: {err}")

"""Learning curves of several runs in one figure: training code loss and valid NDCG@10 per
recommender epoch (joint recommender epochs, then finetune epochs), with SASRec's valid NDCG@10 as
a line, so a reader sees at a glance whether a run had levelled off when it stopped.

    python experiments/plot_curves.py --runs=results/base/cpu-long-s1,results/base/tiger-cpu-s1 \
        --sasrec=results/base/sasrec-s1.json --out=asset/curves_base.png [--title=TEXT]

Reads each run folder's ``metrics.jsonl``; tokenizer epochs are left out (they train the other
model), so the x axis counts the epochs that trained the recommender.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from config import split_argv

Curve = list[tuple[int, float]]


def recommender_curve(run_dir: Path) -> tuple[Curve, Curve, int]:
    """(epoch, code loss) and (epoch, valid NDCG@10) over recommender and finetune epochs, and the
    index of the first finetune epoch."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses, valid, finetune_start, n = [], [], -1, 0
    for r in records:
        if r.get("mode") not in ("recommender", "finetune"):
            continue
        if r["mode"] == "finetune" and finetune_start < 0:
            finetune_start = n
        losses.append((n, r.get("code", r["loss"])))
        if r.get("valid"):
            valid.append((n, r["valid"]["ndcg@10"]))
        n += 1
    return losses, valid, finetune_start


def main(argv: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = split_argv(argv)
    runs = [Path(p) for p in args["runs"].split(",")]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.2))
    for run in runs:
        losses, valid, ft = recommender_curve(run)
        (line,) = ax_loss.plot(*zip(*losses, strict=True), label=run.name)
        ax_val.plot(*zip(*valid, strict=True), marker=".", color=line.get_color(), label=run.name)
        if ft >= 0:
            ax_val.axvline(ft, color=line.get_color(), linestyle=":", alpha=0.6)
    if "sasrec" in args:
        sasrec = json.loads(Path(args["sasrec"]).read_text())
        ax_val.axhline(sasrec["valid"]["ndcg@10"], color="k", linestyle="--", label="SASRec")
    ax_loss.set(xlabel="recommender epoch (joint, then finetune)", ylabel="train code loss")
    ax_val.set(
        xlabel="recommender epoch (dotted: finetune starts)", ylabel="valid NDCG@10 (full ranking)"
    )
    ax_loss.legend(fontsize=8)
    ax_val.legend(fontsize=8)
    fig.suptitle(args.get("title", "amazon18-scientific"))
    fig.tight_layout()
    out = Path(args.get("out", "curves.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])

r"""Learning curves of several runs in one figure: training code loss and valid NDCG@10 per
recommender epoch (joint recommender epochs, then finetune epochs), with SASRec's valid NDCG@10 as
a line, so a reader sees at a glance whether a run had levelled off when it stopped.

    python experiments/plot_curves.py --runs=results/base/cpu-long-s1,results/base/tiger-cpu-s1 \
        --sasrec=results/base/sasrec-s1.json --out=asset/curves_base.png [--title=TEXT] \
        [--x=minutes [--budget_minutes=150]]

Reads each run folder's ``metrics.jsonl``; tokenizer epochs are left out (they train the other
model), so the x axis counts the epochs that trained the recommender. ``--x=minutes`` puts each
point at the run's training minutes so far instead (every epoch, tokenizer epochs included, and
its validation pass: what ``collect.py`` reports as ``train_minutes``), to show where a run stood
at a time budget, drawn as a vertical line with ``--budget_minutes``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from config import split_argv
from model.report import epoch_records, record_seconds

Curve = list[tuple[float, float]]


def recommender_curve(run_dir: Path, minutes: bool = False) -> tuple[Curve, Curve, float]:
    """(x, code loss) and (x, valid NDCG@10) over recommender and finetune epochs, and the x where
    finetune starts (-1: none). x is the recommender epoch, or with ``minutes`` the training
    minutes at the end of that epoch and its validation."""
    losses, valid, finetune_start, n, seconds = [], [], -1.0, 0, 0.0
    for r in epoch_records(run_dir):
        seconds += record_seconds(r)
        if r.get("mode") not in ("recommender", "finetune"):
            continue
        x = seconds / 60 if minutes else n
        if r["mode"] == "finetune" and finetune_start < 0:
            finetune_start = x
        losses.append((x, r.get("code", r["loss"])))
        if r.get("valid"):
            valid.append((x, r["valid"]["ndcg@10"]))
        n += 1
    return losses, valid, finetune_start


def main(argv: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args = split_argv(argv)
    if "runs" not in args:
        raise SystemExit("plot_curves.py: --runs=DIR[,DIR...] is required (run folders)")
    runs = [Path(p) for p in args["runs"].split(",")]
    for run in runs:
        if not (run / "metrics.jsonl").is_file():
            raise SystemExit(f"plot_curves.py: {run / 'metrics.jsonl'}: not found")
    x_axis = args.get("x", "epochs")
    if x_axis not in ("epochs", "minutes"):
        raise SystemExit(f"plot_curves.py: --x={x_axis}: choose epochs | minutes")
    minutes = x_axis == "minutes"
    if "budget_minutes" in args and not minutes:
        raise SystemExit("plot_curves.py: --budget_minutes needs --x=minutes")
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.2))
    for run in runs:
        losses, valid, ft = recommender_curve(run, minutes)
        (line,) = ax_loss.plot(*zip(*losses, strict=True), label=run.name)
        ax_val.plot(*zip(*valid, strict=True), marker=".", color=line.get_color(), label=run.name)
        if ft >= 0:
            ax_val.axvline(ft, color=line.get_color(), linestyle=":", alpha=0.6)
    if "sasrec" in args:
        sasrec = json.loads(Path(args["sasrec"]).read_text())
        ax_val.axhline(sasrec["valid"]["ndcg@10"], color="k", linestyle="--", label="SASRec")
    if "budget_minutes" in args:
        budget = float(args["budget_minutes"])
        ax_val.axvline(budget, color="tab:red", alpha=0.5, label=f"{budget:g} min budget")
    x_label = "training minutes" if minutes else "recommender epoch"
    ax_loss.set(xlabel=f"{x_label} (joint, then finetune)", ylabel="train code loss")
    ax_val.set(xlabel=f"{x_label} (dotted: finetune starts)", ylabel="valid NDCG@10 (full ranking)")
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

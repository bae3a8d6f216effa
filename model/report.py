"""What a run reports: the metric table printed after test and evaluation, and ``curves.png``."""

from __future__ import annotations

import json
from pathlib import Path

METRIC = "ndcg@10"  # the validation metric: early stopping and best checkpoints follow it


def epoch_records(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, one per (stage, epoch, mode), in training order.
    An epoch logged twice (a run killed between its metrics line and its checkpoint, before
    train.py cut such lines on resume) counts once: the last time, the one the run kept."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return list({(r.get("stage"), r.get("epoch"), r.get("mode")): r for r in records}.values())


def record_seconds(record: dict) -> float:
    """An epoch's training seconds plus its validation pass's (pretraining logs no duration)."""
    return record.get("seconds", 0.0) + record.get("valid_seconds", 0.0)


def plot_curves(run_dir: Path) -> None:
    """``curves.png``: training losses per epoch and validation NDCG@10, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r for r in epoch_records(run_dir) if "loss" in r]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in ("tokenizer", "recommender", "finetune"):
        pts = [(i, r["loss"]) for i, r in enumerate(epochs) if r["mode"] == mode]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), marker=".", label=f"{mode} epochs")
    ax_loss.set(xlabel="epoch (all stages)", ylabel="training loss", yscale="log")
    if ax_loss.lines:  # a run stopped before its first epoch has no curve to label
        ax_loss.legend()
    val = [(i, r["valid"][METRIC]) for i, r in enumerate(epochs) if r.get("valid")]
    if val:
        ax_val.plot(*zip(*val, strict=True), marker="o", color="tab:green")
    ax_val.set(xlabel="epoch (all stages)", ylabel=f"valid {METRIC}")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=100)
    plt.close(fig)


def format_table(metrics: dict, split: str) -> str:
    keys = [k for k in ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10") if k in metrics]
    head = "| split | users | " + " | ".join(keys) + " |"
    line = "|" + "---|" * (len(keys) + 2)
    row = (
        f"| {split} | {metrics.get('users', '')} | "
        + " | ".join(f"{metrics[k]:.4f}" for k in keys)
        + " |"
    )
    return "\n".join([head, line, row])

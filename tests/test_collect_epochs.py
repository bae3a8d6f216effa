"""A run's training time, in experiments/collect.py's train_minutes and on plot_curves.py's
minutes axis: an epoch logged twice in a run's metrics.jsonl (a run killed between the line and
its checkpoint, before train.py cut such lines on resume) counts once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import collect, plot_curves


def write_log(tmp_path: Path) -> Path:
    run = tmp_path / "etegrec-s1"
    run.mkdir()
    log = [
        {"stage": "joint", "epoch": 0, "mode": "tokenizer", "seconds": 10.0},
        {"stage": "joint", "epoch": 1, "mode": "recommender", "seconds": 50.0, "valid_seconds": 5},
        {"stage": "joint", "epoch": 1, "mode": "recommender", "loss": 3.0, "seconds": 40.0}
        | {"valid_seconds": 4, "valid": {"ndcg@10": 0.05}},
        {"stage": "joint", "epoch": 1, "mode": "budget", "valid_seconds": 3.0},
        {"stage": "finetune", "epoch": 1, "mode": "finetune", "loss": 2.0, "seconds": 20.0},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    return run


def test_an_epoch_logged_twice_counts_once(tmp_path: Path) -> None:
    assert collect.training_seconds(write_log(tmp_path)) == pytest.approx(10 + 40 + 4 + 3 + 20)


def test_the_minutes_axis_places_each_recommender_epoch_at_the_time_spent_so_far(
    tmp_path: Path,
) -> None:
    run = write_log(tmp_path)
    losses, valid, finetune_start = plot_curves.recommender_curve(run, minutes=True)
    # the kept recommender epoch ends after the tokenizer epoch and its own 40 + 4 s; the
    # finetune epoch after everything logged before it and its 20 s
    assert [x for x, _ in losses] == pytest.approx([54 / 60, 77 / 60])
    assert [loss for _, loss in losses] == [3.0, 2.0]
    assert valid == [(pytest.approx(54 / 60), 0.05)] and finetune_start == pytest.approx(77 / 60)
    epochs, _, start = plot_curves.recommender_curve(run)
    assert [x for x, _ in epochs] == [0, 1] and start == 1

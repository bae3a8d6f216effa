"""experiments/collect.py's training time: an epoch logged twice in a run's metrics.jsonl (a
run killed between the line and its checkpoint, before train.py cut such lines on resume) counts
once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import collect


def test_an_epoch_logged_twice_counts_once(tmp_path: Path) -> None:
    run = tmp_path / "etegrec-s1"
    run.mkdir()
    log = [
        {"stage": "joint", "epoch": 0, "mode": "tokenizer", "seconds": 10.0},
        {"stage": "joint", "epoch": 1, "mode": "recommender", "seconds": 50.0, "valid_seconds": 5},
        {"stage": "joint", "epoch": 1, "mode": "recommender", "seconds": 40.0, "valid_seconds": 4},
        {"stage": "joint", "epoch": 1, "mode": "budget", "valid_seconds": 3.0},
        {"stage": "finetune", "epoch": 1, "mode": "finetune", "seconds": 20.0},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    assert collect.training_seconds(run) == pytest.approx(10 + 40 + 4 + 3 + 20)

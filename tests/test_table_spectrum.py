"""experiments/table_spectrum.py: the share of a table's variance in its top directions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.table_spectrum import main, variance_shares


def test_a_table_built_from_two_directions_keeps_all_its_variance_in_two() -> None:
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 8))
    table = rng.normal(size=(50, 2)) * [3.0, 1.0] @ basis
    shares = variance_shares(table, [1, 2, 8])
    assert (
        0.5 < shares[1] < 1.0
        and shares[2] == pytest.approx(1.0)
        and shares[8] == pytest.approx(1.0)
    )


def test_padding_row_is_left_out_and_the_report_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = np.vstack([np.zeros(4), rng.normal(size=(20, 4))])
    np.save(tmp_path / "t.npy", table)
    main([f"--table={tmp_path / 't.npy'}", "--dims=2,4", f"--out={tmp_path / 'r.json'}"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["items"] == 20 and report["variance_share"]["4"] == pytest.approx(1.0)
    assert report["variance_share"]["2"] == pytest.approx(variance_shares(table[1:], [2])[2])

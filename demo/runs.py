"""Which trained run the demo serves when none is named: the newest finished one."""

from __future__ import annotations

from pathlib import Path

import yaml

BEST_MODEL = Path("best") / "model.pt"
TEST_METRICS = "test_metrics.json"  # written last, after the test stage
LAST = "last.pt"  # rewritten during training; newer than TEST_METRICS while (re)training


def is_finished(run_dir: Path) -> bool:
    """A best checkpoint and test metrics, and no training state written after those."""
    metrics = run_dir / TEST_METRICS
    if not (run_dir / BEST_MODEL).is_file() or not metrics.is_file():
        return False
    last = run_dir / LAST
    return not last.exists() or last.stat().st_mtime <= metrics.stat().st_mtime


def _dataset_of(run_dir: Path) -> str | None:
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return cfg.get("dataset") if isinstance(cfg, dict) else None


def find_latest_run(runs_dir: Path, dataset: str) -> tuple[Path | None, list[Path]]:
    """The newest finished run of ``dataset`` under ``runs_dir`` (by when it finished), and the
    unfinished runs of that dataset (for the error message when there is no finished one)."""
    if not runs_dir.is_dir():
        return None, []
    finished: list[tuple[float, Path]] = []
    unfinished: list[Path] = []
    for cfg_path in sorted(runs_dir.glob("*/config.yaml")):
        run_dir = cfg_path.parent
        if _dataset_of(run_dir) != dataset:
            continue
        if is_finished(run_dir):
            finished.append(((run_dir / TEST_METRICS).stat().st_mtime, run_dir))
        else:
            unfinished.append(run_dir)
    return (max(finished)[1] if finished else None), unfinished

"""Where things live: the repository, the shared benchmark files, a dataset's processed folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS_ENV = "GENREC_DATASETS"


def datasets_root() -> Path:
    """Raw benchmark files: ``$GENREC_DATASETS``, else ``../shared/datasets`` from the repo root."""
    env = os.environ.get(DATASETS_ENV)
    return Path(env) if env else (REPO_ROOT / ".." / "shared" / "datasets").resolve()


def resolve(path: str | Path) -> Path:
    """A relative path in a config is relative to the repository root, not the working dir."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def dataset_dir(data_dir: str | Path, name: str) -> Path:
    return resolve(data_dir) / name

"""Shared fixtures: processed datasets built once per session from the real raw files.

Building both datasets takes a few seconds, so every test file shares one copy. They are built
ID-only (no interests, no embeddings) into a pytest temp folder, never into the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_dashscope import FakeDashScope

from config import Config, load_config
from data.pipeline import build_dataset

ID_ONLY = ["--interests.backend=none", "--embeddings.kind=none"]


def id_only_config(dataset: str, out_dir: Path, *argv: str) -> Config:
    """The data_process config for ``dataset`` writing to ``out_dir``, ID-only unless overridden."""
    return load_config(
        "data_process", [f"--dataset={dataset}", f"--out_dir={out_dir}", *ID_ONLY, *argv]
    )


@pytest.fixture
def data_config() -> Callable[..., Config]:
    """``data_config(dataset, out_dir, *extra_argv)``: an ID-only data_process config."""
    return id_only_config


@pytest.fixture(scope="session")
def processed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parent folder of the session's processed datasets (``<root>/<dataset>/``)."""
    return tmp_path_factory.mktemp("processed")


@pytest.fixture(scope="session")
def scientific18_dir(processed_root: Path) -> Path:
    """Amazon 2018 Scientific (LC-Rec format) splits: ``<root>/scientific18/scientific18.*``."""
    return build_dataset(id_only_config("scientific18", processed_root))


@pytest.fixture(scope="session")
def scientific_dir(processed_root: Path) -> Path:
    """Amazon 2023 Scientific (official benchmark) splits: ``<root>/scientific/scientific.*``."""
    return build_dataset(id_only_config("scientific", processed_root))


@pytest.fixture
def dashscope_server(monkeypatch: pytest.MonkeyPatch):
    """``start(*behaviours, **kwargs)``: a FakeDashScope on 127.0.0.1, with the environment
    pointing the real SDK at it, stopped when the test ends."""
    servers: list[FakeDashScope] = []

    def start(*behaviours: str, **kwargs: object) -> FakeDashScope:
        srv = FakeDashScope(behaviours, **kwargs).__enter__()
        servers.append(srv)
        for name, value in srv.env().items():
            monkeypatch.setenv(name, value)
        return srv

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)

"""Saving and strictly loading run folders.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``last.pt`` (everything
needed to resume) and ``best/`` (recommender, tokenizer, item codes, config, metrics). Every load
is strict: a missing or unexpected key is an error naming the keys, never a silent partial load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml
from torch import nn

BEST = "best"


class CheckpointError(RuntimeError):
    pass


def atomic_save(obj, path: Path) -> None:
    """Write to a temp file then rename, so a kill never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state_strict(module: nn.Module, state: dict, what: str) -> None:
    own = set(module.state_dict())
    given = set(state)
    missing, unexpected = sorted(own - given), sorted(given - own)
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: checkpoint does not match the model: missing keys {missing[:8]}"
            f"{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}"
        )
    module.load_state_dict(state, strict=True)


def save_config(cfg: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run folder (no config.yaml)")
    return yaml.safe_load(path.read_text())


def save_best(
    folder: Path,
    model: nn.Module,
    tokenizer: nn.Module,
    item_codes: torch.Tensor,
    cfg: dict,
    metrics: dict,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(
        {
            "recommender": model.state_dict(),
            "tokenizer": tokenizer.state_dict(),
            "item_codes": item_codes,
        },
        folder / "model.pt",
    )
    save_config(cfg, folder / "config.yaml")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))


def load_best(folder: Path, model: nn.Module, tokenizer: nn.Module) -> torch.Tensor:
    """Load recommender + tokenizer weights strictly; return the item codes."""
    path = folder / "model.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: not found (has this run finished a validation?)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("recommender", "tokenizer", "item_codes"):
        if key not in state:
            raise CheckpointError(f"{path}: missing '{key}'")
    load_state_strict(model, state["recommender"], f"{path} [recommender]")
    load_state_strict(tokenizer, state["tokenizer"], f"{path} [tokenizer]")
    return state["item_codes"]

"""Saving and strictly loading run folders.

A run folder holds ``config.yaml`` (the resolved config), ``data.json`` (the data fingerprint),
``metrics.jsonl``, ``last.pt`` (everything needed to resume), ``best/`` (recommender, tokenizer,
item codes, config, metrics), ``test_metrics.json`` (train.py) and ``eval_<split>_metrics.json``
(evaluate.py). Every load is strict: a missing or unexpected key is an error naming the keys, never
a silent partial load, and an unreadable file is a one-line error naming it and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml
from torch import nn

from config import ADDED, RENAMED

BEST = "best"


class CheckpointError(RuntimeError):
    pass


def atomic_save(obj, path: Path) -> None:
    """Write to a temp file then rename, so a kill never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_file(path: Path, remedy: str, weights_only: bool = True):
    """``torch.load``, with a torn or corrupt file reported in one line naming it and ``remedy``
    (what to do), not as a traceback from deep inside the unpickler."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise
    except Exception as err:  # zip, pickle and EOF errors all mean the same: unreadable
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({reason}); {remedy}") from err


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


ITEM_WEIGHTS_FILE = "item_weights.json"  # the item head's weight chosen on valid (item_weight_grid)


def eval_label(
    split: str,
    skip_history: bool = False,
    interests: str = "own",
    popularity: float = 0.0,
    rank_by: str | None = None,
    item_score_weight: float | None = None,
) -> str:
    """What evaluate.py calls a ranking of ``split``: ``test``, ``test_skip_history``,
    ``test_interests-none``, ``test_pop0.5``, ``test_by-items``, ... (its table row and its
    file, ``eval_metrics_file``); ``rank_by`` and ``item_score_weight`` None: the run's own
    ranking."""
    label = split + ("_skip_history" if skip_history else "")
    label += "" if interests == "own" else f"_interests-{interests}"
    label += f"_pop{popularity:g}" if popularity else ""
    label += f"_by-{rank_by}" if rank_by else ""
    return label + (f"_w{item_score_weight:g}" if item_score_weight is not None else "")


def eval_metrics_file(label: str) -> str:
    """The run-folder file evaluate.py writes a ranking's metrics to (collect.py reads it)."""
    return f"eval_{label}_metrics.json"


def eval_ranks_file(label: str) -> str:
    """Where ``evaluate.py --save_ranks`` keeps each row's target rank (breakdown.py reads it)."""
    return f"eval_{label}_ranks.json"


def save_config(cfg: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def read_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run folder (no config.yaml)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}); restore it") from err
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: not a run configuration (expected a mapping); restore it")
    for old, new in RENAMED.items():  # a run saved before a key was renamed stays loadable
        if old in cfg:
            cfg[new] = cfg.pop(old)
    for key, value in ADDED.items():  # and one saved before a key existed
        cfg.setdefault(key, value)
    return cfg


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
    state = load_file(path, "restore it from a copy, or train the run again (it cannot be rebuilt)")
    for key in ("recommender", "tokenizer", "item_codes"):
        if key not in state:
            raise CheckpointError(f"{path}: missing '{key}'")
    load_state_strict(model, state["recommender"], f"{path} [recommender]")
    load_state_strict(tokenizer, state["tokenizer"], f"{path} [tokenizer]")
    return state["item_codes"]

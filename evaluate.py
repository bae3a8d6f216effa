"""Evaluate a trained run folder on a split with constrained beam search.

python evaluate.py --ckpt=RUN_DIR --split=valid|test [--num_beams=N] [--data_dir=DIR] [--device=D]
    [--skip_history=true] [--eval_interests=own|shuffled|none] [--save_ranks=true]
    [--popularity_adjust=A] [--rank_by=codes|items|both] [--item_score_weight=W]
    [--item_weight_grid=[W1,W2,...]]

Writes ``RUN_DIR/eval_<split>_metrics.json``: ``eval_<split>_skip_history_metrics.json`` with
each user's history left out of the ranking, ``eval_<split>_interests-<view>_metrics.json`` with
another row's interests or none (a run that fuses them); with ``--save_ranks`` also
``eval_<...>_ranks.json``, each row's target rank (``experiments/breakdown.py``);
``--popularity_adjust=A`` ranks by ``log p(item) - A * log(train count + 1)`` (``_popA``);
``--rank_by`` ranks a run with an item head by its codes, its item head or both (``_by-codes``...;
default: as the run was trained), ``--item_score_weight=W`` with weight W on the item head
(``_wW``); ``--item_weight_grid`` ranks at each of its weights from one search (one ``_wW`` file
each: the candidates and their two log-probabilities do not depend on the weight).
The run's own ``test_metrics.json`` (written by train.py, read by experiments/collect.py) is
never touched. The data must be what the run was trained on (its ``data.json`` fingerprint);
``--data_dir`` points at a copy elsewhere.
"""

import json
import sys
import time
from pathlib import Path

import torch

from config import Config, ConfigError, given_keys, load_config
from data.batches import with_interests
from data.device import resolve_device
from data.fingerprint import check_fingerprint, data_files, fingerprint
from data.jsonl import DataError
from data.paths import dataset_dir, resolve
from data.popularity import by_emb_id, train_counts
from model.checkpoint import (
    CheckpointError,
    eval_label,
    eval_metrics_file,
    eval_ranks_file,
    read_config,
)
from model.evaluation import Ranking, rank_split_weights, split_metrics
from model.metrics import write_ranks
from model.recommender import Recommender
from model.report import format_table

RUN_KEYS = ("dataset", "seed")  # fixed by the run: given, they must agree with it


def data_folder(cfg: Config, run_dir: Path, saved: dict, argv: list[str]) -> Path:
    """The run's dataset folder, or the one under ``--data_dir``; ``--dataset``/``--seed`` can
    only name the run's own (evaluation is deterministic and the run fixes its dataset)."""
    given = given_keys("evaluate", argv)
    for key in RUN_KEYS:
        if key in given and given[key] != saved[key]:
            raise ConfigError(
                f"--{key}={given[key]}: {run_dir} was trained with {key}={saved[key]}; "
                f"drop --{key} (the run decides it)"
            )
    return dataset_dir(cfg.data_dir if "data_dir" in given else saved["data_dir"], saved["dataset"])


def main(argv: list[str]) -> None:
    cfg = load_config("evaluate", argv)
    if not cfg.ckpt:
        raise ConfigError("--ckpt=RUN_DIR is required")
    run_dir = resolve(cfg.ckpt)
    saved = read_config(run_dir)
    folder = data_folder(cfg, run_dir, saved, argv)
    name, interests = saved["dataset"], bool(saved["interest_fusion"])
    if cfg.eval_interests != "own" and not interests:
        raise ConfigError(
            f"--eval_interests={cfg.eval_interests}: {run_dir} was trained without interests"
        )
    splits = (cfg.split, "train") if cfg.popularity_adjust else (cfg.split,)  # counts: train
    files = data_files(folder, name, tuple(dict.fromkeys(splits)), interests)
    check_fingerprint(run_dir, folder, fingerprint(files))
    rec = Recommender.load(run_dir, folder.parent)
    device = resolve_device(cfg.device)
    rec.to(device)
    data = rec.split_tensors(folder, cfg.split)
    data = with_interests(data, cfg.eval_interests, seed=saved["seed"])
    prior = None
    if cfg.popularity_adjust:
        counts = by_emb_id(train_counts(folder, name, interests), rec.emb_map)[1:]  # trie: id - 1
        prior = rec.trie.popularity_prior(torch.from_numpy(counts), cfg.popularity_adjust)
    by = None if cfg.rank_by == "run" else cfg.rank_by
    weight = None if cfg.item_score_weight < 0 else cfg.item_score_weight
    grid = [float(w) for w in cfg.item_weight_grid]
    if grid and weight is not None:
        raise ConfigError("--item_weight_grid and --item_score_weight: give one of the two")
    try:
        ranking = Ranking.of(rec.config, by, weight)
    except ValueError as err:
        raise ConfigError(f"{run_dir}: {err}") from None
    if grid and ranking.by != "both":
        raise ConfigError(f"--item_weight_grid: {run_dir} ranks by {ranking.by}, without weights")
    start = time.perf_counter()
    rows, ranks = rank_split_weights(
        rec.model,
        rec.trie,
        data,
        rec.item_codes,
        rec.features,
        cfg.num_beams,
        max(cfg.topk),
        cfg.eval_batch_size,
        device,
        max_items=cfg.eval_max_items,
        max_users=cfg.max_eval_users,
        desc=cfg.split,
        skip_history=bool(cfg.skip_history),
        prior=prior,
        ranking=ranking,
        weights=grid or None,
    )
    seconds = round(time.perf_counter() - start, 2)
    for w, ranks_w in zip(grid or [weight], ranks, strict=True):
        metrics = split_metrics(ranks_w, list(cfg.topk))
        metrics["seconds"] = seconds  # of the one pass that ranked every weight
        metrics.update(
            num_beams=cfg.num_beams,
            max_eval_users=cfg.max_eval_users,
            skip_history=bool(cfg.skip_history),
            eval_interests=cfg.eval_interests,
            popularity_adjust=cfg.popularity_adjust,
            rank_by=ranking.by,
            item_score_weight=ranking.item_score_weight if w is None else w,
            data=str(folder),
        )
        label = eval_label(
            cfg.split, bool(cfg.skip_history), cfg.eval_interests, cfg.popularity_adjust, by, w
        )
        out = run_dir / eval_metrics_file(label)
        out.write_text(json.dumps(metrics, indent=1))
        if cfg.save_ranks:
            write_ranks(run_dir / eval_ranks_file(label), cfg.split, rows, ranks_w)
        print(format_table(metrics, label))
        print(f"{metrics['users']} users in {seconds}s; written to {out}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError, CheckpointError) as err:
        sys.exit(f"error: {err}")

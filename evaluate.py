"""Evaluate a trained run folder on a split with constrained beam search.

python evaluate.py --ckpt=RUN_DIR --split=valid|test [--num_beams=N]
"""

import json
import sys
import time

import torch

from config import ConfigError, load_config
from data.batches import interest_table, load_split_tensors
from data.jsonl import DataError
from data.paths import resolve
from model.checkpoint import CheckpointError
from model.evaluation import evaluate_split
from model.recommender import Recommender
from model.trainer import format_table


def main(argv: list[str]) -> None:
    cfg = load_config("evaluate", argv)
    if not cfg.ckpt:
        raise ConfigError("--ckpt=RUN_DIR is required")
    run_dir = resolve(cfg.ckpt)
    rec = Recommender.load(run_dir)
    rcfg = rec.config
    folder, name = rec.data_folder, rec.dataset
    phrase_index, matrix = interest_table(folder, name) if rec.uses_interests else (None, None)
    data = load_split_tensors(
        folder, name, cfg.split, rec.emb_map, rcfg.max_his_len, rcfg.max_interests, phrase_index
    )
    start = time.perf_counter()
    metrics = evaluate_split(
        rec.model,
        rec.trie,
        data,
        rec.item_codes,
        None if matrix is None else torch.from_numpy(matrix).float(),
        cfg.num_beams,
        list(cfg.topk),
        cfg.eval_batch_size,
        rec.model.code_table.device,
        max_items=cfg.eval_max_items,
        max_users=cfg.max_eval_users,
        desc=cfg.split,
    )
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    metrics["num_beams"] = cfg.num_beams
    (run_dir / f"{cfg.split}_metrics.json").write_text(json.dumps(metrics, indent=1))
    print(format_table(metrics, cfg.split))
    print(
        f"{metrics['users']} users in {metrics['seconds']}s; "
        f"written to {run_dir / f'{cfg.split}_metrics.json'}"
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError, CheckpointError) as err:
        sys.exit(f"error: {err}")

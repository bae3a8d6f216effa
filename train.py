"""Train ETEGRec (+ interest fusion): tokenizer pretraining, joint training, finetune, test.

    python train.py --dataset=NAME [--data_dir=DIR] [--out_dir=DIR] [--config=FILE] \
        [--resume=RUN_DIR] [--stage=tokenizer|joint|finetune|all] [--interest_fusion=true|false] \
        [--fusion_type=simple|transformer|adaptive|single] [--epochs=N] [--finetune_epochs=N] ...
"""

import sys
import time
from pathlib import Path

from config import Config, ConfigError, load_config
from data.jsonl import DataError
from data.paths import resolve
from model.checkpoint import CheckpointError, read_config
from model.trainer import Trainer


def resolve_run(cfg: Config) -> tuple[Config, Path]:
    """A new run folder, or the one to resume (whose saved config wins)."""
    if cfg.resume:
        run_dir = resolve(cfg.resume)
        saved = Config.wrap(read_config(run_dir))
        saved.resume = cfg.resume
        return saved, run_dir
    name = cfg.run_name or f"{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = resolve(cfg.out_dir) / name
    if (run_dir / "last.pt").exists():
        raise ConfigError(
            f"{run_dir} already holds a run: pass --resume={run_dir} or another --run_name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir


def main(argv: list[str]) -> None:
    cfg, run_dir = resolve_run(load_config("train", argv))
    print(f"run folder: {run_dir}")
    Trainer(cfg, run_dir).run(stop_after="test" if cfg.stage == "all" else cfg.stage)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError, CheckpointError) as err:
        sys.exit(f"error: {err}")

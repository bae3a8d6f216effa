r"""Train ETEGRec (+ interest fusion): tokenizer pretraining, joint training, finetune, test.

    python train.py --dataset=NAME [--data_dir=DIR] [--out_dir=DIR] [--config=FILE] \
        [--resume=RUN_DIR] [--stage=tokenizer|joint|finetune|all] [--interest_fusion=true|false] \
        [--fusion_type=simple|transformer|adaptive|single] [--epochs=N] [--finetune_epochs=N] ...

``--resume=RUN_DIR`` continues with the run's saved configuration. Other keys on that command
line are either honoured (``RESUME_KEYS``: they do not change what the run computes) or must
equal the run's own value; anything else is refused, never silently ignored.
"""

import os
import sys
import time
from pathlib import Path

from config import Config, ConfigError, given_keys, load_config
from data.jsonl import DataError
from data.paths import resolve
from model.checkpoint import CheckpointError, read_config
from model.trainer import Trainer

# Keys a resumed run takes from the command line: where the data and the device are, how long
# this invocation may train. The data's fingerprint (data.json) still has to match.
RESUME_KEYS = ("resume", "data_dir", "device", "time_budget_s")


def resumed_config(cfg: Config, argv: list[str]) -> tuple[Config, Path]:
    """The saved config of the run to resume, with the command line's ``RESUME_KEYS``; a key
    that would change the run (``--epochs``, ``--seed``, ...) is refused unless it agrees."""
    run_dir = resolve(cfg.resume)
    saved = Config.wrap(read_config(run_dir))
    for key, value in given_keys("train", argv).items():
        if key in RESUME_KEYS:
            saved[key] = value
        elif saved.get(key) != value:
            raise ConfigError(
                f"--{key}={value}: {run_dir} was started with {key}={saved.get(key)} "
                f"({run_dir / 'config.yaml'}); a resumed run keeps its settings: drop --{key}, "
                "or start a new run with another --run_name"
            )
    return saved, run_dir


def new_run_dir(cfg: Config) -> Path:
    name = cfg.run_name or f"{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = resolve(cfg.out_dir) / name
    if (run_dir / "last.pt").exists():
        raise ConfigError(
            f"{run_dir} already holds a run: pass --resume={run_dir} or another --run_name"
        )
    return run_dir


def main(argv: list[str]) -> None:
    cfg = load_config("train", argv)  # every value checked before anything is read or written
    cfg, run_dir = resumed_config(cfg, argv) if cfg.resume else (cfg, new_run_dir(cfg))
    trainer = Trainer(cfg, run_dir)  # reads the data: a failed start leaves no folder behind
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {run_dir}")
    trainer.run(stop_after="test" if cfg.stage == "all" else cfg.stage)
    trainer.acc.end_training()
    if trainer.acc.num_processes > 1:
        # Nothing is left to write, so a DDP worker exits without tearing anything down. Freeing
        # the DDP model frees gloo's process group, whose destructor joins gloo's worker threads
        # while holding the GIL; a worker still releasing the last gather's tensors needs the
        # GIL to do so, and both wait for ever (gdb: the main thread in ~ProcessGroupGloo ->
        # thread::join, a gloo thread in ~AsyncAllgatherWork -> take_gil; 3 runs in 20 hung).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError, CheckpointError) as err:
        sys.exit(f"error: {err}")

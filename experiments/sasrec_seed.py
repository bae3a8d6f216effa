r"""Train the SASRec baseline once more with another seed and keep only its metrics.

    python experiments/sasrec_seed.py --folder=DATA/scientific18 --name=scientific18 --seed=1 \
        --out=runs/exp18/sasrec-s1.json [--ranks_out=runs/exp18/sasrec-s1.ranks.json]

``--ranks_out`` also keeps each test row's target rank (for experiments/breakdown.py). Runs in a
scratch folder holding links to the splits, so the dataset's own SASRec embeddings and
metrics are left as they are. Any ``--embeddings.*`` key of data_process can be added.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from config import load_config, split_argv
from data.jsonl import write_json
from model.metrics import write_ranks
from model.sasrec import train_sasrec


def main(argv: list[str]) -> None:
    args = split_argv(argv)
    folder, name, seed = Path(args.pop("folder")), args.pop("name"), int(args.pop("seed"))
    out = Path(args.pop("out"))
    ranks_out = args.pop("ranks_out", None)
    cfg = load_config("data_process", [f"--{k}={v}" for k, v in args.items()])
    with tempfile.TemporaryDirectory() as scratch:
        for split in ("train", "valid", "test"):
            (Path(scratch) / f"{name}.{split}.jsonl").symlink_to(
                (folder / f"{name}.{split}.jsonl").resolve()
            )
        shutil.copy(folder / f"{name}.emb_map.json", scratch)
        _, result = train_sasrec(Path(scratch), name, cfg.embeddings, seed, cfg.device)
    result["seconds"] = result["train_seconds"]
    ranks = result.pop("test_ranks")
    if ranks_out:
        write_ranks(Path(ranks_out), "test", np.arange(len(ranks)), ranks)
    write_json(out, result)


if __name__ == "__main__":
    main(sys.argv[1:])

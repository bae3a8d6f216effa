r"""Raw benchmark files -> ETEGRec splits, interest-annotated JSONL and item embeddings.

    python data_process.py --source=amazon23|lcrec --dataset=NAME --raw_dir=DIR --out_dir=DIR \
        --interests.backend=none|keywords|local|dashscope --interests.stride=K \
        --embeddings.kind=none|sasrec|text [--download]
"""

import sys
from pathlib import Path

from config import Config, ConfigError, load_config
from data.jsonl import DataError
from data.pipeline import build_dataset
from data.splits import load_items


def item_embeddings(cfg: Config, folder: Path) -> Path:
    """The RQ-VAE tokenizer's input: SASRec's item table (trained on the train split) or each
    item's text embedding. Imported here, when asked for: both load torch."""
    from data.embeddings import save_item_embeddings, text_embeddings

    if cfg.embeddings.kind == "sasrec":
        from model.sasrec import train_sasrec

        table, _ = train_sasrec(folder, cfg.dataset, cfg.embeddings, cfg.seed, cfg.device)
    else:
        items = load_items(folder, cfg.dataset)
        table = text_embeddings(folder, cfg.dataset, items, cfg.embeddings)
    return save_item_embeddings(folder, cfg.dataset, table, cfg.embeddings.kind)


def main(argv: list[str]) -> None:
    cfg = load_config("data_process", argv)  # every value checked before any file is written
    folder = build_dataset(cfg)
    if cfg.embeddings.kind != "none":
        item_embeddings(cfg, folder)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")

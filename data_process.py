"""Raw benchmark files -> ETEGRec splits, interest-annotated JSONL and item embeddings.

    python data_process.py --source=amazon23|lcrec --dataset=NAME --raw_dir=DIR --out_dir=DIR \
        --interests.backend=none|keywords|local|dashscope --interests.stride=K \
        --embeddings.kind=none|sasrec|text [--download]
"""

import sys

from config import ConfigError, load_config
from data.jsonl import DataError
from data.pipeline import run

if __name__ == "__main__":
    try:
        run(load_config("data_process", sys.argv[1:]))
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")

r"""A control dataset: one folder's interests, kept only on the rows where another has interests.

    python experiments/match_coverage.py --source=data/exp18-keywords-stride8/scientific18 \
        --like=data/exp18-local-stride8/scientific18 --name=scientific18 \
        --out=data/exp18-kw-matched-stride8

When an LLM row covers only part of the rows (a GPU budget ran out before every prompt was
asked), comparing it with keywords on every row mixes two effects: which phrases, and how many
rows have any. This writes the source's processed splits with interests emptied wherever the
reference row has none, plus the files training needs (splits, emb_map, items, item and
interest-phrase embeddings), so the only remaining difference is the phrases themselves.
"""

import shutil
import sys
from pathlib import Path

from config import split_argv
from data.jsonl import DataError, write_jsonl
from data.splits import SPLITS, load_split, split_path


def main(argv: list[str]) -> None:
    args = split_argv(argv)
    source, like, name = Path(args["source"]), Path(args["like"]), args["name"]
    out = Path(args["out"]) / name
    out.mkdir(parents=True, exist_ok=True)
    kept = total = 0
    for split in SPLITS:
        rows = load_split(source, name, split, processed=True)
        ref = load_split(like, name, split, processed=True)
        if [r["inter_history"] for r in rows] != [r["inter_history"] for r in ref]:
            raise DataError(f"{split_path(like, name, split, True)}: rows differ from {source}")
        for row, other in zip(rows, ref, strict=True):
            row["interests"] = row["interests"] if other["interests"] else []
            kept += bool(row["interests"])
        total += len(rows)
        write_jsonl(split_path(out, name, split, processed=True), rows)
        shutil.copy(split_path(source, name, split), out)
    for f in source.iterdir():
        if f.name.startswith(
            (f"{name}.emb_map", f"{name}.items", f"{name}.interest", f"{name}_emb")
        ):
            shutil.copy(f, out)
    print(f"{out}: interests kept on {kept:,} of {total:,} rows (as in {like})")


if __name__ == "__main__":
    main(sys.argv[1:])

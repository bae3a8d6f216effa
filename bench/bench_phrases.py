"""Interest phrase quality, measured on the phrases themselves rather than through the recommender.

    python bench/bench_phrases.py --dataset=scientific18 [--data_dir=DIR] [--examples 3]

Reads a processed dataset (rows with ``interests``) and prints, over its rows with interests:
- grounded: the share of phrases whose every content word occurs in the text of the row's own
  history items (the window the interests were made from): a phrase with a word from nowhere is
  invented, or comes from the prompt's worked example;
- near-duplicates: the share of rows with two phrases whose word sets contain one another
  ("adhesives" / "acrylate adhesives"), which say the same thing twice;
- phrases per row and words per phrase, distinct phrases;
and a few rows with their items' titles and phrases.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys

from config import load_config
from data.paths import dataset_dir
from data.splits import SPLITS, load_items, load_split

_WORD = re.compile(r"[^\W\d_]+")
# words an interest may add to its items' own words without being invented
GENERIC = frozenset("and for of with the a in on to supplies tools equipment products".split())


def item_text(item: dict) -> str:
    """All of an item's own text: title, brand, categories, features, description."""
    parts = [item.get("title"), item.get("brand"), item.get("description")]
    parts += list(item.get("categories") or []) + list(item.get("features") or [])
    return " ".join(str(p) for p in parts if p)


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1]


def stem(word: str) -> str:
    """Plural-insensitive: "adhesives" and "adhesive" are the same word here."""
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def grounded(phrase: str, vocabulary: set[str]) -> bool:
    return all(stem(w) in vocabulary for w in words(phrase) if w not in GENERIC)


def near_duplicate(phrases: list[str]) -> bool:
    sets = [{stem(w) for w in words(p)} for p in phrases]
    return any(a <= b or b <= a for i, a in enumerate(sets) for b in sets[i + 1 :] if a and b)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3)
    args, rest = parser.parse_known_args(argv)
    cfg = load_config("data_process", rest)
    folder = dataset_dir(cfg.data_dir, cfg.dataset)
    items = load_items(folder, cfg.dataset)
    rows = [r for s in SPLITS for r in load_split(folder, cfg.dataset, s, processed=True)]
    with_interests = [r for r in rows if r.get("interests")]
    if not with_interests:
        sys.exit(f"{folder}: no row has interests (run data_process.py with an interest backend)")
    window = int(cfg.interests.max_items)
    n_phrases = n_grounded = n_dup_rows = 0
    lengths: list[int] = []
    distinct: set[str] = set()
    for row in with_interests:
        history = row["inter_history"][-window:]
        vocabulary = {stem(w) for t in history for w in words(item_text(items.get(t, {})))}
        phrases = row["interests"]
        n_phrases += len(phrases)
        n_grounded += sum(grounded(p, vocabulary) for p in phrases)
        n_dup_rows += near_duplicate(phrases)
        lengths += [len(p.split()) for p in phrases]
        distinct.update(phrases)
    print(
        f"{cfg.dataset} ({folder}): {len(with_interests):,} of {len(rows):,} rows with interests; "
        f"grounded {n_grounded / n_phrases:.1%} of {n_phrases:,} phrases; rows with a "
        f"near-duplicate pair {n_dup_rows / len(with_interests):.1%}; "
        f"{n_phrases / len(with_interests):.2f} phrases per row, "
        f"{statistics.mean(lengths):.2f} words per phrase; {len(distinct):,} distinct phrases"
    )
    step = max(1, len(with_interests) // max(args.examples, 1))
    for row in with_interests[::step][: args.examples]:
        titles = [str(items.get(t, {}).get("title", ""))[:50] for t in row["inter_history"][-3:]]
        print(f"  last items {titles} -> {row['interests']}")


if __name__ == "__main__":
    main(sys.argv[1:])

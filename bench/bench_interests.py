r"""Time interest extraction: keywords on every row of a dataset, the local LLM on a small sample
of each recipe's prompts (history: one per history window; items: one per item).

    .venv/bin/python bench/bench_interests.py [--dataset=scientific18] [--sample 8] [--no-local] \
        [--interests.stride=8 ...]

The dataset must be processed already (data_process.py). Keywords results go to a throwaway
folder; the local model's converted copy is kept under ``interests.cache_dir`` (the first run
converts the GGUF). The local figures are seconds per prompt at ``local_batch_size``, after one
warm-up prompt, with nothing served from the result cache, over prompts sampled evenly from what
each recipe asks: the distinct windows at ``interests.stride`` (history), the items (items).
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on two cores shared with other work, spinning threads
# burn CPU the generating thread needs. Read once, when torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from config import Config, load_config  # noqa: E402
from data.interests import annotate_rows, make_extractor  # noqa: E402
from data.interests.recipe import item_config  # noqa: E402
from data.interests.runner import prompt_window  # noqa: E402
from data.paths import dataset_dir, resolve  # noqa: E402
from data.splits import SPLITS, load_items, load_split  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=8, help="local prompts to time")
    parser.add_argument("--no-local", action="store_true", help="time keywords only")
    parser.add_argument(
        "--recipes", default="history,items", help="recipes whose local prompts are timed"
    )
    args, rest = parser.parse_known_args(argv)
    cfg = load_config("data_process", rest)
    folder = dataset_dir(cfg.data_dir, cfg.dataset)
    items = load_items(folder, cfg.dataset)
    rows = [r for s in SPLITS for r in load_split(folder, cfg.dataset, s)]

    for stride in (1, 3):
        icfg = Config({**cfg.interests, "backend": "keywords", "stride": stride})
        with tempfile.TemporaryDirectory() as tmp:
            _, summary = annotate_rows(rows, items, icfg, Path(tmp), show_progress=False)
        print(
            f"keywords stride {stride}: {len(rows):,} rows, {summary['calls_needed']:,} distinct "
            f"histories in {summary['seconds']:.2f}s"
        )

    icfg = Config({**cfg.interests, "backend": "local"})
    # what each recipe asks on this dataset: a prompt per distinct history window (history, at
    # ``interests.stride``) or a prompt per item of any window (items, fresh on every row)
    windows = sorted({prompt_window(r["inter_history"], icfg.stride, icfg.max_items) for r in rows})
    fresh = {prompt_window(r["inter_history"], 1, icfg.max_items) for r in rows}
    needed = sorted({t for w in fresh for t in w})
    recipes = {
        "history": (icfg, windows, [[items[t] for t in w] for w in windows]),
        "items": (
            item_config(icfg),
            needed,
            [[items[t]] for t in needed],
        ),
    }
    print(
        f"prompts on {cfg.dataset}: history recipe {len(windows):,} at stride {icfg.stride}, "
        f"items recipe {len(needed):,}"
    )
    if args.no_local:
        return
    for recipe, (rcfg, units, prompts) in recipes.items():
        if recipe not in args.recipes.split(","):
            continue
        ext = make_extractor(rcfg, resolve(rcfg.cache_dir))
        step = max(1, len(prompts) // (args.sample + 1))
        chosen = prompts[::step][: args.sample + 1]
        seconds, outcomes = asyncio.run(timed_prompts(ext, chosen))
        per_prompt = seconds / len(outcomes)
        full = sum(len(o.phrases) == rcfg.num_interests for o in outcomes)
        retries = Counter(o.retries for o in outcomes)
        print(
            f"{recipe} recipe, {ext.label}: {per_prompt:.2f}s per prompt ({1 / per_prompt:.2f} "
            f"prompts/s) over {len(outcomes)} prompts (batch {rcfg.local_batch_size}, {full} with "
            f"{rcfg.num_interests} phrases; by retries {dict(sorted(retries.items()))}); "
            f"all {len(units):,} prompts: {len(units) * per_prompt / 60:.0f} min"
        )
        for prompt, outcome in zip(chosen[1:4], outcomes, strict=False):
            print(f"  {prompt[-1]['title'][:60]!r} -> {outcome.phrases}")


async def timed_prompts(ext, histories: list[list[dict]]) -> tuple[float, list]:
    """Seconds for all but the first prompt (the first loads the model), and their outcomes."""
    start = time.perf_counter()
    await ext.ask(ext.messages(histories[0]))
    print(f"{ext.label}: load + first prompt {time.perf_counter() - start:.1f}s")
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(ext.ask(ext.messages(h)) for h in histories[1:]))
    return time.perf_counter() - start, outcomes


if __name__ == "__main__":
    main(sys.argv[1:])

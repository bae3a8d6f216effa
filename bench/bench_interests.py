"""Time interest extraction: keywords on every row of a dataset, the local LLM on a small sample.

    .venv/bin/python bench/bench_interests.py [--dataset=scientific18] [--sample 8] [--no-local] \
        [--interests.stride=8 ...]

The dataset must be processed already (data_process.py). Keywords results go to a throwaway
folder; the local model's converted copy is kept under ``interests.cache_dir`` (the first run
converts the GGUF). The local figure is seconds per prompt at ``local_batch_size``,
after one warm-up prompt, with nothing served from the result cache, over prompts sampled evenly
from the distinct windows a run at ``interests.stride`` asks about.
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
from data.interests.runner import prompt_window  # noqa: E402
from data.paths import dataset_dir, resolve  # noqa: E402
from data.splits import SPLITS, load_items, load_split  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=8, help="local prompts to time")
    parser.add_argument("--no-local", action="store_true", help="time keywords only")
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

    if args.no_local:
        return
    sample = args.sample
    icfg = Config({**cfg.interests, "backend": "local"})
    ext = make_extractor(icfg, resolve(icfg.cache_dir))
    # the distinct prompt windows a run at ``interests.stride`` would ask about, evenly sampled
    windows = sorted({prompt_window(r["inter_history"], icfg.stride, icfg.max_items) for r in rows})
    step = max(1, len(windows) // (sample + 1))
    histories = [[items[t] for t in w] for w in windows[::step][: sample + 1]]

    async def timed_prompts() -> tuple[float, list]:
        start = time.perf_counter()
        await ext.ask(ext.messages(histories[0]))  # loads the model
        print(f"{ext.label}: load + first prompt {time.perf_counter() - start:.1f}s")
        start = time.perf_counter()
        outcomes = await asyncio.gather(*(ext.ask(ext.messages(h)) for h in histories[1:]))
        return time.perf_counter() - start, outcomes

    seconds, outcomes = asyncio.run(timed_prompts())
    full = sum(len(o.phrases) == icfg.num_interests for o in outcomes)
    retries = Counter(o.retries for o in outcomes)
    print(
        f"{ext.label}: {seconds / len(outcomes):.2f}s per prompt over {len(outcomes)} prompts "
        f"of {len(windows):,} at stride {icfg.stride} (batch {icfg.local_batch_size}, "
        f"{full} with {icfg.num_interests} phrases; prompts by retries: "
        f"{dict(sorted(retries.items()))})"
    )
    for history, outcome in zip(histories[1:4], outcomes, strict=False):
        print(f"  {history[-1]['title'][:60]!r} -> {outcome.phrases}")


if __name__ == "__main__":
    main(sys.argv[1:])

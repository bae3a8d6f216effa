"""Interests for every row of a dataset: leak-free, each distinct prompt computed once, resumable.

Two recipes for the LLM backends (``interests.recipe``): ``items`` asks once per item and composes
every row's interests from its own history's items (fresh at every row; data/interests/recipe.py),
``history`` asks once per history prefix, as the seed did. The keyword backend always composes
from items, at no cost.

No leakage: a row ``s[:t] -> s[t]`` may only use what the user had bought before ``s[t]``. Its
interests come from a prefix of its own ``inter_history``: the longest one whose length ``L``
satisfies ``(L - 1) % stride == 0`` (lengths 1, 1 + k, 1 + 2k, ...), so with ``stride`` k a user
costs about one prompt per k rows. Rows hold at most ``max_history`` items, so for the rare
longer user the prefix rule runs on the truncated window; it stays leak-free either way.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from config import Config
from data.interests.base import InterestError, LLMExtractor
from data.interests.cache import ResultCache
from data.interests.keywords import KeywordExtractor, item_terms, rank
from data.interests.prompt import Messages, prompt_chars, prompt_key
from data.interests.recipe import (
    RECIPES,
    Encode,
    canonical,
    compose,
    item_config,
    item_table_path,
    merge_map,
    write_item_table,
)
from data.paths import resolve

Window = tuple[str, ...]
Extractor = KeywordExtractor | LLMExtractor
MAX_EXAMPLE_ERRORS = 3


def make_extractor(icfg: Config, cache_dir: Path | None = None, device: str = "cpu") -> Extractor:
    """The backend ``icfg.backend`` names; heavy libraries load only for the one chosen.
    ``device`` (the shared config key) is where the ``local`` model runs."""
    backend = icfg.backend
    if backend == "keywords":
        return KeywordExtractor(icfg)
    if backend == "dashscope":
        from data.interests.dashscope_llm import DashScopeExtractor

        return DashScopeExtractor(icfg)
    if backend == "local":
        from data.interests.local_llm import LocalExtractor

        return LocalExtractor(icfg, cache_dir or resolve(icfg.cache_dir), device)
    raise InterestError(
        f"interests.backend: unknown backend '{backend}' (dashscope | local | keywords)"
    )


def in_shard(key: str, index: int, shards: int) -> bool:
    """Whether process ``index`` of ``shards`` sharing one cache asks the prompt ``key`` (a hex
    digest): each prompt falls to exactly one of them."""
    return int(key, 16) % shards == index


def prefix_length(n: int, stride: int) -> int:
    """Longest ``L <= n`` with ``(L - 1) % stride == 0``: the latest prefix a row may reuse."""
    return 0 if n < 1 else 1 + stride * ((n - 1) // stride)


def prompt_window(history: list[str], stride: int, max_items: int) -> Window:
    """The items a row's interests derive from: the most recent of its allowed prefix."""
    cut = history[: prefix_length(len(history), stride)]
    return tuple(cut[-max_items:]) if max_items > 0 else ()


def _keywords(
    ext: KeywordExtractor, windows: set[Window], items: dict[str, dict], show_progress: bool
) -> tuple[dict[Window, list[str]], dict]:
    terms = {t: item_terms(items.get(t, {})) for w in windows for t in w}
    found: dict[Window, list[str]] = {}
    for window in tqdm(
        sorted(windows), desc="interests", unit="history", disable=not show_progress
    ):
        found[window] = rank((terms[t] for t in window), ext.num_interests)
    succeeded = sum(1 for p in found.values() if p)
    summary = {"model": "", "calls_needed": len(windows), "cached": 0, "succeeded": succeeded}
    return found, summary | {"failed": len(windows) - succeeded, "retries": 0}


async def _with_llm(
    ext: LLMExtractor,
    windows: set[Window],
    items: dict[str, dict],
    cache_dir: Path,
    show_progress: bool,
    cache_only: bool = False,
    shard: tuple[int, int] = (0, 1),
    unit: str = "history",
) -> tuple[dict[Window, list[str]], dict]:
    prompts: dict[str, Messages] = {}
    key_of: dict[Window, str] = {}
    for window in sorted(windows):
        messages = ext.messages([items.get(t, {}) for t in window])
        if messages:  # no item with text: nothing to ask, the rows get no interests
            key_of[window] = prompt_key(ext.backend, ext.model, messages)
            prompts[key_of[window]] = messages
    cache = ResultCache(cache_dir / (re.sub(r"[^\w.-]+", "-", ext.label) + ".jsonl"))
    # Shortest first: a batched backend pads each batch to its longest prompt, so similar lengths
    # waste little, and a run cut off early has finished the most prompts.
    uncached = sorted(
        (k for k in prompts if k not in cache.done), key=lambda k: prompt_chars(prompts[k])
    )
    index, shards = shard
    todo = [] if cache_only else [k for k in uncached if in_shard(k, index, shards)]
    missing = len(uncached) - len(todo)
    cached = len(prompts) - len(uncached)
    why = "cache_only" if cache_only else f"shard {index}/{shards}"
    print(
        f"[interests] {ext.label}: {len(windows):,} distinct {unit}s, {len(prompts):,} prompts, "
        f"{cached:,} cached -> {len(todo):,} LLM calls to make"
        + (f" ({why}: {missing:,} uncached prompts left without interests)" if missing else "")
    )
    counts: Counter[str] = Counter()
    errors: list[str] = []
    bar = tqdm(total=len(todo), desc="interests", unit="prompt", disable=not show_progress)
    pending = iter(todo)

    async def worker() -> None:
        for key in pending:  # shared iterator: each prompt is taken by exactly one worker
            outcome = await ext.ask(prompts[key])
            counts["retries"] += outcome.retries
            if outcome.phrases:
                cache.add_success(key, outcome.phrases)
                counts["succeeded"] += 1
                counts["short"] += len(outcome.phrases) < ext.num_interests
            else:
                cache.add_failure(key, outcome.error)
                counts["failed"] += 1
                if len(errors) < MAX_EXAMPLE_ERRORS:
                    errors.append(outcome.error)
            bar.update(1)
            bar.set_postfix(failed=counts["failed"], retries=counts["retries"], refresh=False)

    workers = [asyncio.create_task(worker()) for _ in range(min(ext.parallelism, len(todo)))]
    try:
        await asyncio.gather(*workers)
    finally:  # a fatal error in one worker stops the others; finished results are on disk
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        bar.close()
        cache.close()
        await ext.aclose()
    found = {w: cache.done.get(k, []) for w, k in key_of.items()}
    summary = {
        "model": ext.model,
        "calls_needed": len(todo),
        "cached": cached,
        "not_computed": missing,
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "short": counts["short"],
        "retries": counts["retries"],
        "no_text": len(windows) - len(key_of),
        "example_errors": errors,
    }
    return found, summary


def _by_items(
    icfg: Config,
    windows: set[Window],
    items: dict[str, dict],
    cache_dir: Path,
    show_progress: bool,
    device: str,
    encode: Encode | None,
) -> tuple[dict[str, list[str]], dict[Window, list[str]], dict]:
    """The items recipe: one prompt per item of any window, phrases merged, rows composed.
    Returns the item table, each window's interests and the summary."""
    ext = make_extractor(item_config(icfg), cache_dir, device)
    needed = sorted({t for w in windows for t in w})
    shard = (int(icfg.shard), int(icfg.shards))
    found, summary = asyncio.run(
        _with_llm(
            ext,
            {(t,) for t in needed},
            items,
            cache_dir,
            show_progress,
            bool(icfg.cache_only),
            shard,
            unit="item",
        )
    )
    raw = {t: found.get((t,), []) for t in needed}
    merged = merge_map(raw, encode, float(icfg.merge_threshold))
    table = canonical(raw, merged)
    composed = {w: compose((table[t] for t in w), int(icfg.num_interests)) for w in windows}
    summary.update(
        items_asked=len(needed),
        items_without_phrases=sum(1 for p in raw.values() if not p),
        item_phrases=len(merged),
        merged_into_others=sum(1 for p, q in merged.items() if p != q),
        merged_by="embeddings" if encode is not None else "identical strings",
    )
    return table, composed, summary


def annotate_rows(
    rows: list[dict],
    items: dict[str, dict],
    icfg: Config,
    cache_dir: Path,
    show_progress: bool = True,
    device: str = "cpu",
    encode: Encode | None = None,
    table_folder: tuple[Path, str] | None = None,
) -> tuple[list[list[str]], dict]:
    """Interest phrases per row (``[]`` where extraction failed, counted in the summary).

    ``encode`` (phrases -> unit vectors) lets the items recipe merge near-duplicate phrases; with
    ``table_folder`` (folder, dataset name) it writes its item table there for the demo."""
    start = time.perf_counter()
    stride = int(icfg.stride)
    if stride < 1:
        raise InterestError(f"interests.stride must be >= 1, got {stride}")
    shard = (int(icfg.shard), int(icfg.shards))
    if not 0 <= shard[0] < shard[1]:
        raise InterestError(f"interests.shard must be in 0..shards-1, got {shard[0]}/{shard[1]}")
    recipe = str(icfg.recipe)
    if recipe not in RECIPES:
        raise InterestError(f"interests.recipe: unknown recipe '{recipe}' ({' | '.join(RECIPES)})")
    by_items = recipe == "items" and icfg.backend != "keywords"
    if by_items and stride != 1:
        raise InterestError(
            f"interests.stride={stride}: the items recipe is fresh on every row; a stride "
            "applies to --interests.recipe=history"
        )
    windows = [prompt_window(r["inter_history"], stride, int(icfg.max_items)) for r in rows]
    distinct = set(windows) - {()}
    if by_items:
        table, found, summary = _by_items(
            icfg, distinct, items, cache_dir, show_progress, device, encode
        )
        label = f"items:{summary['model']}"
        if table_folder is not None:
            write_item_table(*table_folder, table)
    else:
        if table_folder is not None:  # a table of an earlier items run is not this data's
            item_table_path(*table_folder).unlink(missing_ok=True)
        ext = make_extractor(icfg, cache_dir, device)
        label = ext.label
        if isinstance(ext, KeywordExtractor):
            found, summary = _keywords(ext, distinct, items, show_progress)
        else:
            found, summary = asyncio.run(
                _with_llm(
                    ext, distinct, items, cache_dir, show_progress, bool(icfg.cache_only), shard
                )
            )
    interests = [list(found.get(w, [])) for w in windows]
    summary = {"backend": icfg.backend, "recipe": recipe if by_items else "history", **summary}
    if icfg.backend == "keywords":
        summary["recipe"] = "keywords"
    summary["rows_without_interests"] = sum(1 for p in interests if not p)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(
        f"[interests] {label}: {summary['succeeded']:,} succeeded, {summary['failed']:,} "
        f"failed, {summary['retries']:,} retries, {summary['cached']:,} from cache; "
        f"{summary['rows_without_interests']:,} of {len(rows):,} rows without interests; "
        f"{summary['seconds']:.1f}s"
    )
    return interests, summary

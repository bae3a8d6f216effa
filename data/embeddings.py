"""Item-text embeddings, and the file the RQ-VAE tokenizer reads its item vectors from.

The file is ``<name>_emb_<dim>.npy``, float32 ``[n_items + 1, dim]`` with row ``i`` = emb_map id
``i`` and row 0 (PAD) all zeros, whether the table is item text (here) or SASRec's item table
(``model.sasrec``: a model, so data_process.py trains it and writes its table through here).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from config import Config
from data.jsonl import DataError
from data.raw import Catalogue
from data.splits import load_emb_map
from data.text_embedding import encode_texts

MAX_FIELD_CHARS = 400  # the encoder keeps 256 word pieces (~1,000 characters) of each item text


def item_text(meta: dict) -> str:
    """Title first, long fields cut: the encoder drops whatever follows its 256th word piece."""
    parts = [meta.get("title") or ""]
    if meta.get("brand"):
        parts.append(f"Brand: {meta['brand']}")
    if meta.get("categories"):
        parts.append("Categories: " + " > ".join(meta["categories"]))
    if meta.get("features"):
        parts.append("Features: " + "; ".join(meta["features"])[:MAX_FIELD_CHARS])
    if meta.get("description"):
        parts.append("Description: " + meta["description"][:MAX_FIELD_CHARS])
    return ". ".join(p.strip() for p in parts if p.strip())


def text_embeddings(folder: Path, name: str, items: Catalogue, ecfg: Config) -> np.ndarray:
    """Sentence embedding of each item's text; items without text keep a zero row."""
    emb_map = load_emb_map(folder, name)
    texts = {t: item_text(items.get(t, {})) for t in emb_map if t != "[PAD]"}
    with_text = {t: s for t, s in texts.items() if s}
    if not with_text:
        raise DataError(
            f"{folder}: dataset '{name}' has no item text (title, brand, categories, description, "
            "features); text embeddings need it: use --embeddings.kind=sasrec for ID-only data"
        )
    if len(with_text) < len(texts):
        print(f"  {len(texts) - len(with_text):,} of {len(texts):,} items have no text: zero rows")
    vectors = encode_texts(
        list(with_text.values()),
        folder / f"{name}.text_cache",
        ecfg.text_batch_size,
        ecfg.text_model,
    )
    table = np.zeros((len(emb_map), vectors.shape[1]), dtype=np.float32)
    table[[emb_map[t] for t in with_text]] = vectors
    return table


def save_item_embeddings(folder: Path, name: str, table: np.ndarray, kind: str) -> Path:
    """Write ``table`` as ``<name>_emb_<dim>.npy`` (``train.semantic_emb`` names it); return it."""
    out = folder / f"{name}_emb_{table.shape[1]}.npy"
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, table)
    os.replace(tmp, out)  # a kill mid-write never leaves a torn table under the real name
    print(f"  item embeddings ({kind}) {table.shape[0]:,} x {table.shape[1]} -> {out}")
    return out

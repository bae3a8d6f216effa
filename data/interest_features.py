"""Interest phrases as the model reads them: one table and one encoder for training and serving.

data_process writes every phrase of the data once (``<name>.interest_phrases.json`` and
``<name>.interest_emb.npy``, encoded by ``text_model``). Training rows look their phrases up in
that table; serving (``Recommender``, the demo) looks a visitor's phrases up in the same table
and encodes only phrases the data never had, with the same ``text_model``, so a phrase gets the
vector it was trained with and a new one is encoded the way training would have encoded it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from data.jsonl import DataError

NEW_PHRASE_CACHE = 50_000  # vectors of phrases outside the table kept for repeat requests


class InterestFeatures:
    def __init__(self, phrases: list[str], matrix: np.ndarray, text_model: str) -> None:
        self.index = {p: i for i, p in enumerate(phrases)}
        self.matrix = torch.from_numpy(np.asarray(matrix, dtype=np.float32))
        self.text_model = text_model
        self._new: dict[str, torch.Tensor] = {}

    @classmethod
    def load(cls, folder: Path, name: str, settings: Path | None = None) -> InterestFeatures:
        """The table data_process wrote into ``folder``, with the text model that ``settings``
        records (a run's ``interests.json``; by default the data's ``interests_summary.json``;
        data and runs older than that record: all-MiniLM-L6-v2)."""
        from data.interests.recipe import INTERESTS_SUMMARY, read_settings
        from data.text_embedding import DEFAULT_MODEL

        recorded = read_settings(settings or folder / INTERESTS_SUMMARY) or {}
        text_model = recorded.get("text_model", DEFAULT_MODEL)
        phrases_path = folder / f"{name}.interest_phrases.json"
        emb_path = folder / f"{name}.interest_emb.npy"
        for p in (phrases_path, emb_path):
            if not p.exists():
                raise DataError(f"{p}: not found (run data_process.py with an interest backend)")
        phrases = json.loads(phrases_path.read_text())
        matrix = np.load(emb_path)
        if len(phrases) != len(matrix):
            raise DataError(f"{emb_path}: {len(matrix)} rows but {len(phrases)} phrases")
        return cls(phrases, matrix, text_model)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def rows(self, phrases: list[str]) -> list[int]:
        """Table rows of the phrases the table has (a training row's phrases all are)."""
        return [self.index[p] for p in phrases if p in self.index]

    def vectors(self, phrases: list[str]) -> torch.Tensor:
        """``[len(phrases), dim]``: table rows, and phrases the table lacks encoded on the fly
        (kept in a bounded cache for repeat requests; the answer is built before the cache makes
        room, so a full cache never evicts a phrase this call still needs)."""
        fresh: dict[str, torch.Tensor] = {}
        missing = [p for p in dict.fromkeys(phrases) if p not in self.index and p not in self._new]
        if missing:
            from data.text_embedding import interest_vectors

            encoded = interest_vectors(missing, self.text_model)
            fresh = {p: torch.from_numpy(v).float() for p, v in zip(missing, encoded, strict=True)}
        if not phrases:
            return self.matrix.new_zeros(0, self.dim)

        def vector(p: str) -> torch.Tensor:
            if p in self.index:
                return self.matrix[self.index[p]]
            return fresh[p] if p in fresh else self._new[p]

        out = torch.stack([vector(p) for p in phrases])
        for phrase, vec in fresh.items():
            if len(self._new) >= NEW_PHRASE_CACHE:
                self._new.pop(next(iter(self._new)))
            self._new[phrase] = vec
        return out

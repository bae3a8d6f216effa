"""The phrase table's on-the-fly vectors for phrases it lacks (the demo's typed interests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import data.interest_features as features_module
import data.text_embedding
from data.interest_features import InterestFeatures


def fake_vectors(phrases: list[str], model: str) -> np.ndarray:
    """One distinct vector per phrase (its length and first letter), so a wrong row shows."""
    return np.array([[len(p), ord(p[0]), 1.0] for p in phrases], dtype=np.float32)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> InterestFeatures:
    monkeypatch.setattr(data.text_embedding, "interest_vectors", fake_vectors)
    monkeypatch.setattr(features_module, "NEW_PHRASE_CACHE", 2)
    return InterestFeatures(["known"], np.array([[9.0, 9.0, 9.0]]), "fake-model")


def test_a_full_cache_never_drops_a_phrase_the_request_needs(table: InterestFeatures) -> None:
    table.vectors(["n1"])
    table.vectors(["n2"])  # the cache (2) is full; n1 is the oldest
    got = table.vectors(["n1", "n3", "known", "n1"])
    want = torch.tensor(
        np.r_[fake_vectors(["n1", "n3"], ""), [[9, 9, 9]], fake_vectors(["n1"], "")]
    ).float()
    torch.testing.assert_close(got, want)
    assert list(table._new) == ["n2", "n3"] and len(table._new) == 2  # bounded, n1 made room


def test_no_phrases_give_an_empty_matrix(table: InterestFeatures) -> None:
    assert table.vectors([]).shape == (0, 3)

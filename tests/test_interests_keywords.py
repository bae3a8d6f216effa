"""Keywords backend, and the no-leakage property on every row of scientific18."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from config import load_config
from data.interests import InterestError, annotate_rows, make_extractor
from data.interests.keywords import brand_name
from data.splits import SPLITS, load_items, load_split

POISON = "poison-item"
POISON_ITEM = {
    "title": "Zyxpoison Qwvleak Gadget",
    "brand": "Zyxpoison",
    "categories": ["Industrial & Scientific", "Zyxpoison Things", "Qwvleak Gadgets"],
    "description": "zyxpoison",
    "features": [],
}


def icfg(**overrides: object):
    cfg = load_config("data_process").interests
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def data(scientific18_dir: Path) -> tuple[list[dict], dict[str, dict]]:
    rows = [r for s in SPLITS for r in load_split(scientific18_dir, "scientific18", s)]
    return rows, load_items(scientific18_dir, "scientific18")


def test_keywords_deterministic_and_history_specific(data) -> None:
    rows, items = data
    ext = make_extractor(icfg(backend="keywords"))
    assert ext.label == "keywords"
    first = [items[t] for t in rows[0]["inter_history"]]
    other = next(
        r for r in rows if r["user_id"] != rows[0]["user_id"] and len(r["inter_history"]) > 3
    )
    second = [items[t] for t in other["inter_history"]]
    a1, a2 = asyncio.run(ext.extract(first)), asyncio.run(ext.extract(first))
    b = asyncio.run(ext.extract(second))
    assert a1 == a2 and len(a1) == 5 and len(set(a1)) == 5
    assert b != a1 and len(b) == 5
    # the latest item's most specific category leads a one-item history
    assert a1[0] == first[-1]["categories"][-1].lower()
    with pytest.raises(InterestError):
        asyncio.run(ext.extract([{}]))


def test_keywords_recent_items_weigh_more() -> None:
    ext = make_extractor(icfg(backend="keywords", num_interests=1))
    old = {"title": "", "categories": ["Root", "Soldering Irons"]}
    new = {"title": "", "categories": ["Root", "Lab Beakers"]}
    assert ext.phrases([old, new]) == ["lab beakers"]
    assert ext.phrases([new, old]) == ["soldering irons"]
    assert ext.phrases([old, old, new]) == ["soldering irons"]  # recurring beats one recent


def test_bad_backend_or_stride_is_a_clear_error(data, tmp_path: Path) -> None:
    with pytest.raises(InterestError, match="unknown backend 'nope'"):
        make_extractor(icfg(backend="nope"))
    with pytest.raises(InterestError, match="stride must be >= 1"):
        annotate_rows(data[0][:3], data[1], icfg(stride=0), tmp_path, show_progress=False)


def test_brand_name_drops_legal_suffixes() -> None:
    assert brand_name("Sealed Unit Parts Co., Inc.") == "sealed unit parts"
    assert brand_name("  3M  ") == "3m"


def _words(item: dict) -> set[str]:
    text = " ".join([item.get("title", ""), item.get("brand", ""), *item.get("categories", [])])
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.parametrize("stride", [1, 3])
def test_no_leakage_on_every_row(data, tmp_path: Path, stride: int) -> None:
    """Interests of row ``s[:t] -> s[t]`` depend only on the allowed prefix of its own history.

    Black-box: swapping every target, and every history item after the allowed prefix, for a
    poison item changes no row's interests; and every phrase word comes from the prefix's items.
    """
    rows, items = data
    cfg = icfg(backend="keywords", stride=stride)
    interests, summary = annotate_rows(rows, items, cfg, tmp_path, show_progress=False)
    assert len(interests) == len(rows) and all(interests)
    assert summary["failed"] == 0 and summary["rows_without_interests"] == 0
    assert summary["seconds"] < 60  # the whole dataset, keywords backend

    def allowed(n: int) -> int:  # longest L <= n with (L - 1) % stride == 0, by brute force
        return max(L for L in range(1, n + 1) if (L - 1) % stride == 0)

    poisoned = []
    for row in rows:
        h = row["inter_history"]
        cut = allowed(len(h))
        poisoned.append(
            {**row, "inter_history": h[:cut] + [POISON] * (len(h) - cut), "target_id": POISON}
        )
    again, _ = annotate_rows(
        poisoned, {**items, POISON: POISON_ITEM}, cfg, tmp_path, show_progress=False
    )
    assert again == interests
    for row, found in zip(rows, interests, strict=True):
        h = row["inter_history"]
        window = h[: allowed(len(h))][-cfg.max_items :]
        vocab = set().union(*(_words(items[t]) for t in window))
        for phrase in found:
            assert set(re.findall(r"[a-z0-9]+", phrase)) - {"products"} <= vocab, (row, phrase)
    if stride == 3:  # the cost knob: about one computation per three rows of a user
        assert summary["calls_needed"] < 0.45 * len(rows)


def test_embed_false_writes_interests_without_embedding(tmp_path: Path) -> None:
    """How a machine without the sentence-transformer (the GPU run) stops after the phrases."""
    from data.pipeline import build_dataset

    argv = ["--dataset=scientific18", f"--out_dir={tmp_path}", "--interests.backend=keywords"]
    argv += ["--interests.stride=8", "--interests.embed=false", "--embeddings.kind=none"]
    folder = build_dataset(load_config("data_process", argv))
    rows = load_split(folder, "scientific18", "test", processed=True)
    assert len(rows) == 8_317 and all(r["interests"] for r in rows)
    assert not (folder / "scientific18.interest_emb.npy").exists()

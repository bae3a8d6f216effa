"""The items recipe: one prompt per item, every row's interests composed fresh from its history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from fake_dashscope import default_reply

from config import load_config
from data.interests import InterestError, annotate_rows, make_extractor
from data.interests.prompt import item_line
from data.interests.recipe import (
    SETTINGS_FILE,
    ItemRecipe,
    canonical,
    compose,
    interest_settings,
    item_config,
    merge_map,
    read_item_table,
    read_settings,
)
from data.splits import load_items, load_split


def icfg(**overrides: object):
    cfg = load_config("data_process").interests
    cfg.update(backend="dashscope", recipe="items", backoff_s=0.01, timeout_s=5.0)
    cfg.update(overrides)
    return cfg


def tagged(messages: list[dict]) -> list[str]:
    return [line[10:-11] for line in default_reply(messages).splitlines()]


@pytest.fixture(scope="module")
def data(scientific18_dir: Path) -> tuple[list[dict], dict[str, dict]]:
    return load_split(scientific18_dir, "scientific18", "train"), load_items(
        scientific18_dir, "scientific18"
    )


def test_compose_weighs_recency_and_frequency() -> None:
    history = [["soldering irons", "flux"], ["lab safety"], ["flux", "multimeters"]]
    # flux: 1 (latest) + 0.8**2 (oldest) beats the latest item's other phrase (1.0)
    assert compose(history, 3) == ["flux", "multimeters", "lab safety"]
    assert compose(history[:1], 3) == ["flux", "soldering irons"]  # ties: alphabetical
    assert compose([[], []], 3) == []


def test_merge_map_keeps_the_most_frequent_wording() -> None:
    table = {"a": ["glass slide", "pipettes"], "b": ["glass slides"], "c": ["glass slides"]}
    vectors = {
        "glass slides": [1.0, 0.0],
        "glass slide": [0.96, 0.28],  # cosine 0.96 with "glass slides"
        "pipettes": [0.0, 1.0],
    }

    def encode(phrases: list[str]) -> np.ndarray:
        return np.array([vectors[p] for p in phrases], dtype=np.float32)

    merged = merge_map(table, encode, threshold=0.9)
    assert merged == {"glass slides": "glass slides", "glass slide": "glass slides",
                      "pipettes": "pipettes"}  # fmt: skip
    assert canonical(table, merged)["a"] == ["glass slides", "pipettes"]
    assert merge_map(table, encode, threshold=0.99)["glass slide"] == "glass slide"
    assert merge_map(table, None, 0.9)["glass slide"] == "glass slide"  # no encoder: exact only


def test_merge_map_with_the_real_sentence_transformer() -> None:
    from data.text_embedding import encode_texts

    table = {"a": ["microscope slides"], "b": ["microscope slide", "pipette tips"]}
    merged = merge_map(table, encode_texts, threshold=0.85)
    assert merged["microscope slide"] == merged["microscope slides"]
    assert merged["pipette tips"] == "pipette tips"


def test_one_prompt_per_item_and_fresh_leak_free_rows(
    dashscope_server, data, tmp_path: Path, capsys
) -> None:
    rows, items = data
    user = rows[0]["inter_history"][0]
    rows = [r for r in rows if r["inter_history"][0] == user][:4] + rows[40:44]
    srv = dashscope_server()
    folder = tmp_path / "data"
    folder.mkdir()
    found, summary = annotate_rows(
        rows, items, icfg(), tmp_path, show_progress=False, table_folder=(folder, "sci")
    )
    needed = {t for r in rows for t in r["inter_history"][-20:]}
    assert summary["recipe"] == "items" and summary["items_asked"] == len(needed)
    assert len(srv.requests) == summary["succeeded"] == len(needed)
    asked = [
        [ln for ln in p[-1]["content"].splitlines() if ln.startswith("- ")] for p in srv.prompts()
    ]
    assert all(len(lines) == 1 for lines in asked)  # every prompt is one item
    assert sorted(lines[0] for lines in asked) == sorted(item_line(items[t]) for t in needed)
    phrases_of = {}
    for prompt in srv.prompts():
        line = next(ln for ln in prompt[-1]["content"].splitlines() if ln.startswith("- "))
        phrases_of[line] = tagged(prompt)[:3]
    for row, interests in zip(rows, found, strict=True):
        history = row["inter_history"][-20:]
        allowed = {p for t in history for p in phrases_of[item_line(items[t])]}
        assert interests and set(interests) <= allowed  # only the row's own items
        assert interests == compose([phrases_of[item_line(items[t])] for t in history], 5)
    assert found[0] != found[1]  # the next purchase changes the interests: no stride staleness
    table = read_item_table(folder, "sci")
    assert set(table) == needed
    assert summary["backend"] == "dashscope" and summary["merged_by"] == "identical strings"
    again, summary2 = annotate_rows(rows, items, icfg(), tmp_path, show_progress=False)
    assert again == found and len(srv.requests) == len(needed)  # resumed from the cache
    assert summary2["cached"] == len(needed) and summary2["calls_needed"] == 0


def test_a_stride_is_refused_with_the_items_recipe(data, tmp_path: Path) -> None:
    with pytest.raises(InterestError, match="items recipe is fresh on every row"):
        annotate_rows(data[0][:3], data[1], icfg(stride=2), tmp_path, show_progress=False)


def with_table(row: dict, items: dict, tmp_path: Path, name: str) -> tuple[list[str], Path]:
    """One row annotated by the items recipe, its item table written to ``tmp_path/name``."""
    folder = tmp_path / name
    folder.mkdir()
    found, _ = annotate_rows(
        [row], items, icfg(), tmp_path, show_progress=False, table_folder=(folder, name)
    )
    return found[0], folder


def as_served(items: dict, tokens: list[str]) -> list[dict]:
    """Item dicts as the demo hands them to an extractor: metadata plus ``item_id``."""
    return [{**items[t], "item_id": t} for t in tokens]


def test_the_demo_composes_like_training_and_asks_new_items_once(
    dashscope_server, data, tmp_path: Path
) -> None:
    rows, items = data
    srv = dashscope_server()
    row = rows[5]
    found, folder = with_table(row, items, tmp_path, "sci")
    asked = len(srv.requests)
    item_ext = make_extractor(item_config(icfg()), tmp_path / "demo-cache")
    recipe = ItemRecipe(read_item_table(folder, "sci"), item_ext, 5, 20)
    history = as_served(items, row["inter_history"])
    new = next(t for t in items if t not in row["inter_history"])
    newest = as_served(items, [*row["inter_history"], new])

    async def serve() -> tuple[list[str], int, list[str], list[str]]:
        try:
            known = await recipe.extract(history)
            calls = len(srv.requests)
            return known, calls, await recipe.extract(newest), await recipe.extract(newest)
        finally:
            await recipe.aclose()

    known, calls, first, second = asyncio.run(serve())
    assert known == found and calls == asked  # every item came from the table
    assert first == second and len(srv.requests) == asked + 1  # the new item asked once
    recent = tagged(srv.prompts()[-1])[:3]
    assert first[: len(recent)] == recent  # the newest item's phrases lead


def test_the_demo_serves_with_the_settings_the_run_recorded(
    dashscope_server, data, tmp_path: Path, caplog
) -> None:
    from demo.interests import choose_backend, make_demo_extractor, serving_backend

    rows, items = data
    srv = dashscope_server()
    row = rows[7]
    found, folder = with_table(row, items, tmp_path, "scientific18")
    trained = interest_settings(icfg(), "all-MiniLM-L6-v2", "qwen-plus")
    assert serving_backend("auto", trained) == "dashscope"
    assert serving_backend("auto", None) == choose_backend("auto")  # runs without a record
    with caplog.at_level("WARNING"):
        assert serving_backend("keywords", trained) == "keywords"
    assert "trained on dashscope interests" in caplog.text
    asked = len(srv.requests)
    extractor = make_demo_extractor("dashscope", "scientific18", trained, folder)
    assert isinstance(extractor, ItemRecipe)
    history = as_served(items, row["inter_history"])

    async def serve() -> list[str]:
        try:
            return await extractor.extract(history)
        finally:
            await extractor.aclose()

    assert asyncio.run(serve()) == found and len(srv.requests) == asked
    legacy = make_demo_extractor("dashscope", "scientific18")  # a run older than the record
    assert not isinstance(legacy, ItemRecipe)
    asyncio.run(legacy.aclose())


def test_training_records_the_interest_settings_and_serving_reads_them(tmp_path: Path) -> None:
    from demo_support import tiny_run_dir

    from model import Recommender

    run_dir = tiny_run_dir(tmp_path)
    recorded = read_settings(run_dir / SETTINGS_FILE)
    assert recorded is not None and recorded["backend"] == "keywords"
    assert recorded["text_model"] == load_config("data_process").embeddings.text_model
    assert Recommender.load(run_dir).features.text_model == recorded["text_model"]


def test_an_item_reply_with_fewer_phrases_is_accepted_without_retry(
    dashscope_server, data, tmp_path: Path
) -> None:
    """An item needs ``item_min_phrases``; the history's other items make up the rest."""
    rows, items = data
    srv = dashscope_server(
        model_reply=lambda messages: tagged(messages)[0].join(["<interest>", "</interest>"])
    )
    found, summary = annotate_rows(rows[:3], items, icfg(), tmp_path, show_progress=False)
    needed = {t for r in rows[:3] for t in r["inter_history"][-20:]}
    assert len(srv.requests) == len(needed) and summary["retries"] == 0
    assert summary["short"] == len(needed) and all(found)
    srv2 = dashscope_server(model_reply=lambda messages: "<interest>one</interest>")
    strict_cfg = icfg(item_min_phrases=3, max_retries=1)
    _, strict = annotate_rows(rows[3:4], items, strict_cfg, tmp_path / "s", show_progress=False)
    asked = strict["calls_needed"]  # each item asked, then asked again for the missing phrases
    assert asked > 0 and strict["retries"] == asked and len(srv2.requests) == 2 * asked


def test_serving_uses_the_training_vectors_and_encodes_new_phrases_alike(tmp_path: Path) -> None:
    import torch
    from demo_support import tiny_run_dir

    from data.text_embedding import encode_texts
    from model import Recommender

    features = Recommender.load(tiny_run_dir(tmp_path)).features
    known = next(iter(features.index))
    assert torch.equal(features.vectors([known])[0], features.matrix[features.index[known]])
    new = "unheard-of interest phrase"
    assert new not in features.index
    expected = encode_texts([new], model=features.text_model)[0]
    assert np.allclose(features.vectors([known, new])[1].numpy(), expected, atol=1e-6)

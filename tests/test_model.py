"""The model's promises: interests reach the decoder, beam search is exact and valid, codes are
unique even when a collision group overflows the codebook, checkpoints load strictly."""

from __future__ import annotations

import math

import pytest
import torch

from config import ConfigError, load_config
from data.batches import Batch
from model.beam import beam_search
from model.checkpoint import CheckpointError, load_state_strict
from model.evaluation import Ranking, item_log_probs, recommend_batch, recommend_batch_weights
from model.fusion import FUSIONS, CrossAttentionLayer, InterestFusion, register
from model.generator import GenerativeRecommender, ItemHead
from model.item_codes import PrefixTrie, assign_unique_codes
from model.item_tokenizer import TOKENIZERS, register_tokenizer
from model.recommender import build_models
from model.rqvae import RQVAE

CODE_SIZE = 8
DEPTH = 3


def tiny_cfg(**overrides):
    base = dict(
        config="config/tiny.yaml", code_size=CODE_SIZE, code_levels=DEPTH - 1, dropout_rate=0.0
    )
    base.update(overrides)
    return load_config("train", **base)


def random_codes(n_items: int, seed: int = 0) -> torch.Tensor:
    """``n_items`` distinct codes of DEPTH tokens."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(CODE_SIZE**DEPTH, generator=g)[:n_items]
    return torch.stack([(flat // CODE_SIZE**i) % CODE_SIZE for i in reversed(range(DEPTH))], 1)


def make_model(fusion: bool, seed: int = 0, **kw) -> GenerativeRecommender:
    torch.manual_seed(seed)
    return GenerativeRecommender(
        tiny_cfg(interest_fusion=fusion, **kw), DEPTH, CODE_SIZE, semantic_dim=16
    ).eval()


def history_batch(codes: torch.Tensor, b: int = 3, h: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, len(codes), (b, h), generator=g)
    mask = torch.ones(b, h, dtype=torch.bool)
    mask[0, 2:] = False  # a shorter history
    return {"history_codes": codes[ids], "history_mask": mask}


def interest_inputs(b: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "interests": torch.randn(b, 5, 384, generator=g),
        "interest_mask": torch.ones(b, 5, dtype=torch.bool),
    }


def first_logits(model: GenerativeRecommender, batch: dict) -> torch.Tensor:
    memory, mask, _ = model.encode(Batch(**batch))
    start = torch.zeros(memory.shape[0], 1, dtype=torch.long)
    return model.level_logits(model.decode(start, memory, mask)[:, -1], 0)


def searchable(n_items: int, b: int = 3, interest_seed: int | None = None) -> tuple:
    """What a beam-search test starts from: codes, a model (fusing random interests drawn with
    ``interest_seed``, else none), the trie, a history batch and its encoding (memory, mask)."""
    codes = random_codes(n_items)
    model = make_model(interest_seed is not None)
    batch = history_batch(codes, b=b)
    if interest_seed is not None:
        batch.update(interest_inputs(b, seed=interest_seed))
    with torch.no_grad():
        memory, mask, _ = model.encode(Batch(**batch))
    return codes, model, PrefixTrie(codes, CODE_SIZE), batch, memory, mask


@pytest.mark.parametrize("fusion_type", ["simple", "transformer", "adaptive", "single"])
def test_interests_change_decoder_logits(fusion_type: str) -> None:
    codes = random_codes(40)
    model = make_model(True, fusion_type=fusion_type, fusion_combine="weighted")
    batch = history_batch(codes)
    a = first_logits(model, {**batch, **interest_inputs(3, seed=1)})
    b = first_logits(model, {**batch, **interest_inputs(3, seed=2)})
    assert (a - b).abs().max() > 1e-3


def test_a_new_fusion_is_one_registered_class() -> None:
    """The registry is the only list: once registered, the config accepts the name and the
    generator builds it."""

    @register("test-gated-once")
    class GatedOnce(InterestFusion):
        def make_layer(self, d_model: int, heads: int, dropout: float) -> torch.nn.Module:
            return CrossAttentionLayer(d_model, heads, dropout, feed_forward=False, gated=True)

    try:
        model = make_model(True, fusion_type="test-gated-once", fusion_layers=1)
        assert isinstance(model.fusion, GatedOnce) and model.fusion.layers[0].gate is not None
        batch = history_batch(random_codes(40))
        a = first_logits(model, {**batch, **interest_inputs(3, seed=1)})
        b = first_logits(model, {**batch, **interest_inputs(3, seed=2)})
        assert (a - b).abs().max() > 1e-3
    finally:
        del FUSIONS["test-gated-once"]
    with pytest.raises(ConfigError, match="--fusion_type: unknown value 'test-gated-once'"):
        tiny_cfg(fusion_type="test-gated-once")


def test_a_new_item_tokenizer_is_one_registered_class() -> None:
    """The trainer builds whatever the registry names; a subclass needs no trainer change."""

    @register_tokenizer("test-rqvae-two-levels")
    class TwoLevels(RQVAE):
        @classmethod
        def from_config(cls, cfg, in_dim: int) -> TwoLevels:
            return cls(in_dim, [32], 8, 2, cfg.code_size, cfg.vq_beta)

    try:
        cfg = tiny_cfg(item_tokenizer="test-rqvae-two-levels")
        tokenizer, _ = build_models(cfg, 16)
        assert isinstance(tokenizer, TwoLevels) and len(tokenizer.quantizer.codebooks) == 2
        codes, dist = tokenizer.code_distances(torch.randn(5, 16))
        assert codes.shape == (5, 2) and dist.shape == (5, CODE_SIZE)
    finally:
        del TOKENIZERS["test-rqvae-two-levels"]
    with pytest.raises(ConfigError, match="--item_tokenizer: unknown value"):
        tiny_cfg(item_tokenizer="test-rqvae-two-levels")


def test_interests_can_change_the_beam_output() -> None:
    codes = random_codes(60)
    trie = PrefixTrie(codes, CODE_SIZE)
    model = make_model(True)
    with torch.no_grad():  # make the interest pathway strong enough to dominate
        model.fusion.project[0].weight.mul_(20)
    batch = history_batch(codes, b=1)
    outputs = set()
    for seed in range(8):
        memory, mask, _ = model.encode(Batch(**batch, **interest_inputs(1, seed)))
        items, _ = beam_search(model, trie, memory, mask, num_beams=10, topk=5)
        outputs.add(tuple(items[0].tolist()))
    assert len(outputs) > 1


def test_without_fusion_interests_are_never_read() -> None:
    codes = random_codes(40)
    model = make_model(False)
    assert model.fusion is None
    batch = history_batch(codes)
    plain = first_logits(model, batch)
    poisoned = {
        "interests": torch.full((3, 5, 384), float("nan")),
        "interest_mask": torch.ones(3, 5, dtype=torch.bool),
    }
    assert torch.equal(plain, first_logits(model, {**batch, **poisoned}))


def test_fusion_requires_interests() -> None:
    codes = random_codes(10)
    with pytest.raises(ValueError, match="interests"):
        first_logits(make_model(True), history_batch(codes))


def exhaustive_scores(
    model: GenerativeRecommender, batch: dict, codes: torch.Tensor
) -> torch.Tensor:
    """Teacher-forced log-probability of every item: the exact ranking beam search approximates."""
    memory, mask, _ = model.encode(Batch(**batch))
    b, n = memory.shape[0], len(codes)
    tokens = model.tokens(codes)
    dec_in = torch.cat([torch.zeros(n, 1, dtype=torch.long), tokens[:, :-1]], 1)
    scores = torch.zeros(b, n)
    for i in range(b):
        states = model.decode(
            dec_in, memory[i : i + 1].expand(n, -1, -1), mask[i : i + 1].expand(n, -1)
        )
        for lv in range(DEPTH):
            logp = torch.log_softmax(model.level_logits(states[:, lv], lv), -1)
            scores[i] += logp[torch.arange(n), codes[:, lv]]
    return scores


@pytest.mark.parametrize("fusion", [False, True])
def test_beam_search_with_cache_is_exact_when_beams_cover_all_items(fusion: bool) -> None:
    codes, model, trie, batch, memory, mask = searchable(30, interest_seed=3 if fusion else None)
    with torch.no_grad():
        items, scores = beam_search(model, trie, memory, mask, num_beams=30, topk=10)
        exact = exhaustive_scores(model, batch, codes)
    best = exact.topk(10, -1)
    assert torch.equal(items, best.indices)
    assert torch.allclose(scores, best.values, atol=1e-4)


def test_excluded_items_are_left_out_and_the_rest_keep_their_exact_order() -> None:
    codes, model, trie, batch, memory, mask = searchable(30)
    with torch.no_grad():
        exact = exhaustive_scores(model, batch, codes)
        exclude = exact.topk(3, -1).indices  # each user's own three best items
        exclude[0, 2] = -1  # a padded slot excludes nothing
        items, scores = beam_search(model, trie, memory, mask, 30, 10, exclude=exclude)
    for u in range(3):
        left_out = [i for i in exclude[u].tolist() if i >= 0]
        kept = [i for i in exact[u].argsort(descending=True).tolist() if i not in left_out]
        assert items[u].tolist() == kept[:10]
    assert items[0, 0] == exact[0].topk(3).indices[2]  # the un-excluded third best comes first


def test_a_popularity_prior_reranks_by_adjusted_score_and_reports_log_probabilities() -> None:
    """With beams covering every item, the search with ``popularity_prior`` returns the exact
    top 10 of ``log p - strength * log(count + 1)``, each with its plain log-probability."""
    codes, model, trie, batch, memory, mask = searchable(30)
    counts = torch.randint(0, 200, (30,), generator=torch.Generator().manual_seed(4))
    prior = trie.popularity_prior(counts, strength=0.7)
    first = codes[:, 0] == codes[0, 0]  # the items under item 0's first code
    mean_weight = ((counts[first].double() + 1) ** -0.7).mean()
    assert prior[0][trie.node_of_item[0][0]] == pytest.approx(math.log(mean_weight), rel=1e-5)
    assert torch.allclose(prior[-1], -0.7 * torch.log(counts.float() + 1))
    with torch.no_grad():
        items, scores = beam_search(model, trie, memory, mask, 30, 10, prior=prior)
        exact = exhaustive_scores(model, batch, codes)
    adjusted = exact - 0.7 * torch.log(counts.float() + 1)
    assert torch.equal(items, adjusted.topk(10, -1).indices)
    assert torch.allclose(scores, exact.gather(1, items), atol=1e-4)
    assert not torch.equal(items, exact.topk(10, -1).indices)  # the prior changed the ranking


def test_narrow_beams_still_return_k_items_when_the_best_prefixes_are_all_excluded() -> None:
    """Exclude every item under each user's best first code: a search that only filtered its
    final beams would come back with few or none; skipping dead prefixes gives k of the rest."""
    codes, model, trie, batch, memory, mask = searchable(200, b=3)
    with torch.no_grad():
        best, _ = beam_search(model, trie, memory, mask, num_beams=5, topk=5)
        first = codes[best[:, 0], 0]  # each user's best first-level code
        exclude = [torch.nonzero(codes[:, 0] == c).flatten() for c in first]
        exclude = torch.nn.utils.rnn.pad_sequence(exclude, batch_first=True, padding_value=-1)
        items, scores = beam_search(model, trie, memory, mask, 5, 5, exclude=exclude)
        exact = exhaustive_scores(model, batch, codes)
    for u in range(3):
        left_out = set(exclude[u].tolist()) - {-1}
        assert len(left_out) > 5 and items[u].ge(0).all()
        assert not left_out & set(items[u].tolist())
        assert codes[items[u], 0].ne(first[u]).all()
        for i, s in zip(items[u].tolist(), scores[u].tolist(), strict=True):
            assert s == pytest.approx(exact[u, i].item(), abs=1e-4)  # true scores of real items


def test_one_user_alone_gets_what_it_gets_in_a_batch() -> None:
    """A single user's search shares its cross-attention rows as a view across beams (serving);
    a batch copies them per beam. Both must rank alike."""
    _, model, trie, _, memory, mask = searchable(100, b=4, interest_seed=5)
    with torch.no_grad():
        items, scores = beam_search(model, trie, memory, mask, num_beams=20, topk=10)
        for u in range(4):
            alone, alone_scores = beam_search(
                model, trie, memory[u : u + 1], mask[u : u + 1], num_beams=20, topk=10
            )
            assert torch.equal(alone[0], items[u])
            assert torch.allclose(alone_scores[0], scores[u], atol=1e-5)


def test_beam_results_are_real_distinct_items() -> None:
    _, model, trie, _, memory, mask = searchable(100, b=6)
    with torch.no_grad():
        items, scores = beam_search(model, trie, memory, mask, num_beams=20, topk=10)
    assert items.shape == (6, 10)
    assert ((items >= 0) & (items < 100)).all()
    for row in items:
        assert len(set(row.tolist())) == 10
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_fewer_items_than_k_are_marked_missing() -> None:
    _, model, trie, _, memory, mask = searchable(4, b=2)
    with torch.no_grad():
        items, _ = beam_search(model, trie, memory, mask, num_beams=20, topk=10)
    assert sorted(items[0, :4].tolist()) == [0, 1, 2, 3]
    assert (items[:, 4:] == -1).all()


def test_overflowing_collision_group_is_resolved_and_reported() -> None:
    n, k = 200, 16  # 200 items share one 2-level code, but only 16 fit behind it
    codes = torch.zeros(n, 2, dtype=torch.long)
    last_dist = torch.rand(n, k, generator=torch.Generator().manual_seed(0))
    unique, report = assign_unique_codes(codes, last_dist, k)
    assert report.max_group == n and report.collision_rate == 1.0
    assert report.reassigned == n - k
    assert len({tuple(c) for c in unique.tolist()}) == n
    assert unique.max() < k
    PrefixTrie(unique, k)  # raises if two items share a code


def test_collision_free_codes_get_suffix_zero() -> None:
    codes = random_codes(20)[:, :2]
    codes = torch.unique(codes, dim=0)
    unique, report = assign_unique_codes(codes, torch.zeros(len(codes), CODE_SIZE), CODE_SIZE)
    assert report.collision_rate == 0.0 and report.reassigned == 0
    assert (unique[:, -1] == 0).all()


def test_trie_rejects_duplicate_codes() -> None:
    codes = torch.tensor([[1, 2, 0], [1, 2, 0]])
    with pytest.raises(ValueError, match="not unique"):
        PrefixTrie(codes, CODE_SIZE)


def test_strict_loading_names_missing_and_unexpected_keys() -> None:
    model = RQVAE(16, [32], 8, 2, 8, 0.25)
    state = model.state_dict()
    state.pop("encoder.0.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="encoder.0.weight.*extra.weight"):
        load_state_strict(model, state, "ckpt")


def test_rqvae_learns_to_reconstruct() -> None:
    torch.manual_seed(0)
    centers = torch.randn(32, 16)
    x = centers[torch.randint(32, (256,))] + 0.05 * torch.randn(256, 16)  # clustered, like items
    model = RQVAE(16, [64, 32], 8, 3, 16, 0.25)
    model.quantizer.kmeans_init(model.encoder(x).detach(), 10, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = float(model(x)["recon_loss"].detach())
    for _ in range(200):
        out = model(x)
        opt.zero_grad()
        (out["recon_loss"] + out["vq_loss"]).backward()
        opt.step()
    assert float(model(x)["recon_loss"].detach()) < 0.5 * first


def test_full_subtree_overflows_into_another_parent() -> None:
    k = 4  # 20 items share one code, but a parent holds only 4 x 4 = 16
    codes = torch.zeros(20, 2, dtype=torch.long)
    codes[-1, 0] = 1  # a second parent in use
    last_dist = torch.rand(20, k, generator=torch.Generator().manual_seed(0))
    unique, report = assign_unique_codes(codes, last_dist, k)
    assert len({tuple(c) for c in unique.tolist()}) == 20
    assert report.reassigned > 0


def test_collapsed_first_level_still_gets_unique_codes() -> None:
    # every item has first-level code 0: the one parent in use holds 8 x 8 = 64 items, far fewer
    # than the 300 to place, while the code space (8 parents) holds 512
    k, n = 8, 300
    gen = torch.Generator().manual_seed(0)
    codes = torch.stack(
        [torch.zeros(n, dtype=torch.long), torch.randint(k, (n,), generator=gen)], 1
    )
    last_dist = torch.rand(n, k, generator=gen)
    unique, report = assign_unique_codes(codes, last_dist, k)
    assert len({tuple(c) for c in unique.tolist()}) == n
    assert report.reassigned > 0 and unique.max() < k
    PrefixTrie(unique, k)


def test_a_full_code_space_is_refused() -> None:
    k = 2  # 2 parents x 2 codes x 2 suffixes = 8 slots for 9 items
    codes = torch.zeros(9, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="more items than the codebooks can hold"):
        assign_unique_codes(codes, torch.rand(9, k), k)


def item_head_setup(n_items: int = 30) -> tuple:
    """A model with an item head over ``n_items`` (emb ids 1..n; row 0 of the codes is padding),
    its trie, a history batch, its encoding and each user's exact code and item log-probs."""
    codes = random_codes(n_items)
    torch.manual_seed(0)
    model = GenerativeRecommender(
        tiny_cfg(interest_fusion=False, item_head=True), DEPTH, CODE_SIZE, 16, n_items + 1
    ).eval()
    batch = history_batch(codes)
    with torch.no_grad():
        memory, mask, _ = model.encode(Batch(**batch))
        code_logp = exhaustive_scores(model, batch, codes)  # [B, n] by trie index
        item_logp = item_log_probs(model, model.first_step(memory, mask)[0], Batch(**batch), None)
    by_emb_id = torch.cat([torch.zeros(1, DEPTH, dtype=torch.long), codes])
    return codes, model, PrefixTrie(codes, CODE_SIZE), batch, by_emb_id, code_logp, item_logp


def test_candidate_code_log_probs_equal_the_teacher_forced_ones() -> None:
    codes, model, _, batch, _, code_logp, item_logp = item_head_setup()
    memory, mask, _ = model.encode(Batch(**batch))
    pick = torch.tensor([[0, 5, 29], [3, 3, 7], [12, 1, 0]])
    with torch.no_grad():
        got = model.code_log_probs(*model.first_step(memory, mask), memory, mask, codes[pick])
        out = model(Batch(**batch, target_codes=codes[pick[:, 0]], target_ids=pick[:, 0] + 1))
    assert torch.allclose(got, code_logp.gather(1, pick), atol=1e-5)
    assert item_logp[:, 0].eq(float("-inf")).all()  # padding is never recommended
    assert torch.allclose(out["item_logits"].log_softmax(-1), item_logp, atol=1e-5)


def test_a_pass_without_item_logits_gives_the_same_other_outputs() -> None:
    """What a tokenizer step reads (``with_items=False``) is what the full pass gives."""
    codes, model, _, batch, _, _, _ = item_head_setup()
    target = Batch(**batch, target_codes=codes[:3], target_ids=torch.arange(1, 4))
    with torch.no_grad():
        full, light = model(target), model(target, with_items=False)
    assert "item_logits" in full and "item_logits" not in light
    assert light.keys() == full.keys() - {"item_logits"}
    for key, value in light.items():
        assert torch.equal(value, full[key]), key


@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_ranking_by_both_is_exact_when_the_candidates_cover_all_items(weight: float) -> None:
    """With beams and item candidates covering every item, ``both`` returns the exact top 10 of
    ``log p(codes) + weight * log p(item)``; ``items`` the item head's top 10; both leave out
    excluded items."""
    codes, model, trie, batch, by_emb_id, code_logp, item_logp = item_head_setup()
    exact = code_logp + weight * item_logp[:, 1:]  # trie index i is emb id i + 1
    exclude = exact.topk(2, -1).indices + 1  # each user's two best, as emb ids
    exclude[1, 1] = 0  # a padded slot excludes nothing
    both = Ranking("both", weight, item_candidates=30)
    with torch.no_grad():
        items, scores = recommend_batch(
            model, trie, Batch(**batch), 30, 10, None, None, both, by_emb_id
        )
        kept, _ = recommend_batch(
            model, trie, Batch(**batch), 30, 10, exclude, None, both, by_emb_id
        )
        by_item, _ = recommend_batch(model, trie, Batch(**batch), 30, 10, ranking=Ranking("items"))
    best = exact.topk(10, -1)
    assert torch.equal(items, best.indices + 1)
    assert torch.allclose(scores, best.values, atol=1e-4)
    assert torch.equal(by_item, item_logp.topk(10, -1).indices)
    for u in range(3):
        left_out = {i for i in exclude[u].tolist() if i > 0}
        order = [i + 1 for i in exact[u].argsort(descending=True).tolist()]
        assert kept[u].tolist() == [i for i in order if i not in left_out][:10]


def test_a_popularity_prior_adjusts_both_terms_of_the_item_head_ranking() -> None:
    """With a prior of strength A, ``both`` ranks by ``log p(codes) + w * log p(item) -
    (1 + w) * A * log(count + 1)`` (each log-probability adjusted once) and ``items`` by
    ``log p(item) - A * log(count + 1)``; the adjustment changes the ranking."""
    codes, model, trie, batch, by_emb_id, code_logp, item_logp = item_head_setup()
    counts = torch.randint(0, 500, (codes.shape[0],), generator=torch.Generator().manual_seed(7))
    prior = trie.popularity_prior(counts, strength=0.8)
    penalty = 0.8 * torch.log(counts.float() + 1)
    weight = 2.0
    with torch.no_grad():
        args = (model, trie, Batch(**batch), 30, 10, None, prior)
        both, _ = recommend_batch(*args, Ranking("both", weight, 30), by_emb_id)
        by_item, _ = recommend_batch(*args, Ranking("items"))
        plain, _ = recommend_batch(*args[:-1], None, Ranking("both", weight, 30), by_emb_id)
    exact = code_logp + weight * item_logp[:, 1:] - (1 + weight) * penalty
    assert torch.equal(both, exact.topk(10, -1).indices + 1)
    assert torch.equal(by_item, (item_logp[:, 1:] - penalty).topk(10, -1).indices + 1)
    assert not torch.equal(both, plain)


def test_one_search_ranks_every_weight_as_a_search_per_weight_does() -> None:
    """``recommend_batch_weights`` shares one search among the weights: each weight's items and
    scores are exactly ``recommend_batch``'s at that weight, with and without a prior; rankings
    without a weight repeat their one result."""
    codes, model, trie, batch, by_emb_id, _, _ = item_head_setup()
    counts = torch.randint(0, 500, (codes.shape[0],), generator=torch.Generator().manual_seed(3))
    weights = (0.5, 1.0, 4.0)
    for prior in (None, trie.popularity_prior(counts, strength=0.5)):
        args = (model, trie, Batch(**batch), 5, 10, None, prior)
        shared = recommend_batch_weights(*args, Ranking("both", 9.0, 30), by_emb_id, weights)
        assert len(shared) == len(weights)
        for weight, (items, scores) in zip(weights, shared, strict=True):
            alone = recommend_batch(*args, Ranking("both", weight, 30), by_emb_id)
            assert torch.equal(items, alone[0]) and torch.equal(scores, alone[1])
        assert not torch.equal(shared[0][0], shared[-1][0])  # the weight changed the ranking
        codes_only = recommend_batch_weights(*args, Ranking("codes"), by_emb_id, weights)
        assert all(torch.equal(items, codes_only[0][0]) for items, _ in codes_only)


def test_item_candidates_reach_items_the_beam_pruned() -> None:
    """A narrow beam keeps few first codes; the item head's candidates still bring in the item
    with the best combined score when the beam missed it."""
    codes, model, trie, batch, by_emb_id, code_logp, item_logp = item_head_setup()
    model.item_head.table.weight.data[1:] *= 40  # a sharp item head: it decides the ranking
    with torch.no_grad():
        first, _ = model.first_step(*model.encode(Batch(**batch))[:2])
        item_logp = item_log_probs(model, first, Batch(**batch), None)
        args = (model, trie, Batch(**batch), 1, 5, None, None)
        codes_only, _ = recommend_batch(*args, Ranking("codes"), by_emb_id)
        narrow, _ = recommend_batch(*args, Ranking("both", 1.0, 0), by_emb_id)
        wide, _ = recommend_batch(*args, Ranking("both", 1.0, 30), by_emb_id)
    exact = (code_logp + item_logp[:, 1:]).argmax(-1) + 1
    assert torch.equal(wide[:, 0], exact)
    assert not torch.equal(narrow[:, 0], exact)  # the beam alone missed it for some user
    assert set(narrow[0].tolist()) == set(codes_only[0].tolist())  # no candidates: the beam's


def test_with_a_prior_the_item_head_proposes_its_best_adjusted_items() -> None:
    """Under a popularity prior, the item head's candidates are its top items after the
    adjustment the ranking applies: a winner that neither the 1-item beam nor the item head's
    unadjusted top 3 holds, but its adjusted top 3 does, comes first. Such users depend on the
    draw of purchase counts, so several draws are tried and every such user is checked."""
    codes, model, trie, batch, by_emb_id, code_logp, _ = item_head_setup()
    model.item_head.table.weight.data[1:] *= 40
    with torch.no_grad():
        first, _ = model.first_step(*model.encode(Batch(**batch))[:2])
        item_logp = item_log_probs(model, first, Batch(**batch), None)[:, 1:]
    unadjusted = item_logp.topk(3, -1).indices  # the head's plain top 3: no prior in it
    checked = 0
    for seed in range(12):
        counts = torch.randint(
            0, 500, (codes.shape[0],), generator=torch.Generator().manual_seed(seed)
        )
        for strength in (1.0, 3.0):
            prior, penalty = (
                trie.popularity_prior(counts, strength),
                strength * torch.log(counts + 1.0),
            )
            with torch.no_grad():
                args = (model, trie, Batch(**batch), 1, 1, None, prior)
                beam, _ = recommend_batch(*args, Ranking("codes"), by_emb_id)
                got, _ = recommend_batch(*args, Ranking("both", 1.0, 3), by_emb_id)
            exact = (code_logp + item_logp - 2 * penalty).argmax(-1)
            adjusted = (item_logp - penalty).topk(3, -1).indices
            for u, e in enumerate(exact.tolist()):
                if e + 1 != beam[u, 0] and e not in unadjusted[u] and e in adjusted[u]:
                    assert got[u, 0] == e + 1, (seed, strength, u)
                    checked += 1
    assert checked  # some user's winner only the adjusted candidates hold


def test_ranking_by_items_pads_a_catalogue_smaller_than_k() -> None:
    codes, model, trie, batch, _, _, item_logp = item_head_setup(n_items=30)
    with torch.no_grad():
        items, scores = recommend_batch(
            model, trie, Batch(**batch), 5, 40, ranking=Ranking("items")
        )
    assert items.shape == scores.shape == (3, 40)
    assert torch.equal(items[:, :30], item_logp[:, 1:].topk(30, -1).indices + 1)
    assert items[:, 30:].eq(0).all() and scores[:, 30:].eq(float("-inf")).all()


def test_item_input_tells_the_encoder_which_items_share_the_codes() -> None:
    """With ``item_input`` the encoder reads the history's item ids, not only their codes: the
    same codes under other ids encode differently. Without it the ids are never read."""
    codes = random_codes(10)
    batch = history_batch(codes)
    ids = torch.arange(1, 13).view(3, 4)

    def model(item_input: bool) -> GenerativeRecommender:
        torch.manual_seed(0)
        cfg = tiny_cfg(interest_fusion=False, item_head=True, item_input=item_input)
        return GenerativeRecommender(cfg, DEPTH, CODE_SIZE, 16, 20).eval()

    for item_input in (True, False):
        with torch.no_grad():
            one = model(item_input).encode(Batch(**batch, history_ids=ids))[0]
            other = model(item_input).encode(Batch(**batch, history_ids=ids + 7))[0]
        assert (not torch.allclose(one, other)) == item_input
    with pytest.raises(ValueError, match="history_ids"):
        model(True).encode(Batch(**batch))


def test_a_frozen_item_table_keeps_its_vectors_through_training() -> None:
    """``semantic_frozen``: the table is a buffer under the trainable table's checkpoint name, so
    no optimiser step (weight decay included) changes it, while the query still trains."""
    torch.manual_seed(0)
    head = ItemHead(8, 5, 4, frozen=True)
    start = torch.randn(5, 4)
    head.init_from(start)
    assert "table.weight" in head.state_dict()
    assert [n for n, _ in head.named_parameters()] == ["query.weight", "query.bias"]
    opt = torch.optim.AdamW(head.parameters(), lr=0.1, weight_decay=0.5)
    query = head.query.weight.clone()
    for _ in range(3):
        loss = head(torch.randn(6, 8))[:, 1:].logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(head.table.weight, start) and not torch.equal(head.query.weight, query)


def test_item_query_last_reads_the_most_recent_item_and_starts_as_the_plain_head() -> None:
    """``item_query_last``: the head's query adds a map of the table vector of each row's last
    item (histories are left-aligned: row 0's last item sits before its padding). The map starts
    at zero, so a fresh head scores as without it; once trained, changing only the last item
    changes the scores, while an earlier item does not reach the head through this path."""
    codes = random_codes(10)
    batch = history_batch(codes)
    ids = torch.arange(1, 13).view(3, 4)

    torch.manual_seed(0)
    cfg = tiny_cfg(interest_fusion=False, item_head=True, item_query_last=True)
    with_last = GenerativeRecommender(cfg, DEPTH, CODE_SIZE, 16, 20).eval()
    head = with_last.item_head
    state = torch.randn(3, with_last.t5.config.d_model)
    with torch.no_grad():
        start = with_last.item_logits(state, Batch(**batch, history_ids=ids))
        plain = head.query(state) @ head.table.weight.t()
        assert torch.allclose(start[:, 1:], plain[:, 1:]) and start[:, 0].eq(float("-inf")).all()
        with_last.item_head.last.weight.normal_()
        base = with_last.item_logits(state, Batch(**batch, history_ids=ids))
        other_last = ids.clone()
        other_last[0, 1] = 15  # row 0's last item (its history holds two)
        other_first = ids.clone()
        other_first[:, 0] = 16
        changed = with_last.item_logits(state, Batch(**batch, history_ids=other_last))
        same = with_last.item_logits(state, Batch(**batch, history_ids=other_first))
    assert not torch.allclose(changed[0], base[0]) and torch.allclose(changed[1:], base[1:])
    assert torch.allclose(same, base)
    with pytest.raises(ValueError, match="history_ids"):
        with_last.item_logits(state, Batch(**batch))
    with pytest.raises(ValueError, match="item_head"):
        GenerativeRecommender(
            tiny_cfg(interest_fusion=False, item_query_last=True), DEPTH, CODE_SIZE, 16, 20
        )


def test_a_run_without_item_head_ranks_only_by_codes() -> None:
    cfg = tiny_cfg(interest_fusion=False)
    assert Ranking.of(cfg) == Ranking("codes")
    with pytest.raises(ValueError, match="no item head"):
        Ranking.of(cfg, "items")
    assert Ranking.of(tiny_cfg(interest_fusion=False, item_head=True)).by == "both"


def test_sampled_item_loss_estimates_the_full_softmax_in_training_only() -> None:
    """``item_negatives``: a training pass returns the item head's sampled-softmax loss instead of
    logits over every item, an eval pass (ranking) still scores them all. With -log q the sampled
    loss estimates the full cross-entropy plus log(k q_target), so it must have read the same
    query, table, targets and draw probabilities as the full softmax does."""
    codes = random_codes(30)
    batch = history_batch(codes)
    ids = torch.arange(1, 13).view(3, 4)
    k = 200_000
    cfg = tiny_cfg(interest_fusion=False, item_head=True, item_query_last=True, item_negatives=k)
    torch.manual_seed(0)
    model = GenerativeRecommender(cfg, DEPTH, CODE_SIZE, 16, 31)
    model.item_head.last.weight.data.normal_()
    counts = torch.arange(30).numpy() ** 2
    model.item_head.set_proposal(counts)
    target_ids = torch.tensor([1, 2, 5])  # rarely drawn: q well below uniform
    target = Batch(
        **batch, history_ids=ids, target_codes=codes[target_ids - 1], target_ids=target_ids
    )
    train_out = model.train()(target)
    assert "item_loss" in train_out and "item_logits" not in train_out
    train_out["item_loss"].backward()
    assert model.item_head.query.weight.grad.abs().sum() > 0
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(model.eval()(target)["item_logits"], target_ids)
    q = model.item_head.proposal
    assert torch.isclose(q.sum(), torch.tensor(1.0)) and q[29] > q[1] > q[0] > 0
    expected = full + (k * q[target_ids - 1]).log().mean()
    assert abs(train_out["item_loss"].item() - expected.item()) < 0.05
    assert abs(train_out["item_loss"].item() - full.item() - math.log(k / 30)) > 0.3

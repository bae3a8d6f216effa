"""Full-split evaluation with constrained beam search (used by train.py, evaluate.py and tests)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from data.batches import Batch, SplitTensors, make_batch, sequential_batches
from data.interest_features import InterestFeatures
from model.beam import beam_search
from model.generator import GenerativeRecommender
from model.item_codes import PrefixTrie
from model.metrics import ranking_metrics

RANK_BY = ("codes", "items", "both")


@dataclass(frozen=True)
class Ranking:
    """How a run with an item head ranks (without one: always ``codes``, the beam's order).

    ``both`` re-ranks the beam's ``num_beams`` items together with the item head's top
    ``item_candidates`` by ``log p(codes) + item_score_weight * log p(item)``: both terms are
    computed exactly for every candidate, so a rare item the beam pruned can still come first."""

    by: str = "codes"
    item_score_weight: float = 1.0
    item_candidates: int = 20

    def __post_init__(self) -> None:
        if self.by not in RANK_BY:
            raise ValueError(f"unknown ranking '{self.by}' (choose {' | '.join(RANK_BY)})")

    @classmethod
    def of(cls, cfg, by: str | None = None, item_score_weight: float | None = None) -> Ranking:
        """A run's ranking from its config (``by``, ``item_score_weight``: overrides)."""
        if not cfg.item_head:
            if by not in (None, "codes"):
                raise ValueError(f"--rank_by={by}: the run has no item head (item_head=false)")
            if item_score_weight is not None:
                raise ValueError(
                    f"--item_score_weight={item_score_weight}: the run has no item head "
                    "(item_head=false), so it ranks by codes alone"
                )
            return cls()
        weight = cfg.item_score_weight if item_score_weight is None else item_score_weight
        return cls(by or cfg.rank_by, weight, cfg.item_candidates)


def item_log_probs(
    model: GenerativeRecommender,
    first: torch.Tensor,
    batch: Batch,
    exclude: torch.Tensor | None,
) -> torch.Tensor:
    """The item head's log-probabilities ``[B, items + 1]`` (by emb id; padding -inf) from the
    decoder's first state, with each row's ``exclude`` ids (0 = none) at -inf."""
    logp = torch.log_softmax(model.item_logits(first, batch), -1)
    if exclude is None:
        return logp
    hidden = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, exclude, True)
    return logp.masked_fill(hidden, float("-inf"))


def item_adjustment(trie: PrefixTrie, prior: list[torch.Tensor]) -> torch.Tensor:
    """Each emb id's logit adjustment ``[items + 1]`` (padding 0) from a popularity prior:
    its last level scores the items themselves."""
    per_item = prior[-1][trie.node_of_item[-1].long()]
    return torch.cat([per_item.new_zeros(1), per_item])


def recommend_batch(
    model: GenerativeRecommender,
    trie: PrefixTrie,
    batch: Batch,
    num_beams: int,
    topk: int,
    exclude: torch.Tensor | None = None,
    prior: list[torch.Tensor] | None = None,
    ranking: Ranking = Ranking(),
    item_codes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ids (emb_map ids; 0 = no item) ``[B, topk]`` and scores for one batch, without the
    emb ids in each row of ``exclude [B, N]`` (0 = none); ``prior``: see ``beam_search``.
    ``ranking`` other than codes needs the model's item head and, for ``both``, ``item_codes``
    (``[items + 1, depth]``, by emb id). With a ``prior`` the item head's log-probabilities get
    the same logit adjustment as the codes' (the prior's last level: each item's own
    ``-A * log(count + 1)``), so both terms of ``both`` lean toward rare items alike."""
    weights = (ranking.item_score_weight,)
    args = (num_beams, topk, exclude, prior, ranking, item_codes, weights)
    return recommend_batch_weights(model, trie, batch, *args)[0]


@torch.no_grad()
def recommend_batch_weights(
    model: GenerativeRecommender,
    trie: PrefixTrie,
    batch: Batch,
    num_beams: int,
    topk: int,
    exclude: torch.Tensor | None,
    prior: list[torch.Tensor] | None,
    ranking: Ranking,
    item_codes: torch.Tensor | None,
    weights: Sequence[float],
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``recommend_batch`` at each item-head weight of ``weights`` (``ranking``'s own is
    ignored), from one search: the candidates and both their log-probabilities do not depend
    on the weight, so choosing it costs one pass, not one per weight. Rankings other than
    ``both`` have no weight: the one result is repeated."""
    memory, memory_mask, _ = model.encode(batch)
    first, cache = model.first_step(memory, memory_mask)  # shared by the beam and the item head
    adjust = None if prior is None else item_adjustment(trie, prior)
    if ranking.by == "items":
        logp = item_log_probs(model, first, batch, exclude)
        logp = logp if adjust is None else logp + adjust
        scores, items = logp.topk(min(topk, logp.shape[1]), -1)
        if scores.shape[1] < topk:  # a catalogue smaller than k: the rest are "no item"
            short = topk - scores.shape[1]
            scores = torch.nn.functional.pad(scores, (0, short), value=float("-inf"))
            items = torch.nn.functional.pad(items, (0, short))
        return [(torch.where(torch.isfinite(scores), items, 0), scores)] * len(weights)
    if ranking.by == "both" and item_codes is None:
        raise ValueError("ranking by both needs item_codes")
    width = max(num_beams, topk) if ranking.by == "both" else topk
    trie_exclude = None if exclude is None else exclude - 1  # trie indexes items from 0: -1 none
    # the beam extends its cache in place; ranking by both keeps the first step's for the item
    # head's candidates (a copy costs far less than decoding the start token again)
    beam_first = (first, copy.deepcopy(cache) if ranking.by == "both" else cache)
    items, scores = beam_search(
        model, trie, memory, memory_mask, num_beams, width, trie_exclude, prior, beam_first
    )
    items = items + 1  # emb ids start at 1 (0 is [PAD]); no item -> 0
    if ranking.by == "codes":
        return [(items, scores)] * len(weights)
    item_logp = item_log_probs(model, first, batch, exclude)
    # the item head's own candidates are its best after the same adjustment the ranking applies
    pick = item_logp if adjust is None else item_logp + adjust
    extra = pick.topk(min(ranking.item_candidates, pick.shape[1]), -1).indices
    # the beam's scores are its items' code log-probabilities; only the item head's own
    # candidates are decoded again
    extra_codes = item_codes.to(extra.device)[extra]
    extra_logp = model.code_log_probs(first, cache, memory, memory_mask, extra_codes)
    cand = torch.cat([items, extra], 1)  # [B, M] emb ids
    m = cand.shape[1]
    earlier = torch.ones(m, m, dtype=torch.bool, device=cand.device).tril(-1)
    repeated = ((cand[:, :, None] == cand[:, None, :]) & earlier).any(-1)
    code_logp = torch.cat([scores, extra_logp], 1)
    head_logp = item_logp.gather(1, cand)
    ranked = []
    for weight in weights:
        total = code_logp + weight * head_logp
        if adjust is not None:  # each of the two log-probabilities adjusted once
            total = total + (1 + weight) * adjust[cand]
        total = total.masked_fill(repeated | (cand == 0), float("-inf"))
        top, order = total.topk(topk, -1)
        ranked.append((torch.where(torch.isfinite(top), cand.gather(1, order), 0), top))
    return ranked


def rank_split(*args, ranking: Ranking = Ranking(), **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, ranks)``: ``rank_split_weights`` at the ranking's own weight (``ranks [N]``)."""
    rows, ranks = rank_split_weights(*args, ranking=ranking, **kwargs)
    return rows, ranks[0]


@torch.no_grad()
def rank_split_weights(
    model: GenerativeRecommender,
    trie: PrefixTrie,
    data: SplitTensors,
    item_codes: torch.Tensor,
    features: InterestFeatures | None,
    num_beams: int,
    topk: int,
    batch_size: int,
    device: torch.device,
    max_items: int = 0,
    max_users: int = 0,
    rank: int = 0,
    world: int = 1,
    gather=None,
    desc: str = "eval",
    skip_history: bool = False,
    prior: list[torch.Tensor] | None = None,
    ranking: Ranking = Ranking(),
    weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, ranks [W, N])``: each evaluated row of the split (all, or its first
    ``max_users`` rows) and, at each item-head weight of ``weights`` (``recommend_batch_weights``),
    its target's 0-based rank in the top ``topk`` (-1: not there), in row order; ``weights``
    None: the ranking's own weight.
    ``skip_history`` ranks only items outside each row's history as the model reads it (the
    last ``max_history`` items; a purchased item is never a target in these splits, so this is
    the ranking a shop would show). ``prior``: see ``beam_search``; ``ranking``: ``Ranking``.

    With several processes each takes every ``world``-th batch and ``gather`` (accelerate's
    ``gather_for_metrics``-like callable) collects (row, rank) pairs, so each user counts once.
    """
    weights = weights or (ranking.item_score_weight,)
    was_training = model.training
    model.eval()
    lengths = data.lengths[:max_users] if max_users else data.lengths
    batches = sequential_batches(lengths, batch_size, max_items)
    mine = batches[rank::world]
    rows_out, ranks_out = [], []
    for rows in tqdm(mine, desc=desc, leave=False, disable=rank != 0):
        batch = make_batch(data, rows, item_codes, features).to(device)
        exclude = batch.history_ids if skip_history else None
        ranked = recommend_batch_weights(
            model, trie, batch, num_beams, topk, exclude, prior, ranking, item_codes, weights
        )
        hits = torch.stack([items == batch.target_ids[:, None] for items, _ in ranked])  # [W, B, k]
        rows_out.append(torch.from_numpy(rows))
        ranks_out.append(torch.where(hits.any(2), hits.float().argmax(2), -1).cpu())
    rows_t = torch.cat(rows_out) if rows_out else torch.zeros(0, dtype=torch.long)
    empty = torch.zeros(len(weights), 0, dtype=torch.long)
    ranks_t = torch.cat(ranks_out, 1) if ranks_out else empty
    if gather is not None:
        gathered = [gather(rows_t, r) for r in ranks_t]
        rows_t = gathered[0][0]
        ranks_t = torch.stack([r for _, r in gathered])
    if len(torch.unique(rows_t)) != len(rows_t):
        raise RuntimeError("evaluation counted a user twice")
    model.train(was_training)
    order = torch.argsort(rows_t)
    return rows_t[order].numpy(), ranks_t[:, order].numpy()


def split_metrics(ranks: np.ndarray, topk: list[int]) -> dict[str, float]:
    """Recall/NDCG at each k of ``topk`` over ``rank_split``'s ranks, and the user count."""
    metrics = ranking_metrics(ranks, topk)
    metrics["users"] = int(len(ranks))
    return metrics

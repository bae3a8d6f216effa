"""Full-split evaluation with constrained beam search (used by train.py, evaluate.py and tests)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from data.batches import Batch, SplitTensors, make_batch, sequential_batches
from data.interest_features import InterestFeatures
from model.beam import beam_search
from model.generator import GenerativeRecommender
from model.item_codes import PrefixTrie
from model.metrics import ranking_metrics


@torch.no_grad()
def recommend_batch(
    model: GenerativeRecommender,
    trie: PrefixTrie,
    batch: Batch,
    num_beams: int,
    topk: int,
    exclude: torch.Tensor | None = None,
    prior: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ids (emb_map ids; 0 = no item) ``[B, topk]`` and scores for one batch, without the
    emb ids in each row of ``exclude [B, N]`` (0 = none); ``prior``: see ``beam_search``."""
    memory, memory_mask, _ = model.encode(batch)
    if exclude is not None:
        exclude = exclude - 1  # the trie indexes items from 0; emb id 0 ([PAD]) -> -1, none
    items, scores = beam_search(model, trie, memory, memory_mask, num_beams, topk, exclude, prior)
    return items + 1, scores  # trie indexes items from 0; emb ids start at 1 (0 is [PAD])


@torch.no_grad()
def rank_split(
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
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, ranks)``: each evaluated row of the split (all, or its first ``max_users`` rows)
    and its target's 0-based rank in the top ``topk`` (-1: not there), in row order.
    ``skip_history`` ranks only items outside each row's history as the model reads it (the
    last ``max_history`` items; a purchased item is never a target in these splits, so this is
    the ranking a shop would show). ``prior``: see ``beam_search``.

    With several processes each takes every ``world``-th batch and ``gather`` (accelerate's
    ``gather_for_metrics``-like callable) collects (row, rank) pairs, so each user counts once.
    """
    was_training = model.training
    model.eval()
    lengths = data.lengths[:max_users] if max_users else data.lengths
    batches = sequential_batches(lengths, batch_size, max_items)
    mine = batches[rank::world]
    rows_out, ranks_out = [], []
    for rows in tqdm(mine, desc=desc, leave=False, disable=rank != 0):
        batch = make_batch(data, rows, item_codes, features).to(device)
        exclude = batch.history_ids if skip_history else None
        items, _ = recommend_batch(model, trie, batch, num_beams, topk, exclude, prior)
        hit = items == batch.target_ids[:, None]
        ranks = torch.where(hit.any(1), hit.float().argmax(1), -1)
        rows_out.append(torch.from_numpy(rows))
        ranks_out.append(ranks.cpu())
    rows_t = torch.cat(rows_out) if rows_out else torch.zeros(0, dtype=torch.long)
    ranks_t = torch.cat(ranks_out) if ranks_out else torch.zeros(0, dtype=torch.long)
    if gather is not None:
        rows_t, ranks_t = gather(rows_t, ranks_t)
    if len(torch.unique(rows_t)) != len(rows_t):
        raise RuntimeError("evaluation counted a user twice")
    model.train(was_training)
    order = torch.argsort(rows_t)
    return rows_t[order].numpy(), ranks_t[order].numpy()


def split_metrics(ranks: np.ndarray, topk: list[int]) -> dict[str, float]:
    """Recall/NDCG at each k of ``topk`` over ``rank_split``'s ranks, and the user count."""
    metrics = ranking_metrics(ranks, topk)
    metrics["users"] = int(len(ranks))
    return metrics

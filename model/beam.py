"""Constrained beam search over item codes, batched, with the decoder's key/value cache.

The encoder runs once per batch. The first decoder step runs once per user (all beams are still
identical); its cache, cross-attention keys/values over the memory included, is then expanded to
the beams instead of being recomputed. Each later step feeds one token per beam. A prefix trie of
the real item codes masks every invalid continuation, so every result is an existing item and no
item appears twice (distinct beams end in distinct full codes, and codes are unique).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import EncoderDecoderCache

from model.generator import GenerativeRecommender
from model.item_codes import PrefixTrie


@torch.no_grad()
def beam_search(
    model: GenerativeRecommender,
    trie: PrefixTrie,
    memory: torch.Tensor,
    memory_mask: torch.Tensor,
    num_beams: int,
    topk: int,
    exclude: torch.Tensor | None = None,
    prior: list[torch.Tensor] | None = None,
    first: tuple[torch.Tensor, EncoderDecoderCache] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return item indices ``[B, topk]`` (into the code table; -1 where fewer items exist) and
    their log-probabilities, best first. ``exclude [B, N]`` holds item indices each user must
    not get back (-1 = none): at every level a prefix whose items are all excluded is masked,
    so no beam is spent on it and ``topk`` items come back whenever that many are left.
    ``prior`` (per level, one score per trie node; ``PrefixTrie.popularity_prior``) is added to
    a prefix's log-probability when beams are ranked, and the result is ordered by that sum; the
    returned scores stay log-probabilities. ``first``: ``model.first_step``'s output when the
    caller already has it (its cache is extended in place)."""
    b = memory.shape[0]
    depth = len(trie.child)
    dead = trie.dead_nodes(exclude) if exclude is not None and (exclude >= 0).any() else None
    states, cache = model.first_step(memory, memory_mask) if first is None else first
    logp = torch.log_softmax(model.level_logits(states, 0), -1)  # [B, K]
    prefix = torch.zeros(b, 1, dtype=torch.long, device=memory.device)  # trie node per beam
    scores = logp.new_zeros(b, 1)
    beams_per_user = 1
    for level in range(depth):
        child = trie.child[level][prefix].long()  # [B, W, K]: next node, -1 invalid
        logp = logp.view(b, beams_per_user, -1)
        valid = child >= 0
        if dead is not None:
            nodes = child.clamp(min=0).view(b, -1)
            valid &= ~dead[level].gather(1, nodes).view_as(child)
        cand = torch.where(valid, scores[:, :, None] + logp, float("-inf"))
        width = min(num_beams if level < depth - 1 else max(topk, 1), cand[0].numel())
        if prior is None:
            scores, flat = cand.view(b, -1).topk(width, -1)
        else:
            ranked = cand + prior[level][child.clamp(min=0)]  # -inf stays -inf
            flat = ranked.view(b, -1).topk(width, -1).indices
            scores = cand.view(b, -1).gather(1, flat)
        parent = flat // model.code_size
        code = flat % model.code_size
        prefix = child.view(b, -1).gather(1, flat)
        prefix = torch.where(torch.isfinite(scores), prefix, 0)
        if level == depth - 1:
            items = torch.where(torch.isfinite(scores), prefix, -1)
            return items, scores
        users = torch.arange(b, device=memory.device)[:, None]
        beam_rows = (users * beams_per_user + parent).view(-1)
        cache.self_attention_cache.reorder_cache(beam_rows)
        # a user's beams share identical cross-attention rows: copy them only when the number of
        # beams per user changes (first step: one row per user -> one per beam)
        if width != beams_per_user:
            # one user (serving) on the CPU: a zero-copy view, not width copies of the rows
            # (CUDA's memory-efficient SDPA kernel has had bugs with stride-0 keys/values)
            if b == 1 and memory.device.type == "cpu":
                for layer in cache.cross_attention_cache.layers:
                    layer.keys = layer.keys[:1].expand(width, -1, -1, -1)
                    layer.values = layer.values[:1].expand(width, -1, -1, -1)
            else:
                cache.cross_attention_cache.reorder_cache(
                    (users * beams_per_user).expand(b, width).reshape(-1)
                )
        memory_mask = memory_mask.index_select(0, beam_rows)
        beams_per_user = width
        tokens = (1 + level * model.code_size + code).view(-1, 1)  # token id of (level, code)
        # cross-attention keys/values now come from the cache: the decoder only needs the
        # memory's shape, so a zero-copy view stands in for one memory row per beam
        beam_memory = memory[:1].expand(len(beam_rows), -1, -1)
        states = model.decode(tokens, beam_memory, memory_mask, cache)[:, -1]
        logp = torch.log_softmax(model.level_logits(states, level + 1), -1)
    raise AssertionError("unreachable")

"""The generative recommender: a T5 that reads a history of item codes and writes the next item's.

Token ids: 0 is padding (and the decoder's start token); code ``c`` at level ``l`` is
``1 + l * code_size + c``. T5's shared embedding is therefore one code table per level, and the
decoder's logits at level ``l`` are its state dotted with that level's table (ETEGRec).

With ``interest_fusion`` the encoder states cross-attend to the interest phrases (model/fusion.py)
and the projected interest tokens are appended to the memory the decoder cross-attends to, so a
change of interests changes the decoder's logits. Without it, interests are never read.

With ``item_head`` the decoder's first state also scores every item directly against one learned
vector per item. Codes are shared: among the ~20 items under a prefix nothing in the code logits
tells a rarely bought item from its popular siblings (results/experiment_log.md, "Where in the
code the rare targets are lost"), while a per-item vector, trained with a softmax over all items
as SASRec's is (or a sampled one: ``item_negatives``), does.
Rankings then add the two log-probabilities (model/evaluation.py). With ``item_input`` the encoder
reads the same per-item vectors too: each history item's vector, projected, is added to its code
tokens' embeddings, so the head's query knows which of the siblings under a prefix were bought
(SASRec shares its item table between input and output the same way).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from data.batches import Batch
from model.fusion import build_fusion
from model.losses import negative_proposal, sampled_softmax_loss
from model.rqvae import mlp

# item_table values whose table starts from the tokenizer's input vectors (the trainer copies them)
SEMANTIC_TABLES = ("semantic", "semantic_frozen")


class ItemHead(nn.Module):
    """Logits over all items ``[B, num_items]`` (row 0 of the table is padding: -inf) from a
    decoder state: its projection dotted with one ``dim``-d vector per item. The table starts
    random, or from given item vectors (``init_from``: the tokenizer's input) and trains, or,
    ``frozen``, keeps those vectors: trained, a rare item's vector moves from where SASRec put it
    on a handful of gradient steps (README, "Item head")."""

    def __init__(
        self,
        d_model: int,
        num_items: int,
        dim: int,
        frozen: bool = False,
        last: bool = False,
        negatives: int = 0,
    ):
        super().__init__()
        self.query = nn.Linear(d_model, dim)
        # ``last``: the query also reads the table's vector of the row's most recent item. The
        # decoder state alone spans a d_model-dim subspace of the table's space (64 of 256 at the
        # CPU preset), too few to tell apart items that differ elsewhere; starts at zero
        self.last = nn.Linear(dim, dim, bias=False) if last else None
        if self.last is not None:
            nn.init.zeros_(self.last.weight)
        self.table = nn.Embedding(num_items, dim)
        nn.init.normal_(self.table.weight, std=dim**-0.5)
        if frozen:  # a buffer of the same name: no optimiser, weight decay or DDP sync sees it
            weight = self.table.weight.data
            del self.table.weight
            self.table.register_buffer("weight", weight)
        # ``negatives`` > 0: training scores each row against its target and this many shared
        # sampled items instead of all of them (``sampled_loss``); the draw's probabilities over
        # ids 1..n come from the train counts (``set_proposal``), uniform until then
        self.negatives = negatives
        if negatives:  # not saved: the trainer sets it, and checkpoints stay as they were
            uniform = torch.full((num_items - 1,), 1.0 / (num_items - 1))
            self.register_buffer("proposal", uniform, persistent=False)

    def init_from(self, vectors: torch.Tensor) -> None:
        """Start the table from ``vectors [num_items, dim]`` (row 0: padding)."""
        with torch.no_grad():
            self.table.weight.copy_(vectors)

    def set_proposal(self, counts: np.ndarray) -> None:
        """The negatives' draw from the train purchase counts of ids 1..n (``[n]``)."""
        self.proposal.copy_(negative_proposal(counts))

    def item_query(self, state: torch.Tensor, last_ids: torch.Tensor | None) -> torch.Tensor:
        """``state [B, d_model]``; ``last_ids [B]``: each row's most recent item (with ``last``)."""
        query = self.query(state)
        if self.last is not None:
            if last_ids is None:
                raise ValueError("item_query_last is on: the item head needs the last item ids")
            query = query + self.last(self.table(last_ids))
        return query

    def forward(self, state: torch.Tensor, last_ids: torch.Tensor | None = None) -> torch.Tensor:
        # a plain dot product, as SASRec's: scaled by dim ** -0.5 (as the code logits are), the
        # logits stayed so small that the item loss was still 7.3 (uniform: 8.4) after 13 epochs
        logits = self.item_query(state, last_ids) @ self.table.weight.t()
        return logits.index_fill(-1, logits.new_zeros(1, dtype=torch.long), float("-inf"))

    def sampled_loss(
        self, state: torch.Tensor, last_ids: torch.Tensor | None, targets: torch.Tensor
    ) -> torch.Tensor:
        """The sampled-softmax cross-entropy of ``targets [B]`` (``negatives`` shared draws)."""
        query = self.item_query(state, last_ids)
        return sampled_softmax_loss(
            query, self.table.weight, targets, self.negatives, self.proposal
        )


class GenerativeRecommender(nn.Module):
    def __init__(self, cfg, code_depth: int, code_size: int, semantic_dim: int, num_items: int = 0):
        super().__init__()
        self.code_depth = code_depth  # tokens per item (RQ-VAE levels + collision token)
        self.code_size = code_size
        self.t5 = T5ForConditionalGeneration(
            T5Config(
                vocab_size=1 + code_depth * code_size,
                d_model=cfg.d_model,
                d_kv=cfg.d_kv,
                d_ff=cfg.d_ff,
                num_layers=cfg.encoder_layers,
                num_decoder_layers=cfg.decoder_layers,
                num_heads=cfg.num_heads,
                dropout_rate=cfg.dropout_rate,
                feed_forward_proj="relu",
                pad_token_id=0,
                decoder_start_token_id=0,
                tie_word_embeddings=True,
            )
        )
        self.scale = cfg.d_model**-0.5
        self.fusion = build_fusion(cfg) if cfg.interest_fusion else None
        # alignment heads: pooled sequence -> tokenizer latent (SIA); first decoder state ->
        # semantic embedding space (PSA)
        self.sia_head = mlp([cfg.d_model, cfg.d_model, cfg.e_dim])
        self.psa_head = mlp([cfg.d_model, cfg.d_model, semantic_dim])
        self.item_head = None
        if cfg.item_head:
            if num_items < 2:
                raise ValueError(f"item_head needs the item count (+ padding), got {num_items}")
            dim = semantic_dim if cfg.item_table in SEMANTIC_TABLES else cfg.d_model
            frozen = cfg.item_table == "semantic_frozen"
            self.item_head = ItemHead(
                cfg.d_model, num_items, dim, frozen, cfg.item_query_last, cfg.item_negatives
            )
        elif cfg.item_query_last:
            raise ValueError("item_query_last belongs to the item head: set item_head too")
        self.item_input = None
        if cfg.item_input:
            if self.item_head is None:
                raise ValueError("item_input reads the item head's table: set item_head too")
            self.item_input = nn.Linear(self.item_head.table.embedding_dim, cfg.d_model, bias=False)

    @property
    def code_table(self) -> torch.Tensor:
        return self.t5.shared.weight

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Item codes ``[..., depth]`` -> token ids; padding is masked by the caller."""
        offsets = torch.arange(self.code_depth, device=codes.device) * self.code_size + 1
        return codes + offsets

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch's history (and interests) -> (memory, memory mask, pooled sequence state)."""
        b, h, depth = batch.history_codes.shape
        token_mask = batch.history_mask[:, :, None].expand(b, h, depth).reshape(b, h * depth)
        ids = torch.where(token_mask, self.tokens(batch.history_codes).reshape(b, h * depth), 0)
        embeds = self.t5.shared(ids)
        if self.item_input is not None:
            if batch.history_ids is None:
                raise ValueError("item_input is on: the batch needs history_ids")
            items = self.item_input(self.item_head.table(batch.history_ids))  # [B, H, d]
            embeds = embeds + items.repeat_interleave(depth, 1)
        mask = token_mask.long()
        states = self.t5.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        memory, memory_mask = states, token_mask
        if self.fusion is not None:
            if batch.interests is None or batch.interest_mask is None:
                raise ValueError("interest_fusion is on: interests and interest_mask are required")
            states, interest_tokens = self.fusion(states, batch.interests, batch.interest_mask)
            memory = torch.cat([states, interest_tokens], 1)
            memory_mask = torch.cat([token_mask, batch.interest_mask], 1)
        weights = token_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return memory, memory_mask, pooled

    def decode(
        self,
        input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: EncoderDecoderCache | None = None,
    ) -> torch.Tensor:
        """Decoder states for ``input_ids [B, T]`` (with ``cache``: only the new positions)."""
        return self.t5.decoder(
            input_ids=input_ids,
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask.long(),
            cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state

    def level_logits(self, states: torch.Tensor, level: int) -> torch.Tensor:
        """Scores of every code at ``level`` for decoder states ``[..., d]``."""
        start = 1 + level * self.code_size
        return (states * self.scale) @ self.code_table[start : start + self.code_size].t()

    def first_step(
        self, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> tuple[torch.Tensor, EncoderDecoderCache]:
        """The decoder's first state ``[B, d]`` (before any code: level 0's logits and the item
        head read it) and its key/value cache, which later steps extend."""
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        start = memory.new_zeros((memory.shape[0], 1), dtype=torch.long)
        return self.decode(start, memory, memory_mask, cache)[:, -1], cache

    def code_log_probs(
        self,
        first: torch.Tensor,
        cache: EncoderDecoderCache,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        codes: torch.Tensor,
    ) -> torch.Tensor:
        """``log p(codes)`` ``[B, M]`` of ``M`` given items per user (``codes [B, M, depth]``),
        teacher-forced, summed over levels exactly as ``beam_search`` scores its beams.
        ``first``, ``cache``: ``first_step``'s; the cache (cross-attention keys/values included)
        is reordered in place to the ``M`` candidates of each user (the caller's cache is used
        up), which then feed their remaining codes in one decoder call."""
        b, m, depth = codes.shape
        if m == 0:
            return memory.new_zeros(b, 0)
        total = torch.log_softmax(self.level_logits(first, 0), -1).gather(1, codes[:, :, 0])
        if depth == 1:
            return total
        rows = torch.arange(b, device=memory.device).repeat_interleave(m)
        cache.self_attention_cache.reorder_cache(rows)
        cache.cross_attention_cache.reorder_cache(rows)
        tokens = self.tokens(codes)[:, :, :-1].reshape(b * m, depth - 1)
        # cross-attention keys/values come from the cache: the decoder only needs the memory's
        # shape, so a zero-copy view stands in for one memory row per candidate (as in beam.py)
        states = self.decode(tokens, memory[:1].expand(b * m, -1, -1), memory_mask[rows], cache)
        for level in range(1, depth):
            logp = torch.log_softmax(self.level_logits(states[:, level - 1], level), -1)
            total = total + logp.gather(1, codes[:, :, level].reshape(-1, 1)).view(b, m)
        return total

    def forward(self, batch: Batch, with_items: bool = True) -> dict[str, torch.Tensor]:
        """Teacher-forced pass: code logits ``[B, depth, K]``, the alignment heads' outputs and,
        with ``item_head`` and ``with_items``, item logits ``[B, num_items]`` (training with
        ``item_negatives``: the item head's sampled-softmax loss ``item_loss``). A tokenizer step
        reads only the alignment heads (``with_items=False``): on a large catalogue the item
        logits would be most of its cost."""
        memory, memory_mask, pooled = self.encode(batch)
        target_tokens = self.tokens(batch.target_codes)
        start = target_tokens.new_zeros(target_tokens.shape[0], 1)
        dec_in = torch.cat([start, target_tokens[:, :-1]], 1)
        states = self.decode(dec_in, memory, memory_mask)
        logits = torch.stack(
            [self.level_logits(states[:, lv], lv) for lv in range(self.code_depth)], 1
        )
        out = {
            "logits": logits,
            "seq_latent": self.sia_head(pooled),
            "pref_semantic": self.psa_head(states[:, 0]),
        }
        if self.item_head is not None and with_items:
            if self.training and self.item_head.negatives:
                out["item_loss"] = self.item_head.sampled_loss(
                    states[:, 0], self.last_item_ids(batch), batch.target_ids
                )
            else:
                out["item_logits"] = self.item_logits(states[:, 0], batch)
        return out

    def last_item_ids(self, batch: Batch) -> torch.Tensor | None:
        """Each row's most recent item id ``[B]`` when the item head's query reads it."""
        if self.item_head.last is None:
            return None
        if batch.history_ids is None:
            raise ValueError("item_query_last is on: the batch needs history_ids")
        last = (batch.history_mask.sum(1) - 1).clamp(min=0)  # histories are left-aligned
        return batch.history_ids.gather(1, last[:, None])[:, 0]

    def item_logits(self, first: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The item head's logits ``[B, num_items]`` from the decoder's first state."""
        return self.item_head(first, self.last_item_ids(batch))

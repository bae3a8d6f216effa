"""Interest fusion: the history's encoder states cross-attend to the user's interest phrases.

Interest phrases arrive as sentence-transformer vectors ``[B, M, interest_dim]`` with a mask. They
are projected to ``d_model``; a learned "no particular interest" token is always present, so a
user without interests still gets a well-defined attention. The variants are those of the seed:

- ``single``: one cross-attention layer (residual + LayerNorm);
- ``simple``: ``layers`` such layers stacked;
- ``transformer``: blocks of cross-attention + feed-forward; the layers' outputs are combined as
  the ``last`` one, a learned ``weighted`` sum, or a projection of their ``concat``;
- ``adaptive``: stacked cross-attention whose update is scaled by a learned per-position gate.

The module returns the fused encoder states AND the projected interest tokens: the generator
appends those tokens to the memory the decoder cross-attends to, so interests reach the logits.
"""

from __future__ import annotations

import torch
from torch import nn

FUSION_TYPES = ("simple", "transformer", "adaptive", "single")
COMBINE_MODES = ("last", "weighted", "concat")


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float, feed_forward: bool, gated: bool):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.gate = nn.Linear(2 * d_model, d_model) if gated else None
        self.ff = (
            nn.Sequential(
                nn.Linear(d_model, 4 * d_model),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(4 * d_model, d_model),
            )
            if feed_forward
            else None
        )
        self.ff_norm = nn.LayerNorm(d_model) if feed_forward else None

    def forward(self, h: torch.Tensor, mem: torch.Tensor, mem_pad: torch.Tensor) -> torch.Tensor:
        update, _ = self.attn(h, mem, mem, key_padding_mask=mem_pad, need_weights=False)
        update = self.dropout(update)
        if self.gate is not None:
            update = torch.sigmoid(self.gate(torch.cat([h, update], -1))) * update
        h = self.norm(h + update)
        if self.ff is not None:
            h = self.ff_norm(h + self.dropout(self.ff(h)))
        return h


class InterestFusion(nn.Module):
    def __init__(
        self,
        fusion_type: str,
        d_model: int,
        interest_dim: int,
        heads: int,
        layers: int,
        dropout: float,
        combine: str = "last",
    ):
        super().__init__()
        if fusion_type not in FUSION_TYPES:
            raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got '{fusion_type}'")
        if combine not in COMBINE_MODES:
            raise ValueError(f"fusion_combine must be one of {COMBINE_MODES}, got '{combine}'")
        n_layers = 1 if fusion_type == "single" else layers
        self.combine = combine if fusion_type == "transformer" else "last"
        self.project = nn.Sequential(nn.Linear(interest_dim, d_model), nn.LayerNorm(d_model))
        self.null_interest = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(
                d_model,
                heads,
                dropout,
                feed_forward=fusion_type == "transformer",
                gated=fusion_type == "adaptive",
            )
            for _ in range(n_layers)
        )
        if self.combine == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(n_layers))
        if self.combine == "concat":
            self.concat_proj = nn.Linear(n_layers * d_model, d_model)

    def forward(
        self, h: torch.Tensor, interests: torch.Tensor, interest_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``h [B, T, d]``, ``interests [B, M, e]``, ``interest_mask [B, M]`` (True = present).

        Returns (fused states ``[B, T, d]``, interest tokens ``[B, M, d]``).
        """
        tokens = self.project(interests)
        null = self.null_interest.expand(h.shape[0], 1, -1)
        mem = torch.cat([null, tokens], 1)
        mem_pad = torch.cat([interest_mask.new_zeros(h.shape[0], 1), ~interest_mask], 1)
        outputs = []
        for layer in self.layers:
            h = layer(h, mem, mem_pad)
            outputs.append(h)
        if self.combine == "weighted":
            w = torch.softmax(self.layer_weights, 0)
            h = sum(wi * oi for wi, oi in zip(w, outputs, strict=True))
        elif self.combine == "concat":
            h = self.concat_proj(torch.cat(outputs, -1))
        return h, tokens

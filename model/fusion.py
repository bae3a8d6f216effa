"""Interest fusion: the history's encoder states cross-attend to the user's interest phrases.

Interest phrases arrive as sentence-transformer vectors ``[B, M, interest_dim]`` with a mask. They
are projected to ``d_model``; a learned "no particular interest" token is always present, so a
user without interests still gets a well-defined attention. The variants are those of the seed:

- ``single``: one cross-attention layer (residual + LayerNorm);
- ``simple``: ``layers`` such layers stacked;
- ``transformer``: blocks of cross-attention + feed-forward; the layers' outputs are combined as
  the ``last`` one, a learned ``weighted`` sum, or a projection of their ``concat``;
- ``adaptive``: stacked cross-attention whose update is scaled by a learned per-position gate.

A new variant is one subclass of ``InterestFusion`` under ``@register("name")``: it says which
layers to stack (``make_layer``) and, if not the last layer's, how to combine their outputs.

The module returns the fused encoder states AND the projected interest tokens: the generator
appends those tokens to the memory the decoder cross-attends to, so interests reach the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from model.registry import registrar

COMBINE_MODES = ("last", "weighted", "concat")
FUSIONS: dict[str, type[InterestFusion]] = {}
register = registrar(FUSIONS)  # @register("name"): selectable as fusion_type=name


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
    """Shared by every variant: interests projected to ``d_model`` with the "no particular
    interest" token in front, ``layers`` cross-attention layers, the last one's output."""

    def __init__(
        self,
        d_model: int,
        interest_dim: int,
        heads: int,
        layers: int,
        dropout: float,
        combine: str = "last",
    ):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(interest_dim, d_model), nn.LayerNorm(d_model))
        self.null_interest = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.layers = nn.ModuleList(self.make_layer(d_model, heads, dropout) for _ in range(layers))

    def make_layer(self, d_model: int, heads: int, dropout: float) -> nn.Module:
        return CrossAttentionLayer(d_model, heads, dropout, feed_forward=False, gated=False)

    def combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        return outputs[-1]

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
        return self.combine(outputs), tokens


@register("simple")
class StackedFusion(InterestFusion):
    """``layers`` cross-attention layers (the base class as it is)."""


@register("transformer")
class TransformerFusion(InterestFusion):
    """Cross-attention + feed-forward blocks, outputs combined ``last``, ``weighted`` or by a
    projection of their ``concat``."""

    def __init__(self, d_model, interest_dim, heads, layers, dropout, combine="last"):
        if combine not in COMBINE_MODES:
            raise ValueError(f"fusion_combine must be one of {COMBINE_MODES}, got '{combine}'")
        super().__init__(d_model, interest_dim, heads, layers, dropout)
        self.mode = combine
        if combine == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(layers))
        if combine == "concat":
            self.concat_proj = nn.Linear(layers * d_model, d_model)

    def make_layer(self, d_model: int, heads: int, dropout: float) -> nn.Module:
        return CrossAttentionLayer(d_model, heads, dropout, feed_forward=True, gated=False)

    def combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "weighted":
            w = torch.softmax(self.layer_weights, 0)
            return sum(wi * oi for wi, oi in zip(w, outputs, strict=True))
        if self.mode == "concat":
            return self.concat_proj(torch.cat(outputs, -1))
        return outputs[-1]


@register("adaptive")
class GatedFusion(InterestFusion):
    """Stacked cross-attention whose update is scaled by a learned per-position gate."""

    def make_layer(self, d_model: int, heads: int, dropout: float) -> nn.Module:
        return CrossAttentionLayer(d_model, heads, dropout, feed_forward=False, gated=True)


@register("single")
class SingleFusion(InterestFusion):
    """One cross-attention layer, whatever ``layers`` says."""

    def __init__(self, d_model, interest_dim, heads, layers, dropout, combine="last"):
        super().__init__(d_model, interest_dim, heads, 1, dropout)


def build_fusion(cfg) -> InterestFusion:
    """The variant ``cfg.fusion_type`` names, sized by the generator's settings."""
    if cfg.fusion_type not in FUSIONS:
        raise ValueError(f"fusion_type must be one of {tuple(FUSIONS)}, got '{cfg.fusion_type}'")
    return FUSIONS[cfg.fusion_type](
        cfg.d_model,
        cfg.interest_dim,
        cfg.num_heads,
        cfg.fusion_layers,
        cfg.dropout_rate,
        cfg.fusion_combine,
    )

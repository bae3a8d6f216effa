"""The item-tokenizer interface: what training, evaluation and serving ask of a tokenizer.

RQ-VAE (model/rqvae.py) is the one implementation. Another kind (RQ-KMeans, text-based IDs)
subclasses ``ItemTokenizer``, registers under a name with ``@register_tokenizer`` and is chosen with
``--item_tokenizer=name``; the trainer only calls the methods below, so it needs no change.
"""

from __future__ import annotations

import torch
from torch import nn

from model.registry import registrar

TOKENIZERS: dict[str, type[ItemTokenizer]] = {}
register_tokenizer = registrar(TOKENIZERS)  # @register_tokenizer("name"): item_tokenizer=name


class ItemTokenizer(nn.Module):
    """Maps item vectors ``[N, D]`` to ``levels`` codes of ``code_size`` each.

    ``forward(x, seq_latent=None)`` returns a dict with ``x_hat`` (its reconstruction of ``x``,
    PSA's target), ``logits`` (per level ``[N, code_size]``, SIA's item side), ``recon_loss`` and
    ``vq_loss`` (its own training loss, summed), and with ``seq_latent`` also ``seq_logits`` (the
    recommender's sequence latent under the same code distributions).
    """

    @classmethod
    def from_config(cls, cfg, in_dim: int) -> ItemTokenizer:
        raise NotImplementedError

    def initialise(self, items: torch.Tensor, cfg, generator: torch.Generator) -> None:
        """Before pretraining on ``items`` (e.g. k-means codebooks); nothing by default."""

    def code_logits(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """Per-level code logits of a latent (the recommender's, for SIA)."""
        raise NotImplementedError

    def code_distances(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[N, levels]`` and last-level distances ``[N, code_size]``, from which
        model/item_codes.py makes every item's code unique."""
        raise NotImplementedError


def known_tokenizers() -> dict[str, type[ItemTokenizer]]:
    """Every registered tokenizer, the built-in one included."""
    import model.rqvae  # noqa: F401  (registers RQ-VAE)

    return TOKENIZERS


def build_tokenizer(cfg, in_dim: int) -> ItemTokenizer:
    known = known_tokenizers()
    if cfg.item_tokenizer not in known:
        raise ValueError(
            f"item_tokenizer must be one of {tuple(known)}, got '{cfg.item_tokenizer}'"
        )
    return known[cfg.item_tokenizer].from_config(cfg, in_dim)

"""The item tokenizer: an RQ-VAE that maps an item's semantic embedding to a few discrete codes.

Encoder MLP -> residual quantizer (``levels`` codebooks of ``code_size`` vectors, L2 distance)
-> decoder MLP back to the input. Besides hard codes, the quantizer exposes per-level code logits
(negative distances) so the recommender can be aligned with it (the SIA loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.item_tokenizer import ItemTokenizer, register_tokenizer


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``[N, D] x [K, D] -> [N, K]`` squared L2 distances without materialising differences."""
    return x.pow(2).sum(-1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(-1)[None, :]


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Plain Lloyd k-means; empty clusters are re-seeded from random points."""
    n = x.shape[0]
    centers = x[torch.randperm(n, generator=generator)[:k]].clone()
    if n < k:  # fewer points than codes: pad with jittered copies
        extra = x[torch.randint(n, (k - n,), generator=generator)]
        centers = torch.cat([centers, extra + 1e-3 * torch.randn(extra.shape, generator=generator)])
    for _ in range(iters):
        assign = squared_distances(x, centers).argmin(1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            centers[empty] = x[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return centers


class ResidualQuantizer(nn.Module):
    """Each level quantizes what the previous levels left over."""

    def __init__(self, levels: int, code_size: int, dim: int, beta: float):
        super().__init__()
        self.beta = beta
        self.codebooks = nn.ParameterList(
            [
                nn.Parameter(torch.empty(code_size, dim).uniform_(-1 / code_size, 1 / code_size))
                for _ in range(levels)
            ]
        )

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    def forward(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(quantized with straight-through gradient, codes [N, L], loss, logits per level)."""
        residual = z
        quantized = torch.zeros_like(z)
        codes, logits = [], []
        loss = z.new_zeros(())
        for codebook in self.codebooks:
            dist = squared_distances(residual, codebook)
            code = dist.argmin(-1)
            q = codebook[code]
            loss = (
                loss
                + F.mse_loss(q, residual.detach())
                + self.beta * F.mse_loss(residual, q.detach())
            )
            quantized = quantized + q
            residual = residual - q.detach()
            codes.append(code)
            logits.append(-dist)
        quantized_st = z + (quantized - z).detach()
        return quantized_st, torch.stack(codes, -1), loss / self.levels, logits

    def code_logits(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-level logits (negative distances) along z's own residual path (for SIA)."""
        residual, logits = z, []
        for codebook in self.codebooks:
            dist = squared_distances(residual, codebook)
            residual = residual - codebook[dist.argmin(-1)].detach()
            logits.append(-dist)
        return logits

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        residual = z
        for codebook in self.codebooks:
            codebook.data.copy_(kmeans(residual, codebook.shape[0], iters, generator))
            residual = residual - codebook[squared_distances(residual, codebook).argmin(-1)]


@register_tokenizer("rqvae")
class RQVAE(ItemTokenizer):
    """ETEGRec's tokenizer: an MLP encoder, residual quantization, an MLP decoder."""

    def __init__(
        self,
        in_dim: int,
        hidden: list[int],
        e_dim: int,
        levels: int,
        code_size: int,
        beta: float,
    ):
        super().__init__()
        self.encoder = mlp([in_dim, *hidden, e_dim])
        self.quantizer = ResidualQuantizer(levels, code_size, e_dim, beta)
        self.decoder = mlp([e_dim, *reversed(hidden), in_dim])

    def forward(
        self, x: torch.Tensor, seq_latent: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Reconstruct ``x``; with ``seq_latent`` also quantize the recommender's sequence latent
        (one forward, so distributed training sees every use of the codebooks)."""
        z = self.encoder(x)
        quantized, codes, vq_loss, logits = self.quantizer(z)
        x_hat = self.decoder(quantized)
        out = {
            "x_hat": x_hat,
            "codes": codes,
            "logits": logits,
            "recon_loss": F.mse_loss(x_hat, x),
            "vq_loss": vq_loss,
        }
        if seq_latent is not None:
            out["seq_logits"] = self.quantizer.code_logits(seq_latent)
        return out

    @classmethod
    def from_config(cls, cfg, in_dim: int) -> RQVAE:
        return cls(
            in_dim,
            list(cfg.encoder_hidden),
            cfg.e_dim,
            cfg.code_levels,
            cfg.code_size,
            cfg.vq_beta,
        )

    @torch.no_grad()
    def initialise(self, items: torch.Tensor, cfg, generator: torch.Generator) -> None:
        """k-means codebooks on the encoded items (``kmeans_init``), level by level."""
        if cfg.kmeans_init:
            self.quantizer.kmeans_init(self.encoder(items), cfg.kmeans_iters, generator)

    def code_logits(self, latent: torch.Tensor) -> list[torch.Tensor]:
        return self.quantizer.code_logits(latent)

    @torch.no_grad()
    def code_distances(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[N, L]`` and last-level distances ``[N, K]`` (to resolve collisions)."""
        _, codes, _, logits = self.quantizer(self.encoder(x))
        return codes, -logits[-1]

"""ETEGRec's four losses: code cross-entropy, VQ, SIA (symmetric KL) and PSA (symmetric InfoNCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def code_loss(logits: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every code level of the target item: ``[B, depth, K]`` vs ``[B, depth]``."""
    return F.cross_entropy(logits.flatten(0, 1), target_codes.flatten())


def sia_loss(seq_logits: list[torch.Tensor], item_logits: list[torch.Tensor]) -> torch.Tensor:
    """Sequence-item alignment: symmetric KL between the code distributions the quantizer gives
    the sequence's latent and the target item's latent, averaged over levels."""
    total = seq_logits[0].new_zeros(())
    for s, t in zip(seq_logits, item_logits, strict=True):
        log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
        total = total + 0.5 * (
            F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
            + F.kl_div(log_t, log_s, log_target=True, reduction="batchmean")
        )
    return total / len(seq_logits)


def psa_loss(
    preference: torch.Tensor, semantic: torch.Tensor, target_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Preference-semantic alignment: symmetric InfoNCE on cosine similarity with in-batch
    negatives. Rows with the same target are merged first, so a duplicate is never a negative."""
    unique, inverse = torch.unique(target_ids, return_inverse=True)
    first = torch.full((len(unique),), len(target_ids), device=target_ids.device)
    first = first.scatter_reduce(
        0, inverse, torch.arange(len(target_ids), device=target_ids.device), "amin"
    )
    pref = F.normalize(preference[first], dim=-1)
    sem = F.normalize(semantic[first], dim=-1)
    sim = pref @ sem.t() / temperature
    labels = torch.arange(len(unique), device=sim.device)
    return 0.5 * (F.cross_entropy(sim, labels) + F.cross_entropy(sim.t(), labels))

"""ETEGRec's four losses: code cross-entropy, VQ, SIA (symmetric KL) and PSA (symmetric InfoNCE),
and how each alternating step weighs them (``recommender_objective``, ``tokenizer_objective``:
the trainer and bench/bench_model.py both train with these); and the sampled softmax over items
that SASRec and the generator's item head share on large catalogues."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def code_loss(logits: torch.Tensor, target_codes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every code level of the target item: ``[B, depth, K]`` vs ``[B, depth]``."""
    return F.cross_entropy(logits.flatten(0, 1), target_codes.flatten())


def negative_proposal(counts: np.ndarray) -> torch.Tensor:
    """Probabilities of drawing item ids 1..n as negatives, from their train counts ``[n]``: half
    uniform, half item frequency. Frequent items are the hard negatives that a uniform draw
    misses, and the uniform half keeps rare items from never being drawn."""
    counts = np.asarray(counts, dtype=np.float64)
    n = len(counts)
    return torch.from_numpy(0.5 / n + 0.5 * counts / max(counts.sum(), 1.0)).float()


def sampled_softmax_loss(
    hidden: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    negatives: int,
    proposal: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of ``hidden [N, dim]`` scored against ``table [n + 1, dim]`` (row 0 padding),
    over each target id (1..n) and ``negatives`` ids drawn from ``proposal`` and shared by the
    batch, in place of a softmax over all n items (N x n dot products per step, most of a step on
    a large catalogue). Scores are corrected by -log q (Jean et al., 2015), so that often-drawn
    popular items are not over-counted; a draw that hits a row's target is masked out."""
    log_q = proposal.log()
    neg = torch.multinomial(proposal, negatives, replacement=True) + 1
    # a batched matmul, not a product and sum: under bf16 autocast the target's score then gets
    # the negatives' (and the full softmax's) precision
    pos_logit = torch.bmm(hidden[:, None], table[targets][:, :, None])[:, 0, 0] - log_q[targets - 1]
    neg_logit = hidden @ table[neg].T - log_q[neg - 1]
    neg_logit = neg_logit.masked_fill(neg == targets[:, None], -torch.inf)
    # -log softmax of the target among [target, negatives], without materialising the concat
    return (torch.logaddexp(pos_logit, neg_logit.logsumexp(1)) - pos_logit).mean()


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
    negatives. Rows with the same target are merged first, so a duplicate is never a negative.
    Under DDP the negatives are each process's own rows, so N processes contrast fewer rows than
    one process with the whole batch (a small term: ``rec_dec_cl_weight``)."""
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


def recommender_objective(
    out: dict[str, torch.Tensor],
    item: dict[str, torch.Tensor],
    code_logits_of,
    target_codes: torch.Tensor,
    target_ids: torch.Tensor,
    cfg,
    align: bool,
) -> dict[str, torch.Tensor]:
    """A recommender step's loss: code cross-entropy (and item cross-entropy with the item
    head), plus SIA and PSA once aligned. ``out`` is
    the generator's output, ``item`` the (frozen) tokenizer's on the target items, and
    ``code_logits_of`` maps a latent to the tokenizer's per-level code logits. The alignment
    terms are computed even at weight 0 (warm-up, finetune) so every parameter gets a gradient,
    as DDP requires."""
    l_code = code_loss(out["logits"], target_codes)
    l_sia = sia_loss(code_logits_of(out["seq_latent"]), item["logits"])
    l_psa = psa_loss(out["pref_semantic"], item["x_hat"], target_ids, cfg.cl_temperature)
    w = 1.0 if align else 0.0
    loss = cfg.rec_code_weight * l_code + w * (
        cfg.rec_kl_weight * l_sia + cfg.rec_dec_cl_weight * l_psa
    )
    losses = {"code": l_code, "sia": l_sia, "psa": l_psa}
    if "item_logits" in out:  # item head: softmax over all items, in every stage
        losses["item"] = F.cross_entropy(out["item_logits"], target_ids)
        loss = loss + cfg.item_loss_weight * losses["item"]
    elif "item_loss" in out:  # its sampled softmax (``item_negatives``): logged under its own
        # name, since it is about the full one + log(K q_target), not comparable with ``item``
        losses["item_sampled"] = out["item_loss"]
        loss = loss + cfg.item_loss_weight * losses["item_sampled"]
    return {"loss": loss, **losses}


def tokenizer_objective(
    out: dict[str, torch.Tensor],
    rec: dict[str, torch.Tensor] | None,
    target_ids: torch.Tensor,
    cfg,
) -> dict[str, torch.Tensor]:
    """A tokenizer step's loss: reconstruction + VQ, plus SIA and PSA against the (frozen)
    recommender's output ``rec`` once aligned (``rec`` None before)."""
    l_vq = out["recon_loss"] + out["vq_loss"]
    losses = {"vq": l_vq}
    loss = cfg.id_vq_weight * l_vq
    if rec is not None:
        l_sia = sia_loss(out["seq_logits"], out["logits"])
        l_psa = psa_loss(rec["pref_semantic"], out["x_hat"], target_ids, cfg.cl_temperature)
        loss = loss + cfg.id_kl_weight * l_sia + cfg.id_dec_cl_weight * l_psa
        losses.update(sia=l_sia, psa=l_psa)
    losses["loss"] = loss
    return losses

"""Batched decoding for a causal LM whose prompts all open with the same long prefix.

Every interest prompt starts with the same system message and worked example (most of its
tokens). ``transformers``' ``generate`` would encode that prefix again for every prompt and
every retry; here it is encoded once, its keys and values are kept, and each batch only encodes
its prompts' own tails. Tails are left-padded *after* the prefix ([prefix | pad | tail]) with the
padding masked out and positions counted over real tokens only, so each row sees exactly the
sequence it would see alone. Rows leave the batch as soon as they end, so a batch costs what its
rows need, not what its longest reply needs.

The per-step rules match ``generate``'s processors applied in its order: repetition penalty over
every token of the row so far (prompt included), then the caller's allowed-token mask, the
"no end before ``min_lines`` line breaks" rule and "no list bullet where a phrase begins", then
temperature and top-p when sampling.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass(frozen=True)
class Sampling:
    """How rows with a seed sample; rows without one decode greedily."""

    temperature: float
    top_p: float


@dataclass(frozen=True)
class Rules:
    """What each generated token must respect."""

    eos: int
    newlines: torch.Tensor  # ids of tokens that contain a line break
    min_lines: int  # line breaks a row must make before it may end
    phrase_starts: torch.Tensor  # ids after which a phrase begins (line breaks, a tag's ">")
    bullets: torch.Tensor  # ids a phrase may not begin with ("-"): a small model fills lines
    # with empty bullets, copied from the prompt's item list, and the attempt is lost
    max_new_tokens: int
    repetition_penalty: float


def _cache_keyword(model: PreTrainedModel) -> str:
    """``cache`` from transformers 5.24 on, ``past_key_values`` before it."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class PrefixDecoder:
    """Decodes batches of prompts that share ``prefix_ids``; the prefix is encoded once."""

    def __init__(self, model: PreTrainedModel, prefix_ids: list[int]) -> None:
        self.model = model
        self.device = model.device
        self.prefix_ids = list(prefix_ids)
        self._cache_kw = _cache_keyword(model)
        cache = DynamicCache()
        with torch.inference_mode():
            ids = torch.tensor([self.prefix_ids], device=self.device)
            model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})
        self._prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._vocab = model.config.vocab_size

    def _expanded_cache(self, batch: int) -> DynamicCache:
        """A fresh cache holding the prefix for ``batch`` rows (the stored one is never written)."""
        return DynamicCache(
            [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self._prefix_kv]
        )

    def _step_scores(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        allowed: torch.Tensor,
        lines: torch.Tensor,
        starting: torch.Tensor,
        rules: Rules,
    ) -> torch.Tensor:
        """Logits of the next token after the repetition penalty and the caller's rules."""
        penalised = torch.where(
            logits < 0, logits * rules.repetition_penalty, logits / rules.repetition_penalty
        )
        scores = torch.where(seen, penalised, logits)
        scores = scores.masked_fill(~allowed, float("-inf"))
        scores[lines < rules.min_lines, rules.eos] = float("-inf")
        scores[starting.nonzero(), rules.bullets] = float("-inf")
        return scores

    def _pick(
        self,
        scores: torch.Tensor,
        sampling: Sampling | None,
        noise: dict[int, torch.Generator],
        rows: list[int],
    ) -> torch.Tensor:
        """Argmax for greedy rows; for a row with a generator in ``noise``, a draw from its
        temperature/top-p distribution by the Gumbel-max trick, with noise from the row's own
        generator: a row's draws depend on its seed alone, not on the rows it is batched with."""
        token = scores.argmax(dim=-1)
        slots = [i for i, row in enumerate(rows) if row in noise]
        if not slots:
            return token
        scores = scores[slots] / sampling.temperature
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(dim=-1)
        # drop a token when the more likely ones already hold top_p of the mass (keep the first)
        drop_sorted = probs.cumsum(dim=-1) - probs > sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)  # back to vocab order
        uniform = torch.stack(
            [torch.rand(self._vocab, generator=noise[rows[i]], device=self.device) for i in slots]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        token[slots] = (scores.masked_fill(drop, float("-inf")) + gumbel).argmax(dim=-1)
        return token

    @torch.inference_mode()
    def generate(
        self,
        tails: list[list[int]],
        allowed: torch.Tensor,
        rules: Rules,
        seeds: list[int | None] | None = None,
        sampling: Sampling | None = None,
    ) -> list[list[int]]:
        """New token ids for each prompt ``prefix_ids + tails[i]`` (the end token left out).

        ``allowed`` is a (rows, vocab) bool mask of the tokens each row may generate. Row ``i``
        decodes greedily unless ``seeds[i]`` is an int: then it samples as ``sampling`` says, from
        that seed. Greedy and sampled rows share one batch.
        """
        rows, prefix_len = len(tails), len(self.prefix_ids)
        width = max(len(t) for t in tails)
        pad = rules.eos
        ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=self.device)
        real = torch.tensor(
            [[False] * (width - len(t)) + [True] * len(t) for t in tails], device=self.device
        )
        mask = torch.cat(
            [torch.ones(rows, prefix_len, dtype=torch.long, device=self.device), real.long()], dim=1
        )
        positions = (prefix_len + real.long().cumsum(dim=1) - 1).masked_fill(~real, 0)
        seen = torch.zeros(rows, self._vocab, dtype=torch.bool, device=self.device)
        seen[:, self.prefix_ids] = True
        row_of = torch.arange(rows, device=self.device)[:, None].expand_as(ids)
        seen[row_of[real], ids[real]] = True
        allowed = allowed.to(self.device)
        lines = torch.zeros(rows, dtype=torch.long, device=self.device)
        starting = torch.isin(ids[:, -1], rules.phrase_starts)  # the tails end with "<interest>"
        cache = self._expanded_cache(rows)
        active = torch.arange(rows, device=self.device)  # original row of each batch slot
        out: list[list[int]] = [[] for _ in range(rows)]
        noise = {
            row: torch.Generator(device=self.device).manual_seed(seed)
            for row, seed in enumerate(seeds or [])
            if seed is not None
        }
        if noise and sampling is None:
            raise ValueError("seeded rows need sampling settings (temperature, top_p)")
        step_ids, step_pos = ids, positions
        for _ in range(rules.max_new_tokens):
            logits = (
                self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    use_cache=True,
                    logits_to_keep=1,
                    **{self._cache_kw: cache},
                )
                .logits[:, -1, :]
                .float()
            )
            scores = self._step_scores(logits, seen, allowed, lines, starting, rules)
            slots = active.tolist()
            token = self._pick(scores, sampling, noise, slots)
            ended = token == rules.eos
            for row, t, end in zip(slots, token.tolist(), ended.tolist(), strict=True):
                if not end:
                    out[row].append(t)
            lines += torch.isin(token, rules.newlines).long()
            starting = torch.isin(token, rules.phrase_starts)
            seen[torch.arange(len(token), device=self.device), token] = True
            keep = (~ended).nonzero().squeeze(1)
            if len(keep) == 0:
                break
            if len(keep) < len(active):  # finished rows leave the batch
                cache.batch_select_indices(keep)
                active, token, mask, step_pos = (
                    active[keep],
                    token[keep],
                    mask[keep],
                    step_pos[keep],
                )
                seen, allowed, lines = seen[keep], allowed[keep], lines[keep]
                starting = starting[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step_ids, step_pos = token[:, None], step_pos[:, -1:] + 1
        return out

"""Unique item codes from RQ-VAE codes, and the prefix trie that constrains beam search.

Items whose RQ-VAE codes coincide get a last token numbering them within the group, so every item
has a unique code of ``levels + 1`` tokens. A group larger than the code size cannot be numbered:
its worst-fitting members move to their next-nearest free last-level code first (and are counted).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CodeReport:
    collision_rate: float  # share of items that share their RQ-VAE code with another item
    max_group: int  # largest group of items with identical RQ-VAE codes (before resolving)
    reassigned: int  # items moved to another last-level code because a group overflowed
    usage: list[float]  # share of each level's codebook that some item uses

    def as_dict(self) -> dict:
        return {
            "collision_rate": round(self.collision_rate, 5),
            "max_group": self.max_group,
            "reassigned": self.reassigned,
            "codebook_usage": [round(u, 4) for u in self.usage],
        }


def _candidate_parents(parent: tuple, in_use: set[tuple], code_size: int) -> Iterator[tuple]:
    """``parent`` itself, then the other parents in use, then every unused parent, those sharing
    the longest prefix with ``parent`` first: a group only fails to find room when every slot of
    the code space is taken."""
    yield parent
    yield from sorted(in_use - {parent})
    for keep in reversed(range(len(parent))):
        for tail in itertools.product(range(code_size), repeat=len(parent) - keep):
            candidate = (*parent[:keep], *tail)
            if candidate not in in_use:
                yield candidate


def _free_slot(groups: dict, parent: tuple, code_order: np.ndarray, capacity: int) -> tuple:
    """The nearest last-level code with room under ``parent``; if that whole subtree is full, the
    same search under other parents (a last resort that keeps every item)."""
    in_use = {k[:-1] for k in groups}
    for p in _candidate_parents(parent, in_use, len(code_order)):
        for code in code_order:
            if len(groups.get((*p, int(code)), ())) < capacity:
                return (*p, int(code))
    raise ValueError("more items than the codebooks can hold")


def _resolve_overflow(codes: np.ndarray, last_dist: np.ndarray, capacity: int) -> int:
    """Move items out of groups larger than ``capacity`` to the nearest free last-level code."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(map(tuple, codes)):
        groups[c].append(i)
    moved = 0
    for key in [k for k, m in groups.items() if len(m) > capacity]:
        members = groups[key]
        # keep the best-fitting items; move the rest, worst fit first
        members.sort(key=lambda i: last_dist[i, key[-1]])
        for i in members[capacity:]:
            target = _free_slot(groups, key[:-1], np.argsort(last_dist[i]), capacity)
            groups[target].append(i)
            codes[i] = target
            moved += 1
        del members[capacity:]
    return moved


def assign_unique_codes(
    codes: torch.Tensor, last_dist: torch.Tensor, code_size: int
) -> tuple[torch.Tensor, CodeReport]:
    """``[N, L]`` RQ-VAE codes -> ``[N, L + 1]`` unique codes, plus a report."""
    codes_np = codes.cpu().numpy().astype(np.int64).copy()
    dist_np = last_dist.cpu().numpy()
    n, levels = codes_np.shape
    counts = Counter(map(tuple, codes_np))
    collided = sum(c for c in counts.values() if c > 1)
    report = CodeReport(
        collision_rate=collided / max(n, 1),
        max_group=max(counts.values()) if counts else 0,
        reassigned=0,
        usage=[len(np.unique(codes_np[:, lv])) / code_size for lv in range(levels)],
    )
    report.reassigned = _resolve_overflow(codes_np, dist_np, code_size)
    suffix = np.zeros(n, dtype=np.int64)
    seen: Counter = Counter()
    for i, c in enumerate(map(tuple, codes_np)):
        suffix[i] = seen[c]
        seen[c] += 1
    return torch.from_numpy(np.concatenate([codes_np, suffix[:, None]], 1)), report


@torch.no_grad()
def derive_item_codes(
    tokenizer, semantic: torch.Tensor, code_size: int
) -> tuple[torch.Tensor, CodeReport]:
    """Codes for every item of ``semantic [N + 1, D]`` (row 0 is padding and gets zeros)."""
    was_training = tokenizer.training
    tokenizer.eval()
    codes, last_dist = tokenizer.code_distances(semantic[1:])
    tokenizer.train(was_training)
    unique, report = assign_unique_codes(codes, last_dist, code_size)
    return torch.cat([unique.new_zeros(1, unique.shape[1]), unique]), report


class PrefixTrie:
    """Dense lookup tables over the item codes: which next code is valid after each prefix.

    ``child[d][p, c]`` is the id of prefix ``p`` extended by code ``c`` at depth ``d`` (-1: no such
    item). At the last depth the id is the item index. Tables are int32 tensors, so constraining
    a whole batch of beams is one gather.
    """

    def __init__(self, codes: torch.Tensor, code_size: int):
        codes = codes.long().cpu()
        n, depth = codes.shape
        self.child: list[torch.Tensor] = []
        # per depth: each item's node (its prefix of that length) and each node's item count,
        # so a search can tell a prefix whose every item is excluded from a live one
        self.node_of_item: list[torch.Tensor] = []
        self.items_under: list[torch.Tensor] = []
        prefix_id = torch.zeros(n, dtype=torch.long)
        n_prefix = 1
        for d in range(depth):
            key = prefix_id * code_size + codes[:, d]
            if d == depth - 1:
                next_id = torch.arange(n)
                n_next = n
            else:
                uniq, next_id = torch.unique(key, return_inverse=True)
                n_next = len(uniq)
            table = torch.full((n_prefix, code_size), -1, dtype=torch.int32)
            table[prefix_id, codes[:, d]] = next_id.to(torch.int32)
            self.child.append(table)
            self.node_of_item.append(next_id)
            self.items_under.append(torch.bincount(next_id, minlength=n_next))
            prefix_id, n_prefix = next_id, n_next
        if (self.child[-1] >= 0).sum() != n:
            raise ValueError("item codes are not unique: two items share a full code")

    def popularity_prior(self, counts: torch.Tensor, strength: float) -> list[torch.Tensor]:
        """Per depth, the log of each node's mean of ``(count + 1) ** -strength`` over its items.
        At the last depth that is an item's own ``-strength * log(count + 1)``, so the search
        ranks items by ``log p(item) - strength * log(count + 1)``, a logit adjustment toward
        rarely bought items (0: plain log-probability). At an inner node it is the adjusted share
        of the prefix's probability if that were spread evenly over its items: a mean, not a sum,
        so a prefix is not pushed down for holding many items."""
        weight = (counts.double().to(self.node_of_item[0].device) + 1) ** -strength
        return [
            torch.log(torch.bincount(nodes, weight, minlength=len(under)) / under).float()
            for nodes, under in zip(self.node_of_item, self.items_under, strict=True)
        ]

    def to(self, device: torch.device) -> PrefixTrie:
        self.child = [t.to(device) for t in self.child]
        self.node_of_item = [t.to(device) for t in self.node_of_item]
        self.items_under = [t.to(device) for t in self.items_under]
        return self

    def dead_nodes(self, exclude: torch.Tensor) -> list[torch.Tensor]:
        """Per depth ``[B, nodes]``: True where every item under the node is in the row's
        ``exclude [B, N]`` (item indices, -1 = none). A search that skips dead prefixes spends
        no beam on them, so it still finds ``k`` items whenever ``k`` are left."""
        ex = exclude.long().sort(1).values
        counted = ex >= 0
        counted[:, 1:] &= ex[:, 1:] != ex[:, :-1]  # an item listed twice counts once
        ex = ex.clamp(min=0)
        dead = []
        for nodes, under in zip(self.node_of_item, self.items_under, strict=True):
            counts = torch.zeros(len(ex), len(under), dtype=torch.int32, device=ex.device)
            dead.append(counts.scatter_add_(1, nodes[ex], counted.int()) == under)
        return dead

"""Value checks on a resolved configuration, run by ``load_config`` before a script does any work.

Types are checked as each key is set (``coerce``); these rules catch what a type cannot: a name
outside a fixed set, a number out of range. Without them a typo surfaces only after splits were
written or a run folder was made, as a traceback. The name sets mirror the code that reads them
(``tests/test_config.py`` checks that they agree).
"""

from __future__ import annotations

import re
from typing import Any

CHOICES: dict[str, tuple[str, ...]] = {
    "source": ("amazon23", "lcrec"),
    "interests.backend": ("none", "keywords", "local", "dashscope"),
    "interests.recipe": ("items", "history"),
    "interests_backend": ("auto", "dashscope", "local", "keywords"),
    "embeddings.kind": ("none", "sasrec", "text"),
    "embeddings.sasrec_schedule": ("constant", "cosine"),
    "embeddings.sasrec_loss": ("softmax", "bce"),
    "stage": ("tokenizer", "joint", "finetune", "all"),
    "fusion_combine": ("last", "weighted", "concat"),
    "split": ("train", "valid", "test"),
    "eval_interests": ("own", "shuffled", "none"),
    "rank_by": ("run", "codes", "items", "both"),  # run: evaluate.py only (as the run was trained)
    "item_table": ("learned", "semantic", "semantic_frozen"),
}

# Smallest value that works; zero or less would divide by zero, loop forever or silently do nothing.
MINIMUM: dict[str, float] = {
    "max_history": 1,
    "interests.stride": 1,
    "interests.num_interests": 1,
    "interests.item_interests": 1,
    "interests.item_min_phrases": 1,
    "interests.item_max_new_tokens": 1,
    "interests.concurrency": 1,
    "interests.local_batch_size": 1,
    "interests.max_retries": 0,
    "interests.shards": 1,
    "interests.shard": 0,
    "embeddings.text_batch_size": 1,
    "embeddings.sasrec_dim": 1,
    "embeddings.sasrec_layers": 1,
    "embeddings.sasrec_heads": 1,
    "embeddings.sasrec_maxlen": 1,
    "embeddings.sasrec_batch_size": 1,
    "embeddings.sasrec_eval_batch_size": 1,
    "embeddings.sasrec_negatives": 0,
    "code_levels": 1,
    "code_size": 1,
    "rqvae_epochs": 0,
    "rqvae_batch_size": 1,
    "max_interests": 1,
    "fusion_layers": 1,
    "epochs": 0,
    "cycle": 1,
    "finetune_epochs": 0,
    "batch_size": 1,
    "eval_batch_size": 1,
    "warmup_steps": 0,
    "finetune_warmup_steps": 0,
    "eval_step": 1,
    "num_beams": 1,
    "model_threads": 1,
    "max_eval_users": 0,
    "time_budget_s": 0,
    "item_loss_weight": 0,
    "item_negatives": 0,
    "item_candidates": 0,
}

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _lookup(cfg: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _weight_list(value: Any) -> bool:
    """A list of numbers, each at least 0 (booleans are not weights)."""
    return isinstance(value, list) and all(
        isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in value
    )


def problems(cfg: dict) -> list[str]:
    """One line per bad value of a script's flattened view, naming the key and what it takes."""
    out = []
    for key, names in CHOICES.items():
        found, value = _lookup(cfg, key)
        if found and value not in names:
            out.append(f"--{key}: unknown value '{value}' (choose {' | '.join(names)})")
    for key, low in MINIMUM.items():
        found, value = _lookup(cfg, key)
        if found and value < low:
            out.append(f"--{key}: must be at least {low:g}, got {value}")
    found, device = _lookup(cfg, "device")
    if found and not DEVICE.fullmatch(str(device)):
        out.append(f"--device: unknown device '{device}' (choose auto | cpu | cuda | cuda:N | mps)")
    found, topk = _lookup(cfg, "topk")
    if found and (not topk or min(topk) < 1):
        out.append(f"--topk: expected a non-empty list of cut-offs >= 1, got {topk}")
    found, fusion = _lookup(cfg, "fusion_type")
    if found:
        from model.fusion import FUSIONS  # the registry is the one list of variants

        if fusion not in FUSIONS:
            out.append(f"--fusion_type: unknown value '{fusion}' (choose {' | '.join(FUSIONS)})")
    found, kind = _lookup(cfg, "item_tokenizer")
    if found:
        from model.item_tokenizer import known_tokenizers  # the registry is the one list

        if kind not in known_tokenizers():
            names = " | ".join(known_tokenizers())
            out.append(f"--item_tokenizer: unknown value '{kind}' (choose {names})")
    found, icfg = _lookup(cfg, "interests")
    llm = found and icfg.get("backend") in ("local", "dashscope")
    if llm and icfg.get("recipe") == "items" and icfg.get("stride", 1) != 1:
        out.append(
            f"--interests.stride={icfg['stride']}: the items recipe is fresh on every row; a "
            "stride applies to --interests.recipe=history"
        )
    found, ecfg = _lookup(cfg, "embeddings")
    if found and ecfg.get("sasrec_loss") == "bce":
        for key in ("sasrec_negatives", "sasrec_label_smoothing"):
            if ecfg.get(key):
                out.append(f"--embeddings.{key}={ecfg[key]}: applies to sasrec_loss: softmax")
    found, rank_by = _lookup(cfg, "rank_by")
    if found and rank_by == "run" and _lookup(cfg, "item_head")[0]:
        out.append("--rank_by=run: evaluate.py's choice; a run ranks by codes | items | both")
    found, weight = _lookup(cfg, "item_score_weight")
    if found and weight < 0 and _lookup(cfg, "item_head")[0]:
        out.append(f"--item_score_weight: must be at least 0, got {weight}")
    found, grid = _lookup(cfg, "item_weight_grid")
    if found and grid and not _weight_list(grid):
        out.append(f"--item_weight_grid: a list of weights of at least 0, got {grid}")
    found, item_input = _lookup(cfg, "item_input")
    if found and item_input and not _lookup(cfg, "item_head")[1]:
        out.append("--item_input=true: reads the item head's table; set --item_head=true")
    found, negatives = _lookup(cfg, "item_negatives")
    if found and negatives and not _lookup(cfg, "item_head")[1]:
        out.append(f"--item_negatives={negatives}: part of the item head; set --item_head=true")
    found, query_last = _lookup(cfg, "item_query_last")
    if found and query_last and not _lookup(cfg, "item_head")[1]:
        out.append("--item_query_last=true: part of the item head; set --item_head=true")
    found, hide = _lookup(cfg, "interest_dropout")
    if found and not 0 <= hide < 1:
        out.append(f"--interest_dropout: a probability in [0, 1), got {hide}")
    found, merge = _lookup(cfg, "interests.merge_threshold")
    if found and not 0 < merge <= 1:
        out.append(f"--interests.merge_threshold: a cosine in (0, 1], got {merge}")
    found, shard = _lookup(cfg, "interests.shard")
    if found and shard >= cfg["interests"]["shards"]:
        shards = cfg["interests"]["shards"]
        out.append(f"--interests.shard: must be below --interests.shards={shards}, got {shard}")
    return out

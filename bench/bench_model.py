"""Throughput and memory of training and evaluation at the paper's model size.

    python bench/bench_model.py [--dataset=scientific] [--steps=8] [--eval_users=2048] [--KEY=VALUE]

Any other ``--KEY=VALUE`` is a train config override (e.g. ``--max_batch_items=3072``).

Paper configuration (config/default.yaml: T5 6+6 layers, d_model 128, 3x256 codes + collision
token, batch 512, 20 beams, top 10) on the processed dataset's real histories. Item vectors are
random (throughput does not depend on their values). Each phase runs in its own process so that
its peak RSS is its own. Reference paths in the same run: batches padded to the longest history
(50 items), and beam search that re-encodes the history and re-runs the whole decoder prefix for
every beam at every step (the seed's approach). ``train:recommender-bf16`` is the same step with
``bf16: true`` (bfloat16 autocast). Training batches are the first ``--steps`` of an epoch's
shuffled length buckets, a random sample of the epoch; throughput = their rows / their seconds
(batch cost grows with history length, so a median of per-step rates would misstate an epoch).
Each training phase ends with one untimed step on the epoch's heaviest batch, so its peak RSS is
the epoch's worst case. Prints a table.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

# idle OpenMP threads sleep instead of spinning (read once, when torch loads): on 2 shared cores
# spinning threads starve the ones doing the work
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from config import load_config, split_argv  # noqa: E402
from data.batches import (  # noqa: E402
    Batch,
    bucketed_batches,
    load_dataset,
    make_batch,
    sequential_batches,
)
from data.paths import dataset_dir  # noqa: E402
from model.evaluation import Ranking, recommend_batch  # noqa: E402
from model.item_codes import PrefixTrie, derive_item_codes  # noqa: E402
from model.losses import recommender_objective, tokenizer_objective  # noqa: E402
from model.recommender import build_models  # noqa: E402


def setup(cfg):
    torch.manual_seed(0)
    folder = dataset_dir(cfg.data_dir, cfg.dataset)
    splits, emb_map, _ = load_dataset(folder, cfg.dataset, cfg.max_history, 5, False)
    semantic = torch.randn(len(emb_map), 256)
    tokenizer, model = build_models(cfg, 256, len(emb_map))
    codes, report = derive_item_codes(tokenizer, semantic, cfg.code_size)
    return splits, emb_map, semantic, tokenizer, model, codes, report


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_phase(cfg, mode: str, steps: int) -> dict:
    bf16 = mode.endswith("-bf16")
    mode = mode.removesuffix("-bf16")
    splits, _, semantic, tokenizer, model, codes, _ = setup(cfg)
    train = splits["train"]
    rng = np.random.default_rng(0)
    epoch = bucketed_batches(train.lengths, cfg.batch_size, rng, cfg.max_batch_items)
    heaviest = max(epoch, key=lambda b: len(b) * int(train.lengths[b].max()))
    batches = [*epoch[: steps + 1], heaviest]  # the heaviest is untimed: peak RSS = worst case
    if mode == "padded":  # reference: every batch padded to the longest history
        train.lengths = np.full_like(train.lengths, cfg.max_history)
    opt_rec = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt_id = torch.optim.AdamW(tokenizer.parameters(), lr=1e-4)
    times, rows = [], []
    for i, idx in enumerate(batches):
        batch = make_batch(train, idx, codes, None)
        start = time.perf_counter()
        x = semantic[batch.target_ids]
        if mode == "tokenizer":  # a tokenizer step after warm-up: frozen recommender + RQ-VAE
            with torch.no_grad():
                rec = model.eval()(batch, with_items=False)  # float32 here, autocast with bf16
            out = tokenizer(x, seq_latent=rec["seq_latent"])
            loss = tokenizer_objective(out, rec, batch.target_ids, cfg)["loss"]
            opt_id.zero_grad()
            loss.backward()
            opt_id.step()
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model.train()(batch)
            out = {k: v.float() for k, v in out.items()}
            with torch.no_grad():
                item = tokenizer(x)
            loss = recommender_objective(
                out,
                item,
                tokenizer.code_logits,
                batch.target_codes,
                batch.target_ids,
                cfg,
                align=True,
            )["loss"]
            opt_rec.zero_grad()
            loss.backward()
            opt_rec.step()
        if 0 < i <= steps:  # the first step warms up allocators
            times.append(time.perf_counter() - start)
            rows.append(len(idx))
    return {
        "phase": f"train:{mode}" + ("-bf16" if bf16 else ""),
        "steps": len(times),
        "rows_per_s": round(sum(rows) / sum(times), 1),
        "peak_rss_mb": round(peak_mb()),
    }


@torch.no_grad()
def naive_beam(model, trie, batch, num_beams: int, topk: int) -> torch.Tensor:
    """Reference: history encoded once per beam, full decoder prefix re-run at every step."""
    b = batch.history_codes.shape[0]
    rep = Batch(
        batch.history_codes.repeat_interleave(num_beams, 0),
        batch.history_mask.repeat_interleave(num_beams, 0),
        batch.history_ids.repeat_interleave(num_beams, 0),
    )
    memory, mask, _ = model.encode(rep)
    seqs = torch.zeros(b * num_beams, 1, dtype=torch.long)
    scores = torch.full((b, num_beams), float("-inf"))
    scores[:, 0] = 0
    prefix = torch.zeros(b * num_beams, dtype=torch.long)
    for level in range(len(trie.child)):
        states = model.decode(seqs, memory, mask)[:, -1]
        logp = torch.log_softmax(model.level_logits(states, level), -1)
        child = trie.child[level][prefix].long()
        cand = torch.where(child >= 0, scores.view(-1, 1) + logp, float("-inf")).view(b, -1)
        width = num_beams if level < len(trie.child) - 1 else topk
        scores, flat = cand.topk(width, -1)
        parent = (torch.arange(b)[:, None] * num_beams + flat // model.code_size).view(-1)
        code = (flat % model.code_size).view(-1)
        nxt = child.view(b, -1).gather(1, flat).view(-1)
        prefix = torch.where(torch.isfinite(scores).view(-1), nxt, 0)
        if level == len(trie.child) - 1:
            return prefix.view(b, -1)
        seqs = torch.cat([seqs[parent], (1 + level * model.code_size + code)[:, None]], 1)
    raise AssertionError


def eval_phase(cfg, mode: str, n_users: int) -> dict:
    splits, emb_map, _, _, model, codes, _ = setup(cfg)
    model.eval()
    valid = splits["valid"]
    trie = PrefixTrie(codes[1:], cfg.code_size)
    catalogue = range(len(emb_map) - 1)  # item indices of the item map, not of the code table
    sample = np.random.default_rng(0).permutation(len(valid))[:n_users]
    bs, cap = (cfg.eval_batch_size, cfg.eval_max_items) if mode == "cached" else (32, 0)
    start = time.perf_counter()
    invalid = returned = 0
    ranking = Ranking.of(cfg)  # with --item_head=true: by codes and item head (rank_by)
    for rows in sequential_batches(valid.lengths[sample], bs, cap):
        batch = make_batch(valid, sample[rows], codes, None)
        if mode == "cached":
            items, _ = recommend_batch(
                model, trie, batch, cfg.num_beams, 10, ranking=ranking, item_codes=codes
            )
            items = items - 1  # emb ids -> item indices (no item: -1)
        else:
            items = naive_beam(model, trie, batch, cfg.num_beams, 10)
        for row in items.tolist():  # invalid: not a catalogue item, or an item seen twice
            returned += len(row)
            invalid += sum(item not in catalogue for item in row) + len(row) - len(set(row))
    seconds = time.perf_counter() - start
    return {
        "phase": f"eval:{mode}",
        "users": len(sample),
        "users_per_s": round(len(sample) / seconds, 1),
        "invalid_share": invalid / max(returned, 1),
        "peak_rss_mb": round(peak_mb()),
    }


def main() -> None:
    args = split_argv(sys.argv[1:])
    own = {"phase", "n", "dataset", "threads", "steps", "eval_users", "naive_users"}
    overrides = [f"--{k}={v}" for k, v in args.items() if k not in own]  # train config keys
    if "phase" in args:  # child process: one phase, JSON on stdout
        dataset = args.get("dataset", "scientific")
        cfg = load_config(
            "train",
            [f"--dataset={dataset}", "--device=cpu", "--interest_fusion=false", *overrides],
        )
        torch.set_num_threads(int(args.get("threads", torch.get_num_threads())))
        kind, mode = args["phase"].split(":")
        fn = train_phase if kind == "train" else eval_phase
        print(json.dumps(fn(cfg, mode, int(args["n"]))))
        return
    dataset = args.get("dataset", "scientific")
    steps, users = int(args.get("steps", 8)), int(args.get("eval_users", 2048))
    phases = [
        ("train:recommender", steps),
        ("train:recommender-bf16", steps),
        ("train:padded", max(steps // 2, 2)),
        ("train:tokenizer", steps),
        ("eval:cached", users),
        ("eval:naive", int(args.get("naive_users", 128))),
    ]
    results = []
    for phase, n in phases:
        cmd = [sys.executable, __file__, f"--phase={phase}", f"--n={n}", f"--dataset={dataset}"]
        cmd += overrides
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    by = {r["phase"]: r for r in results}
    print("\n| phase | throughput | peak RSS |\n|---|---|---|")
    for r in results:
        rate = f"{r['rows_per_s']} rows/s" if "rows_per_s" in r else f"{r['users_per_s']} users/s"
        print(f"| {r['phase']} | {rate} | {r['peak_rss_mb']} MB |")
    print(
        f"\nbucketed vs padded training: "
        f"{by['train:recommender']['rows_per_s'] / by['train:padded']['rows_per_s']:.1f}x; "
        f"cached vs naive beam search: "
        f"{by['eval:cached']['users_per_s'] / by['eval:naive']['users_per_s']:.1f}x; "
        f"invalid items returned: {by['eval:cached']['invalid_share']:.4f}"
    )


if __name__ == "__main__":
    main()

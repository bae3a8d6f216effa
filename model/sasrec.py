"""SASRec (Kang & McAuley, 2018): a causal transformer over item ids, scored against its own table.

Its item embedding table is what the RQ-VAE tokenizer quantizes, so scores are the dot product of
the final state with that same table (tied output): the table then holds exactly the geometry the
recommender ranks by. Sequences are left-padded with id 0; position ``maxlen - 1`` is always the
most recent item, so a batch may be cropped to its longest sequence without changing the result.

``train_sasrec`` trains it on a dataset's train split only (valid and test targets never shape the
codes the generator is later evaluated with) and returns the item table that ``data_process.py``
writes as ``<name>_emb_<dim>.npy``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from config import Config
from data.device import native_bf16, resolve_device
from data.jsonl import write_json
from data.splits import load_emb_map, load_split
from model.checkpoint import atomic_save
from model.losses import negative_proposal, sampled_softmax_loss
from model.metrics import rank_of_target, ranking_metrics

TOPK = [5, 10]


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention, then the paper's width-preserving ReLU
    feed-forward (d -> d -> d: half the cost of the usual 4x-wide one)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attend(self.ln1(x), mask))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(nn.Module):
    def __init__(
        self, n_items: int, dim: int, layers: int, heads: int, maxlen: int, dropout: float
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"sasrec_dim {dim} must be divisible by sasrec_heads {heads}")
        self.maxlen = maxlen
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        # Small weights keep the tied dot-product logits near zero at the start (no saturation).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` [B, L] left-padded ids (L <= maxlen) -> hidden states [B, L, dim]."""
        t = seq.shape[1]
        pos = torch.arange(self.maxlen - t, self.maxlen, device=seq.device)
        # x sqrt(dim) as in the paper: the table is initialised small for the tied output, and
        # unscaled the item signal drowns in the residual stream (training is slower and worse).
        x = self.drop(self.item_emb(seq) * self.item_emb.embedding_dim**0.5 + self.pos_emb(pos))
        # A position sees itself and the real items before it; a padded position sees only itself,
        # so no softmax row is empty (an all-masked row would give NaN and leak into real rows).
        real = seq != 0
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=seq.device)
        mask = ((causal & real[:, None, :]) | eye)[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the real items (ids 1..n, PAD dropped): column ``j`` is item id ``j + 1``."""
        return hidden @ self.item_emb.weight[1:].T

    def loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        negatives: int,
        proposal: torch.Tensor,
        label_smoothing: float = 0.0,
        kind: str = "softmax",
    ) -> torch.Tensor:
        """Next-item loss of ``hidden`` [N, dim] against item ids ``targets`` [N].

        ``kind`` = "bce" is the original SASRec's (Kang and McAuley, 2018): binary cross-entropy
        of the target against one negative per position, drawn uniformly (a draw that hits the
        target counts as a negative, rare with thousands of items). The papers' SASRec rows use
        it; the softmax below is the stronger baseline this project compares against.

        ``negatives`` = 0: softmax over every item. Otherwise a sampled softmax over the target
        and ``negatives`` items drawn from ``proposal`` (probabilities of ids 1..n), shared by the
        batch (``model.losses.sampled_softmax_loss``): the full softmax dominates training on a
        large catalogue.
        ``label_smoothing`` (full softmax only) spreads that share of the target over all items.
        """
        if kind == "bce":
            n_items = self.item_emb.num_embeddings - 1  # ids 1..n; 0 is padding
            neg = torch.randint(1, n_items + 1, targets.shape, device=targets.device)
            pos_logit = (hidden * self.item_emb(targets)).sum(-1)
            neg_logit = (hidden * self.item_emb(neg)).sum(-1)
            return F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
        if not negatives:
            return F.cross_entropy(
                self.scores(hidden), targets - 1, label_smoothing=label_smoothing
            )
        if label_smoothing:
            raise ValueError("sasrec_label_smoothing needs the full softmax (sasrec_negatives: 0)")
        return sampled_softmax_loss(hidden, self.item_emb.weight, targets, negatives, proposal)

    def last_scores(self, seq: torch.Tensor) -> torch.Tensor:
        """Next-item scores after the most recent item of each left-padded sequence."""
        return self.scores(self(seq)[:, -1])


# ---------------------------------------------------------------- training (train_sasrec)
def pad_left(seqs: list[list[int]], width: int) -> np.ndarray:
    """The ``width`` most recent ids of each sequence, right-aligned, padded with 0 on the left."""
    out = np.zeros((len(seqs), width), dtype=np.int64)
    for i, seq in enumerate(seqs):
        tail = seq[-width:]
        if tail:
            out[i, -len(tail) :] = tail
    return out


def train_sequences(rows: list[dict], emb_map: dict[str, int]) -> list[list[int]]:
    """Each user's sequence minus its last two items, rebuilt from the train rows (chronological
    per user): the first row's history, then every row's target."""
    seqs: dict[str, list[int]] = {}
    for row in rows:
        seq = seqs.setdefault(row["user_id"], [emb_map[t] for t in row["inter_history"]])
        seq.append(emb_map[row["target_id"]])
    return list(seqs.values())


def eval_arrays(rows: list[dict], emb_map: dict[str, int], maxlen: int) -> tuple[np.ndarray, ...]:
    """Histories (sorted by length, so batches crop well), targets, lengths, and each sorted
    row's place in the split file."""
    hist = [[emb_map[t] for t in r["inter_history"]][-maxlen:] for r in rows]
    order = np.argsort([len(h) for h in hist], kind="stable")
    targets = np.array([emb_map[rows[i]["target_id"]] for i in order], dtype=np.int64)
    lengths = np.array([len(hist[i]) for i in order])
    return pad_left([hist[i] for i in order], maxlen), targets, lengths, order


@torch.no_grad()
def target_ranks(
    model: SASRec, split: tuple[np.ndarray, ...], batch_size: int, skip_history: bool = False
) -> np.ndarray:
    """0-based rank of each row's target among all items (PAD excluded), in split-file order.

    ``skip_history`` also drops the user's history items from the ranking, as RecBole's full-sort
    evaluation does (for comparison with published figures); the project's own figures rank all.
    """
    hist, targets, lengths, order = split
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ranks = []
    for i in range(0, len(hist), batch_size):
        width = max(int(lengths[i : i + batch_size].max()), 1)
        seq = torch.from_numpy(hist[i : i + batch_size, -width:]).to(device)
        scores = model.last_scores(seq)
        if skip_history:
            rows = torch.arange(len(seq), device=device)[:, None].expand_as(seq)
            scores[rows[seq > 0], seq[seq > 0] - 1] = -torch.inf
        ranks.append(rank_of_target(scores.float().cpu().numpy(), targets[i : i + batch_size] - 1))
    model.train(was_training)
    in_file_order = np.empty(len(order), dtype=np.int64)
    in_file_order[order] = np.concatenate(ranks) if ranks else []
    return in_file_order


def evaluate(
    model: SASRec, split: tuple[np.ndarray, ...], batch_size: int, skip_history: bool = False
) -> dict[str, float]:
    """Recall and NDCG at 5 and 10 of ``target_ranks``."""
    return ranking_metrics(target_ranks(model, split, batch_size, skip_history), TOPK)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list:
    """Batches of users with similar lengths, in random order: each batch is cropped to its longest
    sequence, and most real sequences are short, so this skips most of the padding work."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[j] for j in rng.permutation(len(batches))]


def lr_schedule(
    opt: torch.optim.Optimizer, kind: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``constant``, or ``cosine``: the rate falls to zero over ``sasrec_epochs``. Constant Adam
    peaks early and then overfits from a noisy point; annealing lets the weights settle at the end
    of a fixed, short budget (set ``sasrec_epochs`` to a few epochs past the constant-rate peak)."""
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
        )
    raise ValueError(f"embeddings.sasrec_schedule: unknown '{kind}' (constant | cosine)")


def train_epoch(
    model: SASRec,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    train: np.ndarray,
    lengths: np.ndarray,
    proposal: torch.Tensor,
    ecfg: Config,
    rng: np.random.Generator,
    desc: str,
) -> float:
    """One pass; every position of every sequence predicts the next item. Matmuls run in
    bfloat16 when ``sasrec_bf16`` and the device has native bf16 (much faster than float32 on
    CPUs with AVX512-BF16; the weights, the optimizer and the loss reduction stay float32)."""
    device = next(model.parameters()).device
    bf16 = bool(ecfg.sasrec_bf16) and native_bf16(device)
    total, count = 0.0, 0
    batches = length_batches(lengths, ecfg.sasrec_batch_size, rng)
    bar = tqdm(batches, desc=desc, leave=False, mininterval=5)
    for idx in bar:
        seq = torch.from_numpy(train[idx][:, -int(lengths[idx].max()) :]).to(device)
        inp, tgt = seq[:, :-1], seq[:, 1:]
        real = inp != 0  # left padding: a real input always has a real next item
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = model(inp)[real]
            loss = model.loss(
                hidden,
                tgt[real],
                ecfg.sasrec_negatives,
                proposal,
                ecfg.sasrec_label_smoothing,
                ecfg.sasrec_loss,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * int(real.sum())
        count += int(real.sum())
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / count


def sasrec_settings(ecfg: Config, seed: int, n_items: int, n_users: int) -> dict:
    """What a checkpoint must match to be resumed: everything that shapes the weights (patience,
    the eval batch size and, under a constant rate, the epoch budget may change between tries;
    a cosine schedule's length shapes every step)."""
    free = {"sasrec_patience", "sasrec_eval_batch_size"}
    if ecfg.sasrec_schedule == "constant":
        free.add("sasrec_epochs")
    keys = {k: v for k, v in ecfg.items() if k.startswith("sasrec_") and k not in free}
    return keys | {"seed": seed, "n_items": n_items, "n_users": n_users}


def load_checkpoint(path: Path, settings: dict) -> dict | None:
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["settings"] != settings:
        print(f"  {path.name} is from other settings; starting over")
        return None
    return ckpt


def train_sasrec(
    folder: Path, name: str, ecfg: Config, seed: int, device: str = "cpu"
) -> tuple[np.ndarray, dict]:
    """Train with early stopping on valid NDCG@10; return the best item table and its metrics
    (as written to ``sasrec_metrics.json``, plus ``test_ranks``: each test row's target rank)."""
    emb_map = load_emb_map(folder, name)
    n_items, maxlen = len(emb_map) - 1, ecfg.sasrec_maxlen
    rows = load_split(folder, name, "train", emb_map=emb_map)
    seqs = [s for s in train_sequences(rows, emb_map) if len(s) >= 2]
    train = pad_left(seqs, maxlen + 1)
    lengths = np.minimum([len(s) for s in seqs], maxlen + 1)
    valid, test = (
        eval_arrays(load_split(folder, name, s, emb_map=emb_map), emb_map, maxlen)
        for s in ("valid", "test")
    )
    dev = resolve_device(device)
    proposal = negative_proposal(np.bincount(train.ravel(), minlength=n_items + 1)[1:]).to(dev)
    torch.manual_seed(seed)
    model = SASRec(
        n_items, ecfg.sasrec_dim, ecfg.sasrec_layers, ecfg.sasrec_heads, maxlen, ecfg.sasrec_dropout
    ).to(dev)
    opt = torch.optim.AdamW(
        model.parameters(), lr=ecfg.sasrec_lr, weight_decay=ecfg.sasrec_weight_decay, fused=True
    )
    steps_per_epoch = math.ceil(len(lengths) / ecfg.sasrec_batch_size)
    sched = lr_schedule(opt, ecfg.sasrec_schedule, steps_per_epoch * ecfg.sasrec_epochs)
    settings = sasrec_settings(ecfg, seed, n_items, len(seqs))
    ckpt_path = folder / "sasrec.ckpt.pt"
    state = {"epoch": 0, "best_ndcg": -1.0, "best_epoch": 0, "bad": 0, "log": [], "elapsed": 0.0}
    best = {k: v.clone() for k, v in model.state_dict().items()}
    if ckpt := load_checkpoint(ckpt_path, settings):
        model.load_state_dict(ckpt["model"])  # onto the model's device
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        torch.set_rng_state(ckpt["rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state, best = ckpt["state"], ckpt["best"]
        print(f"  resuming SASRec after epoch {state['epoch']} from {ckpt_path}")
    print(f"  SASRec: {len(seqs):,} train sequences, {n_items:,} items, {len(valid[0]):,} valid")
    start = time.perf_counter() - state["elapsed"]
    while state["epoch"] < ecfg.sasrec_epochs and state["bad"] < ecfg.sasrec_patience:
        epoch = state["epoch"] + 1
        rng = np.random.default_rng([seed, epoch])  # per epoch, so a resumed run shuffles the same
        desc = f"sasrec epoch {epoch}"
        loss = train_epoch(model, opt, sched, train, lengths, proposal, ecfg, rng, desc)
        metrics = evaluate(model, valid, ecfg.sasrec_eval_batch_size)
        if metrics["ndcg@10"] > state["best_ndcg"]:
            state.update(best_ndcg=metrics["ndcg@10"], best_epoch=epoch, bad=0)
            best = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            state["bad"] += 1
        state.update(epoch=epoch, elapsed=time.perf_counter() - start)
        state["log"].append({"epoch": epoch, "loss": loss, **metrics})
        tqdm.write(
            f"  {desc}: loss {loss:.4f} | valid R@10 {metrics['recall@10']:.4f} "
            f"N@10 {metrics['ndcg@10']:.4f} | best epoch {state['best_epoch']} | "
            f"{state['elapsed']:.0f}s"
        )
        atomic_save(  # a crash mid-write keeps the previous epoch's checkpoint
            {"settings": settings, "model": model.state_dict(), "opt": opt.state_dict(),
             "sched": sched.state_dict(),
             "rng": torch.get_rng_state(), "state": state, "best": best,
             "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None},
            ckpt_path,
        )  # fmt: skip
    model.load_state_dict(best)
    test_ranks = target_ranks(model, test, ecfg.sasrec_eval_batch_size)
    result = {
        "valid": evaluate(model, valid, ecfg.sasrec_eval_batch_size),
        "test": ranking_metrics(test_ranks, TOPK),
        "test_skip_history": evaluate(model, test, ecfg.sasrec_eval_batch_size, skip_history=True),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "train_seconds": round(time.perf_counter() - start, 1),
        "settings": settings,
        "log": state["log"],
    }
    write_json(folder / "sasrec_metrics.json", result)
    result["test_ranks"] = test_ranks  # for experiments/breakdown.py: returned, not written
    ckpt_path.unlink(missing_ok=True)
    for split in ("valid", "test", "test_skip_history"):
        m = result[split]
        print(
            f"  SASRec {split}: R@5 {m['recall@5']:.4f} N@5 {m['ndcg@5']:.4f} "
            f"R@10 {m['recall@10']:.4f} N@10 {m['ndcg@10']:.4f}"
        )
    return model.item_emb.weight.detach().cpu().numpy().astype(np.float32), result

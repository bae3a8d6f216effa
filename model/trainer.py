"""ETEGRec training: tokenizer pretraining, alternating joint training, finetuning, test.

Stages run in order inside one run folder and each records its progress in ``last.pt`` at every
epoch boundary, tokenizer pretraining included (weights, optimisers, schedulers, RNG, counters, and
the length of ``metrics.jsonl`` then), so ``--resume=RUN_DIR`` continues an interrupted run and
writes the same ``metrics.jsonl`` as an uninterrupted one with the same seed: lines logged after
the last checkpoint are cut, and their epochs run again. ``data.json`` records the data files the
run reads (``data.fingerprint``); a resumed run refuses data that differ.

Joint stage (ETEGRec): with ``cycle`` c, epoch e is a tokenizer epoch when ``e % c == 0`` (tokenizer
trainable, recommender frozen: id_* weights) and a recommender epoch otherwise (recommender
trainable, tokenizer frozen: rec_* weights). SIA and PSA join after ``warm_epoch``. Item codes are
re-derived after each tokenizer epoch. Finetune: tokenizer and codes frozen, code loss only
(and the item head's, with one).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object
from torch import nn
from tqdm import tqdm

from config import Config
from data.batches import (
    Batch,
    bucketed_batches,
    load_dataset,
    load_semantic_embeddings,
    make_batch,
    resolve_semantic_stem,
)
from data.fingerprint import check_fingerprint, data_files, fingerprint, record_fingerprint
from data.interests.recipe import INTERESTS_SUMMARY, SETTINGS_FILE, read_settings
from data.jsonl import DataError, write_json
from data.paths import dataset_dir
from data.popularity import by_emb_id, train_counts
from data.splits import SPLITS
from model.checkpoint import (
    BEST,
    ITEM_WEIGHTS_FILE,
    atomic_save,
    load_best,
    load_file,
    load_state_strict,
    save_best,
    save_config,
)
from model.evaluation import Ranking, rank_split_weights, split_metrics
from model.generator import SEMANTIC_TABLES
from model.item_codes import PrefixTrie, derive_item_codes
from model.losses import recommender_objective, tokenizer_objective
from model.recommender import build_models
from model.report import METRIC, format_table, plot_curves

STAGES = ("tokenizer", "joint", "finetune", "test")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to zero at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def process_share(local_rows: int, global_rows: int, world: int) -> float:
    """The weight of one process's mean loss under DDP. DDP averages the processes' gradients
    equally, but a batch of n rows split over W processes gives some of them one row more;
    weighting each mean by W * local / n makes the average the gradient of the batch's mean.
    Exactly 1 on one process."""
    return world * local_rows / global_rows


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        # the only buffers (a frozen item table, the negatives' draw) are set identically on
        # every process and never change: DDP need not broadcast them before every forward
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
        self.acc = Accelerator(cpu=cfg.device == "cpu", kwargs_handlers=[ddp])
        self.device = self.acc.device
        self.main = self.acc.is_main_process
        seed_everything(cfg.seed)
        folder = dataset_dir(cfg.data_dir, cfg.dataset)
        self.data_folder = folder
        cfg.semantic_emb = resolve_semantic_stem(folder, cfg.dataset, cfg.semantic_emb)
        self.data_fingerprint = fingerprint(
            data_files(folder, cfg.dataset, SPLITS, cfg.interest_fusion, cfg.semantic_emb)
        )
        check_fingerprint(run_dir, folder, self.data_fingerprint)  # a resumed run's own data
        self.splits, self.emb_map, self.interests = load_dataset(
            folder, cfg.dataset, cfg.max_history, cfg.max_interests, cfg.interest_fusion
        )
        if self.interests is not None and self.interests.dim != cfg.interest_dim:
            dim = self.interests.dim
            raise DataError(
                f"{folder / cfg.dataset}.interest_emb.npy: {dim}-d phrase vectors, but "
                f"interest_dim={cfg.interest_dim} (pass --interest_dim={dim})"
            )
        self.semantic = load_semantic_embeddings(
            folder, cfg.dataset, cfg.semantic_emb, len(self.emb_map) - 1
        )
        n_rows, dim = self.semantic.shape  # items + padding
        self.tokenizer, self.model = build_models(cfg, dim, n_rows)
        if cfg.item_head and cfg.item_table in SEMANTIC_TABLES:
            self.model.item_head.init_from(self.semantic)
        if cfg.item_head and cfg.item_negatives:
            counts = by_emb_id(train_counts(folder, cfg.dataset, cfg.interest_fusion), self.emb_map)
            self.model.item_head.set_proposal(counts[1:])
        self.tokenizer.to(self.device)
        self.model.to(self.device)
        self.semantic_dev = self.semantic.to(self.device)
        self.item_codes = torch.zeros(len(self.emb_map), cfg.code_levels + 1, dtype=torch.long)
        self.trie: PrefixTrie | None = None
        # tokenizer pretraining's own optimiser and shuffling generator while it runs (saved in
        # last.pt), and their saved states when a run resumes inside it
        self.pretrain: tuple[torch.optim.Optimizer, torch.Generator] | None = None
        self.pretrain_saved: dict | None = None
        self.state = {
            "stage": STAGES[0],
            "epoch": 0,
            "best": -1.0,
            "bad_evals": 0,
            "best_epoch": -1,
        }
        self.opt_rec = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr_rec, weight_decay=cfg.weight_decay
        )
        self.opt_id = torch.optim.AdamW(
            self.tokenizer.parameters(), lr=cfg.lr_id, weight_decay=cfg.weight_decay
        )
        steps = self.steps_per_epoch()
        n_tok = sum(1 for e in range(cfg.epochs) if self.is_tokenizer_epoch(e))
        self.sched_rec = cosine_schedule(
            self.opt_rec, cfg.warmup_steps, (cfg.epochs - n_tok) * steps
        )
        self.sched_id = cosine_schedule(self.opt_id, cfg.warmup_steps, n_tok * steps)
        self.clock = time.perf_counter()  # this invocation's start, for ``time_budget_s``
        self.budget_spent = False
        # decided before DDP starts (every process waits there for the others) and before the
        # main process writes last.pt: a process that looked later could resume a run just begun
        self.resuming = (run_dir / "last.pt").exists()
        # only the modules are prepared (DDP when distributed); optimisers stay plain torch ones
        self.model_ddp, self.tokenizer_ddp = self.acc.prepare(self.model, self.tokenizer)

    # ---------------------------------------------------------------- helpers
    def steps_per_epoch(self) -> int:
        lengths = self.splits["train"].lengths
        rng = np.random.default_rng(self.cfg.seed)
        return len(bucketed_batches(lengths, self.cfg.batch_size, rng, self.cfg.max_batch_items))

    def is_tokenizer_epoch(self, epoch: int) -> bool:
        return self.cfg.cycle > 1 and epoch % self.cfg.cycle == 0

    def out_of_time(self) -> bool:
        """True once this invocation has trained for ``time_budget_s`` (0 = no limit): no further
        epoch starts and the test stage runs on the best checkpoint so far; ``last.pt`` keeps the
        stopped stage's position, so ``--resume`` goes on from there with a fresh budget. Every
        process takes the same decision (any clock past the budget), so none waits on the others.
        """
        budget = self.cfg.time_budget_s
        if self.budget_spent or budget <= 0:
            return self.budget_spent
        over = torch.tensor([float(time.perf_counter() - self.clock > budget)], device=self.device)
        if float(self.acc.reduce(over, "sum")) > 0:
            self.budget_spent = True
            if self.main:
                print(f"time budget of {budget} s spent: no further training epoch", flush=True)
        return self.budget_spent

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def metrics_size(self) -> int:
        return self.metrics_path.stat().st_size if self.metrics_path.exists() else 0

    def log(self, record: dict) -> None:
        if not self.main:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if not isinstance(v, dict)
        )
        valid = record.get("valid")
        if valid:
            shown += f" | valid recall@10={valid['recall@10']:.4f} ndcg@10={valid['ndcg@10']:.4f}"
        print(shown, flush=True)

    def set_codes(self, codes: torch.Tensor) -> None:
        self.item_codes = codes.cpu()
        self.trie = PrefixTrie(self.item_codes[1:], self.cfg.code_size).to(self.device)

    def refresh_codes(self) -> dict:
        codes, report = derive_item_codes(self.tokenizer, self.semantic_dev, self.cfg.code_size)
        self.set_codes(codes)
        return report.as_dict()

    def batch_to_device(self, rows: np.ndarray) -> Batch:
        # each process takes its share of the global batch, so N processes see the same global batch
        rows = rows[self.acc.process_index :: self.acc.num_processes]
        batch = make_batch(self.splits["train"], rows, self.item_codes, self.interests)
        return batch.to(self.device)

    def hide_interests(self, batch: Batch, hidden: np.ndarray) -> None:
        """Interest dropout: rows of the global batch flagged in ``hidden`` train without their
        interests. At convergence a fusing model leans on them for ~40% of its accuracy
        (``evaluate.py --eval_interests=none``) and levels off below one without them; hiding
        them at random keeps the history path trained as well."""
        mine = hidden[self.acc.process_index :: self.acc.num_processes]
        batch.interest_mask &= ~torch.from_numpy(mine).to(self.device)[:, None]

    def evaluate(self, split: str, desc: str, skip_history: bool = False) -> dict:
        return self.evaluate_weights(split, desc, [self.cfg.item_score_weight], skip_history)[0]

    def evaluate_weights(
        self, split: str, desc: str, weights: list[float], skip_history: bool = False
    ) -> list[dict]:
        """The split's metrics at each item-head weight, from one pass (``rank_split_weights``)."""
        _, ranks = rank_split_weights(
            self.model,
            self.trie,
            self.splits[split],
            self.item_codes,
            self.interests,
            self.cfg.num_beams,
            max(self.cfg.topk),
            self.cfg.eval_batch_size,
            self.device,
            max_items=self.cfg.eval_max_items,
            max_users=self.cfg.max_eval_users,
            rank=self.acc.process_index,
            world=self.acc.num_processes,
            gather=self.gather if self.acc.num_processes > 1 else None,
            desc=desc,
            skip_history=skip_history,
            ranking=Ranking.of(self.cfg),
            weights=weights,
        )
        return [split_metrics(r, list(self.cfg.topk)) for r in ranks]

    @staticmethod
    def gather(rows: torch.Tensor, ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = gather_object([(rows.tolist(), ranks.tolist())])
        return (
            torch.tensor([r for p in pairs for r in p[0]], dtype=torch.long),
            torch.tensor([r for p in pairs for r in p[1]], dtype=torch.long),
        )

    # ---------------------------------------------------------------- checkpoints
    def save_last(self) -> None:
        if not self.main:
            return
        ckpt = {
            "state": self.state,
            "metrics_bytes": self.metrics_size(),
            "pretrain": None,
            "tokenizer": self.tokenizer.state_dict(),
            "item_codes": self.item_codes,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                # on a GPU, dropout and the item head's negatives draw from the device's generator
                "cuda": torch.cuda.get_rng_state(self.device)
                if self.device.type == "cuda"
                else None,
            },
        }
        if self.pretrain is not None:
            # saved every pretraining epoch: the recommender, its optimisers and schedules are
            # still as the seed built them (a resume builds them again), so they are left out
            opt, gen = self.pretrain
            ckpt["pretrain"] = {"opt": opt.state_dict(), "gen": gen.get_state()}
        else:
            ckpt.update(
                recommender=self.model.state_dict(),
                opt_rec=self.opt_rec.state_dict(),
                opt_id=self.opt_id.state_dict(),
                sched_rec=self.sched_rec.state_dict(),
                sched_id=self.sched_id.state_dict(),
            )
        atomic_save(ckpt, self.run_dir / "last.pt")

    def load_last(self) -> None:
        path = self.run_dir / "last.pt"
        ckpt = load_file(
            path,
            f"delete it to restart the run from the beginning (--resume={self.run_dir}) "
            "or restore it from a copy",
            weights_only=False,
        )
        load_state_strict(self.tokenizer, ckpt["tokenizer"], f"{path} [tokenizer]")
        if "recommender" in ckpt:  # absent while inside tokenizer pretraining (see save_last)
            load_state_strict(self.model, ckpt["recommender"], f"{path} [recommender]")
            self.opt_rec.load_state_dict(ckpt["opt_rec"])
            self.opt_id.load_state_dict(ckpt["opt_id"])
            self.sched_rec.load_state_dict(ckpt["sched_rec"])
            self.sched_id.load_state_dict(ckpt["sched_id"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        self.state = ckpt["state"]
        self.pretrain_saved = ckpt.get("pretrain")
        if self.state["stage"] != "tokenizer":
            self.set_codes(ckpt["item_codes"])
        if self.main and "metrics_bytes" in ckpt:
            self.cut_metrics(ckpt["metrics_bytes"])

    def cut_metrics(self, size: int) -> None:
        """Drop what was logged after the checkpoint (a kill between a line and ``last.pt``):
        those epochs run again and log again, so no epoch is counted twice."""
        if self.metrics_size() > size:
            with open(self.metrics_path, "r+b") as f:
                f.truncate(size)

    def save_best_now(self, metrics: dict) -> None:
        if self.main:
            save_best(
                self.run_dir / BEST,
                self.model,
                self.tokenizer,
                self.item_codes,
                self.cfg.to_dict(),
                metrics,
            )
        self.acc.wait_for_everyone()  # others may load best/ next

    # ---------------------------------------------------------------- stages
    @property
    def stages(self) -> dict[str, Callable[[], dict]]:
        """Each stage's method, in STAGES order."""
        return {
            "tokenizer": self.stage_tokenizer,
            "joint": self.stage_joint,
            "finetune": self.stage_finetune,
            "test": self.stage_test,
        }

    def run(self, stop_after: str = "test") -> dict:
        if self.resuming:
            self.load_last()
            if self.main:
                print(
                    f"resuming {self.run_dir} at stage '{self.state['stage']}', "
                    f"epoch {self.state['epoch']}"
                )
        elif self.main:
            self.cut_metrics(0)  # killed before its first checkpoint: nothing counts
        if self.main:
            save_config(self.cfg.to_dict(), self.run_dir / "config.yaml")
            record_fingerprint(self.run_dir, self.data_folder, self.data_fingerprint)
            settings = read_settings(self.data_folder / INTERESTS_SUMMARY)
            if self.cfg.interest_fusion and settings is not None:
                write_json(self.run_dir / SETTINGS_FILE, settings)
        result: dict = {}
        for stage in STAGES[STAGES.index(self.state["stage"]) :]:
            if self.budget_spent and stage != "test":
                continue
            result = self.stages[stage]()
            if self.budget_spent and stage != "test":
                continue  # last.pt holds where this stage stopped
            nxt = STAGES.index(stage) + 1
            self.state.update(
                stage=STAGES[nxt] if nxt < len(STAGES) else "done", epoch=0, bad_evals=0
            )
            if stage == "joint":
                self.start_finetune()  # in last.pt, so best/ written by finetune cannot leak in
            if stage != "test":
                self.save_last()
            if stage == stop_after:
                break
        return result

    def stage_tokenizer(self) -> dict:
        cfg = self.cfg
        if cfg.tokenizer_ckpt:
            path = Path(cfg.tokenizer_ckpt)
            state = load_file(path, "pass a tokenizer.pt written by train.py")
            load_state_strict(self.tokenizer, state, str(path))
        else:
            self.pretrain_tokenizer()
            if self.main:
                atomic_save(self.tokenizer.state_dict(), self.run_dir / "tokenizer.pt")
        report = self.refresh_codes()
        self.log({"stage": "tokenizer", "codes": report})
        return report

    def pretrain_tokenizer(self) -> None:
        """Pretrain the tokenizer on the items' semantic embeddings (its own loss: RQ-VAE's
        reconstruction + commitment),
        saving ``last.pt`` after every epoch with the optimiser and the shuffling generator, so
        a resumed run takes the very batches an uninterrupted one would."""
        cfg = self.cfg
        x = self.semantic_dev[1:]
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(self.tokenizer.parameters(), lr=cfg.rqvae_lr)
        if self.pretrain_saved is not None:  # resumed inside pretraining
            opt.load_state_dict(self.pretrain_saved["opt"])
            gen.set_state(self.pretrain_saved["gen"])
        else:
            self.tokenizer.initialise(x, cfg, gen)
        self.pretrain = (opt, gen)
        first = self.state["epoch"]
        bar = tqdm(
            range(first, cfg.rqvae_epochs),
            desc="tokenizer",
            initial=first,
            total=cfg.rqvae_epochs,
            disable=not self.main,
        )
        for epoch in bar:
            perm = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), cfg.rqvae_batch_size):
                out = self.tokenizer(x[perm[start : start + cfg.rqvae_batch_size]])
                loss = out["recon_loss"] + out["vq_loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
            bar.set_postfix(
                recon=float(out["recon_loss"].detach()), vq=float(out["vq_loss"].detach())
            )
            self.state["epoch"] = epoch + 1
            self.save_last()
        self.pretrain = None

    def stage_joint(self) -> dict:
        cfg = self.cfg
        unvalidated = False  # a recommender epoch ran since the last validation
        for epoch in range(self.state["epoch"], cfg.epochs):
            if self.out_of_time():
                self.validate_before_stopping(unvalidated)
                break
            tok_epoch = self.is_tokenizer_epoch(epoch)
            record = self.train_epoch(
                epoch, "tokenizer" if tok_epoch else "recommender", epoch >= cfg.warm_epoch
            )
            if tok_epoch:
                record["codes"] = self.refresh_codes()
            elif (epoch + 1) % cfg.eval_step != 0 and epoch != cfg.epochs - 1:
                unvalidated = True
            else:
                unvalidated = False
                stop = self.validate(record, epoch, cfg.early_stop)
                if stop:
                    self.state["epoch"] = epoch + 1
                    self.log(record)
                    break
            self.state["epoch"] = epoch + 1
            self.log(record)
            self.save_last()
        if not (self.run_dir / BEST / "model.pt").exists():  # no recommender epoch ran (epochs=0)
            record = {"stage": "joint", "epoch": self.state["epoch"], "mode": "none"}
            self.validate(record, self.state["epoch"], self.cfg.early_stop)
            self.log(record)
        return {"best_valid": self.state["best"], "best_epoch": self.state["best_epoch"]}

    def start_finetune(self) -> None:
        """The finetune stage's starting point: the best joint checkpoint and a fresh optimiser."""
        self.set_codes(load_best(self.run_dir / BEST, self.model, self.tokenizer))
        for group in self.opt_rec.param_groups:
            group["lr"] = self.cfg.lr_finetune
            group["initial_lr"] = self.cfg.lr_finetune
        self.opt_rec.state.clear()
        self.state["finetune_ready"] = True

    def stage_finetune(self) -> dict:
        cfg = self.cfg
        if cfg.finetune_epochs <= 0 or self.out_of_time():
            return {}
        if self.state["epoch"] == 0 and not self.state.get("finetune_ready"):
            self.start_finetune()  # a last.pt of older code, saved before the finetune start
        resumed = self.sched_rec.state_dict() if self.state["epoch"] > 0 else None
        self.sched_rec = cosine_schedule(
            self.opt_rec, cfg.finetune_warmup_steps, cfg.finetune_epochs * self.steps_per_epoch()
        )
        if resumed is not None:  # last.pt held the finetune optimiser and schedule position
            self.sched_rec.load_state_dict(resumed)
            # a new schedule sets the rate for its step 0; the saved position's rate must win
            rates = self.sched_rec.get_last_lr()
            for group, lr in zip(self.opt_rec.param_groups, rates, strict=True):
                group["lr"] = lr
        unvalidated = False
        for epoch in range(self.state["epoch"], cfg.finetune_epochs):
            if self.out_of_time():
                self.validate_before_stopping(unvalidated)
                break
            record = self.train_epoch(epoch, "finetune", align=False)
            unvalidated = (epoch + 1) % cfg.eval_step != 0
            stop = not unvalidated and self.validate(record, epoch, cfg.finetune_early_stop)
            self.state["epoch"] = epoch + 1
            self.log(record)
            if stop:
                break
            self.save_last()
        return {"best_valid": self.state["best"]}

    def stage_test(self) -> dict:
        self.set_codes(load_best(self.run_dir / BEST, self.model, self.tokenizer))
        if self.cfg.item_head and self.cfg.item_weight_grid:
            self.choose_item_weight()
        metrics = self.evaluate("test", "test")
        # the same ranking with each user's history left out, as SASRec's test_skip_history
        skipped = self.evaluate("test", "test, history left out", skip_history=True)
        metrics["best_valid_ndcg@10"] = self.state["best"]
        metrics["skip_history"] = skipped
        if self.main:
            (self.run_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=1))
            plot_curves(self.run_dir)
            print(format_table(metrics, "test"))
            print(format_table(skipped, "test_skip_history"))
        return metrics

    def choose_item_weight(self) -> None:
        """Rank valid with the best checkpoint at each weight of ``item_weight_grid`` and keep
        the best as the run's ``item_score_weight`` (its config.yaml records it, so test,
        evaluate.py and the demo rank with it; ``item_weights.json`` has every valid score).
        Training validated at the configured weight; the item head's best weight is a property
        of the trained model, so it is chosen once, after training, on valid only."""
        grid = [float(w) for w in self.cfg.item_weight_grid]
        metrics = self.evaluate_weights("valid", "valid, item weights", grid)
        scores = dict(zip(grid, metrics, strict=True))
        chosen = max(scores, key=lambda w: scores[w]["ndcg@10"])  # ties: the first listed
        self.cfg.item_score_weight = chosen
        if self.main:
            save_config(self.cfg.to_dict(), self.run_dir / "config.yaml")
            valid = {f"{w:g}": round(m["ndcg@10"], 6) for w, m in scores.items()}
            write_json(self.run_dir / ITEM_WEIGHTS_FILE, {"valid_ndcg@10": valid, "chosen": chosen})
            print(f"item_score_weight {chosen:g} chosen on valid NDCG@10 {valid}")

    # ---------------------------------------------------------------- epochs
    def validate_before_stopping(self, unvalidated: bool) -> None:
        """A budget stop must not discard trained epochs that were never validated: the current
        state (after the last trained epoch) is validated and may become the best checkpoint."""
        if unvalidated:
            epoch = self.state["epoch"] - 1
            record = {"stage": self.state["stage"], "epoch": epoch, "mode": "budget"}
            self.validate(record, epoch, patience=10**9)
            self.log(record)
            self.save_last()

    def validate(self, record: dict, epoch: int, patience: int) -> bool:
        """Evaluate on valid; keep the best checkpoint; return True when it is time to stop."""
        start = time.perf_counter()
        metrics = self.evaluate("valid", f"valid e{epoch}")
        record["valid"] = metrics
        record["valid_seconds"] = round(time.perf_counter() - start, 2)
        if metrics[METRIC] > self.state["best"]:
            self.state.update(
                best=metrics[METRIC], bad_evals=0, best_epoch=f"{record['stage']}:{epoch}"
            )
            self.save_best_now(metrics)
        else:
            self.state["bad_evals"] += 1
        return self.state["bad_evals"] >= patience

    def train_epoch(self, epoch: int, mode: str, align: bool) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, epoch, STAGES.index(self.state["stage"])])
        batches = bucketed_batches(
            self.splits["train"].lengths, cfg.batch_size, rng, cfg.max_batch_items
        )
        world = self.acc.num_processes
        if world > 1:  # a pool's last batch can be a single row: some process would get none
            batches = [rows for rows in batches if len(rows) >= world]
        tok = mode == "tokenizer"
        hide = cfg.interest_dropout if not tok and self.interests is not None else 0
        set_trainable(self.tokenizer, tok)
        set_trainable(self.model, not tok)
        self.model.train(not tok)
        self.tokenizer.train(tok)
        totals: dict[str, torch.Tensor] = {}
        start, rows_seen = time.perf_counter(), 0
        bar = tqdm(batches, desc=f"{mode} e{epoch}", leave=False, disable=not self.main)
        for rows in bar:
            batch = self.batch_to_device(rows)
            if hide:  # drawn only when asked, so runs without it keep their random stream
                hidden = rng.random(len(rows)) < hide
                self.hide_interests(batch, hidden)
            share = process_share(len(batch.target_ids), len(rows), world)
            step = self.tokenizer_step if tok else self.recommender_step
            losses = step(batch, align, share)
            rows_seen += len(rows)
            # summed on the device and read back now and then: reading every loss of every step
            # would make a GPU wait for each step to finish before queueing the next
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.detach()
            if bar.n % 50 == 0:
                bar.set_postfix(loss=f"{float(totals['loss']) / (bar.n + 1):.4f}")
        record = {"stage": self.state["stage"], "epoch": epoch, "mode": mode}
        for k, v in totals.items():  # the mean over processes of each one's sum over steps
            record[k] = float(self.acc.reduce(v, "mean")) / max(len(batches), 1)
        seconds = time.perf_counter() - start  # after the read-back: the device has finished
        record.update(
            seconds=round(seconds, 2), rows_per_s=round(rows_seen / max(seconds, 1e-9), 1)
        )
        return record

    def recommender_step(self, batch: Batch, align: bool, share: float) -> dict[str, torch.Tensor]:
        with self.autocast():
            out = self.model_ddp(batch)
        out = {k: v.float() for k, v in out.items()}
        with torch.no_grad():
            item = self.tokenizer(self.semantic_dev[batch.target_ids])
        losses = recommender_objective(
            out,
            item,
            self.tokenizer.code_logits,
            batch.target_codes,
            batch.target_ids,
            self.cfg,
            align,
        )
        self._step(losses["loss"] * share, self.opt_rec, self.sched_rec, self.model)
        return losses

    def tokenizer_step(self, batch: Batch, align: bool, share: float) -> dict[str, torch.Tensor]:
        x = self.semantic_dev[batch.target_ids]
        rec = None
        if align:
            with torch.no_grad(), self.autocast():
                rec = {k: v.float() for k, v in self.model(batch, with_items=False).items()}
        out = self.tokenizer_ddp(x, seq_latent=rec["seq_latent"] if rec else None)
        losses = tokenizer_objective(out, rec, batch.target_ids, self.cfg)
        self._step(losses["loss"] * share, self.opt_id, self.sched_id, self.tokenizer)
        return losses

    def autocast(self) -> torch.autocast:
        """bfloat16 matmuls in the generator's training forward when ``bf16`` (faster on CPUs
        with AVX512-BF16; weights, optimiser, losses and evaluation stay float32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def _step(self, loss: torch.Tensor, opt, sched, module: nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        if self.cfg.max_grad_norm > 0:
            self.acc.clip_grad_norm_(module.parameters(), self.cfg.max_grad_norm)
        opt.step()
        sched.step()

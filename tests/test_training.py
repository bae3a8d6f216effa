"""Training end to end on a small real subset: the run folder, strict reloading, the
``Recommender``, evaluate.py, SIGKILL in every stage + ``--resume`` reproducing the uninterrupted
metrics log, the data fingerprint, one-line errors, and two DDP processes (gloo) matching one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from demo_support import free_port

from config import load_config
from data.batches import load_split_tensors, make_batch, with_interests
from data.interest_features import InterestFeatures
from data.paths import REPO_ROOT, datasets_root
from data.pipeline import build_dataset
from data.popularity import by_emb_id, train_counts
from data.splits import load_emb_map, load_split
from experiments import code_levels
from model import Recommender
from model.checkpoint import BEST, CheckpointError
from model.evaluation import recommend_batch
from model.metrics import ranking_metrics, read_ranks
from model.trainer import Trainer, process_share

N_USERS = 500
TINY = ["--config=config/tiny.yaml", "--semantic_emb=emb_rand", "--device=cpu", "--seed=7"]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 500 users of amazon18-scientific (real histories and item text), processed with
    keyword interests; random item vectors stand in for SASRec embeddings (this is about
    mechanics, not accuracy)."""
    root = tmp_path_factory.mktemp("small")
    raw = root / "raw"
    raw.mkdir()
    src = datasets_root() / "amazon18-scientific" / "raw"
    inter = json.loads((src / "Scientific.inter.json").read_text())
    users = {u: inter[u] for u in list(inter)[:N_USERS]}
    items = json.loads((src / "Scientific.item.json").read_text())
    used = {str(i) for seq in users.values() for i in seq}
    (raw / "Scientific.inter.json").write_text(json.dumps(users))
    (raw / "Scientific.item.json").write_text(
        json.dumps({k: v for k, v in items.items() if k in used})
    )
    cfg = load_config(
        "data_process",
        [
            "--dataset=small",
            "--category=Scientific",
            f"--raw_dir={raw}",
            f"--out_dir={root / 'data'}",
            "--interests.backend=keywords",
            f"--interests.cache_dir={root / 'cache'}",
            "--embeddings.kind=none",
        ],
    )
    folder = build_dataset(cfg)
    n_items = len(load_emb_map(folder, "small")) - 1
    vectors = np.random.default_rng(0).normal(size=(n_items + 1, 32)).astype(np.float32)
    vectors[0] = 0
    np.save(folder / "small_emb_rand.npy", vectors)
    return root / "data"


def train_args(data_dir: Path, out_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        "--dataset=small",
        f"--data_dir={data_dir}",
        f"--out_dir={out_dir}",
        f"--run_name={name}",
        *TINY,
        *extra,
    ]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, found through /proc: torchrun starts each worker in a
    session of its own, so killing the launcher's process group would miss them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def run_script(args: list[str], *, timeout: int = 600, launcher: list[str] | None = None):
    """Run a script to its end. One that runs past ``timeout`` is killed with every process it
    started, and its output goes to files rather than pipes: a DDP worker left holding a pipe
    would otherwise keep the test waiting for ever (a CI run hung this way)."""
    cmd = (launcher or [sys.executable]) + args
    # gloo on the loopback interface: DDP tests never leave the machine, whatever its hostname
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=err, text=True)
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            for pid in [*descendants(proc.pid), proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    if timed_out:
        said = messages(done)
        raise AssertionError(f"{' '.join(cmd)} ran past {timeout} s and was killed:\n{said}")
    return done


def messages(proc: subprocess.CompletedProcess) -> str:
    """A script's stderr without its progress-bar updates (the last 3,000 characters), so that a
    failed assertion shows what the script said rather than its bars."""
    lines = proc.stderr.splitlines()  # splits at "\r" too: each bar update is a line
    return "\n".join(line for line in lines if line and "%|" not in line)[-3000:]


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


TIMING = ("seconds", "rows_per_s", "valid_seconds")


def timeless(log: list[dict]) -> list[dict]:
    """The log without wall-clock fields: what must be identical between two runs."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in log]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """A failed script's stderr, which must be one ``error: ...`` line (no traceback)."""
    assert proc.returncode == 1, messages(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), messages(proc)
    return lines[0]


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


@pytest.fixture(scope="session")
def finished_run(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    proc = run_script(["train.py", *train_args(small_data, out, "full")])
    assert proc.returncode == 0, messages(proc)
    return out / "full"


def test_run_folder_holds_everything(finished_run: Path) -> None:
    for name in ("config.yaml", "metrics.jsonl", "tokenizer.pt", "test_metrics.json", "curves.png"):
        assert (finished_run / name).exists(), name
    for name in ("model.pt", "config.yaml", "metrics.json"):
        assert (finished_run / BEST / name).exists(), name
    log = read_log(finished_run)
    stages = [r["stage"] for r in log]
    assert stages[0] == "tokenizer" and "joint" in stages and "finetune" in stages
    modes = [r["mode"] for r in log if r["stage"] == "joint"]
    assert modes[:2] == ["tokenizer", "recommender"]  # ETEGRec's alternation
    codes = log[0]["codes"]
    assert 0 <= codes["collision_rate"] <= 1 and len(codes["codebook_usage"]) == 2
    test = json.loads((finished_run / "test_metrics.json").read_text())
    assert test["users"] == 500  # tiny.yaml evaluates the first 500 users of a split
    for k in ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        assert 0.0 <= test[k] <= 1.0
    assert test["recall@1"] <= test["recall@5"] <= test["recall@10"]
    skipped = test["skip_history"]  # the same users, ranked without their history
    assert skipped["users"] == test["users"]
    assert 0.0 <= skipped["recall@1"] <= skipped["recall@5"] <= skipped["recall@10"] <= 1.0


def test_recommender_loads_the_run_and_uses_interests(
    finished_run: Path, small_data: Path, tmp_path: Path
) -> None:
    rec = Recommender.load(finished_run)
    assert rec.uses_interests and rec.dataset == "small"
    history = load_split(small_data / "small", "small", "test")[0]["inter_history"]
    plain = rec.recommend(history, None, k=10)
    assert len(plain) == 10 and len({t for t, _ in plain}) == 10
    assert all(t in rec.emb_map for t, _ in plain)
    assert [s for _, s in plain] == sorted((s for _, s in plain), reverse=True)
    a = rec.recommend(history, ["soldering irons", "lab glassware"], k=10)
    b = rec.recommend(history, ["3d printer filament", "safety gloves"], k=10)
    assert [s for _, s in a] != [s for _, s in b]
    with pytest.raises(KeyError, match="unknown item"):
        rec.recommend(["no-such-item"], None)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(small_data / "small", elsewhere / "small")
    assert Recommender.load(finished_run, elsewhere).data_folder == elsewhere / "small"


def test_evaluate_cli_matches_training_test_metrics(
    finished_run: Path, small_data: Path, tmp_path: Path
) -> None:
    """evaluate.py writes its own file (train.py's test_metrics.json, which collect.py reads,
    stays as it was), and honours --data_dir: a copy of the data elsewhere gives the same."""
    run_dir = copy_run(finished_run, tmp_path / "copy")
    before = (run_dir / "test_metrics.json").read_bytes()
    moved = tmp_path / "moved"
    shutil.copytree(small_data, moved)
    args = ["--split=test", "--num_beams=5", "--max_eval_users=500", "--dataset=small"]
    proc = run_script(
        ["evaluate.py", f"--ckpt={run_dir}", f"--data_dir={moved}", "--save_ranks=true", *args]
    )
    assert proc.returncode == 0, messages(proc)
    assert "| test |" in proc.stdout
    assert (run_dir / "test_metrics.json").read_bytes() == before
    from_training = json.loads(before)
    from_cli = json.loads((run_dir / "eval_test_metrics.json").read_text())
    assert from_cli["data"] == str(moved / "small")
    assert from_cli["users"] == from_training["users"]
    for k in ("recall@1", "recall@10", "ndcg@10"):
        assert from_cli[k] == pytest.approx(from_training[k], abs=1e-9), k
    split, rows, ranks = read_ranks(run_dir / "eval_test_ranks.json")  # what breakdown.py reads
    assert split == "test" and len(rows) == from_training["users"] and (np.diff(rows) > 0).all()
    assert ranking_metrics(ranks, [1, 10]) == pytest.approx(
        {k: from_cli[k] for k in ("recall@1", "ndcg@1", "recall@10", "ndcg@10")}
    )
    proc = run_script(["evaluate.py", f"--ckpt={run_dir}", "--skip_history=true", *args])
    assert proc.returncode == 0, messages(proc)
    assert "| test_skip_history |" in proc.stdout
    skipped = json.loads((run_dir / "eval_test_skip_history_metrics.json").read_text())
    for k in ("recall@1", "recall@10", "ndcg@10"):
        assert skipped[k] == pytest.approx(from_training["skip_history"][k], abs=1e-9), k
    proc = run_script(["evaluate.py", f"--ckpt={run_dir}", "--eval_interests=none", *args])
    assert proc.returncode == 0, messages(proc)
    assert "| test_interests-none |" in proc.stdout
    without = json.loads((run_dir / "eval_test_interests-none_metrics.json").read_text())
    assert without["eval_interests"] == "none" and without["users"] == from_training["users"]
    proc = run_script(["evaluate.py", f"--ckpt={run_dir}", "--popularity_adjust=0.5", *args])
    assert proc.returncode == 0, messages(proc)
    assert "| test_pop0.5 |" in proc.stdout
    adjusted = json.loads((run_dir / "eval_test_pop0.5_metrics.json").read_text())
    assert adjusted["popularity_adjust"] == 0.5 and adjusted["users"] == from_training["users"]


def test_code_level_ranks_agree_with_greedy_search(finished_run: Path, tmp_path: Path) -> None:
    """experiments/code_levels.py: a target's first code ranks first exactly when constrained
    greedy search (1 beam) opens with it, and all its codes rank first exactly when greedy search
    returns it, row by row; the report's groups cover every test row."""
    rec = Recommender.load(finished_run)
    data = rec.split_tensors(rec.data_folder, "test")
    ranks = code_levels.level_ranks(rec, data)
    assert ranks.shape == (len(data.target), len(rec.trie.child)) and (ranks >= 0).all()
    batch = make_batch(data, np.arange(len(data.target)), rec.item_codes, rec.features)
    greedy, _ = recommend_batch(rec.model.eval(), rec.trie, batch, num_beams=1, topk=1)
    greedy_codes = rec.item_codes[greedy[:, 0]]
    first = (greedy_codes[:, 0] == batch.target_codes[:, 0]).numpy()
    assert np.array_equal(ranks[:, 0] == 0, first) and 0 < first.mean() < 1
    assert np.array_equal((ranks == 0).all(1), (greedy[:, 0] == batch.target_ids).numpy())
    code_levels.main([f"--ckpt={finished_run}", f"--out={tmp_path / 'levels'}"])
    report = json.loads((tmp_path / "levels.json").read_text())
    rows = {g["group"]: g["rows"] for g in report["groups"]}
    assert rows.pop("all") == len(data.target) == sum(rows.values())
    assert 0 <= report["popularity_variance_explained_by_first_code"] <= 1


def test_interest_views_keep_everything_but_whose_interests(small_data: Path) -> None:
    """``--eval_interests``: ``shuffled`` hands each row another row's interest list (every list
    kept, histories and targets untouched); ``none`` leaves every row without interests."""
    folder = small_data / "small"
    emb_map = load_emb_map(folder, "small")
    features = InterestFeatures.load(folder, "small")
    own = load_split_tensors(folder, "small", "test", emb_map, 50, 5, features)
    assert with_interests(own, "own") is own
    none = with_interests(own, "none")
    assert (none.interest_idx == -1).all() and (none.history == own.history).all()
    shuffled = with_interests(own, "shuffled", seed=7)
    assert (shuffled.target == own.target).all() and (shuffled.history == own.history).all()
    assert sorted(map(tuple, shuffled.interest_idx)) == sorted(map(tuple, own.interest_idx))
    moved = (shuffled.interest_idx != own.interest_idx).any(1).mean()
    assert moved > 0.9  # nearly every row reads someone else's interests
    again = with_interests(own, "shuffled", seed=7)
    assert (again.interest_idx == shuffled.interest_idx).all()  # the same permutation each time
    with pytest.raises(ValueError, match="unknown interests view 'mine'"):
        with_interests(own, "mine")


def regenerated(small_data: Path, dest: Path, n_items_delta: int) -> Path:
    """A copy of the data whose item map has items added (> 0) or removed (< 0), as a dataset
    regenerated from other raw files would."""
    shutil.copytree(small_data, dest)
    path = dest / "small" / "small.emb_map.json"
    emb_map = json.loads(path.read_text())
    if n_items_delta > 0:
        emb_map |= {f"new{i}": len(emb_map) + i for i in range(n_items_delta)}
    else:
        emb_map = dict(list(emb_map.items())[:n_items_delta])
    path.write_text(json.dumps(emb_map))
    return dest


@pytest.mark.parametrize("delta", [-3, 2], ids=["fewer-items", "more-items"])
def test_runs_refuse_data_they_were_not_trained_on(
    finished_run: Path, small_data: Path, tmp_path: Path, delta: int
) -> None:
    n_items = len(load_emb_map(small_data / "small", "small")) - 1
    other = regenerated(small_data, tmp_path / "other", delta)
    run_dir = copy_run(finished_run, tmp_path / "run")
    want = f"small.emb_map.json has {n_items + delta:,} items now, {n_items:,} at training"
    line = one_line_error(run_script(["evaluate.py", f"--ckpt={run_dir}", f"--data_dir={other}"]))
    assert want in line and str(run_dir / "data.json") in line
    assert not (run_dir / "eval_test_metrics.json").exists()
    resumed = run_script(["train.py", f"--resume={run_dir}", f"--data_dir={other}"])
    assert want in one_line_error(resumed)


@pytest.mark.parametrize(
    "script, arg, refused",
    [
        ("evaluate.py", "--dataset=scientific18", "was trained with dataset=small"),
        ("evaluate.py", "--seed=8", "was trained with seed=7"),
        ("train.py", "--epochs=9", "was started with epochs=4"),
        ("train.py", "--seed=8", "was started with seed=7"),
    ],
)
def test_keys_a_script_cannot_honour_are_refused(
    finished_run: Path, tmp_path: Path, script: str, arg: str, refused: str
) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    key = "--ckpt" if script == "evaluate.py" else "--resume"
    line = one_line_error(run_script([script, f"{key}={run_dir}", arg]))
    assert refused in line and arg.split("=")[0] in line


def test_interest_views_need_a_run_that_reads_interests(finished_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("interest_fusion: true", "interest_fusion: false"))
    line = one_line_error(run_script(["evaluate.py", f"--ckpt={run_dir}", "--eval_interests=none"]))
    assert "--eval_interests=none" in line and "was trained without interests" in line


def test_an_item_head_run_learns_its_items_and_ranks_each_way(
    small_data: Path, finished_run: Path, tmp_path: Path
) -> None:
    """``--item_head=true`` trains the item loss in every recommender step; train.py's test
    metrics are evaluate.py's default ranking (both) at the weight chosen on valid from
    ``--item_weight_grid`` (recorded in config.yaml), the other rankings get their own files,
    and the demo's ``Recommender`` serves it (with ``--item_input`` and ``--item_query_last``,
    it passes the history's item ids to the encoder and the head too). The interests go through
    the gated fusion with interest dropout, as in ``bash run.sh``'s preset. A run without the
    head refuses ``--rank_by``."""
    args = train_args(
        small_data,
        tmp_path,
        "items",
        "--fusion_type=adaptive",
        "--interest_dropout=0.5",
        "--item_head=true",
        "--item_input=true",
        "--item_query_last=true",
        "--item_weight_grid=[0.5,2]",
    )
    proc = run_script(["train.py", *args])
    assert proc.returncode == 0, messages(proc)
    run_dir = tmp_path / "items"
    chosen = json.loads((run_dir / "item_weights.json").read_text())
    valid = chosen["valid_ndcg@10"]
    assert set(valid) == {"0.5", "2"} and valid[f"{chosen['chosen']:g}"] == max(valid.values())
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["item_score_weight"] == chosen["chosen"]
    item_loss = [
        r["item"] for r in read_log(run_dir) if r.get("mode") in ("recommender", "finetune")
    ]
    assert len(item_loss) >= 3 and item_loss[-1] < item_loss[0]
    trained = json.loads((run_dir / "test_metrics.json").read_text())
    args = ["--split=test", "--num_beams=5", "--max_eval_users=500"]
    got = {}
    for by in ("run", "codes", "items"):
        proc = run_script(["evaluate.py", f"--ckpt={run_dir}", f"--rank_by={by}", *args])
        assert proc.returncode == 0, messages(proc)
        label = "test" if by == "run" else f"test_by-{by}"
        assert f"| {label} |" in proc.stdout
        got[by] = json.loads((run_dir / f"eval_{label}_metrics.json").read_text())
    assert got["run"]["rank_by"] == "both" and got["codes"]["rank_by"] == "codes"
    assert got["run"]["item_score_weight"] == chosen["chosen"]
    for k in ("recall@1", "recall@10", "ndcg@10"):
        assert got["run"][k] == pytest.approx(trained[k], abs=1e-9), k
    assert got["items"]["ndcg@10"] != got["codes"]["ndcg@10"]
    proc = run_script(["evaluate.py", f"--ckpt={run_dir}", "--item_score_weight=0.5", *args])
    assert proc.returncode == 0, messages(proc)
    half = json.loads((run_dir / "eval_test_w0.5_metrics.json").read_text())
    assert half["item_score_weight"] == 0.5 and half["rank_by"] == "both"
    proc = run_script(["evaluate.py", f"--ckpt={run_dir}", "--item_weight_grid=[1,4]", *args])
    assert proc.returncode == 0, messages(proc)
    grid = {w: json.loads((run_dir / f"eval_test_w{w}_metrics.json").read_text()) for w in "14"}
    proc = run_script(["evaluate.py", f"--ckpt={run_dir}", "--item_score_weight=4", *args])
    assert proc.returncode == 0, messages(proc)
    four = json.loads((run_dir / "eval_test_w4_metrics.json").read_text())
    for k in ("recall@1", "recall@10", "ndcg@10"):  # one search, the same ranking as alone
        assert grid["4"][k] == four[k], k
    assert grid["1"]["item_score_weight"] == 1.0
    both = ["--item_weight_grid=[1]", "--item_score_weight=2"]
    line = one_line_error(run_script(["evaluate.py", f"--ckpt={run_dir}", *both, *args]))
    assert "give one of the two" in line
    rec = Recommender.load(run_dir)
    history = load_split(small_data / "small", "small", "test")[0]["inter_history"]
    shown = rec.recommend(history, ["lab glassware"], k=10, exclude=history)
    assert len({t for t, _ in shown}) == 10 and not {t for t, _ in shown} & set(history)
    assert [s for _, s in shown] == sorted((s for _, s in shown), reverse=True)
    line = one_line_error(
        run_script(["evaluate.py", f"--ckpt={finished_run}", "--rank_by=items", *args])
    )
    assert "--rank_by=items" in line and "no item head" in line
    line = one_line_error(
        run_script(["evaluate.py", f"--ckpt={finished_run}", "--item_score_weight=2", *args])
    )
    assert "--item_score_weight=2" in line and "no item head" in line


def test_corrupt_checkpoints_are_one_line_errors(finished_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished_run, tmp_path / "run")
    for path in (run_dir / "last.pt", run_dir / BEST / "model.pt"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    line = one_line_error(run_script(["train.py", f"--resume={run_dir}"]))
    assert f"{run_dir / 'last.pt'}: unreadable checkpoint" in line and "delete it" in line
    line = one_line_error(run_script(["evaluate.py", f"--ckpt={run_dir}"]))
    assert f"{run_dir / BEST / 'model.pt'}: unreadable checkpoint" in line


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--fusion_type=nonsense", "--fusion_type: unknown value 'nonsense'"),
        ("--semantic_emb=emb_999", "small_emb_999.npy: not found"),
        ("--config=no/such.yaml", "no/such.yaml: config file not found"),
    ],
)
def test_failed_starts_are_one_line_and_leave_no_run_folder(
    small_data: Path, tmp_path: Path, arg: str, message: str
) -> None:
    proc = run_script(["train.py", *train_args(small_data, tmp_path, "failed"), arg])
    assert message in one_line_error(proc)
    assert not (tmp_path / "failed").exists()


def test_loading_is_strict(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    state = torch.load(broken / BEST / "model.pt", weights_only=True)
    state["recommender"].pop(next(iter(state["recommender"])))
    torch.save(state, broken / BEST / "model.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        Recommender.load(broken)


# One kill per stage, each at a point that once broke exactness: inside tokenizer pretraining
# (restarted from scratch), after a joint epoch's metrics line but before its last.pt (the line
# was logged twice, and best/ was ahead of last.pt), after a finetune epoch's last.pt (the resumed
# schedule restarted at its initial rate).
KILLS = ("save:tokenizer:2", "log:joint:1", "save:finetune:1")


def test_sigkill_in_every_stage_then_resume_logs_the_uninterrupted_run(
    small_data: Path, finished_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "killed"
    resume = ["train.py", f"--resume={run_dir}"]
    for i, point in enumerate(KILLS):
        start = resume if i else ["train.py", *train_args(small_data, tmp_path, "killed")]
        proc = run_script(["tests/kill_at.py", point, *start])
        assert proc.returncode == -signal.SIGKILL, messages(proc)
        assert not (run_dir / "test_metrics.json").exists()
        if i:
            assert f"resuming {run_dir} at stage '{KILLS[i - 1].split(':')[1]}'" in proc.stdout
    resumed = run_script(resume)
    assert resumed.returncode == 0, messages(resumed)
    assert f"resuming {run_dir} at stage 'finetune', epoch 1" in resumed.stdout
    assert timeless(read_log(run_dir)) == timeless(read_log(finished_run))
    want = json.loads((finished_run / "test_metrics.json").read_text())
    assert json.loads((run_dir / "test_metrics.json").read_text()) == want


def test_process_shares_make_ddp_average_the_batch_mean() -> None:
    """Five rows over two processes (the trainer's rows[i::W] split): DDP's plain average of the
    two mean-loss gradients is off; weighted by each process's share it is the batch's."""
    torch.manual_seed(0)
    x, y, w = torch.randn(5, 3), torch.randn(5), torch.randn(3, requires_grad=True)

    def grad(rows: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        (((x[rows] @ w - y[rows]) ** 2).mean() * weight).backward()
        g, w.grad = w.grad.clone(), None
        return g

    rows, world = torch.arange(5), 2
    whole = grad(rows)
    shares = [process_share(len(rows[i::world]), len(rows), world) for i in range(world)]
    plain = sum(grad(rows[i::world]) for i in range(world)) / world
    weighted = sum(grad(rows[i::world], s) for i, s in enumerate(shares)) / world
    assert shares == [1.2, 0.8] and process_share(7, 7, 1) == 1.0
    assert not torch.allclose(plain, whole, atol=1e-4)
    torch.testing.assert_close(weighted, whole)


def test_two_ddp_processes_match_one(small_data: Path, tmp_path: Path) -> None:
    common = [
        "--interest_fusion=false",
        "--dropout_rate=0.0",
        "--epochs=2",
        "--finetune_epochs=0",
        "--max_eval_users=0",
        "--warm_epoch=0",
        "--cycle=2",
    ]
    one = run_script(["train.py", *train_args(small_data, tmp_path, "one", *common)])
    assert one.returncode == 0, messages(one)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    two = run_script(
        ["train.py", *train_args(small_data, tmp_path, "two", *common)], launcher=launcher
    )
    assert two.returncode == 0, messages(two)
    log_one, log_two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    joint_one = [r for r in log_one if r["stage"] == "joint"]
    joint_two = [r for r in log_two if r["stage"] == "joint"]
    assert len(joint_one) == len(joint_two) == 2
    for a, b in zip(joint_one, joint_two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-3)
    n_valid = len(
        load_split_tensors(
            small_data / "small",
            "small",
            "valid",
            load_emb_map(small_data / "small", "small"),
            50,
            5,
            None,
        )
    )
    assert joint_two[-1]["valid"]["users"] == n_valid  # every user once, across both processes
    assert joint_two[-1]["valid"]["ndcg@10"] == pytest.approx(
        joint_one[-1]["valid"]["ndcg@10"], abs=1e-6
    )


def test_trainer_refuses_missing_embeddings(small_data: Path, tmp_path: Path) -> None:
    from data.jsonl import DataError

    cfg = load_config("train", train_args(small_data, tmp_path, "x", "--semantic_emb=emb_999"))
    with pytest.raises(DataError, match="small_emb_999.npy"):
        Trainer(cfg, tmp_path / "x")


def test_a_semantic_item_table_starts_from_the_tokenizer_input(
    small_data: Path, tmp_path: Path
) -> None:
    args = train_args(small_data, tmp_path, "x", "--item_head=true", "--item_table=semantic")
    trainer = Trainer(load_config("train", args), tmp_path / "x")
    table = trainer.model.item_head.table.weight
    assert table.shape == trainer.semantic.shape and torch.equal(table, trainer.semantic)
    learned = Trainer(load_config("train", args[:-1]), tmp_path / "y").model.item_head
    assert learned.table.weight.shape[1] == trainer.cfg.d_model
    frozen = Trainer(
        load_config("train", [*args[:-1], "--item_table=semantic_frozen"]), tmp_path / "z"
    )
    table = frozen.model.item_head.table.weight
    assert torch.equal(table, frozen.semantic)
    trained = [p for group in frozen.opt_rec.param_groups for p in group["params"]]
    assert not any(p is table for p in trained)


def test_sampled_item_negatives_draw_by_train_purchases_and_train(
    small_data: Path, tmp_path: Path
) -> None:
    """``--item_negatives``: the item head's negatives are drawn half uniformly, half by train
    purchases (``data/popularity.py``'s counts, ids in the run's emb map), and a recommender epoch
    trains on the sampled loss."""
    args = train_args(small_data, tmp_path, "x", "--item_head=true", "--item_negatives=16")
    trainer = Trainer(load_config("train", args), tmp_path / "x")
    folder = small_data / "small"
    counts = by_emb_id(train_counts(folder, "small", processed=True), trainer.emb_map)[1:]
    q = trainer.model.item_head.proposal
    expected = 0.5 / len(counts) + 0.5 * counts / counts.sum()
    assert np.allclose(q.numpy(), expected) and len(set(counts.tolist())) > 1
    record = trainer.train_epoch(1, "recommender", align=False)
    assert "item" not in record  # the sampled loss is not the full softmax's: its own name
    assert np.isfinite(record["item_sampled"]) and record["item_sampled"] > 0


def test_time_budget_stops_training_but_still_tests(small_data: Path, tmp_path: Path) -> None:
    """A spent budget starts no epoch; the best checkpoint (here the untrained model, validated
    once) is still tested, so a budgeted run always ends with test metrics."""
    cfg = load_config("train", train_args(small_data, tmp_path, "b", "--time_budget_s=0.000001"))
    run_dir = tmp_path / "b"
    run_dir.mkdir()
    metrics = Trainer(cfg, run_dir).run()
    modes = [r.get("mode") for r in read_log(run_dir) if r.get("stage") != "tokenizer"]
    assert modes == ["none"]  # only the fallback validation of the joint stage
    assert metrics["users"] == len(load_split(small_data / "small", "small", "test"))
    assert (run_dir / "test_metrics.json").exists()


def test_bf16_autocast_trains_close_to_float32(small_data: Path, tmp_path: Path) -> None:
    """``bf16: true`` really changes the arithmetic (losses differ from float32) and stays close."""
    losses = {}
    for bf16 in ("false", "true"):
        args = train_args(
            small_data, tmp_path, bf16, f"--bf16={bf16}", "--epochs=2", "--max_eval_users=32"
        )
        run_dir = tmp_path / bf16
        run_dir.mkdir()
        Trainer(load_config("train", args), run_dir).run(stop_after="joint")
        losses[bf16] = [r["code"] for r in read_log(run_dir) if r.get("mode") == "recommender"]
    assert len(losses["true"]) == 1 and np.isfinite(losses["true"]).all()
    assert losses["true"] != losses["false"]
    assert np.allclose(losses["true"], losses["false"], rtol=0.05)


def test_interest_dropout_hides_whole_rows_only_when_asked(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``interest_dropout``: about that share of the recommender's training rows lose all their
    interests and the others keep theirs; at 0 nothing is drawn, so earlier runs' random stream
    (and results) are unchanged."""
    seen = []
    real = Trainer.hide_interests

    def spy(self, batch, hidden: np.ndarray) -> None:
        before = batch.interest_mask.any(1).cpu().numpy()
        real(self, batch, hidden)
        seen.append((hidden.copy(), before, batch.interest_mask.any(1).cpu().numpy()))

    monkeypatch.setattr(Trainer, "hide_interests", spy)
    losses = {}
    for share in ("0.0", "0.5"):
        extra = (f"--interest_dropout={share}", "--epochs=2", "--max_eval_users=32")
        run_dir = tmp_path / share
        run_dir.mkdir()
        Trainer(load_config("train", train_args(small_data, tmp_path, share, *extra)), run_dir).run(
            stop_after="joint"
        )
        assert bool(seen) == (share == "0.5")
        losses[share] = [r["code"] for r in read_log(run_dir) if r.get("mode") == "recommender"]
    hidden, before, after = (np.concatenate(parts) for parts in zip(*seen, strict=True))
    assert len(hidden) == len(load_split(small_data / "small", "small", "train"))  # one epoch
    assert 0.4 < hidden.mean() < 0.6
    assert (after == (before & ~hidden)).all()
    assert losses["0.5"] != losses["0.0"]


def test_budget_stop_mid_joint_validates_then_resumes(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget runs out after an unvalidated recommender epoch: that epoch is validated before
    stopping, finetune is skipped, test runs, and ``--resume`` continues the joint stage from the
    next epoch (not from finetune)."""
    import types

    import model.trainer as trainer_mod

    clock = {"t": 0.0}  # a fake clock that jumps 100 s after each recommender epoch
    monkeypatch.setattr(trainer_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"]))
    real_epoch = Trainer.train_epoch

    def timed_epoch(self, epoch: int, mode: str, align: bool) -> dict:
        record = real_epoch(self, epoch, mode, align)
        clock["t"] += 100.0 if mode == "recommender" else 0.0
        return record

    monkeypatch.setattr(Trainer, "train_epoch", timed_epoch)
    extra = ("--epochs=4", "--eval_step=4", "--max_eval_users=32", "--time_budget_s=50")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    Trainer(load_config("train", train_args(small_data, tmp_path, "r", *extra)), run_dir).run()
    joint = [(r["epoch"], r["mode"]) for r in read_log(run_dir) if r.get("stage") == "joint"]
    assert joint == [(0, "tokenizer"), (1, "recommender"), (1, "budget")]
    assert not any(r.get("stage") == "finetune" for r in read_log(run_dir))
    assert (run_dir / "test_metrics.json").exists()
    assert torch.load(run_dir / "last.pt", weights_only=False)["state"]["stage"] == "joint"

    resumed = load_config("train", train_args(small_data, tmp_path, "r", *extra[:3]))
    Trainer(resumed, run_dir).run()
    log = read_log(run_dir)
    assert [r["epoch"] for r in log if r.get("stage") == "joint"][3:] == [2, 3]
    assert any(r.get("stage") == "finetune" for r in log)

"""config.load_config: defaults, dataset files, typed command-line overrides and their errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from config import Config, ConfigError, given_keys, load_config, split_argv
from config.checks import CHOICES
from config.route import accepted
from data.paths import REPO_ROOT
from model.checkpoint import read_config


def test_defaults_load() -> None:
    cfg = load_config("train")
    assert isinstance(cfg, Config)
    assert cfg.dataset == "scientific18"
    assert cfg.seed == 2024
    assert cfg.lr_rec == 0.005 and isinstance(cfg.lr_rec, float)
    assert cfg.topk == [1, 5, 10]
    assert cfg.interest_fusion is True
    assert cfg.encoder_hidden == [512, 256]


def test_dataset_yaml_overrides_defaults_and_keeps_siblings() -> None:
    base = load_config("data_process")
    assert (base.source, base.raw_name, base.interests.backend) == (
        "lcrec",
        "amazon18-scientific",
        "keywords",
    )
    cfg = load_config("data_process", ["--dataset=scientific"])
    assert cfg.dataset == "scientific"
    assert cfg.source == "amazon23"
    assert cfg.raw_name == "amazon23-scientific"
    assert cfg.category == "Industrial_and_Scientific"
    assert cfg.interests.backend == "none"
    # A nested section in the dataset file merges into the default one, key by key.
    assert cfg.interests.stride == 1 and cfg.interests.num_interests == 5
    assert cfg.embeddings.kind == "sasrec"


def test_dataset_chosen_by_keyword_override() -> None:
    assert load_config("data_process", dataset="scientific").source == "amazon23"


def test_overrides_keep_types() -> None:
    cfg = load_config(
        "train",
        [
            "--seed=7",
            "--lr_rec=0.01",
            "--interest_fusion=false",
            "--topk=[1,20]",
            "--run_name=123",
            "--fusion_type",
            "adaptive",
        ],
    )
    assert cfg.seed == 7 and type(cfg.seed) is int
    assert cfg.lr_rec == 0.01 and type(cfg.lr_rec) is float
    assert cfg.interest_fusion is False
    assert cfg.topk == [1, 20]
    assert cfg.run_name == "123"  # a string key stays a string even when it looks like a number
    assert cfg.fusion_type == "adaptive"  # "--key value" form


def test_nested_dotted_override() -> None:
    cfg = load_config("data_process", ["--interests.stride=3", "--embeddings.sasrec_lr=0.01"])
    assert cfg.interests.stride == 3 and type(cfg.interests.stride) is int
    assert cfg.embeddings.sasrec_lr == 0.01
    assert cfg.interests.backend == "keywords"  # siblings untouched
    assert cfg.interests.stride == cfg["interests"]["stride"]


def test_bare_flag_means_true() -> None:
    assert load_config("data_process", ["--download"]).download is True
    assert split_argv(["--a=1", "--flag", "--b", "2"]) == {"a": "1", "flag": "true", "b": "2"}


def test_dashes_in_keys_become_underscores() -> None:
    assert load_config("train", ["--lr-rec=0.5"]).lr_rec == 0.5


def test_int_widens_to_float() -> None:
    cfg = load_config("train", ["--lr_rec=1"])
    assert cfg.lr_rec == 1.0 and type(cfg.lr_rec) is float
    assert type(load_config("train", lr_rec=2).lr_rec) is float


def test_float_does_not_narrow_to_int() -> None:
    with pytest.raises(ConfigError, match="--seed: expected int"):
        load_config("train", ["--seed=1.5"])


def test_single_value_for_a_list_key_becomes_a_list() -> None:
    assert load_config("train", ["--topk=5"]).topk == [5]


def test_keyword_overrides_apply_after_the_command_line() -> None:
    cfg = load_config("train", ["--seed=1"], seed=5, topk=[3], interest_fusion=False)
    assert cfg.seed == 5
    assert cfg.topk == [3]
    assert cfg.interest_fusion is False


@pytest.mark.parametrize(
    "arg, name",
    [
        ("--bogus_key=1", "bogus_key"),
        ("--interests.bogus=1", "interests.bogus"),
        ("--nothere.stride=1", "nothere.stride"),
    ],
)
def test_unknown_key_error_names_it(arg: str, name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown config key '{name}'"):
        load_config("data_process", [arg])


def test_another_scripts_key_is_unknown() -> None:
    """train's lr_rec does not exist for data_process: the sections are separate."""
    with pytest.raises(ConfigError, match="unknown config key 'lr_rec'"):
        load_config("data_process", ["--lr_rec=0.1"])


def test_unknown_keyword_override_names_it() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'epochz'"):
        load_config("train", epochz=3)


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--seed=abc", "--seed: expected int"),
        ("--interest_fusion=3", "--interest_fusion: expected true/false"),
        ("--lr_rec=fast", "--lr_rec: expected float"),
        ("--seed=true", "--seed: expected int"),
    ],
)
def test_wrong_type_error_names_the_key(arg: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("train", [arg])


def test_nested_section_cannot_be_replaced_by_a_scalar() -> None:
    with pytest.raises(ConfigError, match="--interests: expected dict"):
        load_config("data_process", ["--interests=3"])


def test_script_sections_are_separate() -> None:
    train = load_config("train")
    data = load_config("data_process")
    assert train.out_dir == "runs/"
    assert data.out_dir == "data/"
    assert "raw_name" not in train and "lr_rec" not in data
    assert train.data_dir == data.data_dir == "data/"  # shared keys reach every script
    assert load_config("evaluate").split == "test"
    assert load_config("demo").port == 5000


def test_unknown_script_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown script 'trian'"):
        load_config("trian")


def test_positional_argument_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unexpected argument 'oops'"):
        load_config("train", ["oops"])


def test_extra_config_file(tmp_path: Path) -> None:
    extra = tmp_path / "small.yaml"
    extra.write_text("seed: 1\ntrain:\n  epochs: 3\n  topk: [10]\n")
    cfg = load_config("train", [f"--config={extra}", "--seed=9"])
    assert cfg.epochs == 3 and cfg.topk == [10]
    assert cfg.seed == 9  # the command line wins over the file


def test_extra_config_file_unknown_key_names_it(tmp_path: Path) -> None:
    extra = tmp_path / "typo.yaml"
    extra.write_text("train:\n  epohcs: 3\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml\.train: unknown config key 'epohcs'"):
        load_config("train", [f"--config={extra}"])


def test_renamed_key_is_refused_with_its_new_name(tmp_path: Path) -> None:
    """``max_his_len`` became ``max_history`` (one name for the history cap in every section)."""
    assert load_config("train").max_history == load_config("data_process").max_history
    with pytest.raises(
        ConfigError, match="unknown config key 'max_his_len' \\(now 'max_history'\\)"
    ):
        load_config("train", ["--max_his_len=20"])
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  max_his_len: 20\n")
    with pytest.raises(
        ConfigError, match="old.yaml.train: unknown config key 'max_his_len' \\(now"
    ):
        load_config("train", [f"--config={old}"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("dataset: toy\nmax_his_len: 50\n")
    saved = read_config(run)  # a run saved before the rename keeps loading, under the new name
    assert saved["max_history"] == 50 and "max_his_len" not in saved
    assert saved["item_tokenizer"] == "rqvae" and saved["bf16"] is False  # what it ran with


def test_extra_config_file_must_be_valid_yaml(tmp_path: Path) -> None:
    extra = tmp_path / "broken.yaml"
    extra.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: invalid YAML"):
        load_config("train", [f"--config={extra}"])


def test_to_dict_round_trips_plain_dicts() -> None:
    cfg = load_config("data_process")
    plain = cfg.to_dict()
    assert type(plain["interests"]) is dict
    assert plain["interests"]["stride"] == cfg.interests.stride
    with pytest.raises(AttributeError):
        _ = cfg.no_such_key


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'nope.yaml'}: config file not found"):
        load_config("train", [f"--config={tmp_path / 'nope.yaml'}"])


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("data_process", ["--interests.backend=keyword"], "--interests.backend: unknown value"),
        ("data_process", ["--interests.stride=0"], "--interests.stride: must be at least 1"),
        ("data_process", ["--interests.shards=2", "--interests.shard=2"], "must be below"),
        ("data_process", ["--source=csv"], "--source: unknown value 'csv'"),
        ("data_process", ["--interests.recipe=rows"], "--interests.recipe: unknown value"),
        (
            "data_process",
            ["--interests.backend=local", "--interests.stride=2"],
            "--interests.stride=2: the items recipe is fresh on every row",
        ),
        ("data_process", ["--interests.merge_threshold=1.5"], "a cosine in (0, 1]"),
        ("data_process", ["--embeddings.sasrec_loss=bpr"], "--embeddings.sasrec_loss: unknown"),
        (
            "data_process",
            ["--embeddings.sasrec_loss=bce", "--embeddings.sasrec_negatives=64"],
            "--embeddings.sasrec_negatives=64: applies to sasrec_loss: softmax",
        ),
        ("train", ["--fusion_type=nonsense"], "--fusion_type: unknown value 'nonsense'"),
        ("train", ["--stage=test"], "--stage: unknown value 'test'"),
        ("train", ["--device=gpu"], "--device: unknown device 'gpu'"),
        ("train", ["--batch_size=0"], "--batch_size: must be at least 1, got 0"),
        ("train", ["--topk=[0,10]"], "--topk: expected a non-empty list"),
        ("train", ["--interest_dropout=1"], "--interest_dropout: a probability in [0, 1)"),
        ("train", ["--rank_by=run"], "--rank_by=run: evaluate.py's choice"),
        ("train", ["--item_table=random"], "--item_table: unknown value 'random'"),
        ("train", ["--item_score_weight=-1"], "--item_score_weight: must be at least 0"),
        ("train", ["--item_input=true"], "--item_input=true: reads the item head's table"),
        ("train", ["--item_query_last=true"], "--item_query_last=true: part of the item head"),
        ("train", ["--item_negatives=64"], "--item_negatives=64: part of the item head"),
        ("train", ["--item_negatives=-1"], "--item_negatives: must be at least 0"),
        ("train", ["--item_weight_grid=[1,-2]"], "--item_weight_grid: a list of weights"),
        ("evaluate", ["--rank_by=best"], "--rank_by: unknown value 'best'"),
        ("evaluate", ["--split=validation"], "--split: unknown value 'validation'"),
        ("evaluate", ["--eval_interests=mine"], "--eval_interests: unknown value 'mine'"),
    ],
)
def test_bad_values_are_refused_when_the_config_loads(
    script: str, args: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(script, args)


def test_value_checks_name_what_the_code_accepts() -> None:
    from data.batches import INTEREST_VIEWS
    from data.interests.recipe import RECIPES
    from demo.interests import BACKENDS
    from model.evaluation import RANK_BY
    from model.fusion import COMBINE_MODES
    from model.trainer import STAGES

    assert CHOICES["interests.recipe"] == RECIPES
    assert CHOICES["interests_backend"] == ("auto", *BACKENDS)
    assert CHOICES["fusion_combine"] == COMBINE_MODES
    assert CHOICES["eval_interests"] == INTEREST_VIEWS
    assert CHOICES["rank_by"] == ("run", *RANK_BY)
    assert CHOICES["stage"] == (*STAGES[:-1], "all")
    for kind in CHOICES["embeddings.sasrec_schedule"]:
        load_config("data_process", [f"--embeddings.sasrec_schedule={kind}"])
    assert load_config("train", ["--device=cuda:1"]).device == "cuda:1"


def test_route_checks_every_value_of_the_whole_command_line() -> None:
    argv = ["--interests.shards=4", "--interests.shard=3", "--epochs=2"]
    assert accepted("data_process", argv) == argv[:2]  # shard checked against shards, together
    with pytest.raises(ConfigError, match="--fusion_type: unknown value"):
        accepted("train", [*argv, "--fusion_type=nonsense"])


def test_given_keys_are_the_command_line_and_config_file_keys(tmp_path: Path) -> None:
    extra = tmp_path / "x.yaml"
    extra.write_text("seed: 3\ntrain:\n  epochs: 5\ndata_process:\n  min_items: 4\n")
    given = given_keys("train", [f"--config={extra}", "--lr_rec=0.01"])
    assert given == {"lr_rec": 0.01, "seed": 3, "epochs": 5}


def test_every_sweep_settings_line_is_a_valid_train_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in a settings line would otherwise surface only when a queued sweep reaches it,
    hours later; the labels must be unique, since each names its run folder."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the lines name --config=config/... from the repository root
    for settings in sorted((root / "experiments").glob("base_sweep_*.txt")):
        labels = []
        for number, line in enumerate(settings.read_text().splitlines(), 1):
            label, *args = line.split() or ["#"]  # as base_sweep.sh reads it: blank, # comment
            if label.startswith("#"):
                continue
            labels.append(label)
            try:
                load_config("train", ["--dataset=scientific18", *args])
            except ConfigError as err:
                pytest.fail(f"{settings.name}:{number} ({label}): {err}")
        assert len(labels) == len(set(labels)) > 0, settings.name


def test_every_committed_run_config_reads_with_every_train_key() -> None:
    """A key added to the train config needs its old-run value in ``config.ADDED``: otherwise
    evaluate.py, the demo and ``--resume`` fail on every run saved before it (results/ holds
    such runs, from every stage of the project)."""
    keys = set(load_config("train", []).keys())
    runs = sorted((REPO_ROOT / "results").rglob("config.yaml"))
    assert len(runs) > 10
    for path in runs:
        missing = keys - set(read_config(path.parent))
        assert not missing, f"{path}: {sorted(missing)} (add them to config.ADDED)"


def help_output(*command: str) -> str:
    """What ``command --help`` (run from the repository root) prints; it must exit 0."""
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_docstring_and_every_key_with_its_default(flag: str) -> None:
    out = help_output(sys.executable, "train.py", "--epochs=3", flag)
    assert out.startswith("Train ETEGRec")
    assert "--dataset=NAME [--data_dir=DIR]" in out  # the docstring's own lines, as written
    defaults = load_config("train", ["--dataset=none"], validate=False)
    assert f"  --lr_rec={defaults.lr_rec}\n" in out
    assert "  --interests.stride=" not in out  # data_process's key, not train's


def test_help_on_a_script_without_config_keys_prints_its_docstring() -> None:
    out = help_output(sys.executable, "experiments/collect.py", "--help")
    assert out.startswith("Collect experiment run folders")
    assert "Every key" not in out


def test_run_sh_help_prints_its_usage() -> None:
    out = help_output("bash", "run.sh", "scientific", "--epochs=3", "--help")
    assert out.startswith("The whole pipeline")
    assert "bash run.sh scientific " in out and "set -e" not in out

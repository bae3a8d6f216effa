"""YAML configuration with typed ``--key=value`` command-line overrides.

Every script reads ``config/default.yaml``, then ``config/<dataset>.yaml``, then an optional
``--config=FILE``, then the command line. Each file has shared top-level keys and one section per
script (``data_process``, ``train``, ``evaluate``, ``demo``); a script sees the shared keys plus its
own section, flattened. Nested sections (``interests``, ``embeddings``) are addressed with dots
(``--interests.stride=4``). A key that no file defines is an error that names it, and a value must
keep the type of its default (an int may widen to a float), and a value outside the names or the
range a key accepts (``config.checks``) is refused before a script does any work, so typos never
pass silently.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from config.checks import problems

CONFIG_DIR = Path(__file__).resolve().parent
SCRIPTS = ("data_process", "train", "evaluate", "demo")
HELP_FLAGS = ("--help", "-h")
# Keys that have a new name: the old one is refused with the new name, never silently ignored.
RENAMED = {"max_his_len": "max_history"}
# Keys added after runs were saved without them, with the value that reproduces those runs.
ADDED = {
    "item_tokenizer": "rqvae",
    "bf16": False,
    "interest_dropout": 0.0,
    "item_head": False,
    "item_loss_weight": 1.0,
    "item_negatives": 0,
    "item_table": "learned",
    "item_input": False,
    "item_query_last": False,
    "rank_by": "both",
    "item_score_weight": 1.0,
    "item_weight_grid": [],
    "item_candidates": 20,
}


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


def unknown_key(key: str, where: str = "") -> ConfigError:
    """The error for a key no file defines, naming the new key when it is a renamed one."""
    new = RENAMED.get(key.rsplit(".", 1)[-1])
    return ConfigError(f"{where}unknown config key '{key}'" + (f" (now '{new}')" if new else ""))


def _deep_merge(base: dict, extra: dict, where: str, strict: bool) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if strict and key not in out:
            raise unknown_key(key, f"{where}: ")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, f"{where}.{key}", strict)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (check the --config path)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _view(tree: dict, script: str) -> dict:
    """Shared keys plus the script's own section; other scripts' sections are dropped."""
    flat = {k: v for k, v in tree.items() if k not in SCRIPTS}
    flat.update(copy.deepcopy(tree.get(script, {})))
    return flat


def coerce(value: str, default: Any, key: str) -> Any:
    """Parse a command-line string as YAML and check it against the default's type."""
    if isinstance(default, str):
        return value
    if default is None:
        return yaml.safe_load(value) if value != "" else ""
    if isinstance(default, list):
        parsed = yaml.safe_load(value)
        items = parsed if isinstance(parsed, list) else [parsed]
        if default:
            items = [coerce(str(v), default[0], key) for v in items]
        return items
    parsed = yaml.safe_load(value)
    if isinstance(default, bool):
        if not isinstance(parsed, bool):
            raise ConfigError(f"--{key}: expected true/false, got '{value}'")
        return parsed
    if isinstance(default, float):
        try:
            return float(value)  # YAML reads 1e-3 as a string; Python does not
        except ValueError:
            pass
    if type(parsed) is not type(default):
        raise ConfigError(
            f"--{key}: expected {type(default).__name__}, got '{value}' ({type(parsed).__name__})"
        )
    return parsed


def _set_dotted(cfg: dict, dotted: str, raw: str) -> None:
    node = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise unknown_key(dotted)
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise unknown_key(dotted)
    node[leaf] = coerce(raw, node[leaf], dotted)


def split_argv(argv: list[str]) -> dict[str, str]:
    """``['--a=1', '--flag', '--b', '2']`` -> ``{'a': '1', 'flag': 'true', 'b': '2'}``.
    ``--help`` (or ``-h``) anywhere prints the running script's help instead and exits."""
    if any(arg in HELP_FLAGS for arg in argv):
        exit_with_help()
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}': use --key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, value = body, argv[i + 1]
            i += 1
        else:
            key, value = body, "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


class Config(dict):
    """A dict whose keys are also attributes (``cfg.lr_rec``); nested dicts stay Configs."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError as err:
            raise AttributeError(name) from err
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    @classmethod
    def wrap(cls, tree: dict) -> Config:
        return cls({k: cls.wrap(v) if isinstance(v, dict) else v for k, v in tree.items()})

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


def load_config(
    script: str, argv: list[str] | None = None, *, validate: bool = True, **overrides: Any
) -> Config:
    """Resolve the configuration one script runs with, every value checked (``config.checks``)
    unless ``validate`` is false (``config.route`` looks at one key at a time).

    ``overrides`` (Python values) apply after the command line; tests use them.
    """
    if script not in SCRIPTS:
        raise ConfigError(f"unknown script '{script}'")
    args = split_argv(list(argv or []))
    tree = _read_yaml(CONFIG_DIR / "default.yaml")
    dataset = args.get("dataset", overrides.get("dataset", tree.get("dataset")))
    dataset_file = CONFIG_DIR / f"{dataset}.yaml"
    if dataset_file.exists():
        tree = _deep_merge(tree, _read_yaml(dataset_file), str(dataset_file), strict=True)
    extra = args.pop("config", None) or overrides.pop("config", None)
    if extra:
        tree = _deep_merge(tree, _read_yaml(Path(extra)), str(extra), strict=True)
    cfg = _view(tree, script)
    for key, raw in args.items():
        _set_dotted(cfg, key, raw)
    for key, value in overrides.items():
        _set_dotted(cfg, key, value if isinstance(value, str) else json.dumps(value))
    if validate and (found := problems(cfg)):
        raise ConfigError(found[0])
    return Config.wrap(cfg)


def _dotted_items(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """``{'a': {'b': 1}}`` -> ``[('a.b', 1)]``: the keys as the command line names them."""
    out = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out += _dotted_items(value, f"{name}.") if isinstance(value, dict) else [(name, value)]
    return out


def exit_with_help() -> NoReturn:
    """``--help``: the running script's docstring and, for the four main scripts, every key it
    reads with its default, so that a user finds a key's name without opening the YAML."""
    main = sys.modules["__main__"]
    print((main.__doc__ or "").strip())
    script = Path(getattr(main, "__file__", None) or "").stem
    script = "demo" if script == "app" else script  # demo/app.py reads the demo section
    if script in SCRIPTS:
        default = CONFIG_DIR / "default.yaml"
        print(f"\nEvery key, as --key=value, with its default from {default}")
        print("(config/<dataset>.yaml, then --config=FILE, may set other values first):")
        for key, value in _dotted_items(_view(_read_yaml(default), script)):
            print(f"  --{key}={value if isinstance(value, str) else json.dumps(value)}")
    sys.exit(0)


def given_keys(script: str, argv: list[str]) -> dict[str, Any]:
    """The keys a user set for ``script`` (command line or ``--config`` file), dotted, with their
    resolved values: what a script that cannot use a key must refuse rather than ignore."""
    args = split_argv(argv)
    keys = [k for k in args if k != "config"]
    if "config" in args:
        keys += [key for key, _ in _dotted_items(_view(_read_yaml(Path(args["config"])), script))]
    cfg = load_config(script, argv, validate=False)
    out = {}
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out

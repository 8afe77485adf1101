"""Loading a config: YAML file or dict -> checked ``Config``, with ``--set`` overrides.

A config file has the sections of ``Config`` (data, model, train, output); only
``data.train`` is required. ``load_config`` reads a file, ``config_from_dict`` checks a
plain dict, and both apply ``--set key.sub=value`` overrides through the same checks.
Every failure raises ``ConfigError`` with one message that names the file (or the
override) and the dotted key.

Paths: ``data.train``, ``data.valid`` and ``data.test`` resolve against the config file's
folder and are stored absolute; when they come from an override they resolve against the
current working directory. ``output.dir`` is kept as written and, like any CLI output
path, is relative to the current working directory.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import yaml

from ..data.csvfile import csv_columns_problem
from ..errors import ConfigError, LstmCliError
from ..validate import NUMBER_RE, check, show
from .keys import first_leaf, key_name_error, keys_of, unknown_key_error
from .schema import CONSTRAINTS, DATA_PATH_KEYS, SECTIONS, Config, join_key
from .yaml_safe import Loader, load_yaml

# Gaussian noise is bounded for the overflow check at this many standard deviations (a
# float64 draw beyond 40 never happens)
NOISE_SIGMAS = 100.0

__all__ = ["load_config", "config_from_dict", "override_key", "parse_override", "value_origin"]


# --------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------


def override_key(text: str) -> str:
    """The key a ``KEY=VALUE`` override sets, as parse_override reads it (spaces around
    it dropped); unchecked."""
    return text.split("=", 1)[0].strip()


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"train.optimizer.lr=0.01"`` into ``("train.optimizer.lr", 0.01)``.

    The value is read as YAML (``null`` -> None, ``true`` -> True, ``[0.9, 0.99]`` -> list);
    an unquoted number string such as ``1e-3`` becomes the float it means. The key must be
    a known leaf key (not a section); its value is checked later, with the whole config.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"invalid override {text!r}: expected KEY=VALUE, e.g. --set train.optimizer.lr=0.01"
        )
    key, raw_value = override_key(text), text.split("=", 1)[1]
    if key in SECTIONS:
        example = first_leaf(key) if key else "train.optimizer.lr"
        what = f"{key!r} is a section" if key else "the key is empty"
        raise ConfigError(
            f"invalid override {text!r}: {what}; set one key at a time, e.g. --set {example}=..."
        )
    if key not in CONSTRAINTS:
        raise unknown_key_error(key, f"--set {text}")
    if not raw_value.strip():
        raise ConfigError(f"invalid override {text!r}: no value after '=' (write null for none)")
    try:
        value = yaml.load(raw_value, Loader=Loader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(
            f"invalid override {text!r}: the value is not valid YAML ({problem})"
        ) from None
    if isinstance(value, str) and value == raw_value.strip() and NUMBER_RE.fullmatch(value):
        value = float(value)
    return key, value


def _override_list(overrides: Iterable[str]) -> Iterable[str]:
    return (overrides,) if isinstance(overrides, str) else overrides  # one str is one override


def _override_origins(overrides: Iterable[str]) -> dict[str, str]:
    """{dotted key: "--set KEY=VALUE"} of the last override that sets each key."""
    return {text.split("=", 1)[0].strip(): f"--set {text}" for text in overrides}


def value_origin(key: str, source: str, overrides: Iterable[str] = ()) -> str:
    """Where the value of ``key`` came from, as config errors name it: ``--set KEY=VALUE``
    of the last override that sets it, else ``source`` (the config file).

    For checks made after loading (train.class_weights against the training labels).
    """
    return _override_origins(_override_list(overrides)).get(key, os.fspath(source))


# --------------------------------------------------------------------------------------
# Checking and building
# --------------------------------------------------------------------------------------


def _check_structure(raw: Mapping, prefix: str, where: str) -> None:
    """Refuse unknown keys and sections that are not mappings (None counts as empty).

    A key written with dots is refused even when its dotted name is a known key: _build
    looks keys up one level at a time and would silently drop it.
    """
    for k, v in raw.items():
        key = join_key(prefix, str(k))
        dotted = isinstance(k, str) and "." in k and (key in SECTIONS or key in CONSTRAINTS)
        if k == "" or dotted:
            raise key_name_error(k, v, prefix, where)
        if isinstance(k, str) and key in SECTIONS:
            if v is None:
                continue
            if not isinstance(v, Mapping):
                raise ConfigError(
                    f"{where}: section {key!r} must be a mapping of keys ({keys_of(key)}),"
                    f" got {type(v).__name__} {show(v)}"
                )
            _check_structure(v, key, where)
        elif key not in CONSTRAINTS or not isinstance(k, str):
            raise unknown_key_error(key, where)


def _plain_sections(raw: Mapping, prefix: str = "") -> dict:
    """Copy of raw where every section is a fresh dict (None sections become {})."""
    out = {}
    for k, v in raw.items():
        key = join_key(prefix, k)
        out[k] = _plain_sections(v or {}, key) if key in SECTIONS else v
    return out


class _Context:
    """Where each key's value came from, and the folder its data paths resolve against."""

    def __init__(self, where: str, base_dir: str, overrides: Iterable[str]):
        self.where = where
        self.base_dir = base_dir
        self.overridden = _override_origins(overrides)

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.overridden.get(key, self.where)}: {message}")


def _build(cls: type, prefix: str, raw: Mapping, ctx: _Context) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = join_key(prefix, f.name)
        if key in SECTIONS:
            kwargs[f.name] = _build(SECTIONS[key], key, raw.get(f.name) or {}, ctx)
        elif f.name in raw:
            kwargs[f.name] = _check_value(key, raw[f.name], ctx)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ctx.fail(key, f"missing required key {key!r}")
    return cls(**kwargs)


def _check_value(key: str, value: Any, ctx: _Context) -> Any:
    try:
        checked = check(key, value, CONSTRAINTS[key])
    except LstmCliError as bad:
        raise ctx.fail(key, str(bad)) from None
    if key in DATA_PATH_KEYS and checked is not None:
        base = os.getcwd() if key in ctx.overridden else ctx.base_dir
        checked = os.path.abspath(os.path.join(base, os.path.expanduser(checked)))
    elif key == "output.dir":  # kept relative to the cwd, but ~ is the home folder as above
        checked = os.path.expanduser(checked)
    return checked


def _check_combinations(cfg: Config, ctx: _Context) -> None:
    """Checks that involve more than one key."""
    csv = cfg.data.csv
    problem = csv_columns_problem(csv.id_column, csv.label_column, csv.feature_columns)
    if problem is not None:
        raise ctx.fail(f"data.csv.{problem[0]}", problem[1])
    folds, fold = cfg.train.folds, cfg.train.fold
    if folds == 1:
        raise ctx.fail(
            "train.folds", "'train.folds' is 1; give 0 for one model or >= 2 for an ensemble."
        )
    if fold is not None and fold >= folds:
        raise ctx.fail(
            "train.fold",
            f"'train.fold' is {fold}, but it must be below 'train.folds' ({folds}).",
        )
    if folds and cfg.data.valid is not None:
        raise ctx.fail(
            "data.valid",
            "'train.folds' carves each member's validation fold from 'data.train', so"
            " 'data.valid' must be null.",
        )
    has_validation = cfg.data.valid is not None or cfg.data.valid_fraction > 0 or folds >= 2
    for key in cfg.train.needs_validation:
        if not has_validation:
            raise ctx.fail(
                key,
                f"{key!r} needs validation data, but 'data.valid' is null and"
                " 'data.valid_fraction' is 0; set one of them.",
            )
    if cfg.data.frame_to is not None and cfg.data.frame != 1:
        raise ctx.fail(
            "data.frame_to",
            f"'data.frame_to' ({cfg.data.frame_to}) chooses the frame from the data, so"
            f" 'data.frame' must stay 1 (it is {cfg.data.frame}); give one of them.",
        )
    if cfg.train.augment.shift and cfg.data.frame < 2 and cfg.data.frame_to is None:
        raise ctx.fail(
            "train.augment.shift",
            "'train.augment.shift' varies the framing phase, so it needs 'data.frame' >= 2"
            f" (it is {cfg.data.frame}).",
        )
    noise, dtype = cfg.train.augment.noise, np.dtype(cfg.model.dtype)
    limit = float(np.finfo(dtype).max) / NOISE_SIGMAS  # a draw past it would overflow
    if noise > limit:
        raise ctx.fail(
            "train.augment.noise",
            f"'train.augment.noise' ({noise!r}) is too large for {dtype.name}: the noisy"
            f" inputs would overflow (it must stay below {limit:.3g}).",
        )
    opt = cfg.train.optimizer
    if opt.name == "sgd" and opt.nesterov and opt.momentum == 0:
        raise ctx.fail(
            "train.optimizer.nesterov",
            "'train.optimizer.nesterov' is true, which needs 'train.optimizer.momentum' > 0"
            " (it is 0).",
        )
    sched, lr = cfg.train.schedule, cfg.train.optimizer.lr
    if sched.name in ("cosine", "plateau") and sched.min_lr > lr:
        raise ctx.fail(
            "train.schedule.min_lr",
            f"'train.schedule.min_lr' ({sched.min_lr!r}) must not exceed"
            f" 'train.optimizer.lr' ({lr!r}).",
        )


def config_from_dict(
    d: Any,
    source: str = "<dict>",
    base_dir: str | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Check a plain nested dict (as from YAML), apply overrides, return a Config.

    ``source`` names the origin in error messages. Relative data paths resolve against
    ``base_dir`` (default: the current working directory); overridden ones against the cwd.
    """
    source = os.fspath(source)
    expected = f"a mapping with the sections {keys_of('')}"
    if d is None:
        raise ConfigError(f"{source} is empty; expected {expected} (at least data.train)")
    if not isinstance(d, Mapping):
        raise ConfigError(
            f"{source}: the top level must be {expected}; got {type(d).__name__} {show(d)}"
        )
    _check_structure(d, "", source)
    raw = _plain_sections(d)
    overrides = list(_override_list(overrides))
    for text in overrides:
        key, value = parse_override(text)
        *sections, name = key.split(".")
        node = raw
        for part in sections:
            node = node.setdefault(part, {})
        node[name] = value
    base = os.path.abspath(base_dir) if base_dir is not None else os.getcwd()
    ctx = _Context(source, base, overrides)
    cfg = _build(Config, "", raw, ctx)
    _check_combinations(cfg, ctx)
    return cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config file, apply ``--set`` overrides, check everything, return a Config."""
    where = os.fspath(path)
    if not os.path.exists(where):
        raise ConfigError(f"config file not found: {where}")
    if os.path.isdir(where):
        raise ConfigError(f"config file is a directory: {where}")
    try:
        with open(where, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"config file {where} is not UTF-8 text: line {line} has the byte "
            f"0x{data[err.start]:02x}"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {where}: {err.strerror}") from None
    raw = load_yaml(text, where)
    base_dir = os.path.dirname(os.path.abspath(where))
    return config_from_dict(raw, source=where, base_dir=base_dir, overrides=overrides)

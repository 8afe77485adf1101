"""Typed, validated run configuration: frozen dataclasses loaded from YAML.

Every default lives in the dataclasses below (one readable block, nanoGPT style); the
allowed values of every key live in ``_CONSTRAINTS`` right after them (scikit-learn
style: constraints declared as data, one message template for every failure).

A config file has four sections, ``data``, ``model``, ``train`` and ``output``; only
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
import difflib
import math
import numbers
import os
import re
import reprlib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

from ..errors import ConfigError, LstmCliError
from ..validate import (
    BOOL_HINT,
    NUMBER_RE,
    Bool,
    Constraint,
    Interval,
    Invalid,
    Options,
    Str,
    StrList,
    as_float,
    check,
    show,
)

__all__ = [
    "CsvConfig",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "EarlyStoppingConfig",
    "TrainConfig",
    "OutputConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "parse_override",
    "value_origin",
]


# --------------------------------------------------------------------------------------
# Defaults: the whole schema, in the order it is written to YAML.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvConfig:
    """Column names of the long-form CSV format (one row per time step)."""

    id_column: str = "id"  # sequence id; a sequence's rows are contiguous
    label_column: str = "label"  # the sequence's label, repeated on its rows
    feature_columns: tuple[str, ...] | None = None  # None = every other column, in file order
    label_type: str = "auto"  # auto (ints if every label is an int) | str | int


@dataclass(frozen=True)
class DataConfig:
    train: str  # required; relative to the config's folder
    valid: str | None = None  # separate validation file; None = split
    valid_fraction: float = 0.1  # stratified split of train; 0 = none
    test: str | None = None  # evaluated once, with best.npz, at the end
    format: str = "auto"  # auto (extension)|jsonl|npz|npy|csv|ts
    normalize: bool = True  # z-score features (training-split stats)
    bucket: bool = True  # batch sequences of similar length together
    csv: CsvConfig = field(default_factory=CsvConfig)


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 64  # H, units per LSTM layer
    num_layers: int = 1  # stacked LSTM layers
    head: str = "last"  # last (own last valid step) | all
    forget_bias: float = 1.0  # added to the forget gate pre-activation
    dropout: float = 0.0  # inverted dropout between layers, training only
    dtype: str = "float32"  # float32 | float64
    init: str = "uniform"  # uniform | glorot_orthogonal


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1.0e-3  # learning rate (YAML: write 1.0e-3, not 1e-3)
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw moment decay rates
    eps: float = 1.0e-8  # adam/adamw denominator term
    weight_decay: float = 0.0  # L2 in grad (sgd, adam); decoupled (adamw)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "constant"  # constant | step | cosine | plateau
    step_size: int = 10  # step: every step_size epochs, lr *= gamma
    gamma: float = 0.5  # step
    min_lr: float = 0.0  # cosine floor / plateau floor
    patience: int = 5  # plateau: epochs without improvement
    factor: float = 0.5  # plateau: lr *= factor


@dataclass(frozen=True)
class EarlyStoppingConfig:
    metric: str = "val_loss"  # val_loss | val_accuracy; also picks best.npz
    patience: int | None = None  # epochs without improvement; None = off
    min_delta: float = 0.0  # smallest change that counts as improvement


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0  # seeds init, split, shuffling, dropout
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    clip_grad_norm: float | None = 5.0  # global L2 norm; 0 or None disables
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # None | "balanced" | ((label, weight), ...) in file order; use dict(...) to look up.
    class_weights: None | str | tuple[tuple[int | str, float], ...] = None
    checkpoint_every_steps: int = 0  # 0 = checkpoints at epoch ends only


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/run"  # relative to the current working directory


@dataclass(frozen=True)
class Config:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# --------------------------------------------------------------------------------------
# Constraints: what each key accepts, and how it is described in error messages.
# --------------------------------------------------------------------------------------


class _Betas(Constraint):
    def describe(self) -> str:
        return "a list of two floats in the range [0.0, 1.0)"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise Invalid()
        betas = tuple(as_float(b) for b in value)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise Invalid()
        return betas


class _ClassWeights(Constraint):
    nullable = True

    def describe(self) -> str:
        return "'balanced' or a mapping {label: float in the range (0.0, inf)}"

    def convert(self, value: Any) -> Any:
        if isinstance(value, str):
            if value != "balanced":
                raise Invalid()
            return value
        if not isinstance(value, Mapping) or not value:
            raise Invalid()
        pairs = []
        for label, weight in value.items():
            if isinstance(label, bool) or not isinstance(label, (int, str)):
                hint = BOOL_HINT if isinstance(label, bool) else "Labels are ints or strs."
                raise Invalid(hint)
            w = as_float(weight)
            if not (0.0 < w < math.inf):
                raise Invalid(f"The weight of label {show(label)} is {show(weight)}.")
            pairs.append((label, w))
        as_text = [str(label) for label, _ in pairs]
        if len(set(as_text)) != len(as_text):  # 1 and '1' would collide in JSON
            raise Invalid("A label is given twice (once as an int, once as a str).")
        return tuple(pairs)


_PATH = "a non-empty str (a path)"

_CONSTRAINTS: dict[str, Constraint] = {
    "data.train": Str(_PATH),
    "data.valid": Str(_PATH, nullable=True),
    "data.valid_fraction": Interval(float, 0.0, 1.0, "left"),
    "data.test": Str(_PATH, nullable=True),
    "data.format": Options("auto", "jsonl", "npz", "npy", "csv", "ts"),
    "data.normalize": Bool(),
    "data.bucket": Bool(),
    "data.csv.id_column": Str(),
    "data.csv.label_column": Str(),
    "data.csv.feature_columns": StrList(nullable=True),
    "data.csv.label_type": Options("auto", "str", "int"),
    "model.hidden_size": Interval(int, 1),
    "model.num_layers": Interval(int, 1),
    "model.head": Options("last", "all"),
    "model.forget_bias": Interval(float, None, None, "neither"),
    "model.dropout": Interval(float, 0.0, 1.0, "left"),
    "model.dtype": Options("float32", "float64"),
    "model.init": Options("uniform", "glorot_orthogonal"),
    "train.epochs": Interval(int, 1),
    "train.batch_size": Interval(int, 1),
    "train.seed": Interval(int, 0),
    "train.optimizer.name": Options("adam", "adamw", "sgd"),
    "train.optimizer.lr": Interval(float, 0.0, None, "neither"),
    "train.optimizer.momentum": Interval(float, 0.0, 1.0, "left"),
    "train.optimizer.nesterov": Bool(),
    "train.optimizer.betas": _Betas(),
    "train.optimizer.eps": Interval(float, 0.0, None, "neither"),
    "train.optimizer.weight_decay": Interval(float, 0.0),
    "train.clip_grad_norm": Interval(float, 0.0, nullable=True),
    "train.schedule.name": Options("constant", "step", "cosine", "plateau"),
    "train.schedule.step_size": Interval(int, 1),
    "train.schedule.gamma": Interval(float, 0.0, 1.0, "right"),
    "train.schedule.min_lr": Interval(float, 0.0),
    "train.schedule.patience": Interval(int, 0),
    "train.schedule.factor": Interval(float, 0.0, 1.0, "neither"),
    "train.early_stopping.metric": Options("val_loss", "val_accuracy"),
    "train.early_stopping.patience": Interval(int, 1, nullable=True),
    "train.early_stopping.min_delta": Interval(float, 0.0),
    "train.class_weights": _ClassWeights(),
    "train.checkpoint_every_steps": Interval(int, 0),
    "output.dir": Str(_PATH),
}

# Paths resolved against the config file's folder (or the cwd for overrides).
_DATA_PATH_KEYS = ("data.train", "data.valid", "data.test")


# --------------------------------------------------------------------------------------
# The schema as dotted keys, derived from the dataclasses.
# --------------------------------------------------------------------------------------


def _walk_schema(cls: type, prefix: str, sections: dict, leaves: list) -> None:
    sections[prefix] = cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        sub = hints[f.name]
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            _walk_schema(sub, key, sections, leaves)
        else:
            leaves.append(key)


_SECTIONS: dict[str, type] = {}  # "" -> Config, "data" -> DataConfig, "data.csv" -> CsvConfig, ...
_LEAVES: list[str] = []  # "data.train", ..., "output.dir" in schema order
_walk_schema(Config, "", _SECTIONS, _LEAVES)
_ALL_KEYS = [k for k in _SECTIONS if k] + _LEAVES


def _first_leaf(section: str) -> str:
    return next(k for k in _LEAVES if k.startswith(section + "."))


def _is_abbreviation(short: str, name: str) -> bool:
    """True if short is name[0] plus a subsequence of name[1:] ('lr' of 'learning_rate')."""
    if not short or not name or short[0] != name[0]:
        return False
    rest = iter(name[1:])
    return all(ch in rest for ch in short[1:])


def _suggest(key: str) -> list[str]:
    """The valid dotted keys (at most two) the user most likely meant by ``key``."""
    parts = key.split(".")
    depth = 0
    while depth < len(parts) - 1 and ".".join(parts[: depth + 1]) in _SECTIONS:
        depth += 1
    parent = ".".join(parts[:depth])
    rest = parts[depth:]

    def full(name: str) -> str:
        return f"{parent}.{name}" if parent else name

    if len(rest) == 1:  # a misspelt name inside a valid section
        name = rest[0]
        siblings = [f.name for f in dataclasses.fields(_SECTIONS[parent])]
        close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
        if close:
            return [full(close[0])]
        elsewhere = [k for k in _ALL_KEYS if k.rsplit(".", 1)[-1] == name]  # wrong section
        if elsewhere:
            return elsewhere[:2]
        abbreviations = [s for s in siblings if _is_abbreviation(s, name)]
        if len(abbreviations) == 1:  # 'learning_rate' -> 'lr'
            return [full(abbreviations[0])]
        return []
    # a misspelt section: compare whole dotted keys, or find the key under another section
    tail = ".".join(rest)
    ends = [k for k in _ALL_KEYS if k.endswith("." + tail)]
    if ends:
        return ends[:2]
    candidates = [k for k in _ALL_KEYS if k.count(".") == key.count(".")]
    return difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)


def _section_keys(section: str) -> str:
    """The keys of a config section ('' = the top level), comma-separated, in schema order."""
    return ", ".join(f.name for f in dataclasses.fields(_SECTIONS[section]))


def _where_in(section: str) -> str:
    return f"under {section!r}" if section else "at the top level"


def _unknown_key_error(key: str, where: str) -> ConfigError:
    """``unknown key 'a.b' in WHERE; did you mean 'a.c'?`` (or the valid keys nearby)."""
    msg = f"unknown key {show(key)} in {where}"
    match = _suggest(key)
    if match:
        return ConfigError(f"{msg}; did you mean {' or '.join(repr(m) for m in match)}?")
    parent = key
    while parent not in _SECTIONS:
        parent = parent.rsplit(".", 1)[0] if "." in parent else ""
    return ConfigError(f"{msg}; valid keys {_where_in(parent)} are: {_section_keys(parent)}")


# --------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MERGE = object()  # the merge key '<<' among a mapping's keys
_MAX_MERGED = 10_000  # entries merge keys may copy in one document; configs need a few dozen


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last),
    the merge key ``<<`` included, and merge keys that copy more than _MAX_MERGED entries.

    PyYAML copies each merged mapping's entries into the mapping that merges it, so merges
    of aliases of merges grow exponentially (nine levels of ``<<: [*a, *a, ...]`` in a few
    hundred bytes would copy 2 * 9**8 entries). Both checks run in flatten_mapping, once per
    mapping node, before PyYAML splices the merged entries in: after that, a merged key
    that the mapping overrides looks like a duplicate.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._flattened = set()  # mapping nodes already checked (an alias shares its node)
        self._flattening = set()  # mapping nodes being flattened (a merge cycle ends there)
        self._merged = 0

    def flatten_mapping(self, node):
        # Our own merge (YAML's merge-key rules), not PyYAML's: its flatten_mapping changed
        # in 6.0.4 (which merged key wins, and an alias of a mapping that overrides a merged
        # key), and a config must mean the same whatever PyYAML is installed.
        if node in self._flattened:
            return
        self._flattened.add(node)
        self._flattening.add(node)
        self._refuse_duplicate_keys(node)
        merged, own = [], []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                if key_node.tag == "tag:yaml.org,2002:value":  # a bare '=' key is a str
                    key_node.tag = "tag:yaml.org,2002:str"
                own.append((key_node, value_node))
                continue
            subs = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in subs:
                if sub in self._flattening:  # merging itself, or a mapping that merges it
                    continue  # (a: &a {x: 1, <<: *a}): adds nothing it does not have

                if not isinstance(sub, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {sub.id}",
                        sub.start_mark,
                    )
                self.flatten_mapping(sub)
                merged.append(sub.value)
                self._merged += len(sub.value)
            if self._merged > _MAX_MERGED:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"merge keys ('<<') copy more than {_MAX_MERGED} entries in this file"
                    " (merges of aliases multiply); write the mappings out",
                    key_node.start_mark,
                )
        # The mapping is built pair by pair, the last pair of a key winning: so the merged
        # mappings go first, the last-listed first (the first listed wins among them), and
        # the mapping's own keys last (they override every merged one).
        flat = []
        for pairs in reversed(merged):
            flat.extend(pairs)
        node.value = flat + own
        self._flattening.discard(node)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as err:  # a date such as 2001-13-45, an int of 5000 digits
            what = {"int": "an int", "timestamp": "a date"}.get(node.tag.rsplit(":", 1)[-1])
            too_long = what == "an int" and len(str(node.value)) > 4000
            reason = "too many digits" if too_long else str(err)
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read {show(node.value)} as {what or node.tag} ({reason});"
                " put it in quotes if it is meant as text",
                node.start_mark,
            ) from None

    def get_single_data(self):
        try:
            return super().get_single_data()
        except RecursionError:  # PyYAML composes and constructs nested nodes recursively
            raise yaml.YAMLError("lists or mappings nested too deeply") from None

    def _refuse_duplicate_keys(self, node):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:value":  # a bare '=': PyYAML makes it a str
                continue
            if key_node.tag == _MERGE_TAG:
                key = _MERGE
            else:
                key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if first is not key_node:
                line = first.start_mark.line + 1
                if key is _MERGE:
                    problem = (
                        f"duplicate key '<<' (first given on line {line}); merge several"
                        " mappings with one key, <<: [*a, *b] (the first listed wins)"
                    )
                else:
                    problem = f"duplicate key {show(key)} (first given on line {line})"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)


def _yaml_error(where: str, err: yaml.YAMLError) -> ConfigError:
    if isinstance(err, yaml.reader.ReaderError):  # a control character; no line/column mark
        return ConfigError(
            f"invalid YAML in {where}: unacceptable character #x{err.character:04x}"
            f" at character position {err.position}"
        )
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    if context and not str(context).startswith("while"):
        problem = f"{context}, {problem}"
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    msg = f"invalid YAML in {where}{at}: {problem}"
    if (
        context
        and str(context).startswith("while")
        and context_mark is not None
        and (mark is None or context_mark.line != mark.line)
    ):
        # e.g. an unclosed '[': say where the construct began, which is where the fix goes
        msg += f" ({context} started at line {context_mark.line + 1}, column {context_mark.column + 1})"
    if "'\\t'" in problem:
        msg += " (YAML does not allow tabs for indentation; use spaces)"
    return ConfigError(msg)


def _load_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise _yaml_error(where, err) from None


# --------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"train.optimizer.lr=0.01"`` into ``("train.optimizer.lr", 0.01)``.

    The value is read as YAML (``null`` -> None, ``true`` -> True, ``[0.9, 0.99]`` -> list);
    an unquoted number string such as ``1e-3`` becomes the float it means. The key must be
    a known leaf key (not a section); its value is checked later, with the whole config.
    """
    where = f"--set {text}"
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(
            f"invalid override {text!r}: expected KEY=VALUE, e.g. --set train.optimizer.lr=0.01"
        )
    key, raw_value = text.split("=", 1)
    key = key.strip()
    if key in _SECTIONS:
        example = _first_leaf(key) if key else "train.optimizer.lr"
        what = f"{key!r} is a section" if key else "the key is empty"
        raise ConfigError(
            f"invalid override {text!r}: {what}; set one key at a time, e.g. --set {example}=..."
        )
    if key not in _CONSTRAINTS:
        raise _unknown_key_error(key, where)
    if not raw_value.strip():
        raise ConfigError(f"invalid override {text!r}: no value after '=' (write null for none)")
    try:
        value = yaml.load(raw_value, Loader=_Loader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"invalid override {text!r}: the value is not valid YAML ({problem})")
    if isinstance(value, str) and value == raw_value.strip() and NUMBER_RE.fullmatch(value):
        value = float(value)
    return key, value


def value_origin(key: str, source: str, overrides: Iterable[str] = ()) -> str:
    """Where the value of ``key`` came from, as config errors name it: ``--set KEY=VALUE``
    of the last override that sets it, else ``source`` (the config file).

    For checks made after loading (train.class_weights against the training labels).
    """
    if isinstance(overrides, str):
        overrides = (overrides,)
    origin = os.fspath(source)
    for text in overrides:
        if text.split("=", 1)[0].strip() == key:
            origin = f"--set {text}"
    return origin


# --------------------------------------------------------------------------------------
# Checking and building
# --------------------------------------------------------------------------------------


def _inline_value(value: Any) -> str:
    """A short scalar as it is written in YAML (``1``, ``true``, ``null``, ``id``), else '...'."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int) and abs(value) < 10**15 or isinstance(value, float):
        return repr(value) if math.isfinite(value) else "..."
    if isinstance(value, str) and len(value) <= 40:
        text = yaml.safe_dump(value, default_flow_style=True, width=200)
        text = text[: -len("\n...\n")] if text.endswith("\n...\n") else text.strip()
        return text if "\n" not in text else "..."
    return "..."


def _key_name_error(name: str, value: Any, prefix: str, where: str) -> ConfigError:
    """A key of a file that is empty or written with dots ('train.epochs: 1' at the top)."""
    if not name:
        at = _where_in(prefix)
        return ConfigError(
            f"empty key '' {at} in {where}; valid keys {at} are: {_section_keys(prefix)}"
        )
    *sections, leaf = f"{prefix}.{name}".split(".") if prefix else name.split(".")
    nested = f"{leaf}: {_inline_value(value)}"
    for part in reversed(sections):
        nested = f"{part}: {{{nested}}}"
    at = f" under {prefix!r}" if prefix else ""
    return ConfigError(
        f"dotted key {name!r}{at} in {where}; dotted names are for --set only,"
        f" write the nested form {nested} instead"
    )


def _check_structure(raw: Mapping, prefix: str, where: str) -> None:
    """Refuse unknown keys and sections that are not mappings (None counts as empty).

    A key written with dots is refused even when its dotted name is a known key: _build
    looks keys up one level at a time and would silently drop it.
    """
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        dotted = isinstance(k, str) and "." in k and (key in _SECTIONS or key in _CONSTRAINTS)
        if k == "" or dotted:
            raise _key_name_error(k, v, prefix, where)
        if isinstance(k, str) and key in _SECTIONS:
            if v is None:
                continue
            if not isinstance(v, Mapping):
                raise ConfigError(
                    f"{where}: section {key!r} must be a mapping of keys ({_section_keys(key)}),"
                    f" got {type(v).__name__} {show(v)}"
                )
            _check_structure(v, key, where)
        elif key not in _CONSTRAINTS or not isinstance(k, str):
            raise _unknown_key_error(key, where)


def _plain_sections(raw: Mapping, prefix: str = "") -> dict:
    """Copy of raw where every section is a fresh dict (None sections become {})."""
    out = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else k
        if key in _SECTIONS:
            out[k] = _plain_sections(v or {}, key)
        else:
            out[k] = v
    return out


def _resolve_path(path: str, base_dir: str) -> str:
    return os.path.abspath(os.path.join(base_dir, os.path.expanduser(path)))


class _Context:
    def __init__(self, where: str, base_dir: str):
        self.where = where
        self.base_dir = base_dir
        self.overridden: dict[str, str] = {}  # dotted key -> "--set key=value"

    def origin(self, key: str) -> str:
        return self.overridden.get(key, self.where)

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin(key)}: {message}")


def _build(cls: type, prefix: str, raw: Mapping, ctx: _Context) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if key in _SECTIONS:
            kwargs[f.name] = _build(_SECTIONS[key], key, raw.get(f.name) or {}, ctx)
        elif f.name in raw:
            kwargs[f.name] = _check_value(key, raw[f.name], ctx)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ctx.fail(key, f"missing required key {key!r}")
    return cls(**kwargs)


def _check_value(key: str, value: Any, ctx: _Context) -> Any:
    try:
        checked = check(key, value, _CONSTRAINTS[key])
    except LstmCliError as bad:
        raise ctx.fail(key, str(bad)) from None
    if key in _DATA_PATH_KEYS and checked is not None:
        base = os.getcwd() if key in ctx.overridden else ctx.base_dir
        checked = _resolve_path(checked, base)
    return checked


def _check_combinations(cfg: Config, ctx: _Context) -> None:
    """Checks that involve more than one key."""
    csv = cfg.data.csv
    if csv.id_column == csv.label_column:
        raise ctx.fail(
            "data.csv.label_column",
            f"'data.csv.id_column' and 'data.csv.label_column' are both {show(csv.id_column)};"
            " they must name different columns.",
        )
    for col in csv.feature_columns or ():
        if col in (csv.id_column, csv.label_column):
            raise ctx.fail(
                "data.csv.feature_columns",
                f"'data.csv.feature_columns' lists {show(col)}, which is the id or label column.",
            )
    has_validation = cfg.data.valid is not None or cfg.data.valid_fraction > 0
    needs_validation = {
        "train.early_stopping.patience": cfg.train.early_stopping.patience is not None,
        "train.schedule.name": cfg.train.schedule.name == "plateau",
    }
    for key, needed in needs_validation.items():
        if needed and not has_validation:
            raise ctx.fail(
                key,
                f"{key!r} needs validation data, but 'data.valid' is null and"
                " 'data.valid_fraction' is 0; set one of them.",
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
    if d is None:
        raise ConfigError(
            f"{source} is empty; expected a mapping with the sections data, model, train, output"
            " (at least data.train)"
        )
    if not isinstance(d, Mapping):
        raise ConfigError(
            f"{source}: the top level must be a mapping with the sections data, model, train,"
            f" output; got {type(d).__name__} {show(d)}"
        )
    _check_structure(d, "", source)
    raw = _plain_sections(d)
    ctx = _Context(source, os.path.abspath(base_dir) if base_dir is not None else os.getcwd())
    if isinstance(overrides, str):  # one string is not a list of overrides
        overrides = (overrides,)
    for text in overrides:
        key, value = parse_override(text)
        *sections, name = key.split(".")
        node = raw
        for part in sections:
            node = node.setdefault(part, {})
        node[name] = value
        ctx.overridden[key] = f"--set {text}"
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
    raw = _load_yaml(text, where)
    base_dir = os.path.dirname(os.path.abspath(where))
    return config_from_dict(raw, source=where, base_dir=base_dir, overrides=overrides)


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _plain(value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
            for f in dataclasses.fields(value)
        }
    if key == "train.class_weights" and isinstance(value, tuple):
        return {label: weight for label, weight in value}
    if isinstance(value, tuple):
        return list(value)
    return value


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as a plain nested dict (defaults filled, data paths absolute)."""
    return _plain(cfg, "")


class _Dumper(yaml.SafeDumper):
    """yaml.SafeDumper that writes lists inline (``betas: [0.9, 0.999]``), mappings as blocks."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(list, _represent_list)


def dump_config(cfg: Config) -> str:
    """YAML text of ``config_to_dict(cfg)``, keys in schema order; loads back to ``cfg``."""
    return yaml.dump(
        config_to_dict(cfg),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )

"""The configuration schema: every key, its default and its constraint, stated once.

The frozen dataclasses hold the defaults, in the order a config is written to YAML
(nanoGPT style: one readable block). ``CONSTRAINTS`` maps every dotted leaf key to the
``validate.Constraint`` its value must meet (scikit-learn style: constraints as data).
The ``model:`` section is ``lstm_cli.nn.spec.ModelConfig`` with its constraints: the
architecture is stated there once, for the model, the config and checkpoints alike.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.csvfile import LABEL_TYPES
from ..data.formats import FORMATS
from ..nn.optim import OPTIMIZERS
from ..nn.schedules import SCHEDULES
from ..nn.spec import CONSTRAINTS as MODEL_CONSTRAINTS
from ..nn.spec import ModelConfig
from ..validate import (
    BOOL_HINT,
    Bool,
    Constraint,
    Interval,
    Invalid,
    Options,
    Str,
    StrList,
    as_float,
    show,
)

__all__ = [
    "CsvConfig",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "EarlyStoppingConfig",
    "AugmentConfig",
    "TrainConfig",
    "OutputConfig",
    "Config",
    "Betas",
    "ClassWeights",
    "CONSTRAINTS",
    "SECTIONS",
    "LEAVES",
    "DATA_PATH_KEYS",
    "MODEL_KEYS",
    "constraint",
    "section_keys",
    "section_constraints",
    "join_key",
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
    normalize_per_sequence: bool = False  # z-score each sequence on its own, first
    pool: int = 1  # mean of each run of pool steps (after the per-sequence z-score)
    frame: int = 1  # stack frame steps into one step of frame*F features (after pool)
    frame_to: int | None = None  # frame chosen: median training length <= frame_to steps
    bucket: bool = True  # batch sequences of similar length together
    csv: CsvConfig = field(default_factory=CsvConfig)


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
    warmup_epochs: int = 0  # linear warm-up over the first epochs, then the schedule


@dataclass(frozen=True)
class EarlyStoppingConfig:
    metric: str = "val_loss"  # val_loss | val_accuracy; also picks best.npz
    patience: int | None = None  # epochs without improvement; None = off
    min_delta: float = 0.0  # smallest change that counts as improvement


@dataclass(frozen=True)
class AugmentConfig:
    """Training batches only (data.augment module); evaluation never augments."""

    shift: bool = False  # each sequence starts at a random step < data.frame (framing phase)
    noise: float = 0.0  # std of Gaussian noise added to each normalised input value
    # "auto" (roll, reverse): chosen on the training file (data.invariance, resolved by
    # training.prepare.resolve_reorders), so a run folder records true or false
    roll: bool | str = False  # each sequence starts at a random step of its own, wrapping round
    reverse: bool | str = False  # each sequence reversed with probability 1/2

    @property
    def reorders(self) -> bool:
        """Whether batches are rebuilt from the unframed steps (reverse, roll, shift);
        roll and reverse must be resolved (no "auto") before it is asked."""
        if "auto" in (self.roll, self.reverse):
            raise ValueError("train.augment: resolve roll / reverse 'auto' first")
        return self.shift or self.roll or self.reverse


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
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    checkpoint_every_steps: int = 0  # 0 = checkpoints at epoch ends only
    gradflow_every: int = 0  # record gradient flow every N epochs (gradflow.jsonl); 0 = off
    distributed: str = "auto"  # under mpiexec: auto (split when it pays) | always
    init_from: str | None = None  # checkpoint whose parameters start the run (fine-tuning)
    folds: int = 0  # >= 2: a cross-validated ensemble of that many models; 0 = one model
    fold: int | None = None  # the fold a member of train.folds holds out (set per member)

    @property
    def needs_validation(self) -> tuple[str, ...]:
        """The keys set to something that reads validation data (early stopping, the
        plateau schedule); config.load refuses them when no validation is asked for."""
        needs = {
            "train.early_stopping.patience": self.early_stopping.patience is not None,
            "train.schedule.name": self.schedule.name == "plateau",
        }
        return tuple(key for key, needed in needs.items() if needed)


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
# Constraints: what each key accepts, and how error messages describe it.
# --------------------------------------------------------------------------------------


class Betas(Constraint):
    """Two floats in [0, 1), the moment decay rates of adam/adamw."""

    _each = Interval(float, 0.0, 1.0, "left")

    def describe(self) -> str:
        return "a list of two floats in the range [0.0, 1.0)"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise Invalid()
        return tuple(self._each.check(b) for b in value)


class ClassWeights(Constraint):
    """None, 'balanced' or {label: weight > 0}, stored as ((label, weight), ...) in file order."""

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

CONSTRAINTS: dict[str, Constraint] = {
    "data.train": Str(_PATH),
    "data.valid": Str(_PATH, nullable=True),
    "data.valid_fraction": Interval(float, 0.0, 1.0, "left"),
    "data.test": Str(_PATH, nullable=True),
    "data.format": Options(*FORMATS),
    "data.normalize": Bool(),
    "data.normalize_per_sequence": Bool(),
    "data.pool": Interval(int, 1),
    "data.frame": Interval(int, 1),
    "data.frame_to": Interval(int, 1, nullable=True),
    "data.bucket": Bool(),
    "data.csv.id_column": Str(),
    "data.csv.label_column": Str(),
    "data.csv.feature_columns": StrList(nullable=True),
    "data.csv.label_type": Options(*LABEL_TYPES),
    **{f"model.{name}": c for name, c in MODEL_CONSTRAINTS.items()},
    "train.epochs": Interval(int, 1),
    "train.batch_size": Interval(int, 1),
    "train.seed": Interval(int, 0),
    "train.optimizer.name": Options(*sorted(OPTIMIZERS)),
    "train.optimizer.lr": Interval(float, 0.0, None, "neither"),
    "train.optimizer.momentum": Interval(float, 0.0, 1.0, "left"),
    "train.optimizer.nesterov": Bool(),
    "train.optimizer.betas": Betas(),
    "train.optimizer.eps": Interval(float, 0.0, None, "neither"),
    "train.optimizer.weight_decay": Interval(float, 0.0),
    "train.clip_grad_norm": Interval(float, 0.0, nullable=True),
    "train.schedule.name": Options(*SCHEDULES),
    "train.schedule.step_size": Interval(int, 1),
    "train.schedule.gamma": Interval(float, 0.0, 1.0, "right"),
    "train.schedule.min_lr": Interval(float, 0.0),
    "train.schedule.patience": Interval(int, 0),
    "train.schedule.factor": Interval(float, 0.0, 1.0, "neither"),
    "train.schedule.warmup_epochs": Interval(int, 0),
    "train.early_stopping.metric": Options("val_loss", "val_accuracy"),
    "train.early_stopping.patience": Interval(int, 1, nullable=True),
    "train.early_stopping.min_delta": Interval(float, 0.0),
    "train.class_weights": ClassWeights(),
    "train.augment.shift": Bool(),
    "train.augment.noise": Interval(float, 0.0),
    "train.augment.roll": Bool(auto=True),
    "train.augment.reverse": Bool(auto=True),
    "train.checkpoint_every_steps": Interval(int, 0),
    "train.gradflow_every": Interval(int, 0),
    "train.distributed": Options("auto", "always"),
    "train.init_from": Str(_PATH, nullable=True),
    "train.folds": Interval(int, 0),
    "train.fold": Interval(int, 0, nullable=True),
    "output.dir": Str(_PATH),
}

# Paths resolved against the config file's folder (or the cwd for overrides).
DATA_PATH_KEYS = ("data.train", "data.valid", "data.test", "train.init_from")


# --------------------------------------------------------------------------------------
# The schema as dotted keys, derived from the dataclasses.
# --------------------------------------------------------------------------------------


def join_key(prefix: str, name: str) -> str:
    """The dotted key of ``name`` inside section ``prefix`` ('' = the top level)."""
    return f"{prefix}.{name}" if prefix else name


def _walk_schema(cls: type, prefix: str, sections: dict, leaves: list) -> None:
    sections[prefix] = cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = join_key(prefix, f.name)
        sub = hints[f.name]
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            _walk_schema(sub, key, sections, leaves)
        else:
            leaves.append(key)


SECTIONS: dict[str, type] = {}  # "" -> Config, "data" -> DataConfig, "data.csv" -> CsvConfig, ...
LEAVES: list[str] = []  # "data.train", ..., "output.dir" in schema order
_walk_schema(Config, "", SECTIONS, LEAVES)


def section_keys(section: str) -> tuple[str, ...]:
    """The names directly under ``section`` ('' = the top level), in schema order."""
    return tuple(f.name for f in dataclasses.fields(SECTIONS[section]))


def constraint(key: str) -> Constraint:
    """The constraint of the dotted leaf key ``key`` (KeyError if it is not one)."""
    return CONSTRAINTS[key]


def section_constraints(section: str) -> dict[str, Constraint]:
    """{name: constraint} of the leaf keys directly under ``section``, in schema order."""
    return {
        name: CONSTRAINTS[key]
        for name in section_keys(section)
        if (key := join_key(section, name)) in CONSTRAINTS
    }


MODEL_KEYS = section_keys("model")  # the architecture: ModelConfig's fields

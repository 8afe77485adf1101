"""The model's architecture, stated once: its knobs, their defaults and their constraints.

``ModelConfig`` is the config file's ``model:`` section and the model's spec: the config
schema reuses it and ``CONSTRAINTS``, ``LSTMClassifier`` checks its arguments against
``ARCHITECTURE``, and a checkpoint's ``meta["model"]`` is ``LSTMClassifier.spec()``
(the two data-given sizes plus these fields), checked against the same table on load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..validate import Bool, Interval, Options, check

HEADS = ("last", "all", "mean", "max")
DTYPES = ("float32", "float64")
INITS = ("uniform", "glorot_orthogonal")


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 64  # H, units per LSTM layer
    num_layers: int = 1  # stacked LSTM layers
    head: str = "last"  # last (own last valid step) | all (every valid step) | mean | max
    forget_bias: float = 1.0  # added to the forget gate pre-activation
    dropout: float = 0.0  # inverted dropout between layers, training only
    dtype: str = "float32"  # float32 | float64
    init: str = "uniform"  # uniform | glorot_orthogonal
    bidirectional: bool = False  # a reverse LSTM beside each layer, outputs concatenated (2H)


# what each ModelConfig field accepts
CONSTRAINTS = {
    "hidden_size": Interval(int, 1),
    "num_layers": Interval(int, 1),
    "head": Options(*HEADS),
    "forget_bias": Interval(float, None, None, "neither"),
    "dropout": Interval(float, 0.0, 1.0, "left"),
    "dtype": Options(*DTYPES),
    "init": Options(*INITS),
    "bidirectional": Bool(),
}
# the sizes the data gives (input features, classes), then the config's fields
SIZES = {"input_size": Interval(int, 1), "num_classes": Interval(int, 1)}
ARCHITECTURE = {**SIZES, **CONSTRAINTS}
REQUIRED = ("input_size", "hidden_size", "num_classes")  # no default in the constructor


def check_architecture(values: Mapping[str, Any], owner: str) -> dict:
    """``values`` (a subset of ARCHITECTURE's keys) checked and converted, in table order."""
    return {k: check(k, values[k], c, owner) for k, c in ARCHITECTURE.items() if k in values}

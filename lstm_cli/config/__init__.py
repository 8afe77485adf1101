"""Typed, validated run configuration: frozen dataclasses loaded from YAML.

- ``schema``: the dataclasses with their defaults and ``CONSTRAINTS``, the one statement
  of every key (read by other packages through ``constraint(key)`` and ``MODEL_KEYS``);
- ``yaml_safe``: yaml.SafeLoader hardened for hand-written files;
- ``load``: ``load_config``, ``config_from_dict``, ``--set`` overrides, ``value_origin``;
- ``keys``: messages about unknown, empty and dotted keys;
- ``dump``: ``config_to_dict`` and ``dump_config``.
"""

from .dump import config_to_dict, dump_config
from .load import config_from_dict, load_config, override_key, parse_override, value_origin
from .schema import (
    AugmentConfig,
    Config,
    CsvConfig,
    DataConfig,
    EarlyStoppingConfig,
    ModelConfig,
    OptimizerConfig,
    OutputConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "CsvConfig",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "AugmentConfig",
    "EarlyStoppingConfig",
    "TrainConfig",
    "OutputConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "override_key",
    "parse_override",
    "value_origin",
]

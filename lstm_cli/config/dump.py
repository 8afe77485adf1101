"""Writing a config: ``Config`` -> plain dict -> YAML text that loads back to it."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from .schema import Config, join_key

__all__ = ["config_to_dict", "dump_config"]


def _plain(value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name), join_key(key, f.name))
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

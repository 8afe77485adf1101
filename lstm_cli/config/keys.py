"""Messages about keys: unknown keys with a suggestion, empty and dotted key names.

``unknown key 'optim.learnig_rate' in x.yaml; did you mean 'train.optimizer.lr'?`` or,
when nothing is close, the valid keys of the nearest section.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import yaml

from ..errors import ConfigError
from ..validate import show
from .schema import LEAVES, SECTIONS, join_key, section_keys

__all__ = ["first_leaf", "keys_of", "valid_keys", "unknown_key_error", "key_name_error"]

_ALL_KEYS = [k for k in SECTIONS if k] + LEAVES


def first_leaf(section: str) -> str:
    """The first leaf key under ``section``, e.g. for an example in a message."""
    return next(k for k in LEAVES if k.startswith(section + "."))


def _is_abbreviation(short: str, name: str) -> bool:
    """True if short is name[0] plus a subsequence of name[1:] ('lr' of 'learning_rate')."""
    if not short or not name or short[0] != name[0]:
        return False
    rest = iter(name[1:])
    return all(ch in rest for ch in short[1:])


def suggest(key: str) -> list[str]:
    """The valid dotted keys (at most two) the user most likely meant by ``key``."""
    parts = key.split(".")
    depth = 0
    while depth < len(parts) - 1 and ".".join(parts[: depth + 1]) in SECTIONS:
        depth += 1
    parent = ".".join(parts[:depth])
    rest = parts[depth:]
    if len(rest) == 1:  # a misspelt name inside a valid section
        name = rest[0]
        siblings = section_keys(parent)
        close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
        if close:
            return [join_key(parent, close[0])]
        elsewhere = [k for k in _ALL_KEYS if k.rsplit(".", 1)[-1] == name]  # wrong section
        if elsewhere:
            return elsewhere[:2]
        abbreviations = [s for s in siblings if _is_abbreviation(s, name)]
        if len(abbreviations) == 1:  # 'learning_rate' -> 'lr'
            return [join_key(parent, abbreviations[0])]
        return []
    # a misspelt section: compare whole dotted keys, or find the key under another section
    tail = ".".join(rest)
    ends = [k for k in _ALL_KEYS if k.endswith("." + tail)]
    if ends:
        return ends[:2]
    candidates = [k for k in _ALL_KEYS if k.count(".") == key.count(".")]
    return difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)


def keys_of(section: str) -> str:
    """The keys of a config section ('' = the top level), comma-separated, in schema order."""
    return ", ".join(section_keys(section))


def where_in(section: str) -> str:
    return f"under {section!r}" if section else "at the top level"


def valid_keys(section: str) -> str:
    """``valid keys under 'model' are: hidden_size, ...`` (or at the top level)."""
    return f"valid keys {where_in(section)} are: {keys_of(section)}"


def unknown_key_error(key: str, where: str) -> ConfigError:
    """``unknown key 'a.b' in WHERE; did you mean 'a.c'?`` (or the valid keys nearby)."""
    msg = f"unknown key {show(key)} in {where}"
    match = suggest(key)
    if match:
        return ConfigError(f"{msg}; did you mean {' or '.join(repr(m) for m in match)}?")
    parent = key
    while parent not in SECTIONS:
        parent = parent.rsplit(".", 1)[0] if "." in parent else ""
    return ConfigError(f"{msg}; {valid_keys(parent)}")


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


def key_name_error(name: str, value: Any, prefix: str, where: str) -> ConfigError:
    """A key of a file that is empty or written with dots ('train.epochs: 1' at the top)."""
    if not name:
        return ConfigError(f"empty key '' {where_in(prefix)} in {where}; {valid_keys(prefix)}")
    *sections, leaf = join_key(prefix, name).split(".")
    nested = f"{leaf}: {_inline_value(value)}"
    for part in reversed(sections):
        nested = f"{part}: {{{nested}}}"
    at = f" under {prefix!r}" if prefix else ""
    return ConfigError(
        f"dotted key {name!r}{at} in {where}; dotted names are for --set only,"
        f" write the nested form {nested} instead"
    )

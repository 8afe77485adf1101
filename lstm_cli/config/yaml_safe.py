"""The YAML layer: yaml.SafeLoader hardened for config files a user writes by hand.

On top of ``yaml.safe_load`` a config file may not give a key twice in one mapping (the
merge key ``<<`` included), may not make merge keys copy more than ``MAX_MERGED``
entries, and every error is one ``ConfigError`` naming the file, line and column. A
plain scalar holding ``:`` (``1:30``) stays a string, where YAML 1.1 reads it as a base-60
number (90), and an int padded with zeros (0123, 0x1F, 0b101: YAML 1.1 reads 0123 as
83) is refused: a number mistyped that way is an error instead of another number.

Merge keys follow the YAML merge-key rules, applied here rather than by PyYAML so that
a config means the same whatever PyYAML version is installed: the mapping's own keys
override merged ones, among merged mappings the first listed wins, and a mapping that
merges itself (directly or through a mapping it contains) adds nothing it lacks.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

from ..errors import ConfigError
from ..validate import show

__all__ = ["Loader", "load_yaml", "yaml_error", "MAX_MERGED"]

MAX_MERGED = 10_000  # entries merge keys may copy in one document; configs need a few dozen

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"  # a bare '=' key, which PyYAML reads as the str '='
_MERGE = object()  # the merge key '<<' among a mapping's keys


class _NoBase60:
    """An implicit resolver's pattern that never matches a value holding ':'."""

    def __init__(self, regexp):
        self.regexp = regexp

    def match(self, value):
        return None if ":" in value else self.regexp.match(value)


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys and bounds what merge keys copy.

    Merges of aliases of merges grow exponentially (nine levels of ``<<: [*a, *a, ...]``
    in a few hundred bytes would copy 2 * 9**8 entries), so every copied entry is counted.
    Both checks run in flatten_mapping, once per mapping node, before the merged entries
    are spliced in: after that, a merged key the mapping overrides looks like a duplicate.
    """

    yaml_implicit_resolvers = {
        first: [(tag, _NoBase60(rx) if tag in _NUMBER_TAGS else rx) for tag, rx in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream):
        super().__init__(stream)
        self._flattened = set()  # mapping nodes already merged (an alias shares its node)
        self._flattening = set()  # mapping nodes being merged (a merge cycle ends there)
        self._merged = 0

    def flatten_mapping(self, node):
        if node in self._flattened:
            return
        self._flattened.add(node)
        self._flattening.add(node)
        for key_node, _ in node.value:
            if key_node.tag == _VALUE_TAG:
                key_node.tag = "tag:yaml.org,2002:str"
        self._refuse_duplicate_keys(node)
        merged, own = [], []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            subs = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for sub in subs:
                if sub in self._flattening:  # it merges itself (a: &a {x: 1, <<: *a})
                    continue
                if not isinstance(sub, yaml.MappingNode):
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping or list of mappings for merging, but found {sub.id}",
                        sub.start_mark,
                    )
                self.flatten_mapping(sub)
                merged.append(sub.value)
                self._merged += len(sub.value)
            if self._merged > MAX_MERGED:
                raise ConstructorError(
                    None,
                    None,
                    f"merge keys ('<<') copy more than {MAX_MERGED} entries in this file"
                    " (merges of aliases multiply); write the mappings out",
                    key_node.start_mark,
                )
        # The mapping is built pair by pair, the last pair of a key winning: so the merged
        # mappings go first, the last-listed first, and the mapping's own keys last.
        node.value = [pair for pairs in reversed(merged) for pair in pairs] + own
        self._flattening.discard(node)

    def _refuse_duplicate_keys(self, node):
        seen = {}
        for key_node, _ in node.value:
            is_merge = key_node.tag == _MERGE_TAG
            key = _MERGE if is_merge else self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # unhashable key: PyYAML reports it
                continue
            if first is key_node:
                continue
            name = "'<<'" if is_merge else show(key)
            problem = f"duplicate key {name} (first given on line {first.start_mark.line + 1})"
            if is_merge:
                problem += "; merge several mappings with one key, <<: [*a, *b]"
                problem += " (the first listed wins)"
            raise ConstructorError(None, None, problem, key_node.start_mark)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as err:  # a date such as 2001-13-45, an int of 5000 digits
            what = {"int": "an int", "timestamp": "a date"}.get(node.tag.rsplit(":", 1)[-1])
            too_long = what == "an int" and len(str(node.value)) > 4000
            reason = "too many digits" if too_long else str(err)
            raise ConstructorError(
                None,
                None,
                f"cannot read {show(node.value)} as {what or node.tag} ({reason});"
                " put it in quotes if it is meant as text",
                node.start_mark,
            ) from None

    def construct_yaml_int(self, node):
        """YAML 1.1's int, but for its octal (0123), hexadecimal (0x1F) and binary (0b101)
        forms: a value padded with zeros is one of those to YAML 1.1 (0123 is 83), so a
        config holding one is an error instead of another number."""
        digits = str(node.value).replace("_", "").lstrip("+-")
        if len(digits) > 1 and digits[0] == "0":
            raise ConstructorError(
                None,
                None,
                f"{show(node.value)} is an octal, hexadecimal or binary number in YAML 1.1"
                f" (0123 reads as 83); write it in decimal without leading zeros, or in"
                " quotes if it is meant as text",
                node.start_mark,
            )
        return super().construct_yaml_int(node)

    def get_single_data(self):
        try:
            return super().get_single_data()
        except RecursionError:  # PyYAML composes and constructs nested nodes recursively
            raise yaml.YAMLError("lists or mappings nested too deeply") from None


def yaml_error(where: str, err: yaml.YAMLError) -> ConfigError:
    """``invalid YAML in WHERE at line L, column C: PROBLEM`` (with where a construct began)."""
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
        began = f"line {context_mark.line + 1}, column {context_mark.column + 1}"
        msg += f" ({context} started at {began})"
    if "'\\t'" in problem:
        msg += " (YAML does not allow tabs for indentation; use spaces)"
    return ConfigError(msg)


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)


def load_yaml(text: str, where: str) -> Any:
    """The document in ``text``, loaded with Loader; errors name ``where`` (the file)."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as err:
        raise yaml_error(where, err) from None

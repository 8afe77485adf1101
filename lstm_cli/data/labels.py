"""Labels: checking them as read, the label -> class-index map, stratified splits.

Labels are integers or strings, never both in one dataset; in memory int labels are
``int64`` and string labels a ``'<U..'`` array. The empty string is not a label, nor is
text that is not valid Unicode (it could not be printed or written as UTF-8).
"""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import numpy as np

from ..errors import ConfigError, DataError
from ..validate import Interval, check, is_int, param_error

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def code_point_problem(cp):
    """Why code point ``cp`` cannot be in a label (it could not be printed or written as
    UTF-8), or None when it can."""
    if 0xD800 <= cp <= 0xDFFF:
        return f"U+{cp:04X}, a lone surrogate"
    if cp > 0x10FFFF:
        return f"code point 0x{cp:X}, beyond U+10FFFF"
    return None


def label_text_problem(label):
    """Why the str ``label`` is not valid Unicode text (so could not be printed or written as
    UTF-8), e.g. "U+D800, a lone surrogate (character 3)"; None when it is fine."""
    try:
        label.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON's "\ud800" escape decodes to a lone surrogate
        return f"{code_point_problem(ord(label[exc.start]))} (character {exc.start + 1})"
    return None


def _label_kind(value):
    """'int' or 'str' for a valid label value, else None."""
    if isinstance(value, str):
        return "str"
    if is_int(value):
        return "int"
    return None


def labels_to_array(values, source):
    """A list of Python ints or strs (one type, validated) -> int64 or unicode array."""
    kinds = {_label_kind(v) for v in values}
    if None in kinds or len(kinds) > 1:
        raise DataError(f"{source}: labels must be all ints or all non-empty strings")
    if "str" in kinds:
        if any(v == "" for v in values):
            raise DataError(f"{source}: a label is the empty string")
        return np.array(values, dtype=str)
    ints = [int(v) for v in values]
    if ints and (min(ints) < INT64_MIN or max(ints) > INT64_MAX):
        raise DataError(f"{source}: integer label out of the int64 range")
    return np.array(ints, dtype=np.int64)


class LabelCollector:
    """Collects one label per sequence, checking type consistency as it goes."""

    def __init__(self, source, require_labels):
        self.source = source
        self.require = require_labels
        self.values = []
        self.kind = None
        self.kind_where = None
        self.missing_where = None
        self.present_where = None

    def add(self, value, where, missing=False):
        """Add a label (already converted to int or str) read at ``where`` ('line 3')."""
        if missing:
            if self.require:
                raise DataError(f"{self.source} {where}: missing label (labels are required)")
            if self.present_where is not None:
                raise DataError(
                    f"{self.source} {where}: missing label, but {self.present_where} has one; give"
                    " every sequence a label or none"
                )
            self.missing_where = self.missing_where or where
            return
        if self.missing_where is not None:
            raise DataError(
                f"{self.source} {where}: has a label, but {self.missing_where} has none; give"
                " every sequence a label or none"
            )
        self.present_where = self.present_where or where
        kind = "str" if isinstance(value, str) else "int"
        if self.kind is None:
            self.kind, self.kind_where = kind, where
        elif kind != self.kind:
            expected = "strings" if self.kind == "str" else "integers"
            raise DataError(
                f"{self.source} {where}: label {value!r} is"
                f" {'a string' if kind == 'str' else 'an integer'}, but earlier labels are"
                f" {expected} (from {self.kind_where}); use one label type per file"
            )
        self.values.append(value)

    def result(self):
        """The labels as an array, or None when no sequence had one."""
        return None if self.present_where is None else labels_to_array(self.values, self.source)


def _no_labels(prefix=""):
    return DataError(f"{prefix}the dataset has no labels")


def class_list(labels):
    """Sorted unique labels as plain Python ints or strs (the label -> index map)."""
    if labels is None:
        raise _no_labels()
    return np.unique(np.asarray(labels)).tolist()


def encode_labels(labels, classes, source=""):
    """Map each label to its index in ``classes``; (N,) int64.

    Raises DataError naming the first label (and its 0-based sequence index) that is
    not among ``classes``, e.g. a test label never seen in training, or string labels
    against integer classes.
    """
    prefix = f"{source}: " if source else ""
    if labels is None:
        raise _no_labels(prefix)
    labels = np.asarray(labels)
    classes = list(classes)
    if not classes:
        raise DataError(f"{prefix}no classes to encode labels against")
    cls_arr = np.array(classes)
    if cls_arr.ndim != 1 or cls_arr.dtype.kind not in "iuU":
        raise DataError(f"{prefix}classes must be a list of ints or strs, got {classes[:5]!r}")
    if np.unique(cls_arr).size != cls_arr.size:
        raise DataError(f"{prefix}classes contain duplicates: {classes!r}")
    preview = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    lab_str = labels.dtype.kind == "U"
    cls_str = cls_arr.dtype.kind == "U"
    if lab_str != cls_str:
        first = labels[0].item()
        raise DataError(
            f"{prefix}label {first!r} (sequence 0) is not one of the {len(classes)} classes"
            f" ({preview}): the labels are {'strings' if lab_str else 'integers'} but the classes"
            f" are {'strings' if cls_str else 'integers'}"
        )
    order = np.argsort(cls_arr, kind="stable")  # (K,)
    sorted_cls = cls_arr[order]
    pos = np.clip(np.searchsorted(sorted_cls, labels), 0, len(classes) - 1)  # (N,)
    unknown = np.flatnonzero(sorted_cls[pos] != labels)
    if unknown.size:
        i = int(unknown[0])
        raise DataError(
            f"{prefix}label {labels[i].item()!r} (sequence {i}) is not one of the {len(classes)}"
            f" classes ({preview})"
        )
    return order[pos].astype(np.int64)


def stratified_split(labels, fraction, rng):
    """Seeded stratified split -> (train_idx, valid_idx), both sorted int64.

    Each class (in sorted order) contributes ``round(fraction * count)`` random
    members to validation (halves round up), at least 1 when the class has >= 2
    members and ``fraction > 0``, and at most ``count - 1``, so training keeps every
    class (a singleton class stays in training).
    """
    if labels is None:
        raise DataError("stratified_split needs labels")
    fraction_range = Interval(float, 0.0, 1.0)
    if not isinstance(fraction, numbers.Real):  # Interval would read a str such as "0.2"
        raise param_error("valid_fraction", fraction_range.describe(), fraction, error=ConfigError)
    fraction = check("valid_fraction", fraction, fraction_range, error=ConfigError)
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    valid = []
    for k in range(classes.size):
        members = np.flatnonzero(inverse == k)  # (count,) ascending
        count = members.size
        take = math.floor(Fraction(str(fraction)) * count + Fraction(1, 2))  # the decimal given
        if fraction > 0 and count >= 2:
            take = max(take, 1)
        take = min(take, count - 1)
        if take > 0:
            valid.append(rng.permutation(members)[:take])
    valid_idx = (
        np.sort(np.concatenate(valid)).astype(np.int64) if valid else np.zeros(0, dtype=np.int64)
    )
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[valid_idx] = False
    return np.flatnonzero(mask).astype(np.int64), valid_idx


def stratified_folds(labels, k, rng) -> list[np.ndarray]:
    """Seeded stratified k-fold assignment -> k sorted, disjoint int64 index arrays.

    Each class (in sorted order) is shuffled and dealt round-robin, continuing from the
    fold where the previous class stopped, so fold sizes differ by at most one and each
    fold holds ``count // k`` or ``count // k + 1`` members of every class. A class with
    a single member is in no fold: it stays in the training part of every fold, as
    stratified_split keeps a singleton in training.
    """
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    folds: list[list[np.ndarray]] = [[] for _ in range(k)]
    start = 0
    for c in range(classes.size):
        members = rng.permutation(np.flatnonzero(inverse == c))  # (count,)
        if members.size < 2:
            continue
        for j in range(k):
            folds[(start + j) % k].append(members[j::k])
        start = (start + members.size) % k
    return [np.sort(np.concatenate(f or [np.zeros(0, np.int64)])).astype(np.int64) for f in folds]

"""Sequence datasets: readers, writers, validation, batching (README.md, "Data formats").

A dataset is N sequences of T_n >= 1 steps with F features each, plus one label per
sequence. In memory it is a :class:`SequenceDataset`: every step of every sequence
stacked into ``x`` (total_steps, F), with ``offsets`` (N+1,) marking where each
sequence starts, so that a memory-mapped ``x`` is never copied whole.

Formats (``load_dataset`` picks one from the extension, or take ``format=``):

- **JSONL** (``.jsonl``, ``.json-lines``): one object per line,
  ``{"x": [[f1, ..., fF], ...], "y": label}``. Blank lines are skipped; other keys
  are ignored. ``NaN``/``Infinity`` tokens are parsed and then rejected.
- **NPZ** (``.npz``): arrays ``x`` (total_steps, F), ``lengths`` (N,) int and
  optional ``y`` (N,) int or unicode; loaded with ``allow_pickle=False``.
- **NPY folder** (a directory): ``x.npy``, ``lengths.npy``, optional ``y.npy``;
  ``x.npy`` is memory-mapped read-only and must be float32/float64.
- **CSV, long form** (``.csv``): a header row, then one row per time step. Columns
  ``id`` (sequence id) and ``label`` by default; every other column is a feature,
  in file order. The rows of a sequence are contiguous and in time order. Blank
  rows are skipped.
- **UEA/UCR .ts** (``.ts``): ``@`` header lines (``#`` comments and blank lines
  allowed before ``@data``), then one case per line: dimensions separated by
  ``:``, values by ``,``, the label last. Missing values (``?``) and time stamps
  are not supported.

Labels. Labels are integers or strings, never both in one file, and keep their
type from the file: JSONL keeps the JSON type (an integral float such as ``1.0``
is accepted as the int ``1``; ``2.5``, booleans and ``null`` are rejected); .ts
labels are always the strings as written (``"1"``); CSV labels are ints when
every label cell of the file is a canonical decimal integer (``-3``, ``0``,
``17``; not ``007`` or ``+1``) and strings otherwise (override with
``label_type="str"`` or ``"int"``); NPZ/NPY labels are int or unicode arrays
(an integral float array is accepted as ints). The empty string is not a label,
nor is text that is not valid Unicode (a lone surrogate such as JSON's ``"\\ud800"``,
or in a unicode array a code point beyond U+10FFFF): it could not be printed or
written. CSV and .ts files are strict UTF-8, which cannot encode either.
In memory, int labels are ``int64`` and string labels a ``'<U..'`` array.

Values. Feature values must be finite and within float32's range (|x| <= 3.4e38)
in every format and whatever the model's dtype: a larger value would become Inf in
a float32 model and overflow the normalisation statistics.

Errors. Every problem with a file's content raises :class:`DataError` with one
line naming the file, the 1-based line (text formats) or the array and its
0-based index (NPZ/NPY), what is wrong and what was expected. Steps and features
inside a JSONL line or a .ts case are counted from 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import mmap as _mmap
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError, LstmCliError

__all__ = [
    "SequenceDataset",
    "load_dataset",
    "read_jsonl",
    "read_npz",
    "read_npy_dir",
    "read_csv",
    "read_ts",
    "write_jsonl",
    "write_npz",
    "write_npy_dir",
    "write_csv",
    "write_ts",
    "encode_labels",
    "class_list",
    "stratified_split",
    "feature_stats",
    "feature_summary",
    "pad_batch",
    "make_batches",
    "padded_fraction",
    "FORMATS",
]

FORMATS = ("auto", "jsonl", "npz", "npy", "csv", "ts")
_EXTENSIONS = {".jsonl": "jsonl", ".json-lines": "jsonl", ".npz": "npz", ".csv": "csv", ".ts": "ts"}
_CSV_OPTION_KEYS = ("id_column", "label_column", "feature_columns", "label_type")
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
NPY_FOLDER_ARRAYS = ("x", "lengths", "y")  # an .npy data folder's files, each <name>.npy
_FLOAT32_MAX = float(
    np.finfo(np.float32).max
)  # the largest feature value accepted, whatever model.dtype


# ---------------------------------------------------------------------------
# The in-memory dataset


def _ranges(starts, lens):
    """Concatenated index ranges [starts[k], starts[k] + lens[k]) as one int64 array."""
    starts = np.asarray(starts, dtype=np.int64)  # (B,)
    lens = np.asarray(lens, dtype=np.int64)  # (B,)
    total = int(lens.sum())
    ends = np.cumsum(lens)  # (B,)
    # position inside its own range, for every output element: (total,)
    within = np.arange(total, dtype=np.int64) - np.repeat(ends - lens, lens)
    return np.repeat(starts, lens) + within  # (total,)


@dataclass(eq=False)
class SequenceDataset:
    """N variable-length sequences stored as one (total_steps, F) array.

    Attributes
    ----------
    x : ndarray of shape (total_steps, F), floating; may be a read-only ``np.memmap``
    offsets : ndarray of shape (N + 1,), int64; sequence n is ``x[offsets[n]:offsets[n+1]]``
    labels : ndarray of shape (N,), int64 or unicode, or None when the file had none
    source : str, the file the data came from (used in messages)
    """

    x: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray | None
    source: str = "<memory>"

    def __post_init__(self):
        where = self.source
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 2 or self.x.dtype.kind != "f":
            raise DataError(f"{where}: x must be a 2-D floating array (total_steps, F)")
        offsets = np.asarray(self.offsets)
        if offsets.ndim != 1 or offsets.size < 1 or offsets.dtype.kind not in "iu":
            raise DataError(f"{where}: offsets must be a 1-D integer array of length N+1")
        self.offsets = offsets.astype(np.int64, copy=False)
        if self.offsets[0] != 0 or self.offsets[-1] != self.x.shape[0]:
            raise DataError(
                f"{where}: offsets must start at 0 and end at len(x) = {self.x.shape[0]},"
                f" got {int(self.offsets[0])} and {int(self.offsets[-1])}"
            )
        if np.any(np.diff(self.offsets) < 1):
            raise DataError(f"{where}: every sequence needs at least 1 step")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (len(self),) or labels.dtype.kind not in "iuU":
                raise DataError(
                    f"{where}: labels must be an int or str array of shape ({len(self)},)"
                )
            self.labels = labels.astype(np.int64) if labels.dtype.kind in "iu" else labels

    @classmethod
    def from_sequences(cls, sequences, labels=None, source="<memory>", dtype=np.float64):
        """Build a dataset from a list of (T_n, F) arrays and optional labels."""
        seqs = [np.asarray(s, dtype=dtype) for s in sequences]
        if not seqs:
            raise DataError(f"{source}: no sequences")
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([s.shape[0] for s in seqs])
        lab = None if labels is None else _labels_to_array(list(labels), source)
        return cls(np.concatenate(seqs, axis=0), offsets, lab, source)

    @property
    def lengths(self):
        """(N,) int64 number of steps of each sequence."""
        return np.diff(self.offsets)

    @property
    def starts(self):
        """(N,) int64 first row of each sequence in ``x``."""
        return self.offsets[:-1]

    def view(self, indices):
        """The sequences ``indices`` as a SequenceView: nothing is copied."""
        return SequenceView(self, indices)

    def __len__(self):
        return self.offsets.shape[0] - 1

    @property
    def num_features(self):
        """F, the number of features per step."""
        return self.x.shape[1]

    def sequence(self, n):
        """(T_n, F) view of sequence n (negative n counts from the end)."""
        num = len(self)
        if not -num <= n < num:
            raise IndexError(f"sequence index {n} out of range for {num} sequences")
        n = n % num
        return self.x[self.offsets[n] : self.offsets[n + 1]]

    def subset(self, indices):
        """A new in-memory dataset holding only ``indices`` (in that order); copies those rows only."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (M,)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for {len(self)} sequences")
        idx = idx % max(len(self), 1)
        lens = self.lengths[idx]  # (M,)
        rows = _ranges(self.offsets[idx], lens)  # (sum lens,)
        offsets = np.zeros(idx.size + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens)
        x = np.asarray(self.x[rows])  # fancy index: a copy of just these rows, also for a memmap
        labels = None if self.labels is None else self.labels[idx]
        return SequenceDataset(x, offsets, labels, self.source)


class SequenceView:
    """Some sequences of a SequenceDataset, chosen by index, without copying their rows
    (a memory-mapped dataset stays on disk; a training/validation split costs only the
    index arrays). Offers what batching, normalisation statistics and inference read:
    ``x``, ``starts``, ``lengths``, ``labels``, ``num_features``, ``source``, ``len()``.
    """

    def __init__(self, base, indices):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)  # (M,)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"view index out of range for {len(base)} sequences")

    x = property(lambda self: self.base.x)
    source = property(lambda self: self.base.source)
    num_features = property(lambda self: self.base.num_features)
    starts = property(lambda self: self.base.starts[self.indices])
    lengths = property(lambda self: self.base.lengths[self.indices])

    @property
    def labels(self):
        return None if self.base.labels is None else self.base.labels[self.indices]

    def __len__(self):
        return self.indices.size

    def sequence(self, n):
        return self.base.sequence(int(self.indices[n]))

    def subset(self, indices):
        """A new in-memory SequenceDataset of the view's sequences ``indices`` (rows copied)."""
        return self.base.subset(self.indices[np.asarray(indices, dtype=np.int64)])

    def view(self, indices):
        return SequenceView(self.base, self.indices[np.asarray(indices, dtype=np.int64)])


# ---------------------------------------------------------------------------
# Shared helpers


def _existing_file(path):
    """``path`` if it is an existing regular file, else a DataError."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a data file")
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    return path


def _read_bytes(path):
    """File content as bytes; a missing/unreadable file becomes a DataError."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from None


def _read_text(path):
    """File content decoded as strict UTF-8 (a leading BOM is dropped)."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _code_point_problem(cp):
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
        return f"{_code_point_problem(ord(label[exc.start]))} (character {exc.start + 1})"
    return None


def _label_kind(value):
    """'int' or 'str' for a valid label value, else None."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return "int"
    return None


def _labels_to_array(values, source):
    """A list of Python ints or strs (one type, validated) -> int64 or unicode array."""
    kinds = {_label_kind(v) for v in values}
    if None in kinds or len(kinds) > 1:
        raise DataError(f"{source}: labels must be all ints or all non-empty strings")
    if "str" in kinds:
        if any(v == "" for v in values):
            raise DataError(f"{source}: a label is the empty string")
        return np.array(values, dtype=str)
    ints = [int(v) for v in values]
    if ints and (min(ints) < _INT64_MIN or max(ints) > _INT64_MAX):
        raise DataError(f"{source}: integer label out of the int64 range")
    return np.array(ints, dtype=np.int64)


class _LabelCollector:
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
                    f"{self.source} {where}: missing label, but {self.present_where} has one;"
                    " give every sequence a label or none"
                )
            self.missing_where = self.missing_where or where
            return
        if self.missing_where is not None:
            raise DataError(
                f"{self.source} {where}: has a label, but {self.missing_where} has none;"
                " give every sequence a label or none"
            )
        self.present_where = self.present_where or where
        kind = "str" if isinstance(value, str) else "int"
        if self.kind is None:
            self.kind, self.kind_where = kind, where
        elif kind != self.kind:
            expected = "strings" if self.kind == "str" else "integers"
            raise DataError(
                f"{self.source} {where}: label {value!r} is {'a string' if kind == 'str' else 'an integer'},"
                f" but earlier labels are {expected} (from {self.kind_where}); use one label type per file"
            )
        self.values.append(value)

    def result(self):
        if self.present_where is None:
            return None
        if self.kind == "str":
            return np.array(self.values, dtype=str)
        return np.array(self.values, dtype=np.int64)


def _finite_or_raise(arr, describe):
    """Raise DataError naming the first cell that is NaN, Inf or beyond float32's range
    (|x| > 3.4e38: it would become Inf in a float32 model and overflow the statistics);
    ``describe(i, j, v)`` words the place."""
    if arr.dtype.kind == "f" and np.finfo(arr.dtype).max <= _FLOAT32_MAX:
        ok = np.isfinite(arr)  # float16/float32 values always fit
    else:
        ok = (arr >= -_FLOAT32_MAX) & (arr <= _FLOAT32_MAX)  # False for NaN as well
    if not ok.all():
        i, j = (int(k) for k in np.argwhere(~ok)[0])
        v = arr[i, j]
        if not np.isfinite(v):
            raise DataError(describe(i, j, v) + "; NaN and Inf values are not allowed")
        raise DataError(
            describe(i, j, v)
            + f"; values must lie within float32's range (|x| <= {_FLOAT32_MAX:.4g})"
        )


def _build(chunks, label_collector, source, what):
    if not chunks:
        raise DataError(f"{source}: no sequences ({what})")
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([c.shape[0] for c in chunks])
    x = np.concatenate(chunks, axis=0)
    return SequenceDataset(x, offsets, label_collector.result(), source)


# ---------------------------------------------------------------------------
# JSONL


def _describe_bad_x(x):
    """Explain why a JSON 'x' value is not a non-empty list of equal-length numeric rows."""
    if not isinstance(x, list):
        return f"'x' is {_json_type(x)}, expected a list of time steps (lists of numbers)"
    if not x:
        return "'x' is an empty list; every sequence needs at least 1 step"
    width = None
    for t, row in enumerate(x, start=1):
        if not isinstance(row, list):
            return f"'x' step {t} is {_json_type(row)}, expected a list of numbers"
        if width is None:
            width = len(row)
        elif len(row) != width:
            return f"'x' step {t} has {len(row)} features, step 1 has {width}; all steps need the same count"
        for f, v in enumerate(row, start=1):
            if isinstance(v, bool):
                return (
                    f"'x' step {t}, feature {f} is a boolean ({json.dumps(v)}), expected a number"
                )
            if isinstance(v, int):
                try:
                    float(v)
                except OverflowError:
                    return f"'x' step {t}, feature {f} is an integer too large for a float"
            elif not isinstance(v, float):
                return f"'x' step {t}, feature {f} is {_json_type(v)}, expected a number"
    if width == 0:
        return "'x' steps have no features; expected at least 1 number per step"
    return None


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({json.dumps(v)})"
    if isinstance(v, str):
        shown = v if len(v) <= 20 else v[:17] + "..."
        return f"a string ({shown!r})"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return f"a number ({v!r})"


def _jsonl_matrix(x, line):
    """JSON 'x' -> (T, F) float64, or a reason string."""
    try:
        arr = np.array(x)
        ok = arr.ndim == 2 and arr.dtype.kind in "iuf" and arr.shape[0] > 0 and arr.shape[1] > 0
    except (ValueError, TypeError, OverflowError, RecursionError):
        ok = False
    # np.array silently turns a boolean mixed with numbers into 1/0: look closer if the text has one
    if not ok or "true" in line or "false" in line:
        reason = _describe_bad_x(x)
        if reason is not None:
            return reason
        if not ok:  # well-formed, but an integer beyond int64 made np.array use objects
            try:
                return np.array(x, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):
                return "'x' must be a non-empty list of equal-length lists of numbers"
    return arr.astype(np.float64, copy=False)


def _jsonl_label(obj, line_no, where):
    """('int'|'str' label value, missing flag) from a JSONL object; DataError if malformed."""
    if "y" not in obj:
        return None, True
    y = obj["y"]
    if isinstance(y, bool) or y is None:
        raise DataError(f"{where}: 'y' is {_json_type(y)}; labels must be strings or integers")
    if isinstance(y, float):
        if not (math.isfinite(y) and y.is_integer()):
            raise DataError(
                f"{where}: 'y' is {y!r}; labels must be strings or integers (not fractional numbers)"
            )
        y = int(y)
    if isinstance(y, int):
        if not _INT64_MIN <= y <= _INT64_MAX:
            raise DataError(f"{where}: 'y' = {y} does not fit in a 64-bit integer")
        return y, False
    if isinstance(y, str):
        if y == "":
            raise DataError(f"{where}: 'y' is the empty string; labels must be non-empty")
        problem = label_text_problem(y)
        if problem is not None:
            raise DataError(
                f"{where}: 'y' is {_json_type(y)}, which holds {problem}; labels must be"
                " valid Unicode text"
            )
        return y, False
    raise DataError(f"{where}: 'y' is {_json_type(y)}; labels must be strings or integers")


class _DuplicateKey(Exception):
    pass


def _refuse_duplicate_keys(pairs):
    """json object hook: a key given twice is an error (the json module keeps the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def read_jsonl(path, require_labels=True):
    """Read a JSONL dataset: one ``{"x": [[...], ...], "y": label}`` object per line.

    Blank (whitespace-only) lines are skipped; keys other than "x" and "y" are
    ignored; a key given twice in one object is an error. Labels keep their JSON type: int or str (an integral float such as
    ``3.0`` counts as the int 3; other floats, booleans and null are rejected),
    one type per file. Each sequence must have at least 1 step, every step the same
    number F >= 1 of finite numbers (booleans are not numbers), and F must match the
    first sequence. Raises DataError naming the file and 1-based line otherwise.
    """
    source = str(path)
    text = _read_text(path)
    lines = text.split("\n")
    truncated_candidate = len(lines) - 1 if not text.endswith("\n") else None
    chunks = []
    labels = _LabelCollector(source, require_labels)
    width = None
    width_line = None
    decoder = json.JSONDecoder(object_pairs_hook=_refuse_duplicate_keys)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        line_no = i + 1
        where = f"{source} line {line_no}"
        try:
            obj = decoder.decode(line)
        except json.JSONDecodeError as exc:
            hint = " (the last line looks truncated)" if i == truncated_candidate else ""
            if (
                "\r" in line.rstrip()
            ):  # lines split on LF only: CR-only endings make the file one line
                hint = " (a carriage return inside the line: CR-only line endings? save the file with LF or CRLF)"
            raise DataError(
                f"{where}: invalid JSON: {exc.msg} at column {exc.colno}{hint}"
            ) from None
        except RecursionError:
            raise DataError(f"{where}: invalid JSON: nested too deeply") from None
        except _DuplicateKey as dup:
            raise DataError(f"{where}: key {dup.args[0]!r} appears twice in one object") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{where}: expected a JSON object with keys 'x' and 'y', got {_json_type(obj)}"
            )
        if "x" not in obj:
            raise DataError(f"{where}: missing key 'x' (the sequence, a list of time steps)")
        arr = _jsonl_matrix(obj["x"], line)
        if isinstance(arr, str):
            raise DataError(f"{where}: {arr}")
        if width is None:
            width, width_line = arr.shape[1], line_no
        elif arr.shape[1] != width:
            raise DataError(
                f"{where}: 'x' has {arr.shape[1]} features per step, expected {width} (as on line {width_line})"
            )
        _finite_or_raise(arr, lambda t, f, v: f"{where}: 'x' step {t + 1}, feature {f + 1} is {v}")
        value, missing = _jsonl_label(obj, line_no, where)
        labels.add(value, f"line {line_no}", missing)
        chunks.append(arr)
    return _build(chunks, labels, source, "the file is empty or has only blank lines")


def write_jsonl(ds, path):
    """Write ``ds`` as JSONL; floats are written in shortest round-trip form."""
    labels = None if ds.labels is None else ds.labels.tolist()
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for n in range(len(ds)):
            obj = {"x": np.asarray(ds.sequence(n), dtype=np.float64).tolist()}
            if labels is not None:
                obj["y"] = labels[n]
            fh.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
            fh.write("\n")


# ---------------------------------------------------------------------------
# NPZ and NPY folder


def _check_x_array(x, name, source, allow_int):
    if x.ndim != 2:
        raise DataError(
            f"{source}: {name} has {x.ndim} dimension(s) (shape {x.shape}), expected 2 (total_steps, features)"
        )
    if x.shape[1] < 1:
        raise DataError(f"{source}: {name} has shape {x.shape}; expected at least 1 feature")
    if x.dtype.kind == "f":
        return x
    if x.dtype.kind in "iu" and allow_int:
        return x.astype(np.float64)
    expected = "float32 or float64" if not allow_int else "a floating or integer dtype"
    kind = (
        "boolean"
        if x.dtype.kind == "b"
        else "non-numeric"
        if x.dtype.kind not in "iuc"
        else "unsupported"
    )
    raise DataError(f"{source}: {name} has {kind} dtype {x.dtype}, expected {expected}")


def _check_lengths(lengths, rows, name, x_name, source):
    if lengths.ndim != 1:
        raise DataError(
            f"{source}: {name} has {lengths.ndim} dimension(s) (shape {lengths.shape}), expected 1"
        )
    if lengths.dtype.kind not in "iu":
        raise DataError(f"{source}: {name} has dtype {lengths.dtype}, expected integers")
    if lengths.size == 0:
        raise DataError(f"{source}: {name} is empty; no sequences")
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        raise DataError(
            f"{source}: {name}[{bad[0]}] is {lengths[bad[0]]}; every sequence needs at least 1 step"
        )
    big = np.flatnonzero(lengths > rows)
    if big.size:
        raise DataError(
            f"{source}: {name}[{big[0]}] is {lengths[big[0]]}, more than the {rows} rows of {x_name}"
        )
    total = int(lengths.sum(dtype=np.int64))  # each length <= rows: no overflow for any real file
    if total != rows:
        raise DataError(
            f"{source}: {name} sums to {total}, but {x_name} has {rows} rows; they must match"
        )
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths, dtype=np.int64)
    return offsets


def _check_y(y, n, name, source):
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(
            f"{source}: {name} has shape {y.shape}, expected ({n},), one label per sequence"
        )
    kind = y.dtype.kind
    if kind == "U":
        bad = np.flatnonzero(y == "")
        if bad.size:
            raise DataError(
                f"{source}: {name}[{bad[0]}] is the empty string; labels must be non-empty"
            )
        # the raw UCS-4 code points, one row per label: numpy stores surrogates and values
        # beyond U+10FFFF that Python cannot print, write as UTF-8 or (the latter) even read
        codes = np.ascontiguousarray(y, dtype=y.dtype.newbyteorder("<")).view("<u4").reshape(n, -1)
        bad_code = (codes >= 0xD800) & ((codes <= 0xDFFF) | (codes > 0x10FFFF))  # (N, chars)
        bad = np.flatnonzero(bad_code.any(axis=1))
        if bad.size:
            i = int(bad[0])
            k = int(np.flatnonzero(bad_code[i])[0])
            raise DataError(
                f"{source}: {name}[{i}] holds {_code_point_problem(int(codes[i, k]))} (character {k + 1});"
                " labels must be valid Unicode text"
            )
        return y
    if kind in "iu":
        if kind == "u" and y.size and y.max() > _INT64_MAX:
            raise DataError(f"{source}: {name} holds values beyond the int64 range")
        return y.astype(np.int64)
    if kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) >= 2.0**63))
        if bad.size:
            raise DataError(
                f"{source}: {name}[{bad[0]}] is {y[bad[0]]}; labels must be integers or strings"
            )
        return y.astype(np.int64)
    hint = " (bytes); store labels as unicode strings (np.str_)" if kind == "S" else ""
    raise DataError(
        f"{source}: {name} has dtype {y.dtype}{hint}, expected integer or unicode labels"
    )


def _chunk_rows(x, target_bytes=16 << 20):
    """Rows per chunk so that a float64 copy of one chunk is about target_bytes."""
    return max(1, target_bytes // (8 * max(1, x.shape[1] if x.ndim > 1 else 1)))


def _check_finite_chunked(x, name, source, chunk_rows=None):
    chunk_rows = chunk_rows or _chunk_rows(x)
    for start in range(0, x.shape[0], chunk_rows):
        block = np.asarray(x[start : start + chunk_rows])
        _finite_or_raise(block, lambda i, j, v: f"{source}: {name}[{start + i}, {j}] is {v}")
        release_pages(x)  # a memory-mapped file never becomes resident as a whole


def _npz_member(npz, key, source):
    try:
        value = npz[key]
    except ValueError as exc:
        if "Object arrays" in str(exc) or "allow_pickle" in str(exc):
            raise DataError(
                f"{source}: array '{key}' is an object array; store numbers as float/int arrays"
                " and labels as int or unicode (np.str_) arrays"
            ) from None
        raise DataError(f"{source}: array '{key}' cannot be read: {exc}") from None
    except Exception as exc:  # zipfile/zlib/format errors of a damaged archive member
        raise DataError(
            f"{source}: array '{key}' cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(value, np.ndarray):  # numpy hands back the raw bytes of a non-.npy member
        member = key if key in npz.zip.namelist() else f"{key}.npy"  # numpy prefers the bare name
        raise DataError(
            f"{source}: array '{key}' (zip member '{member}') is not a .npy array (no .npy header);"
            " write the archive with np.savez"
        )
    return value


def read_npz(path, require_labels=True):
    """Read an NPZ dataset with arrays ``x`` (total_steps, F), ``lengths`` (N,), ``y`` (N,).

    Loaded with ``allow_pickle=False``; object arrays are refused. ``x`` must be 2-D
    float or int (ints become float64) and finite; ``lengths`` 1-D integers >= 1
    summing to ``len(x)``; ``y`` 1-D int or unicode with N entries (an integral float
    array is accepted as ints). ``y`` may be absent when ``require_labels`` is False.
    """
    source = str(path)
    # Open the file here: np.load leaks its own handle when the zip directory is damaged.
    with open(_existing_file(path), "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic.startswith(b"\x93NUM"):
            raise DataError(
                f"{source}: holds a single .npy array, expected an .npz archive with x, lengths, y"
            )
        if magic not in (
            b"PK\x03\x04",
            b"PK\x05\x06",
        ):  # not a zip (or empty zip): np.load would unpickle
            raise DataError(
                f"{source}: not a valid .npz archive (no zip signature); expected arrays "
                f"x, lengths, y"
            )
        try:
            npz = np.load(fh, allow_pickle=False)
        except Exception as exc:  # numpy/zipfile raise assorted errors on damaged archives
            raise DataError(
                f"{source}: not a valid .npz archive ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(
                f"{source}: holds a single .npy array, expected an .npz archive with x, lengths, y"
            )
        with npz:
            keys = set(npz.files)
            found = ", ".join(sorted(keys)) or "none"
            for key in ("x", "lengths"):
                if key not in keys:
                    raise DataError(f"{source}: missing array '{key}' (found: {found})")
            if require_labels and "y" not in keys:
                raise DataError(
                    f"{source}: missing array 'y' (labels are required; found: {found})"
                )
            x = _check_x_array(_npz_member(npz, "x", source), "array 'x'", source, allow_int=True)
            lengths = _npz_member(npz, "lengths", source)
            offsets = _check_lengths(lengths, x.shape[0], "array 'lengths'", "array 'x'", source)
            y = None
            if "y" in keys:
                y = _check_y(_npz_member(npz, "y", source), offsets.size - 1, "array 'y'", source)
    _check_finite_chunked(x, "array 'x'", source)
    return SequenceDataset(x, offsets, y, source)


def _advise_random(arr):
    """Batches read scattered sequences: turn off the kernel's read-ahead on the memory map
    (it would bring in ~128 KB around every sequence touched and inflate RSS)."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(_mmap, "MADV_RANDOM"):
        try:
            mm.madvise(_mmap.MADV_RANDOM)
        except (OSError, ValueError):
            pass
    return arr


def _load_npy(path, mmap, source, name):
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":  # np.load would take the file for a pickle
            raise DataError(
                f"{source}: {name} is not a .npy file (no .npy header); save arrays with np.save"
            )
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        return _advise_random(arr) if mmap else arr
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except DataError:
        raise
    except ValueError as exc:
        if any(s in str(exc) for s in ("allow_pickle", "Object arrays", "Python objects")):
            raise DataError(
                f"{source}: {name} is an object array; store numbers as float/int arrays"
                " and labels as int or unicode (np.str_) arrays"
            ) from None
        raise DataError(f"{source}: {name} is not a valid .npy file ({exc})") from None
    except Exception as exc:  # numpy raises assorted errors on damaged headers
        raise DataError(
            f"{source}: {name} is not a valid .npy file ({type(exc).__name__}: {exc})"
        ) from None


def read_npy_dir(path, require_labels=True, mmap=True):
    """Read a folder holding ``x.npy``, ``lengths.npy`` and optional ``y.npy``.

    ``x.npy`` is memory-mapped read-only (``mmap_mode="r"``) when ``mmap`` is True
    and must then be float32/float64, since converting would copy it whole. Same
    checks as :func:`read_npz`; the finiteness check reads ``x`` in chunks.
    """
    source = str(path)
    if not os.path.exists(path):
        raise DataError(f"data file not found: {source}")
    if not os.path.isdir(path):
        raise DataError(f"{source}: expected a directory holding x.npy, lengths.npy and y.npy")
    names = {k: os.path.join(path, f"{k}.npy") for k in NPY_FOLDER_ARRAYS}
    for key in ("x", "lengths") + (("y",) if require_labels else ()):
        if not os.path.isfile(names[key]):
            ext = next((e for e in _EXTENSIONS if source.lower().rstrip("/\\").endswith(e)), None)
            if ext is not None:  # e.g. a folder named train.jsonl: say that it is a folder
                raise DataError(
                    f"{source}: is a directory, expected a {ext} file (a directory is read as an"
                    f" .npy folder: missing {key}.npy)"
                )
            raise DataError(
                f"{source}: missing {key}.npy" + (" (labels are required)" if key == "y" else "")
            )
    raw_x = _load_npy(names["x"], mmap, source, "x.npy")
    if not isinstance(raw_x, np.ndarray):
        raise DataError(f"{source}: x.npy is not a plain array")
    x = _check_x_array(raw_x, "x.npy", source, allow_int=not mmap)
    lengths = np.asarray(_load_npy(names["lengths"], False, source, "lengths.npy"))
    offsets = _check_lengths(lengths, x.shape[0], "lengths.npy", "x.npy", source)
    y = None
    if os.path.isfile(names["y"]):
        y = _check_y(
            np.asarray(_load_npy(names["y"], False, source, "y.npy")),
            offsets.size - 1,
            "y.npy",
            source,
        )
    _check_finite_chunked(x, "x.npy", source)
    release_pages(x)  # the check read every row; they need not stay resident
    return SequenceDataset(x, offsets, y, source)


def write_npz(ds, path):
    """Write ``ds`` as an .npz archive (x, lengths and, when labelled, y) at exactly ``path``."""
    arrays = {"x": np.asarray(ds.x), "lengths": ds.lengths}
    if ds.labels is not None:
        arrays["y"] = ds.labels
    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
        np.savez(fh, **arrays)


def write_npy_dir(ds, path):
    """Write ``ds`` as a folder of x.npy, lengths.npy and (when labelled) y.npy."""
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "x.npy"), np.asarray(ds.x))
    np.save(os.path.join(path, "lengths.npy"), ds.lengths)
    y_path = os.path.join(path, "y.npy")
    if ds.labels is not None:
        np.save(y_path, ds.labels)
    elif os.path.exists(y_path):
        os.remove(y_path)  # a stale y.npy would otherwise be read back as labels


# ---------------------------------------------------------------------------
# CSV (long form)


def _csv_labels(raw, label_type, source, label_column):
    """Per-sequence label cells [(text, line)] -> list of int or str, per ``label_type``."""
    if label_type not in ("auto", "str", "int"):
        raise DataError(f"{source}: label_type must be 'auto', 'str' or 'int', got {label_type!r}")
    if label_type == "str":
        return [t for t, _ in raw]
    if label_type == "auto" and not all(_CANONICAL_INT.match(t) for t, _ in raw):
        return [t for t, _ in raw]
    values = []
    for text, line in raw:
        try:
            v = int(text)
        except ValueError:
            raise DataError(
                f"{source} line {line}: label {text!r} in column {label_column!r} is not an integer"
                " (label_type='int')"
            ) from None
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise DataError(
                f"{source} line {line}: label {text!r} does not fit in a 64-bit integer"
            )
        values.append(v)
    return values


def _malformed_csv(source, exc, start, end):
    """The message for a csv.Error in the row that starts on line ``start``; the reader
    stopped on line ``end``. A row running over several lines means a quoted field that
    was not closed (csv keeps reading to the end of the file or its field size limit), so
    the line that opened it is named, not the line where csv gave up."""
    if end > start:
        return (
            f"{source} line {start}: malformed CSV: {exc}; the row starting on this line runs on to"
            f" line {end}: is a quote left open?"
        )
    return f"{source} line {end}: malformed CSV: {exc}"


def read_csv(
    path,
    require_labels=True,
    id_column="id",
    label_column="label",
    feature_columns=None,
    label_type="auto",
):
    """Read a long-form CSV: a header row, then one row per time step.

    ``id_column`` names the sequence id, ``label_column`` the label (constant within
    a sequence), ``feature_columns`` the features (default: every other column, in
    file order). Rows of one sequence must be contiguous and in time order: an id
    that reappears after another id started is an error. Blank rows are skipped.
    Labels: with ``label_type="auto"`` they are ints when every label cell is a
    canonical decimal integer (``-3``, ``0``, ``17``), else strings; ``"str"`` and
    ``"int"`` force one type. When ``require_labels`` is False the label column may
    be absent. Feature cells must parse as finite floats. Errors name the 1-based
    line and the column.
    """
    source = str(path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    done = 0  # the last line of the rows read so far
    try:
        header = next(reader, None)
        while header is not None and not header:  # skip leading blank lines
            done = reader.line_num
            header = next(reader, None)
    except csv.Error as exc:
        raise DataError(_malformed_csv(source, exc, done + 1, reader.line_num)) from None
    if header is None:
        raise DataError(f"{source}: the file is empty; expected a header row naming the columns")
    header_line = reader.line_num
    shown = ", ".join(repr(h) for h in header[:12]) + (", ..." if len(header) > 12 else "")
    for j, name in enumerate(header, start=1):
        if name.strip() == "":
            raise DataError(
                f"{source} line {header_line}: header column {j} is empty; every column needs a name"
            )
    if id_column not in header:
        raise DataError(
            f"{source}: missing id column {id_column!r} in the header (found: {shown});"
            " the first row must be a header"
        )
    has_label = label_column in header
    if require_labels and not has_label:
        raise DataError(
            f"{source}: missing label column {label_column!r} in the header (found: {shown})"
        )
    if feature_columns is None:
        feature_columns = [h for h in header if h != id_column and h != label_column]
    else:
        feature_columns = list(feature_columns)
        for name in feature_columns:
            if name not in header:
                raise DataError(
                    f"{source}: missing feature column {name!r} in the header (found: {shown})"
                )
            if name in (id_column, label_column):
                raise DataError(
                    f"{source}: column {name!r} cannot be both a feature and the id/label column"
                )
    if not feature_columns:
        raise DataError(f"{source}: no feature columns (header: {shown})")
    dup = next((h for j, h in enumerate(header) if h in header[:j]), None)
    if dup is not None:
        raise DataError(f"{source} line {header_line}: header names column {dup!r} twice")
    id_j = header.index(id_column)
    label_j = header.index(label_column) if has_label else None
    feat_j = [header.index(name) for name in feature_columns]
    ncols = len(header)

    rows = []  # feature cells, list of lists of str
    row_lines = []
    lengths = []
    label_cells = []  # (text, line) per sequence
    seen = {}  # id -> first line
    current = None
    current_label = None
    done = header_line
    try:
        for cells in reader:
            done = line = reader.line_num
            if not cells:
                continue
            if len(cells) != ncols:
                raise DataError(
                    f"{source} line {line}: {len(cells)} cells, expected {ncols} (as in the header)"
                )
            seq_id = cells[id_j]
            if seq_id == "":
                raise DataError(f"{source} line {line}: empty id in column {id_column!r}")
            label = cells[label_j] if label_j is not None else None
            if seq_id != current:
                if seq_id in seen:
                    raise DataError(
                        f"{source} line {line}: sequence id {seq_id!r} reappears after sequence {current!r}"
                        f" started (first seen on line {seen[seq_id]}); rows of a sequence must be contiguous"
                    )
                seen[seq_id] = line
                current, current_label = seq_id, label
                lengths.append(0)
                if label is not None:
                    label_cells.append((label, line))
            elif label != current_label:
                raise DataError(
                    f"{source} line {line}: label {label!r} differs from label {current_label!r} of"
                    f" sequence {seq_id!r} (line {seen[seq_id]}); the label must be constant within a sequence"
                )
            lengths[-1] += 1
            rows.append([cells[j] for j in feat_j])
            row_lines.append(line)
    except csv.Error as exc:
        raise DataError(_malformed_csv(source, exc, done + 1, reader.line_num)) from None
    if not rows:
        raise DataError(f"{source}: no sequences (the file has a header but no data rows)")

    try:
        x = np.array(rows, dtype=np.float64)  # (total_steps, F)
    except (ValueError, TypeError, OverflowError):
        x = None
    if x is None:
        for r, cells in enumerate(rows):
            for j, cell in enumerate(cells):
                try:
                    float(cell)
                except ValueError:
                    what = "an empty cell" if cell.strip() == "" else f"{cell!r}, not a number"
                    raise DataError(
                        f"{source} line {row_lines[r]}, column {feature_columns[j]!r}: {what}"
                    ) from None
        raise DataError(f"{source}: feature cells could not be read as numbers")
    _finite_or_raise(
        x,
        lambda r, j, v: (
            f"{source} line {row_lines[r]}, column {feature_columns[j]!r}: value is {v}"
        ),
    )

    labels = None
    if has_label:
        empty = next(((t, ln) for t, ln in label_cells if t == ""), None)
        if empty is not None:
            if require_labels or any(t != "" for t, _ in label_cells):
                raise DataError(f"{source} line {empty[1]}: empty label in column {label_column!r}")
        else:
            values = _csv_labels(label_cells, label_type, source, label_column)
            labels = np.array(values, dtype=np.int64 if isinstance(values[0], int) else str)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return SequenceDataset(x, offsets, labels, source)


def write_csv(ds, path, id_column="id", label_column="label", feature_names=None):
    """Write ``ds`` as a long-form CSV: ids 0..N-1, features named f0..f{F-1} by default."""
    feature_names = (
        list(feature_names)
        if feature_names is not None
        else [f"f{j}" for j in range(ds.num_features)]
    )
    if len(feature_names) != ds.num_features:
        raise DataError(
            f"write_csv: {len(feature_names)} feature names for {ds.num_features} features"
        )
    header = [id_column] + ([label_column] if ds.labels is not None else []) + feature_names
    if len(set(header)) != len(header):
        raise DataError(f"write_csv: column names must be distinct, got {header}")
    labels = None if ds.labels is None else ds.labels.tolist()
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for n in range(len(ds)):
            lead = [str(n)] + ([str(labels[n])] if labels is not None else [])
            writer.writerows(
                lead + row for row in np.asarray(ds.sequence(n), dtype=np.float64).tolist()
            )


# ---------------------------------------------------------------------------
# UEA/UCR .ts

_TS_BOOL_HEADERS = ("timestamps", "missing", "univariate", "equallength")


def _ts_header(text_lines, source):
    """Parse the header; return (dict of headers, index of the first data line)."""
    headers = {}
    where_of = {}
    for i, raw in enumerate(text_lines):
        line = raw.strip()
        where = f"{source} line {i + 1}"
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            raise DataError(
                f"{where}: data before the @data line (or a header without '@'); missing @data?"
            )
        key, *rest = line[1:].split(None, 1) or [""]
        key = key.lower()
        value = rest[0].strip() if rest else ""
        if key == "data":
            if value:
                raise DataError(f"{where}: unexpected text after @data")
            return headers, where_of, i + 1
        if key in headers:
            raise DataError(f"{where}: duplicate @{key} header (first on {where_of[key]})")
        if key in _TS_BOOL_HEADERS:
            if value.lower() not in ("true", "false"):
                raise DataError(f"{where}: @{key} must be true or false, got {value!r}")
            headers[key] = value.lower() == "true"
        elif key in ("dimensions", "serieslength"):
            if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
                raise DataError(f"{where}: @{key} must be a positive integer, got {value!r}")
            headers[key] = int(value)
        elif key == "problemname":
            headers[key] = value
        elif key == "classlabel":
            parts = value.split()
            if not parts or parts[0].lower() not in ("true", "false"):
                raise DataError(
                    f"{where}: @classLabel must be 'true <labels...>' or 'false', got {value!r}"
                )
            if parts[0].lower() == "true":
                if len(parts) < 2:
                    raise DataError(f"{where}: @classLabel true lists no class labels")
                headers[key] = parts[1:]
            else:
                if len(parts) > 1:
                    raise DataError(f"{where}: @classLabel false must not list labels")
                headers[key] = None
        elif key == "targetlabel":
            raise DataError(
                f"{where}: @targetLabel (regression targets) is not supported; expected @classLabel"
            )
        else:
            raise DataError(
                f"{where}: unknown header @{key}; expected @problemName, @timeStamps, @missing,"
                " @univariate, @dimensions, @equalLength, @seriesLength, @classLabel or @data"
            )
        where_of[key] = f"line {i + 1}"
    raise DataError(
        f"{source}: missing @data line (the header must end with @data before the cases)"
    )


def _ts_bad_value(dims, where):
    """Explain the first value of a case that is not a number."""
    for d, dim in enumerate(dims, start=1):
        for k, cell in enumerate(dim.split(","), start=1):
            try:
                float(cell)
            except ValueError:
                c = cell.strip()
                if c == "?":
                    return (
                        f"{where}: dimension {d}, value {k} is '?' (a missing value);"
                        " missing values are not supported, fill or drop them first"
                    )
                if c == "":
                    return f"{where}: dimension {d}, value {k} is empty; expected a number"
                return f"{where}: dimension {d}, value {k} is {c!r}, not a number"
    return f"{where}: values could not be read as numbers"


def read_ts(path, require_labels=True):
    """Read a UEA/UCR ``.ts`` classification file (as written by sktime/aeon).

    Header lines (case-insensitive keys) before ``@data``; ``#`` comments and blank
    lines are allowed there. ``@data`` and ``@classLabel`` are required;
    ``@timeStamps true`` and ``@targetLabel`` are unsupported. Each case line has
    ``@dimensions`` dimensions (if declared; else as many as the first case) joined by
    ``:``, each a ``,``-separated list of numbers, all of one length, then the label
    when ``@classLabel true``; the label must be one of those declared. Labels are
    strings as written (``"1"``). ``?`` (missing values) is rejected. Blank lines
    after ``@data`` are skipped.
    """
    source = str(path)
    text = _read_text(path)
    lines = text.split("\n")
    headers, where_of, start = _ts_header(lines, source)
    if "classlabel" not in headers:
        raise DataError(
            f"{source}: missing @classLabel header (e.g. '@classLabel true a b c', or 'false')"
        )
    declared = headers["classlabel"]
    has_labels = declared is not None
    if require_labels and not has_labels:
        raise DataError(
            f"{source} {where_of['classlabel']}: @classLabel false: the file has no labels, but labels are required"
        )
    if headers.get("timestamps"):
        raise DataError(f"{source} {where_of['timestamps']}: @timeStamps true is not supported")
    dims_expected = headers.get("dimensions")
    if headers.get("univariate") is True:
        if dims_expected is not None and dims_expected != 1:
            raise DataError(
                f"{source} {where_of['dimensions']}: @dimensions {dims_expected} contradicts @univariate true"
            )
        dims_expected = 1
    declared_set = set(declared) if has_labels else set()
    series_len = headers.get("serieslength") if headers.get("equallength") else None

    chunks = []
    labels = _LabelCollector(source, require_labels)
    first_dims_line = None
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line:
            continue
        line_no = i + 1
        where = f"{source} line {line_no}"
        parts = line.split(":")
        if has_labels:
            if len(parts) < 2:
                raise DataError(
                    f"{where}: expected dimensions separated by ':' and the label last, got one field"
                )
            label = parts[-1].strip()
            dims = parts[:-1]
        else:
            label = None
            dims = parts
        if dims_expected is None:
            dims_expected, first_dims_line = len(dims), line_no
        if len(dims) != dims_expected:
            source_of = (
                f"@dimensions {dims_expected}"
                if first_dims_line is None
                else f"as on line {first_dims_line}"
            )
            extra = ""
            if not has_labels and len(dims) == dims_expected + 1:
                extra = "; @classLabel is false, so no label is expected at the end"
            elif has_labels and len(dims) == dims_expected - 1:
                extra = "; is the label missing?"
            raise DataError(
                f"{where}: {len(dims)} dimensions, expected {dims_expected} ({source_of}){extra}"
            )
        counts = [d.count(",") + 1 for d in dims]
        for d in range(1, len(dims)):
            if counts[d] != counts[0]:
                raise DataError(
                    f"{where}: dimension {d + 1} has {counts[d]} values, dimension 1 has {counts[0]};"
                    " all dimensions of a case must have the same length"
                )
        steps = counts[0]
        if steps == 1 and any(d.strip() == "" for d in dims):
            raise DataError(f"{where}: a dimension has no values; every case needs at least 1 step")
        if series_len is not None and steps != series_len:
            raise DataError(
                f"{where}: {steps} steps, but @equalLength true with @seriesLength {series_len}"
            )
        try:
            flat = np.array(",".join(dims).split(","), dtype=np.float64)  # (D * T,)
        except (ValueError, OverflowError):
            raise DataError(_ts_bad_value(dims, where)) from None
        arr = flat.reshape(len(dims), steps).T  # (T, D)
        _finite_or_raise(arr, lambda t, d, v: f"{where}: dimension {d + 1}, value {t + 1} is {v}")
        if has_labels:
            if label not in declared_set:
                shown = " ".join(declared[:20]) + (" ..." if len(declared) > 20 else "")
                raise DataError(
                    f"{where}: label {label!r} is not in the declared @classLabel list ({shown})"
                )
            labels.add(label, f"line {line_no}")
        else:
            labels.add(None, f"line {line_no}", missing=True)
        chunks.append(np.ascontiguousarray(arr))
    return _build(chunks, labels, source, "no cases after @data")


_TS_BAD_LABEL = re.compile(r"[\s:,#@]|^$")


def write_ts(ds, path, problem_name="lstm_cli"):
    """Write ``ds`` as a UEA/UCR .ts file (labels are written as text and read back as strings)."""
    if not problem_name or re.search(r"\s", problem_name):
        raise DataError(f"write_ts: problem_name must be one word, got {problem_name!r}")
    labels = None if ds.labels is None else [str(v) for v in ds.labels.tolist()]
    if labels is not None:
        bad = next((v for v in labels if _TS_BAD_LABEL.search(v)), None)
        if bad is not None:
            raise DataError(
                f"write_ts: label {bad!r} cannot be written to .ts (no spaces, ':', ',', '#', '@')"
            )
    lengths = ds.lengths
    equal = bool(np.all(lengths == lengths[0]))
    head = [
        f"@problemName {problem_name}",
        "@timeStamps false",
        "@missing false",
        f"@univariate {'true' if ds.num_features == 1 else 'false'}",
        f"@dimensions {ds.num_features}",
        f"@equalLength {'true' if equal else 'false'}",
    ]
    if equal:
        head.append(f"@seriesLength {int(lengths[0])}")
    if labels is not None:
        classes = class_list(ds.labels)
        head.append("@classLabel true " + " ".join(str(c) for c in classes))
    else:
        head.append("@classLabel false")
    head.append("@data")
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(head) + "\n")
        for n in range(len(ds)):
            cols = np.asarray(ds.sequence(n), dtype=np.float64).T.tolist()  # D lists of T floats
            fields = [",".join(map(repr, col)) for col in cols]
            if labels is not None:
                fields.append(labels[n])
            fh.write(":".join(fields) + "\n")


# ---------------------------------------------------------------------------
# Dispatch


def _detect_format(path):
    if os.path.isdir(path):
        return "npy"
    name = str(path).lower()
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    raise DataError(
        f"{path}: cannot tell the format from the extension; expected .jsonl, .npz, .csv, .ts"
        " or a directory with x.npy/lengths.npy; name the format with --format (lstm-eval, lstm-predict),"
        " data.format (config) or format= (Python)"
    )


def load_dataset(path, format="auto", require_labels=True, csv_options=None):
    """Load a dataset in any supported format (``format="auto"`` goes by extension).

    ``csv_options`` (CSV only, ignored for other formats) may hold ``id_column``
    (default "id"), ``label_column`` (default "label"), ``feature_columns`` (default
    None: every other column, in file order) and ``label_type`` ("auto").
    """
    if format not in FORMATS:
        raise DataError(
            f"{path}: unknown data format {format!r}; expected one of {', '.join(FORMATS)}"
        )
    fmt = _detect_format(path) if format == "auto" else format
    if fmt == "jsonl":
        return read_jsonl(path, require_labels=require_labels)
    if fmt == "npz":
        return read_npz(path, require_labels=require_labels)
    if fmt == "npy":
        return read_npy_dir(path, require_labels=require_labels)
    if fmt == "ts":
        return read_ts(path, require_labels=require_labels)
    options = dict(csv_options or {})
    unknown = sorted(set(options) - set(_CSV_OPTION_KEYS))
    if unknown:
        raise DataError(
            f"{path}: unknown csv option(s) {', '.join(unknown)}; expected {', '.join(_CSV_OPTION_KEYS)}"
        )
    return read_csv(path, require_labels=require_labels, **options)


# ---------------------------------------------------------------------------
# Labels and splits


def class_list(labels):
    """Sorted unique labels as plain Python ints or strs (the label -> index map)."""
    if labels is None:
        raise DataError("the dataset has no labels")
    return np.unique(np.asarray(labels)).tolist()


def encode_labels(labels, classes, source=""):
    """Map each label to its index in ``classes``; (N,) int64.

    Raises DataError naming the first label (and its 0-based sequence index) that is
    not among ``classes``, e.g. a test label never seen in training, or string labels
    against integer classes.
    """
    prefix = f"{source}: " if source else ""
    if labels is None:
        raise DataError(f"{prefix}the dataset has no labels")
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
            f"{prefix}label {first!r} (sequence 0) is not one of the {len(classes)} classes ({preview}):"
            f" the labels are {'strings' if lab_str else 'integers'} but the classes are"
            f" {'strings' if cls_str else 'integers'}"
        )
    order = np.argsort(cls_arr, kind="stable")  # (K,)
    sorted_cls = cls_arr[order]
    pos = np.clip(np.searchsorted(sorted_cls, labels), 0, len(classes) - 1)  # (N,)
    unknown = np.flatnonzero(sorted_cls[pos] != labels)
    if unknown.size:
        i = int(unknown[0])
        raise DataError(
            f"{prefix}label {labels[i].item()!r} (sequence {i}) is not one of the {len(classes)} classes ({preview})"
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
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.floating))
        or not 0 <= fraction < 1
    ):
        raise ConfigError(
            f"The validation fraction must be a float in the range [0, 1). Got {fraction!r} instead."
        )
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    valid = []
    for k in range(classes.size):
        members = np.flatnonzero(inverse == k)  # (count,) ascending
        count = members.size
        take = int(math.floor(fraction * count + 0.5))
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


# ---------------------------------------------------------------------------
# Normalisation and batching


def feature_stats(ds, chunk_rows=None):
    """Per-feature mean and std, (F,) float64 each, over every step of ``ds`` (a dataset
    or a view). See ``feature_summary``, which also gives each feature's min and max."""
    return feature_summary(ds, chunk_rows)[:2]


def feature_summary(ds, chunk_rows=None):
    """Per-feature mean, std, min and max, (F,) float64 each, over every step of ``ds`` (a
    dataset or a view), in one pass over its rows.

    Reads the rows in chunks of about ``chunk_rows`` rows (memory-map friendly: each
    chunk's pages are released after use) and merges chunk statistics with Chan et al.'s
    pairwise formula. The std is the population std, except that a feature (nearly)
    constant in the data gets std 1, so it is only centred, as scikit-learn's
    StandardScaler does: a floor such as 1e-8 would multiply any variation it shows at
    test time by 1e8.
    """
    chunk_rows = _chunk_rows(ds.x) if chunk_rows is None else chunk_rows
    if chunk_rows < 1:
        raise LstmCliError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if int(np.sum(ds.lengths)) == 0:
        raise DataError(f"{ds.source}: no data to compute feature statistics on")
    count = 0
    mean = np.zeros(ds.num_features, dtype=np.float64)  # (F,)
    m2 = np.zeros(ds.num_features, dtype=np.float64)  # (F,) sum of squared deviations
    lo = np.full(ds.num_features, np.inf)  # (F,)
    hi = np.full(ds.num_features, -np.inf)  # (F,)
    for block in _row_chunks(ds, chunk_rows):
        block = np.asarray(block, dtype=np.float64)  # (c, F)
        c = block.shape[0]
        if c == 0:
            continue
        np.minimum(lo, block.min(axis=0), out=lo)
        np.maximum(hi, block.max(axis=0), out=hi)
        block_mean = block.mean(axis=0)  # (F,)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)  # (F,)
        total = count + c
        delta = block_mean - mean
        mean = mean + delta * (c / total)
        m2 = m2 + block_m2 + delta**2 * (count * c / total)
        count = total
        release_pages(ds)
    std = np.sqrt(m2 / count)
    constant = std <= 1e-7 * np.maximum(np.abs(mean), 1.0)  # zero up to rounding
    return mean, np.where(constant, 1.0, std), lo, hi


def fingerprint(ds, blocks=64, block_rows=64) -> str:
    """A short digest of a dataset (not a view): its sequence lengths in order, its labels
    and the values of ``blocks`` evenly spaced runs of ``block_rows`` consecutive rows (4,096
    rows by default). Cheap on a memory-mapped file: it reads only those runs and releases
    each run's pages before the next (4,096 scattered single rows would fault in, with the
    kernel's read-ahead of ~2 MB a fault, most of a large file: peak RSS grew to the data's
    size). A resume compares it to catch
    training data that was reordered, relabelled or edited (an edit confined to unsampled
    rows can go unseen)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.offsets, dtype="<i8").tobytes())
    if ds.labels is not None:
        h.update(repr(np.asarray(ds.labels).tolist()).encode("utf-8", "surrogatepass"))
    rows = ds.x.shape[0]
    starts = np.unique(np.linspace(0, max(rows - block_rows, 0), num=blocks).astype(np.int64))
    for start in starts.tolist():
        h.update(np.ascontiguousarray(ds.x[start : start + block_rows], dtype="<f8").tobytes())
        release_pages(ds)  # each run faults in ~2 MB with read-ahead: drop it before the next
    return h.hexdigest()[:32]


def check_normalisable(ds, mean, std, dtype, bounds=None) -> None:
    """Raise DataError (naming file, sequence, step, feature) if some value of ``ds`` is
    not finite in ``dtype`` once normalised as (x - mean) / std, before training starts
    (pad_batch would find it only when it reaches that batch). ``bounds``: each feature's
    (min, max) over ds when already known (feature_summary), else one pass finds them;
    the precise search runs only when a bound overflows."""
    lo, hi = feature_summary(ds)[2:] if bounds is None else bounds
    with np.errstate(over="ignore", invalid="ignore"):
        worst = np.maximum(np.abs(lo - mean), np.abs(hi - mean)) / np.asarray(std, np.float64)
    if np.all(worst <= np.finfo(dtype).max):
        return
    step = 256
    for start in range(0, len(ds.lengths), step):  # pad_batch raises with the details
        pad_batch(ds, np.arange(start, min(start + step, len(ds.lengths))), dtype, mean, std)
    release_pages(ds)


def _row_chunks(ds, chunk_rows):
    """Yield the rows of ds's sequences in blocks of about chunk_rows rows: contiguous
    slices of x for a whole dataset, groups of whole sequences for a view."""
    if not isinstance(ds, SequenceView):
        for start in range(0, ds.x.shape[0], chunk_rows):
            yield ds.x[start : start + chunk_rows]
        return
    lengths, starts = ds.lengths, ds.starts
    ends = np.cumsum(lengths)
    first = 0
    while first < len(ds):
        # sequences first..last-1 hold about chunk_rows rows (at least one sequence)
        last = max(
            first + 1,
            int(np.searchsorted(ends, ends[first] - lengths[first] + chunk_rows, "right")),
        )
        yield _gather_rows(ds.x, starts[first:last], lengths[first:last])
        first = last


def _gather_rows(x, starts, lens):
    """The rows of the sequences (starts, lens) of x, concatenated: (sum(lens), F).

    In memory: one fancy index. Memory-mapped (np.memmap of a file): one positioned read
    per sequence straight into the result. Touching scattered sequences through the map
    would make whole page-cache folios (up to 2 MB each on this kind of kernel) resident
    in the process for a few KB of data, so RSS would grow with the dataset; reads keep
    it at the size of a batch.
    """
    filename = getattr(x, "filename", None)
    if not (isinstance(x, np.memmap) and filename and x.ndim == 2 and x.flags.c_contiguous):
        return np.asarray(x[_ranges(starts, lens)])
    F = x.shape[1]
    row_bytes = F * x.dtype.itemsize
    out = np.empty((int(lens.sum()), F), dtype=x.dtype)
    buf = memoryview(out.reshape(-1).view(np.uint8))
    base = int(x.offset)
    pos = 0
    with open(filename, "rb", buffering=0) as fh:
        fd = fh.fileno()
        for start, n in zip(starts.tolist(), lens.tolist()):  # one read per sequence
            nbytes = n * row_bytes
            got = os.preadv(fd, [buf[pos : pos + nbytes]], base + start * row_bytes)
            if got != nbytes:
                raise DataError(
                    f"{filename}: short read ({got} of {nbytes} bytes); was the file truncated?"
                )
            pos += nbytes
    return out


def release_pages(ds) -> None:
    """Tell the OS that the pages of a memory-mapped dataset read so far may be dropped.

    Reading rows through a memory map makes them resident (and counted in the process's
    RSS) until the kernel needs the memory; after a pass over the data the trainer calls
    this so that peak RSS stays independent of the dataset's size. A no-op for in-memory
    data and where madvise is unavailable.
    """
    x = getattr(ds, "x", ds)  # a dataset, a view or the array itself
    mm = getattr(x, "_mmap", None)
    if (
        isinstance(x, np.memmap)
        and mm is not None
        and hasattr(mm, "madvise")
        and hasattr(_mmap, "MADV_DONTNEED")
    ):
        try:
            mm.madvise(_mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # best effort: only memory use depends on it
            pass


def pad_batch(ds, indices, dtype=np.float32, mean=None, std=None):
    """Gather sequences ``indices`` into a right-padded batch.

    Returns x of shape (B, T, F) in ``dtype`` (T = longest sequence of the batch,
    zeros after each sequence's end) and lengths (B,) int64. When given, ``mean``
    and ``std`` ((F,) each) normalise the real rows as (x - mean) / std; padding
    stays exactly 0. A normalised value that is not finite in ``dtype`` (a value within
    float32's range can overflow it when the training std is tiny) raises DataError
    naming ds.source, the sequence, step and feature. Vectorised: one fancy index reads
    the rows.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
    F = ds.num_features
    lens = ds.lengths[idx]  # (B,)
    B = idx.size
    if B == 0:
        return np.zeros((0, 0, F), dtype=dtype), lens
    T = int(lens.max())
    data = _gather_rows(ds.x, ds.starts[idx], lens)  # (S, F), S = lens.sum()
    if mean is not None or std is not None:
        data = data.astype(np.float64)
        for name, stat in (("mean", mean), ("std", std)):
            if stat is not None and np.shape(stat) != (F,):
                raise DataError(f"pad_batch: {name} has shape {np.shape(stat)}, expected ({F},)")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
            if mean is not None:
                data = data - np.asarray(mean, dtype=np.float64)
            if std is not None:
                data = data / np.asarray(std, dtype=np.float64)
    out = np.zeros((B, T, F), dtype=dtype)  # (B, T, F)
    b_of_row = np.repeat(np.arange(B), lens)  # (S,)
    t_of_row = np.arange(data.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens)  # (S,)
    if mean is None and std is None:  # the loaders checked the raw values
        out[b_of_row, t_of_row] = data
    else:
        with np.errstate(over="ignore"):  # a cast beyond dtype's range gives inf: checked next
            out[b_of_row, t_of_row] = data
        if not np.isfinite(out).all():  # one pass over the batch; the padding is 0
            _raise_not_finite_after_normalisation(ds, idx, out, mean, std)
    return out, lens.astype(np.int64)


def _raise_not_finite_after_normalisation(ds, idx, out, mean, std):
    """DataError for the first value of pad_batch's normalised batch ``out`` (B, T, F) that is
    not finite, naming the sequence (its index in the file, also for a view), step and feature."""
    b, t, f = (int(k) for k in np.argwhere(~np.isfinite(out))[0])
    value = float(ds.x[int(ds.starts[idx[b]]) + t, f])
    n = int(ds.indices[idx[b]]) if isinstance(ds, SequenceView) else int(idx[b])
    stats = [
        f"{name} {float(np.asarray(stat)[f]):.6g}"
        for name, stat in (("mean", mean), ("std", std))
        if stat is not None
    ]
    raise DataError(
        f"{ds.source}: sequence {n}, step {t + 1}, feature {f + 1}: the value {value:.6g} is not finite"
        f" in {out.dtype} once normalised with the training {' and '.join(stats)}"
        f" (|x - mean| / std must be <= {float(np.finfo(out.dtype).max):.4g}); is this data on the"
        " scale of the training data?"
    )


def make_batches(lengths, batch_size, rng=None, shuffle=True, bucket=True, pool_batches=32):
    """Split ``range(N)`` into index batches covering every sequence exactly once.

    ``bucket=True`` with ``shuffle``: shuffle, cut into pools of ``pool_batches *
    batch_size`` sequences, sort each pool by length, cut it into batches, then shuffle
    the order of all batches. Each batch holds similar lengths (little padding) while
    the pools make batch membership change from epoch to epoch (a global sort would
    give nearly the same batches every epoch). ``bucket=False``: shuffled (or natural)
    order cut into batches. ``shuffle=False`` uses no randomness (a global sort by
    length, ties by index, batches in length order). Deterministic given ``rng``'s
    state; ``rng`` is required when ``shuffle`` is True.
    """
    lengths = np.asarray(lengths).reshape(-1)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ConfigError(
            f"The 'batch_size' parameter must be an int in the range [1, inf). Got {batch_size!r} instead."
        )
    if shuffle and rng is None:
        raise LstmCliError("make_batches: pass an rng (np.random.Generator) when shuffle=True")
    n = lengths.size
    if n == 0:
        return []
    if bucket and shuffle:
        perm = rng.permutation(n).astype(np.int64)  # (N,) also the random tie-break
        pool = batch_size * max(int(pool_batches), 1)
        batches = []
        for start in range(0, n, pool):
            members = perm[start : start + pool]
            members = members[np.argsort(lengths[members], kind="stable")]
            batches.extend(members[s : s + batch_size] for s in range(0, members.size, batch_size))
        return [batches[k] for k in rng.permutation(len(batches))]
    if bucket:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
    order = order.astype(np.int64)
    return [order[s : s + batch_size] for s in range(0, n, batch_size)]


def padded_fraction(batches, lengths):
    """Fraction of padded steps over all (B x T) steps of ``batches``; 0.0 for no steps."""
    lengths = np.asarray(lengths)
    total = 0
    real = 0
    for b in batches:
        if len(b) == 0:
            continue
        lens = lengths[np.asarray(b)]
        total += int(lens.max()) * lens.size
        real += int(lens.sum())
    return 0.0 if total == 0 else (total - real) / total

"""JSONL datasets (``.jsonl``, ``.json-lines``): one ``{"x": [[f1, ..., fF], ...], "y": label}``
object per line.

Blank lines are skipped; other keys are ignored; a key given twice is an error.
``NaN``/``Infinity`` tokens are parsed and then rejected. Labels keep their JSON type (an
integral float such as ``1.0`` is the int ``1``; ``2.5``, booleans and ``null`` are
rejected). Errors name the file and the 1-based line; steps and features count from 1.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from ..errors import DataError
from .common import build, check_finite, read_text
from .labels import INT64_MAX, INT64_MIN, LabelCollector, label_text_problem


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
            return (
                f"'x' step {t} has {len(row)} features, step 1 has {width}; all steps need the"
                " same count"
            )
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
                f"{where}: 'y' is {y!r}; labels must be strings or integers (not fractional"
                " numbers)"
            )
        y = int(y)
    if isinstance(y, int):
        if not INT64_MIN <= y <= INT64_MAX:
            raise DataError(f"{where}: 'y' = {y} does not fit in a 64-bit integer")
        return y, False
    if isinstance(y, str):
        if y == "":
            raise DataError(f"{where}: 'y' is the empty string; labels must be non-empty")
        problem = label_text_problem(y)
        if problem is not None:
            raise DataError(
                f"{where}: 'y' is {_json_type(y)}, which holds {problem}; labels must be valid"
                " Unicode text"
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
    ignored; a key given twice in one object is an error. Labels keep their JSON type:
    int or str (an integral float such as ``3.0`` counts as the int 3; other floats,
    booleans and null are rejected), one type per file. Each sequence must have at least
    1 step, every step the same number F >= 1 of finite numbers (booleans are not
    numbers), and F must match the first sequence. Raises DataError naming the file and
    1-based line otherwise.
    """
    source = str(path)
    text = read_text(path)
    lines = text.split("\n")
    truncated_candidate = len(lines) - 1 if not text.endswith("\n") else None
    chunks = []
    labels = LabelCollector(source, require_labels)
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
                hint = (
                    " (a carriage return inside the line: CR-only line endings? save the file"
                    " with LF or CRLF)"
                )
            raise DataError(
                f"{where}: invalid JSON: {exc.msg} at column {exc.colno}{hint}"
            ) from None
        except RecursionError:
            raise DataError(f"{where}: invalid JSON: nested too deeply") from None
        except _DuplicateKey as dup:
            raise DataError(f"{where}: key {dup.args[0]!r} appears twice in one object") from None
        except ValueError:  # an int literal past sys.get_int_max_str_digits()
            raise DataError(
                f"{where}: an integer of more than {sys.get_int_max_str_digits()} digits"
            ) from None
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
                f"{where}: 'x' has {arr.shape[1]} features per step, expected {width} (as on line"
                f" {width_line})"
            )
        check_finite(
            arr, lambda t, f, v, where=where: f"{where}: 'x' step {t + 1}, feature {f + 1} is {v}"
        )
        value, missing = _jsonl_label(obj, line_no, where)
        labels.add(value, f"line {line_no}", missing)
        chunks.append(arr)
    return build(chunks, labels, source, "the file is empty or has only blank lines")


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

"""UEA/UCR ``.ts`` classification files (as written by sktime/aeon).

``@`` header lines (``#`` comments and blank lines allowed before ``@data``), then one
case per line: dimensions separated by ``:``, values by ``,``, the label last. Labels are
the strings as written. Missing values (``?``) and time stamps are not supported.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import DataError
from ..validate import param_error, show
from .common import build, check_finite, is_number, plain_text, read_text
from .labels import LabelCollector, class_list

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
            # at most 18 digits: any count a file can hold, and within int64
            if not re.fullmatch(r"[0-9]{1,18}", value) or int(value) < 1:
                raise DataError(f"{where}: @{key} must be a positive integer, got {show(value)}")
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
                twice = sorted({p for p in parts[1:] if parts[1:].count(p) > 1})
                if twice:
                    raise DataError(f"{where}: @classLabel lists {show(twice[0])} twice")
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
            if not is_number(cell):
                c = cell.strip()
                if c == "?":
                    return (
                        f"{where}: dimension {d}, value {k} is '?' (a missing value); missing"
                        " values are not supported, fill or drop them first"
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
    text = read_text(path)
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
            f"{source} {where_of['classlabel']}: @classLabel false: the file has no labels, but"
            " labels are required"
        )
    if headers.get("timestamps"):
        raise DataError(f"{source} {where_of['timestamps']}: @timeStamps true is not supported")
    dims_expected = headers.get("dimensions")
    if headers.get("univariate") is True:
        if dims_expected is not None and dims_expected != 1:
            raise DataError(
                f"{source} {where_of['dimensions']}: @dimensions {dims_expected} contradicts"
                " @univariate true"
            )
        dims_expected = 1
    declared_set = set(declared) if has_labels else set()
    series_len = headers.get("serieslength") if headers.get("equallength") else None
    first_case = None  # (steps, line) of the first case: @equalLength true holds all to it

    chunks = []
    labels = LabelCollector(source, require_labels)
    first_dims_line = None
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line:
            continue
        line_no = i + 1
        where = f"{source} line {line_no}"
        if line.startswith("#"):
            raise DataError(f"{where}: a '#' comment after @data (comments go before @data)")
        parts = line.split(":")
        if has_labels:
            if len(parts) < 2:
                raise DataError(
                    f"{where}: expected dimensions separated by ':' and the label last, got one"
                    " field"
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
                    f"{where}: dimension {d + 1} has {counts[d]} values, dimension 1 has"
                    f" {counts[0]}; all dimensions of a case must have the same length"
                )
        steps = counts[0]
        if steps == 1 and any(d.strip() == "" for d in dims):
            raise DataError(f"{where}: a dimension has no values; every case needs at least 1 step")
        if series_len is not None and steps != series_len:
            raise DataError(
                f"{where}: {steps} steps, but @equalLength true with @seriesLength {series_len}"
            )
        if first_case is None:
            first_case = (steps, line_no)
        elif headers.get("equallength") and steps != first_case[0]:
            raise DataError(
                f"{where}: {steps} steps, but @equalLength true and the case on line "
                f"{first_case[1]} has {first_case[0]}"
            )
        values = ",".join(dims)
        try:
            if not plain_text(values):
                raise ValueError(values)
            flat = np.array(values.split(","), dtype=np.float64)  # (D * T,)
        except (ValueError, OverflowError):
            raise DataError(_ts_bad_value(dims, where)) from None
        arr = flat.reshape(len(dims), steps).T  # (T, D)
        check_finite(
            arr, lambda t, d, v, where=where: f"{where}: dimension {d + 1}, value {t + 1} is {v}"
        )
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
    return build(chunks, labels, source, "no cases after @data")


_TS_BAD_LABEL = re.compile(r"[\s:,#@]|^$")


def write_ts(ds, path, problem_name="lstm_cli"):
    """Write ``ds`` as a UEA/UCR .ts file (labels are written as text and read back as strings)."""
    if not isinstance(problem_name, str) or not problem_name or re.search(r"\s", problem_name):
        raise param_error(
            "problem_name",
            "one word (a str without spaces)",
            problem_name,
            "write_ts",
            error=DataError,
        )
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

"""Long-form CSV datasets (``.csv``): a header row, then one row per time step.

Columns ``id`` (sequence id) and ``label`` by default; every other column is a feature,
in file order. The rows of a sequence are contiguous and in time order; blank rows are
skipped. Labels are ints when every label cell is a canonical decimal integer (``-3``,
``0``, ``17``; not ``007`` or ``+1``), strings otherwise, unless ``label_type`` says.
Errors name the file, the 1-based line and the column.
"""

from __future__ import annotations

import csv
import io
import re

import numpy as np

from ..errors import DataError
from ..validate import Options, check, show
from .common import check_finite, is_number, plain_text, read_text
from .dataset import SequenceDataset, offsets_of
from .labels import INT64_MAX, INT64_MIN

CSV_OPTION_KEYS = ("id_column", "label_column", "feature_columns", "label_type")
LABEL_TYPES = ("auto", "str", "int")  # how label cells are read
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


def csv_columns_problem(id_column, label_column, feature_columns) -> tuple[str, str] | None:
    """(key, sentence) of the rule the CSV column options break together, or None: the id
    and label columns differ, and no feature column is either of them."""
    if id_column == label_column:
        return (
            "label_column",
            f"'data.csv.id_column' and 'data.csv.label_column' are both {show(id_column)};"
            " they must name different columns.",
        )
    for col in feature_columns or ():
        if col in (id_column, label_column):
            return (
                "feature_columns",
                f"'data.csv.feature_columns' lists {show(col)}, which is the id or label column.",
            )
    return None


def _csv_labels(raw, label_type, source, label_column):
    """Per-sequence label cells [(text, line)] -> list of int or str, per ``label_type``."""
    label_type = check(
        "label_type", label_type, Options(*LABEL_TYPES), owner=source, error=DataError
    )
    if label_type == "str":
        return [t for t, _ in raw]
    if label_type == "auto" and not all(_CANONICAL_INT.match(t) for t, _ in raw):
        return [t for t, _ in raw]
    values = []
    for text, line in raw:
        try:
            if not plain_text(text):
                raise ValueError(text)
            v = int(text)
        except ValueError:
            if _CANONICAL_INT.match(text):  # digits past sys.get_int_max_str_digits()
                v = INT64_MAX + 1
            else:
                raise DataError(
                    f"{source} line {line}: label {show(text)} in column {label_column!r} is not an"
                    " integer (label_type='int')"
                ) from None
        if not INT64_MIN <= v <= INT64_MAX:
            raise DataError(
                f"{source} line {line}: label {show(text)} does not fit in a 64-bit integer"
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
            f"{source} line {start}: malformed CSV: {exc}; the row starting on this line runs on"
            f" to line {end}: is a quote left open?"
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
    text = read_text(path)
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
                f"{source} line {header_line}: header column {j} is empty; every column needs a"
                " name"
            )
    if id_column not in header:
        raise DataError(
            f"{source}: missing id column {id_column!r} in the header (found: {shown}); the first"
            " row must be a header"
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
                        f"{source} line {line}: sequence id {seq_id!r} reappears after sequence"
                        f" {current!r} started (first seen on line {seen[seq_id]}); rows of a"
                        " sequence must be contiguous"
                    )
                seen[seq_id] = line
                current, current_label = seq_id, label
                lengths.append(0)
                if label is not None:
                    label_cells.append((label, line))
            elif label != current_label:
                raise DataError(
                    f"{source} line {line}: label {label!r} differs from label {current_label!r}"
                    f" of sequence {seq_id!r} (line {seen[seq_id]}); the label must be constant"
                    " within a sequence"
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
    # the cells are looked at only when the file has a character that may hide in one
    if x is None or (not plain_text(text) and not plain_text("".join(map("".join, rows)))):
        for r, cells in enumerate(rows):
            for j, cell in enumerate(cells):
                if not is_number(cell):
                    what = "an empty cell" if cell.strip() == "" else f"{cell!r}, not a number"
                    raise DataError(
                        f"{source} line {row_lines[r]}, column {feature_columns[j]!r}: {what}"
                    )
        raise DataError(f"{source}: feature cells could not be read as numbers")
    check_finite(
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
    return SequenceDataset(x, offsets_of(lengths), labels, source, tuple(feature_columns))


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

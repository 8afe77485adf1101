"""Format dispatch: ``load_dataset`` picks a reader from the extension or ``format=``."""

from __future__ import annotations

import os

from ..errors import DataError
from .common import EXTENSIONS, not_found
from .csvfile import CSV_OPTION_KEYS, read_csv
from .jsonl import read_jsonl
from .npyfolder import read_npy_dir
from .npz import read_npz
from .ts import read_ts

FORMATS = ("auto", "jsonl", "npz", "npy", "csv", "ts")


def _detect_format(path):
    if os.path.isdir(path):
        return "npy"
    name = str(path).lower()
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    if not os.path.exists(path):
        raise not_found(path)
    raise DataError(
        f"{path}: cannot tell the format from the extension; expected .jsonl, .npz, .csv, .ts or a"
        " directory with x.npy/lengths.npy; name the format with --format (lstm-eval,"
        " lstm-predict), data.format (config) or format= (Python)"
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
    unknown = sorted(set(options) - set(CSV_OPTION_KEYS))
    if unknown:
        raise DataError(
            f"{path}: unknown csv option(s) {', '.join(unknown)}; expected"
            f" {', '.join(CSV_OPTION_KEYS)}"
        )
    return read_csv(path, require_labels=require_labels, **options)

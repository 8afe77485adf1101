"""What the file readers share: reading a file, the feature-value check, assembling a dataset.

Feature values must be finite and within float32's range (|x| <= 3.4e38) in every format
and whatever the model's dtype: a larger value would become Inf in a float32 model and
overflow the normalisation statistics.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from .dataset import SequenceDataset, offsets_of, release_pages

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest feature value accepted
EXTENSIONS = {".jsonl": "jsonl", ".json-lines": "jsonl", ".npz": "npz", ".csv": "csv", ".ts": "ts"}


def not_found(path):
    return DataError(f"data file not found: {path}")


def is_a_directory(path):
    return DataError(f"{path}: is a directory, expected a data file")


def existing_file(path):
    """``path`` if it is an existing regular file, else a DataError."""
    if os.path.isdir(path):
        raise is_a_directory(path)
    if not os.path.exists(path):
        raise not_found(path)
    return path


def read_text(path):
    """File content decoded as strict UTF-8 (a leading BOM is dropped)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise not_found(path) from None
    except IsADirectoryError:
        raise is_a_directory(path) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as"
            " UTF-8"
        ) from None


def plain_text(text) -> bool:
    """Whether ``text`` is ASCII without '_': numpy and ``float`` also read digit-group
    underscores ('1_000') and non-ASCII digits as numbers, which in a data file's cell are
    a typo or another locale's number, not the value they would parse to."""
    return text.isascii() and "_" not in text


def is_number(cell) -> bool:
    """Whether the text ``cell`` is a number as a data file writes one (see plain_text)."""
    if not plain_text(cell):
        return False
    try:
        float(cell)
    except ValueError:
        return False
    return True


def check_finite(arr, describe):
    """Raise DataError naming the first cell of 2-D ``arr`` that is NaN, Inf or beyond
    float32's range; ``describe(i, j, v)`` words the place."""
    if arr.dtype.kind == "f" and float(np.finfo(arr.dtype).max) <= FLOAT32_MAX:
        ok = np.isfinite(arr)  # float16/float32 values always fit
    else:
        ok = (arr >= -FLOAT32_MAX) & (arr <= FLOAT32_MAX)  # False for NaN as well
    if not ok.all():
        i, j = (int(k) for k in np.argwhere(~ok)[0])
        v = arr[i, j]
        if not np.isfinite(v):
            raise DataError(describe(i, j, v) + "; NaN and Inf values are not allowed")
        raise DataError(
            describe(i, j, v)
            + f"; values must lie within float32's range (|x| <= {FLOAT32_MAX:.4g})"
        )


def rows_per_chunk(x, target_bytes=16 << 20):
    """Rows per chunk so that a float64 copy of one chunk of ``x`` is about target_bytes."""
    return max(1, target_bytes // (8 * max(1, x.shape[1] if x.ndim > 1 else 1)))


def check_finite_chunked(x, name, source, chunk_rows=None):
    """check_finite over (total_steps, F) ``x`` a chunk at a time, naming ``name``[row, col];
    a memory-mapped ``x`` never becomes resident as a whole."""
    chunk_rows = chunk_rows or rows_per_chunk(x)
    for start in range(0, x.shape[0], chunk_rows):
        block = np.asarray(x[start : start + chunk_rows])
        check_finite(block, lambda i, j, v, s=start: f"{source}: {name}[{s + i}, {j}] is {v}")
        release_pages(x)


def build(chunks, label_collector, source, what):
    """The dataset of (T_n, F) ``chunks`` and the collected labels; ``what`` says why none."""
    if not chunks:
        raise DataError(f"{source}: no sequences ({what})")
    offsets = offsets_of([c.shape[0] for c in chunks])
    return SequenceDataset(
        np.concatenate(chunks, axis=0), offsets, label_collector.result(), source
    )

"""The checks an NPZ archive's and an .npy folder's arrays share: x, lengths and y.

Every message names the file and the array (with its 0-based index where one is wrong).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import offsets_of
from .labels import INT64_MAX, code_point_problem

_NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))


def read_npy_header(fh):
    """(shape, dtype) from the .npy header at the start of the open binary file ``fh``,
    which is left at the array's data; None when numpy reads no header there."""
    try:
        version = np.lib.format.read_magic(fh)
        if version not in _NPY_VERSIONS:
            return None
        read = np.lib.format.read_array_header_1_0
        if version != (1, 0):  # 3.0 differs from 2.0 only in the header's text encoding
            read = np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
    except Exception:  # not a .npy file, or a damaged header
        return None
    return shape, dtype


def refuse_object_array(dtype, name, source) -> None:
    """An object array (what a header declares) is refused by its dtype, before loading
    could unpickle it."""
    if dtype.hasobject:
        raise DataError(
            f"{source}: {name} is an object array; store numbers as float/int arrays and "
            "labels as int or unicode (np.str_) arrays"
        )


def check_x_layout(shape, dtype, name, source, allow_int):
    """Refuse an ``x`` array of this shape and dtype unless 2-D (total_steps, F >= 1) and
    floating (or integer, when ``allow_int``)."""
    if len(shape) != 2:
        raise DataError(
            f"{source}: {name} has {len(shape)} dimension(s) (shape {shape}), expected 2"
            " (total_steps, features)"
        )
    if shape[1] < 1:
        raise DataError(f"{source}: {name} has shape {shape}; expected at least 1 feature")
    if dtype.kind == "f" or (dtype.kind in "iu" and allow_int):
        return
    expected = "float32 or float64" if not allow_int else "a floating or integer dtype"
    kind = (
        "boolean"
        if dtype.kind == "b"
        else "non-numeric"
        if dtype.kind not in "iuc"
        else "unsupported"
    )
    raise DataError(f"{source}: {name} has {kind} dtype {dtype}, expected {expected}")


def check_x_array(x, name, source, allow_int):
    """``x`` checked by check_x_layout; integers become float64."""
    check_x_layout(x.shape, x.dtype, name, source, allow_int)
    return x if x.dtype.kind == "f" else x.astype(np.float64)


def check_lengths(lengths, rows, name, x_name, source):
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
            f"{source}: {name}[{big[0]}] is {lengths[big[0]]}, more than the {rows} rows of"
            f" {x_name}"
        )
    total = int(lengths.sum(dtype=np.int64))  # each length <= rows: no overflow for any real file
    if total != rows:
        raise DataError(
            f"{source}: {name} sums to {total}, but {x_name} has {rows} rows; they must match"
        )
    return offsets_of(lengths)


def check_y_shape(shape, n, name, source):
    """Refuse a ``y`` array unless it has shape (n,), one label per sequence."""
    if len(shape) != 1 or shape[0] != n:
        raise DataError(
            f"{source}: {name} has shape {shape}, expected ({n},), one label per sequence"
        )


def check_y(y, n, name, source):
    """``y`` as int64 or unicode labels, one per sequence, each a valid label."""
    check_y_shape(y.shape, n, name, source)
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
                f"{source}: {name}[{i}] holds {code_point_problem(int(codes[i, k]))} (character"
                f" {k + 1}); labels must be valid Unicode text"
            )
        return y
    if kind in "iu":
        if kind == "u" and y.size and y.max() > INT64_MAX:
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

"""NPZ archives (``.npz``): arrays ``x`` (total_steps, F), ``lengths`` (N,) int and optional
``y`` (N,) int or unicode, loaded with ``allow_pickle=False``.

An archive is read into memory whole, so each member's .npy header is read first and the
size it declares is compared with what the data can be (the member's size in the zip
directory, the rows that ``lengths`` adds up to, the machine's memory) before anything is
decompressed: a small file that declares a huge array is refused without reading it.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from ..errors import DataError
from .arrays import (
    check_lengths,
    check_x_array,
    check_x_layout,
    check_y,
    check_y_shape,
    read_npy_header,
    refuse_object_array,
)
from .common import check_finite_chunked, existing_file
from .dataset import SequenceDataset


class _Declared(NamedTuple):
    """What a member's .npy header says: its zip member name, shape and dtype."""

    member: str
    shape: tuple
    dtype: np.dtype


def _memory_ceiling():
    """Bytes of physical memory, the most an archive's array can need; None if unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes} bytes" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _member_name(npz, key):
    return key if key in npz.zip.namelist() else f"{key}.npy"  # numpy prefers the bare name


def _declared(npz, key, source):
    """The header of array ``key``, refused if it declares more data than the member holds
    or the machine has; None when there is no readable .npy header (loading says why)."""
    member = _member_name(npz, key)
    try:
        info = npz.zip.getinfo(member)
        with npz.zip.open(info) as fh:
            header = read_npy_header(fh)
            data_start = fh.tell()
    except Exception:  # a damaged zip member
        return None
    if header is None:
        return None
    shape, dtype = header
    refuse_object_array(dtype, f"array '{key}'", source)
    declared = math.prod(shape) * dtype.itemsize
    what = f"{source}: array '{key}' (zip member '{member}') declares shape {shape} of {dtype}"
    held = info.file_size - data_start
    if declared > held:
        raise DataError(
            f"{what} ({_size(declared)}), but the member holds {_size(max(held, 0))} of data; the"
            " archive is damaged or was not written by np.savez"
        )
    ceiling = _memory_ceiling()
    if ceiling is not None and declared > ceiling:
        raise DataError(
            f"{what} ({_size(declared)}), more than this machine's memory ({_size(ceiling)}); an"
            " .npz archive is read into memory whole: store large data as an .npy folder (x.npy,"
            " lengths.npy, y.npy), which is memory-mapped"
        )
    return _Declared(member, shape, dtype)


def _npz_member(npz, key, source):
    try:
        value = npz[key]
    except ValueError as exc:
        raise DataError(f"{source}: array '{key}' cannot be read: {exc}") from None
    except Exception as exc:  # zipfile/zlib/format errors of a damaged archive member
        raise DataError(
            f"{source}: array '{key}' cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(value, np.ndarray):  # numpy hands back the raw bytes of a non-.npy member
        raise DataError(
            f"{source}: array '{key}' (zip member '{_member_name(npz, key)}') is not a .npy array"
            " (no .npy header); write the archive with np.savez"
        )
    return value


def _open_npz(fh, source):
    """np.load of the open file ``fh``, refusing what is not an .npz archive."""
    single = f"{source}: holds a single .npy array, expected an .npz archive with x, lengths, y"
    magic = fh.read(4)
    fh.seek(0)
    if magic.startswith(b"\x93NUM"):
        raise DataError(single)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # not a zip (or empty zip): np.load unpickles
        raise DataError(
            f"{source}: not a valid .npz archive (no zip signature); expected arrays x, lengths, y"
        )
    try:
        npz = np.load(fh, allow_pickle=False)
    except Exception as exc:  # numpy/zipfile raise assorted errors on damaged archives
        raise DataError(
            f"{source}: not a valid .npz archive ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(single)
    return npz


def read_npz(path, require_labels=True):
    """Read an NPZ dataset with arrays ``x`` (total_steps, F), ``lengths`` (N,), ``y`` (N,).

    Loaded with ``allow_pickle=False``; object arrays are refused. ``x`` must be 2-D
    float or int (ints become float64) and finite; ``lengths`` 1-D integers >= 1
    summing to ``len(x)``; ``y`` 1-D int or unicode with N entries (an integral float
    array is accepted as ints). ``y`` may be absent when ``require_labels`` is False.
    The sizes the headers declare are checked before any array is decompressed.
    """
    source = str(path)
    # Open the file here: np.load leaks its own handle when the zip directory is damaged.
    with open(existing_file(path), "rb") as fh, _open_npz(fh, source) as npz:
        keys = set(npz.files)
        found = ", ".join(sorted(keys)) or "none"
        for key in ("x", "lengths"):
            if key not in keys:
                raise DataError(f"{source}: missing array '{key}' (found: {found})")
        if require_labels and "y" not in keys:
            raise DataError(f"{source}: missing array 'y' (labels are required; found: {found})")
        head = {key: _declared(npz, key, source) for key in ("x", "lengths", "y") if key in keys}
        x = None
        if head["x"] is None:  # no readable header: loading x says what is wrong
            x = check_x_array(_npz_member(npz, "x", source), "array 'x'", source, allow_int=True)
            rows = x.shape[0]
        else:
            check_x_layout(head["x"].shape, head["x"].dtype, "array 'x'", source, allow_int=True)
            rows = head["x"].shape[0]
        if head["lengths"] is not None and len(head["lengths"].shape) == 1:
            n = head["lengths"].shape[0]
            if n > rows:  # every sequence has a step: N <= rows, whatever the values
                raise DataError(
                    f"{source}: array 'lengths' has {n} entries, more than the {rows} rows of"
                    " array 'x'; every sequence needs at least 1 step"
                )
        lengths = _npz_member(npz, "lengths", source)
        offsets = check_lengths(lengths, rows, "array 'lengths'", "array 'x'", source)
        n = offsets.size - 1
        if head.get("y") is not None:
            check_y_shape(head["y"].shape, n, "array 'y'", source)
        if x is None:
            x = check_x_array(_npz_member(npz, "x", source), "array 'x'", source, allow_int=True)
        y = check_y(_npz_member(npz, "y", source), n, "array 'y'", source) if "y" in keys else None
    check_finite_chunked(x, "array 'x'", source)
    return SequenceDataset(x, offsets, y, source)


def write_npz(ds, path):
    """Write ``ds`` as an .npz archive (x, lengths and, when labelled, y) at exactly ``path``."""
    arrays = {"x": np.asarray(ds.x), "lengths": ds.lengths}
    if ds.labels is not None:
        arrays["y"] = ds.labels
    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
        np.savez(fh, **arrays)

"""NPZ archives (``.npz``) and ``.npy`` folders: arrays ``x`` (total_steps, F), ``lengths``
(N,) int and optional ``y`` (N,) int or unicode.

Loaded with ``allow_pickle=False``. A folder's ``x.npy`` is memory-mapped read-only and
must be float32/float64. Errors name the file and the array (with its 0-based index).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from .common import EXTENSIONS, check_finite_chunked, existing_file, not_found
from .dataset import SequenceDataset, advise_random, offsets_of, release_pages
from .labels import INT64_MAX, code_point_problem

NPY_FOLDER_ARRAYS = ("x", "lengths", "y")  # an .npy data folder's files, each <name>.npy


def _check_x_array(x, name, source, allow_int):
    if x.ndim != 2:
        raise DataError(
            f"{source}: {name} has {x.ndim} dimension(s) (shape {x.shape}), expected 2"
            " (total_steps, features)"
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
            f"{source}: {name}[{big[0]}] is {lengths[big[0]]}, more than the {rows} rows of"
            f" {x_name}"
        )
    total = int(lengths.sum(dtype=np.int64))  # each length <= rows: no overflow for any real file
    if total != rows:
        raise DataError(
            f"{source}: {name} sums to {total}, but {x_name} has {rows} rows; they must match"
        )
    return offsets_of(lengths)


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
                f"{source}: {name}[{i}] holds {code_point_problem(int(codes[i, k]))} (character"
                f" {k + 1});"
                " labels must be valid Unicode text"
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
    with open(existing_file(path), "rb") as fh:
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
    check_finite_chunked(x, "array 'x'", source)
    return SequenceDataset(x, offsets, y, source)


def _load_npy(path, mmap, source, name):
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if magic != b"\x93NUMPY":  # np.load would take the file for a pickle
            raise DataError(
                f"{source}: {name} is not a .npy file (no .npy header); save arrays with np.save"
            )
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        return advise_random(arr) if mmap else arr
    except FileNotFoundError:
        raise not_found(path) from None
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
        raise not_found(source)
    if not os.path.isdir(path):
        raise DataError(f"{source}: expected a directory holding x.npy, lengths.npy and y.npy")
    names = {k: os.path.join(path, f"{k}.npy") for k in NPY_FOLDER_ARRAYS}
    for key in ("x", "lengths") + (("y",) if require_labels else ()):
        if not os.path.isfile(names[key]):
            ext = next((e for e in EXTENSIONS if source.lower().rstrip("/\\").endswith(e)), None)
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
    check_finite_chunked(x, "x.npy", source)
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

"""``.npy`` folders: ``x.npy``, ``lengths.npy`` and optional ``y.npy``, the memory-mappable
form of the NPZ arrays for large data. ``x.npy`` is memory-mapped read-only and must then
be float32/float64 (converting would copy it whole).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from .arrays import (
    check_lengths,
    check_x_array,
    check_y,
    read_npy_header,
    refuse_object_array,
)
from .common import EXTENSIONS, check_finite_chunked, not_found
from .dataset import SequenceDataset, advise_random, release_pages

NPY_FOLDER_ARRAYS = ("x", "lengths", "y")  # an .npy data folder's files, each <name>.npy


def _load_npy(path, mmap, source, name):
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            fh.seek(0)
            header = read_npy_header(fh)
        if magic != b"\x93NUMPY":  # np.load would take the file for a pickle
            raise DataError(
                f"{source}: {name} is not a .npy file (no .npy header); save arrays with np.save"
            )
        if header is not None:
            refuse_object_array(header[1], name, source)
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        return advise_random(arr) if mmap else arr
    except FileNotFoundError:
        raise not_found(path) from None
    except DataError:
        raise
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
            why = {
                "x": " (a directory is read as an .npy folder of x.npy, lengths.npy and y.npy; "
                "to read a file in it, name the file)",
                "y": " (labels are required)",
            }
            raise DataError(f"{source}: missing {key}.npy" + why.get(key, ""))
    raw_x = _load_npy(names["x"], mmap, source, "x.npy")
    if not isinstance(raw_x, np.ndarray):
        raise DataError(f"{source}: x.npy is not a plain array")
    x = check_x_array(raw_x, "x.npy", source, allow_int=not mmap)
    lengths = np.asarray(_load_npy(names["lengths"], False, source, "lengths.npy"))
    offsets = check_lengths(lengths, x.shape[0], "lengths.npy", "x.npy", source)
    y = None
    if os.path.isfile(names["y"]):
        y = check_y(
            np.asarray(_load_npy(names["y"], False, source, "y.npy")),
            offsets.size - 1,
            "y.npy",
            source,
        )
    check_finite_chunked(x, "x.npy", source)
    release_pages(x)  # the check read every row; they need not stay resident
    return SequenceDataset(x, offsets, y, source)


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

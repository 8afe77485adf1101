"""Builders for the binary bad inputs (NPZ data files and damaged checkpoints).

Binary cases are not committed: each builder writes one file into a folder you give it
(a pytest tmp_path in tests/test_bad_inputs.py) and returns its path. Run this module
as a script to write every NPZ data case into a folder for a look by hand:

    python tests/bad_inputs/make_npz.py /tmp/bad_npz

Every NPZ data case is the same small valid dataset (2 features, int labels 0/1, three
sequences of 3, 2 and 4 steps: x has 9 rows) with exactly one thing wrong.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile

import numpy as np


def _good_arrays():
    x = np.arange(18, dtype=np.float64).reshape(9, 2) / 10.0  # (9, 2)
    lengths = np.array([3, 2, 4], dtype=np.int64)
    y = np.array([0, 1, 0], dtype=np.int64)
    return {"x": x, "lengths": lengths, "y": y}


def _savez(path, **arrays):
    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
        np.savez(fh, **arrays)
    return str(path)


class MakeMarker:
    """Unpickling this object calls ``open(marker, "w")``: it creates the marker file.

    A loader that never unpickles leaves the marker absent; that is what the tests check.
    """

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- NPZ data


def npz_ragged(folder):
    """'lengths' sums to 8 but 'x' has 9 rows (the NPZ form of ragged sequences)."""
    a = _good_arrays()
    a["lengths"] = np.array([3, 2, 3], dtype=np.int64)
    return _savez(os.path.join(folder, "ragged.npz"), **a)


def npz_too_long(folder):
    """lengths[2] is 40, more than the 9 rows of 'x'."""
    a = _good_arrays()
    a["lengths"] = np.array([3, 2, 40], dtype=np.int64)
    return _savez(os.path.join(folder, "too_long.npz"), **a)


def npz_x_not_2d(folder):
    """'x' is 1-D (18,) instead of (total_steps, features)."""
    a = _good_arrays()
    a["x"] = a["x"].reshape(-1)
    return _savez(os.path.join(folder, "x_not_2d.npz"), **a)


def npz_zero_length(folder):
    """lengths[1] is 0: a zero-length sequence."""
    a = _good_arrays()
    a["lengths"] = np.array([3, 0, 6], dtype=np.int64)
    return _savez(os.path.join(folder, "zero_length.npz"), **a)


def npz_nan(folder):
    """x[4, 1] is NaN."""
    a = _good_arrays()
    a["x"][4, 1] = np.nan
    return _savez(os.path.join(folder, "nan.npz"), **a)


def npz_inf(folder):
    """x[7, 0] is -Inf."""
    a = _good_arrays()
    a["x"][7, 0] = -np.inf
    return _savez(os.path.join(folder, "inf.npz"), **a)


def npz_huge_value(folder):
    """x[5, 1] is 1e300: finite, but beyond float32's range."""
    a = _good_arrays()
    a["x"][5, 1] = 1e300
    return _savez(os.path.join(folder, "huge_value.npz"), **a)


def npz_non_numeric(folder):
    """'x' holds strings (dtype <U4): non-numeric cells."""
    a = _good_arrays()
    a["x"] = a["x"].astype(str)
    return _savez(os.path.join(folder, "non_numeric.npz"), **a)


def npz_missing_label(folder):
    """No 'y' array at all."""
    a = _good_arrays()
    del a["y"]
    return _savez(os.path.join(folder, "missing_label.npz"), **a)


def npz_label_count(folder):
    """'y' has 2 labels for 3 sequences."""
    a = _good_arrays()
    a["y"] = a["y"][:2]
    return _savez(os.path.join(folder, "label_count.npz"), **a)


def npz_empty_label(folder):
    """y[1] is the empty string."""
    a = _good_arrays()
    a["y"] = np.array(["a", "", "b"])
    return _savez(os.path.join(folder, "empty_label.npz"), **a)


def npz_surrogate_label(folder):
    """y[1] holds a lone surrogate (U+D800): not valid Unicode text, cannot be printed."""
    a = _good_arrays()
    a["y"] = np.array(["a", "\ud800", "a"])
    return _savez(os.path.join(folder, "surrogate_label.npz"), **a)


def npz_bytes_labels(folder):
    """'y' is a bytes array (|S1) holding a non-UTF-8 byte: not unicode labels."""
    a = _good_arrays()
    a["y"] = np.array([b"a", b"\xe9", b"a"])
    return _savez(os.path.join(folder, "bytes_labels.npz"), **a)


def npz_empty(folder):
    """A 0-byte file named .npz."""
    path = os.path.join(folder, "empty.npz")
    open(path, "wb").close()
    return path


def npz_no_arrays(folder):
    """A valid, empty zip archive: no arrays in it."""
    path = os.path.join(folder, "no_arrays.npz")
    with zipfile.ZipFile(path, "w"):
        pass
    return path


def npz_truncated(folder):
    """A valid data .npz cut to 60% of its bytes (the zip directory is gone)."""
    path = _savez(os.path.join(folder, "truncated.npz"), **_good_arrays())
    return truncate(path, 0.6)


def npz_raw_member(folder):
    """A zip whose member 'lengths' (no .npy suffix) holds raw bytes, not a .npy array."""
    path = _savez(os.path.join(folder, "raw_member.npz"), **_good_arrays())
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members.pop("lengths.npy")
    members["lengths"] = b"3,2,4\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def npz_single_npy(folder):
    """A single .npy array saved under a .npz name."""
    path = os.path.join(folder, "single_npy.npz")
    with open(path, "wb") as fh:
        np.save(fh, _good_arrays()["x"])
    return path


def npz_object_array(folder, marker):
    """'y' is an object array whose pickle would create ``marker`` if it were unpickled."""
    a = _good_arrays()
    a["y"] = np.array([MakeMarker(marker), 1, 0], dtype=object)
    path = os.path.join(folder, "object_array.npz")
    with open(path, "wb") as fh:
        np.savez(fh, **a)  # object arrays are pickled inside the archive
    return path


def pickle_as_npz(path, marker):
    """A plain pickle (of an object that creates ``marker`` when unpickled) named .npz."""
    with open(path, "wb") as fh:
        pickle.dump({"x": MakeMarker(marker)}, fh, protocol=2)
    return str(path)


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npz_declares_huge_x(folder, declared_bytes=12 << 30, stored_bytes=64 << 20):
    """x.npy's header declares ``declared_bytes`` of float64 (shape (rows, 2)), but the member
    holds only the header and ``stored_bytes`` of zeros, deflated: a file about 1/1000 of
    ``stored_bytes``. 'lengths' (one sequence of all the declared rows) and 'y' agree with
    the header, so only the member's size in the zip directory gives the lie away."""
    rows = declared_bytes // 16
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (rows, 2)}
    )
    path = os.path.join(folder, "declares_huge_x.npz")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            fh.write(header.getvalue())
            zeros = bytes(1 << 20)
            for _ in range(stored_bytes >> 20):
                fh.write(zeros)
        zf.writestr("lengths.npy", _npy_bytes(np.array([rows], dtype=np.int64)))
        zf.writestr("y.npy", _npy_bytes(np.array([0], dtype=np.int64)))
    return path


def npz_many_lengths(folder, n=4_000_000):
    """'lengths' has ``n`` entries (zeros, compressed to a few KB) for the 9 rows of 'x'."""
    a = _good_arrays()
    a["lengths"] = np.zeros(n, dtype=np.int64)
    path = os.path.join(folder, "many_lengths.npz")
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **a)
    return path


def npz_many_labels(folder, n=4_000_000):
    """'y' has ``n`` labels (zeros, compressed to a few KB) for the 3 sequences."""
    a = _good_arrays()
    a["y"] = np.zeros(n, dtype=np.int64)
    path = os.path.join(folder, "many_labels.npz")
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **a)
    return path


# Not in NPZ_DATA_CASES: tests/test_data.py checks them (with a memory bound).
NPZ_SIZE_CASES = {
    "declares_huge_x": npz_declares_huge_x,
    "many_lengths": npz_many_lengths,
    "many_labels": npz_many_labels,
}


NPZ_DATA_CASES = {
    "ragged": npz_ragged,
    "too_long": npz_too_long,
    "x_not_2d": npz_x_not_2d,
    "zero_length": npz_zero_length,
    "nan": npz_nan,
    "inf": npz_inf,
    "huge_value": npz_huge_value,
    "non_numeric": npz_non_numeric,
    "missing_label": npz_missing_label,
    "label_count": npz_label_count,
    "empty_label": npz_empty_label,
    "surrogate_label": npz_surrogate_label,
    "bytes_labels": npz_bytes_labels,
    "empty": npz_empty,
    "no_arrays": npz_no_arrays,
    "truncated": npz_truncated,
    "single_npy": npz_single_npy,
    "raw_member": npz_raw_member,
}


# --------------------------------------------------------------------------- damage


def truncate(path, fraction):
    """Cut the file at ``path`` to ``fraction`` of its size, in place; return the path."""
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(int(size * fraction))
    return str(path)


def flip_bit(path, offset, bit=0):
    """Flip one bit of the byte at ``offset`` (negative: from the end), in place."""
    with open(path, "r+b") as fh:
        data = bytearray(fh.read())
        data[offset] ^= 1 << bit
        fh.seek(0)
        fh.write(data)
    return str(path)


def _read_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def edit_parameter(src, dst):
    """A re-saved copy of checkpoint ``src`` with head.b[0] changed by +0.5 (valid zip, valid
    CRCs, stale sha256): a hand-edited parameter."""
    arrays = _read_arrays(src)
    arrays["head.b"] = arrays["head.b"].copy()
    arrays["head.b"][0] += 0.5
    return _savez(dst, **arrays)


def edit_meta(src, dst):
    """A re-saved copy of checkpoint ``src`` whose stored class labels were swapped by hand."""
    import json

    arrays = _read_arrays(src)
    doc = json.loads(str(arrays["meta"]))
    doc["meta"]["classes"] = list(reversed(doc["meta"]["classes"]))
    arrays["meta"] = np.array(json.dumps(doc))
    return _savez(dst, **arrays)


def add_object_array(src, dst, marker):
    """A copy of checkpoint ``src`` with an extra object array; unpickling it creates ``marker``."""
    arrays = _read_arrays(src)
    arrays["evil"] = np.array([MakeMarker(marker)], dtype=object)
    return _savez(dst, **arrays)


def member_data_offset(path, member):
    """(offset, size) of the stored bytes of zip member ``member`` (e.g. "head.W.npy")."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len = int.from_bytes(fh.read(2), "little")
        extra_len = int.from_bytes(fh.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def main(argv):
    if len(argv) != 2:
        print("usage: python make_npz.py OUT_DIR", file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    for build in (*NPZ_DATA_CASES.values(), *NPZ_SIZE_CASES.values()):
        print(build(out))
    print(npz_object_array(out, os.path.join(out, "MARKER-object-array-was-unpickled")))
    marker = os.path.join(out, "MARKER-pickle-was-unpickled")
    print(pickle_as_npz(os.path.join(out, "pickle.npz"), marker))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""One-file checkpoints: an ``.npz`` of arrays plus a JSON string, written atomically.

Layout of ``<name>.npz`` (README.md, "Checkpoint format"):

* every model parameter under its public name (``lstm.0.W``, ``head.b``, ...);
* every extra array (optimizer state) under ``"optim." + key`` (``optim.m.lstm.0.W``);
* ``meta``: a 0-d unicode array holding one JSON object::

      {"format_version": 1,
       "params": [{"name": "lstm.0.W", "shape": [7, 16], "dtype": "<f4"}, ...],
       "optim":  [{"name": "m.lstm.0.W", ...}, ...],
       "meta":   {... the caller's dict: config, classes, normalisation, epoch, ...},
       "sha256": "<hex>"}

The sha256 covers every stored array (name, dtype, shape and bytes, in sorted-name
order) **and** the canonical JSON of everything above except the digest itself, so an
edited number in the metadata is refused as well as a damaged array.

Only plain numeric/string arrays are stored (``np.savez(..., allow_pickle=False)``) and
loading uses ``np.load(..., allow_pickle=False)``; array headers are inspected before any
data is read, so an object array is refused without being touched and nothing is ever
unpickled.

The caller's ``meta`` goes through JSON: tuples come back as lists, dict keys as
strings, and NumPy scalars other than ``np.float64`` (a ``float`` subclass) are
refused at save time; convert them with ``.item()`` first.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import CheckpointError
from ..validate import is_int
from .atomic import atomic_write

__all__ = ["FORMAT_VERSION", "Checkpoint", "save_checkpoint", "load_checkpoint", "read_meta"]

FORMAT_VERSION = 1

_META = "meta"
_OPTIM_PREFIX = "optim."
# ``meta`` is ours; ``file`` and ``allow_pickle`` are np.savez's own parameter names.
_RESERVED_NAMES = frozenset({_META, "file", "allow_pickle"})
_PICKLE_PROTO_BYTE = b"\x80"  # first byte of any pickle of protocol >= 2
# allow_pickle=False goes to np.savez only where it is a keyword (elsewhere it would be
# stored as an array named "allow_pickle"); _collect refuses object arrays either way.
_SAVEZ_KWARGS = (
    {"allow_pickle": False} if "allow_pickle" in inspect.signature(np.savez).parameters else {}
)


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns."""

    params: dict[str, np.ndarray]  # public parameter names, in saved order
    optim_arrays: dict[str, np.ndarray]  # extra arrays, "optim." prefix stripped
    meta: dict  # the caller's meta dict, as saved (via JSON)
    format_version: int = FORMAT_VERSION
    sha256: str = field(default="", repr=False)


# ------------------------------------------------------------------------- shared bits


def _canonical_json(doc) -> str:
    """Deterministic JSON: sorted keys, no spaces, ASCII only. Floats use repr (round trip)."""
    return json.dumps(_str_keys(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _str_keys(doc):
    """doc with every dict key as the str JSON would make of it, so that a dict mixing int
    and str keys (e.g. class weights {1: 2.0, "b": 0.5}) can be sorted. Raises ValueError
    when two keys would become the same str (1 and "1")."""
    if isinstance(doc, Mapping):
        out = {}
        for k, v in doc.items():
            if isinstance(k, (bool, int, float)) or k is None:
                k = json.dumps(k)  # what json.dumps does to a key: 1 -> "1", True -> "true"
            if k in out:
                raise ValueError(f"two keys would both be written as {k!r}")
            out[k] = _str_keys(v)
        return out
    if isinstance(doc, (list, tuple)):
        return [_str_keys(v) for v in doc]
    return doc


def _digest(arrays: Mapping[str, np.ndarray], body: str) -> str:
    """sha256 over the arrays (sorted by name) and the canonical meta body."""
    h = hashlib.sha256()
    h.update(b"lstm_cli checkpoint\0")
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(_canonical_json([name, a.dtype.str, list(a.shape), a.nbytes]).encode() + b"\0")
        h.update(a.reshape(-1).view(np.uint8))
    h.update(b"meta\0")
    h.update(body.encode("ascii"))
    return h.hexdigest()


def _record(name: str, a: np.ndarray) -> dict:
    return {"name": name, "shape": list(a.shape), "dtype": a.dtype.str}


# -------------------------------------------------------------------------------- save


def _unwritable(path, why) -> CheckpointError:
    return CheckpointError(f"cannot write checkpoint {path}: {why}")


def _collect(path, params, extra_arrays):
    """Validate names and arrays; return (arrays to store, params record, optim record)."""
    if not isinstance(params, Mapping) or not params:
        raise _unwritable(path, "params must be a non-empty dict")
    stored: dict[str, np.ndarray] = {}
    params_rec, optim_rec = [], []
    groups = [(params, "", params_rec)]
    if extra_arrays:
        if not isinstance(extra_arrays, Mapping):
            raise _unwritable(path, "extra_arrays must be a dict")
        groups.append((extra_arrays, _OPTIM_PREFIX, optim_rec))
    for arrays, prefix, rec in groups:
        for name, value in arrays.items():
            if not isinstance(name, str) or not name:
                raise _unwritable(path, f"bad array name {name!r}")
            if not prefix and (name in _RESERVED_NAMES or name.startswith(_OPTIM_PREFIX)):
                raise _unwritable(path, f"parameter name {name!r} is reserved")
            a = np.asarray(value)
            if a.dtype.hasobject:
                raise _unwritable(path, f"array {name!r} has object dtype")
            stored[prefix + name] = a
            rec.append(_record(name, a))
    return stored, params_rec, optim_rec


def save_checkpoint(path, params, meta, extra_arrays=None) -> None:
    """Write ``params``, ``extra_arrays`` and ``meta`` to ``path`` atomically.

    ``params``: dict name -> array, stored under the same names.
    ``extra_arrays``: optional dict (e.g. the first element of an optimizer's
    ``state_dict()``), stored under ``"optim." + key``.
    ``meta``: JSON-serialisable dict (config, classes, normalisation, epoch, step,
    metrics, rng state, optimizer/schedule meta, ...).

    The file is written to ``<path>.tmp-<random>`` in the same folder, flushed and
    fsynced, then renamed onto ``path`` with ``os.replace``; the folder is then fsynced
    (best effort). On any failure the temp file is removed and an existing file at
    ``path`` is left untouched; ``OSError`` becomes ``CheckpointError`` naming ``path``.
    """
    path = os.fspath(path)
    stored, params_rec, optim_rec = _collect(path, params, extra_arrays)
    if not isinstance(meta, Mapping):
        raise _unwritable(path, "meta must be a dict")
    doc = {
        "format_version": FORMAT_VERSION,
        "params": params_rec,
        "optim": optim_rec,
        "meta": dict(meta),
    }
    try:
        # Round trip once so that the body we hash is exactly what load will rebuild.
        body = _canonical_json(json.loads(_canonical_json(doc)))
    except (TypeError, ValueError) as exc:
        raise _unwritable(path, f"meta is not JSON-serialisable ({exc})") from exc
    stamped = json.loads(body)
    stamped["sha256"] = _digest(stored, body)
    text = _canonical_json(stamped)

    try:
        atomic_write(
            path, lambda f: np.savez(f, **_SAVEZ_KWARGS, **{_META: np.array(text)}, **stored)
        )
    except OSError as exc:
        raise _unwritable(path, exc) from exc


# -------------------------------------------------------------------------------- load


def _open_npz(path: str):
    """np.load the file as an NpzFile, turning every failure into CheckpointError."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc}") from exc
    if not head:
        raise CheckpointError(f"{path}: the file is empty, not a checkpoint")
    if head.startswith(_PICKLE_PROTO_BYTE):
        raise CheckpointError(
            f"{path}: this is a pickle file, not an .npz checkpoint; lstm_cli never unpickles"
        )
    if not head.startswith(b"PK"):
        raise CheckpointError(f"{path}: not an .npz checkpoint (no zip signature)")
    # Our own file object, closed on every path: np.load(path) leaks its file when the zip
    # directory of a truncated file cannot be read.
    fh = open(path, "rb")
    try:
        obj = np.load(fh, allow_pickle=False)
        if not isinstance(obj, np.lib.npyio.NpzFile):  # pragma: no cover - "PK" ruled out .npy
            raise CheckpointError(f"{path}: not an .npz checkpoint")
    except CheckpointError:
        fh.close()
        raise
    except Exception as exc:  # zipfile/OS/numpy failures of every kind: the file is bad
        fh.close()
        raise CheckpointError(
            f"{path}: not a valid .npz checkpoint (truncated or damaged?): {exc}"
        ) from exc
    obj.fid = fh  # NpzFile.close() (the callers' with-block) closes it
    return obj


def _read_headers(npz, path: str) -> dict:
    """name -> (shape, dtype) from each member's .npy header, without reading the data."""
    headers: dict[str, tuple] = {}
    for member in npz.zip.namelist():
        if not member.endswith(".npy"):
            raise CheckpointError(f"{path}: unexpected entry {member!r} (not an .npy array)")
        name = member[: -len(".npy")]
        if name in headers:
            raise CheckpointError(f"{path}: array {name!r} appears twice")
        try:
            with npz.zip.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise CheckpointError(
                        f"{path}: array {name!r} uses unsupported .npy format version {version}"
                    )
        except CheckpointError:
            raise
        except Exception as exc:
            raise _damaged(path, name, exc) from exc
        if dtype.hasobject:
            raise CheckpointError(
                f"{path}: array {name!r} holds Python objects (dtype {dtype}); refusing to "
                "load it because that would need pickle"
            )
        headers[name] = (tuple(shape), dtype)
    return headers


def _damaged(path: str, name: str, exc: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: the file is damaged (cannot read array {name!r}: {exc})")


def _read_array(npz, name: str, path: str) -> np.ndarray:
    try:
        a = npz[name]
    except Exception as exc:  # e.g. zipfile.BadZipFile("Bad CRC-32 ..."), short reads
        raise _damaged(path, name, exc) from exc
    if not isinstance(a, np.ndarray):  # pragma: no cover - headers were checked
        raise CheckpointError(f"{path}: entry {name!r} is not an array")
    return a


def _check_records(recs, what: str, path: str) -> list:
    if not isinstance(recs, list):
        raise CheckpointError(f"{path}: meta is malformed ({what!r} is not a list)")
    seen = set()
    for r in recs:
        ok = (
            isinstance(r, dict)
            and isinstance(r.get("name"), str)
            and isinstance(r.get("dtype"), str)
            and isinstance(r.get("shape"), list)
            and all(is_int(n) and n >= 0 for n in r["shape"])
        )
        if not ok:
            raise CheckpointError(f"{path}: meta is malformed (bad {what!r} record {r!r})")
        if r["name"] in seen:
            raise CheckpointError(f"{path}: meta is malformed ({r['name']!r} listed twice)")
        seen.add(r["name"])
    return recs


def _read_doc(npz, headers: dict, path: str) -> dict:
    """Read, parse and validate the meta JSON (format version, structure); no checksum."""
    if _META not in headers:
        raise CheckpointError(f"{path}: no 'meta' entry; not an lstm_cli checkpoint")
    shape, dtype = headers[_META]
    if shape != () or dtype.kind != "U":
        raise CheckpointError(
            f"{path}: 'meta' must be a 0-d unicode string, got shape {shape} dtype {dtype}"
        )
    text = str(_read_array(npz, _META, path)[()])
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: meta is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: meta is not a JSON object")
    if "format_version" not in doc:
        raise CheckpointError(f"{path}: meta has no format_version; not an lstm_cli checkpoint")
    version = doc["format_version"]
    if not is_int(version) or version < 1:
        raise CheckpointError(f"{path}: unsupported format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer lstm_cli (format_version {version}; this version "
            f"reads up to {FORMAT_VERSION}); upgrade lstm_cli to load it"
        )
    digest = doc.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise CheckpointError(f"{path}: meta is malformed (missing or bad 'sha256')")
    if not isinstance(doc.get("meta"), dict):
        raise CheckpointError(f"{path}: meta is malformed ('meta' is not an object)")
    _check_records(doc.get("params"), "params", path)
    _check_records(doc.get("optim"), "optim", path)
    if not doc["params"]:
        raise CheckpointError(f"{path}: meta is malformed (no parameters recorded)")
    return doc


def looks_like_checkpoint(path) -> bool:
    """Whether the file at ``path``, whatever its name, is an lstm_cli checkpoint by its
    form: a zip archive (an .npz) holding the meta entry. Reads the zip's directory only;
    load_checkpoint is what checks one."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return False
            with zipfile.ZipFile(fh) as zf:
                return f"{_META}.npy" in zf.namelist()  # the member np.savez writes for it
    except (OSError, zipfile.BadZipFile):
        return False


def load_checkpoint(path) -> Checkpoint:
    """Load and fully verify a checkpoint written by ``save_checkpoint``.

    Checks, in order: the file exists and is a zip/.npz (a pickle is refused without
    being unpickled); no array has an object dtype; ``meta`` is present, valid JSON and
    of a supported ``format_version``; every recorded array is present with the
    recorded shape and dtype and nothing else is stored; every array reads back intact
    (zip CRC); the sha256 over arrays and meta matches. Any failure raises
    ``CheckpointError`` naming ``path``.
    """
    path = os.fspath(path)
    with _open_npz(path) as npz:
        headers = _read_headers(npz, path)
        doc = _read_doc(npz, headers, path)
        expected: dict[str, tuple[str, dict]] = {}
        for r in doc["params"]:
            expected[r["name"]] = ("parameter", r)
        for r in doc["optim"]:
            expected[_OPTIM_PREFIX + r["name"]] = ("optimizer array", r)
        for name, (kind, r) in expected.items():
            if name not in headers:
                raise CheckpointError(f"{path}: missing {kind} {name!r}")
            shape, dtype = headers[name]
            want_shape = tuple(r["shape"])
            if shape != want_shape or dtype.str != r["dtype"]:
                raise CheckpointError(
                    f"{path}: {kind} {name!r} has shape {shape} dtype {dtype.str}, but the "
                    f"meta records shape {want_shape} dtype {r['dtype']}"
                )
        unexpected = sorted(set(headers) - set(expected) - {_META})
        if unexpected:
            raise CheckpointError(f"{path}: unexpected arrays {unexpected} not recorded in meta")
        arrays = {name: _read_array(npz, name, path) for name in expected}

    digest = doc.pop("sha256")
    if _digest(arrays, _canonical_json(doc)) != digest:
        raise CheckpointError(f"{path}: checksum mismatch: the file was damaged or edited")
    params = {r["name"]: arrays[r["name"]] for r in doc["params"]}
    optim_arrays = {r["name"]: arrays[_OPTIM_PREFIX + r["name"]] for r in doc["optim"]}
    return Checkpoint(
        params=params,
        optim_arrays=optim_arrays,
        meta=doc["meta"],
        format_version=doc["format_version"],
        sha256=digest,
    )


def read_meta(path) -> dict:
    """Return the caller's meta dict of a checkpoint without loading any parameter.

    Cheap: reads only the array headers and the ``meta`` entry, and checks the format
    version and structure. It does **not** verify the checksum (that needs every
    array), so use ``load_checkpoint`` before trusting the file as a whole.
    """
    path = os.fspath(path)
    with _open_npz(path) as npz:
        headers = _read_headers(npz, path)
        return _read_doc(npz, headers, path)["meta"]

"""A PyTorch ``nn.LSTM`` + ``nn.Linear`` state_dict (safetensors) as an lstm_cli checkpoint.

The file must hold exactly the keys ``torch_state`` writes (``lstm.weight_ih_l{k}``,
``lstm.weight_hh_l{k}``, ``lstm.bias_ih_l{k}``, ``lstm.bias_hh_l{k}`` for k < L, then
``fc.weight``, ``fc.bias``) with consistent shapes; anything else is a CheckpointError
naming the file and the key. Pickles (``.pt``/``.pth``, ``torch.save``) are refused
unread: safetensors is the pickle-free format.

What the weights do not say (labels, normalisation, head, forget_bias) comes from, in
order of precedence: the caller (command line / a small YAML), the file's own metadata
when lstm-export wrote it, else defaults (no normalisation, head "last", forget_bias 0:
PyTorch folds it into the biases). What checkpoint_from_state returns has passed
``inference.trained_model``, the checks lstm-eval applies on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

import numpy as np

from .. import __version__
from ..data.csvfile import CSV_OPTION_KEYS
from ..errors import CheckpointError, ConfigError
from ..extras import require
from ..inference import _TRANSFORM_KEYS, BadMetadata, trained_model
from ..nn.interop import from_pytorch
from ..nn.model import HEADS
from ..nn.spec import CONSTRAINTS
from ..store.checkpoint import looks_like_checkpoint
from ..validate import Invalid, as_float, check, show

_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin")
_SAVE_HINT = (
    "lstm_cli never unpickles; save the state_dict with safetensors instead: "
    "safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
)
_LAYER_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _bad(path, what) -> CheckpointError:
    return CheckpointError(f"{path}: {what}")


def read_state(path):
    """(state {name: array}, metadata {str: str}) of a safetensors file, never unpickling."""
    path = os.fspath(path)
    if path.lower().endswith(_PICKLE_SUFFIXES):
        raise _bad(path, f"a {os.path.splitext(path)[1]} file is a pickle; {_SAVE_HINT}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as err:
        raise _bad(path, f"cannot read: {err.strerror or err}") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header ("{"); its
    # first byte may be 0x80 (a length of 128 + 256 n), so the pickle test comes second
    safetensors = len(head) == 9 and head[8:] == b"{"
    if safetensors and int.from_bytes(head[:8], "little") + 8 <= os.path.getsize(path):
        pass
    elif looks_like_checkpoint(path):
        raise _bad(
            path,
            "this is an lstm_cli checkpoint already: lstm-eval, lstm-predict and "
            "train.init_from take it as it is (lstm-import reads a PyTorch state_dict)",
        )
    elif head[:1] == b"\x80" or head[:2] == b"PK":  # pickle protocol 2+, torch.save's zip
        raise _bad(path, f"this is a pickle (torch.save) file, not safetensors; {_SAVE_HINT}")
    else:
        raise _bad(path, "not a safetensors file (no valid header)")
    st = require("safetensors", "safetensors", "lstm-import")
    try:
        with st.safe_open(path, framework="numpy") as f:
            meta = dict(f.metadata() or {})
            state = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # SafetensorError, bf16 (no numpy dtype), damaged data
        raise _bad(path, f"not a readable safetensors file ({err})") from None
    return state, meta


_LAYER_KEY = re.compile(r"lstm\.(?:weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(?:_reverse)?")


def _layers(state, path):
    """1 + the highest layer index among the LSTM's keys (so a stray layer shows as missing
    keys, not as an unexpected one)."""
    found = [int(m.group(1)) for m in map(_LAYER_KEY.fullmatch, state) if m]
    L = max(found, default=0) + 1
    if L > len(state):
        raise _bad(path, f"layer index {L - 1} in a state_dict of {len(state)} tensors")
    return L


def check_state(state, path, bidirectional=None):
    """(num_layers, input_size, hidden_size, num_classes, bidirectional) of a state_dict,
    after checking that its keys are exactly those of ``nn.LSTM`` (``bidirectional=True``:
    also the ``*_reverse`` keys of every layer) + ``nn.Linear`` and its shapes agree.

    bidirectional: what the caller or the file's metadata says, or None to go by the keys
    (any ``*_reverse`` key means a bidirectional nn.LSTM)."""
    if any("weight_hr" in k for k in state):
        raise _bad(path, "an nn.LSTM with proj_size (keys 'weight_hr_l*') is not supported")
    if bidirectional is None:
        bidirectional = any(k.endswith("_reverse") for k in state)
    L = _layers(state, path)
    suffixes = ("", "_reverse") if bidirectional else ("",)
    want = [f"lstm.{n}_l{k}{s}" for k in range(L) for s in suffixes for n in _LAYER_KEYS]
    want += ["fc.weight", "fc.bias"]
    missing = [k for k in want if k not in state]
    extra = sorted(set(state) - set(want))
    if missing or extra:
        parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
        kind = "a bidirectional nn.LSTM" if bidirectional else "an nn.LSTM"
        raise _bad(
            path,
            f"not the state_dict of {kind} named 'lstm' and an nn.Linear named 'fc': "
            + ", ".join(p for p in parts if p),
        )
    w = state["lstm.weight_hh_l0"]
    if w.ndim != 2 or w.shape[0] != 4 * w.shape[1] or w.shape[1] < 1:
        raise _bad(path, f"'lstm.weight_hh_l0' has shape {w.shape}; expected (4H, H)")
    H = w.shape[1]
    D = len(suffixes)
    I = state["lstm.weight_ih_l0"].shape[-1] if state["lstm.weight_ih_l0"].ndim == 2 else 0
    K = state["fc.weight"].shape[0] if state["fc.weight"].ndim == 2 else 0
    shapes = {"fc.weight": (K, D * H), "fc.bias": (K,)}
    for k in range(L):
        for s in suffixes:
            shapes[f"lstm.weight_ih_l{k}{s}"] = (4 * H, I if k == 0 else D * H)
            shapes[f"lstm.weight_hh_l{k}{s}"] = (4 * H, H)
            shapes[f"lstm.bias_ih_l{k}{s}"] = shapes[f"lstm.bias_hh_l{k}{s}"] = (4 * H,)
    for name in want:
        a = state[name]
        if a.shape != shapes[name] or 0 in a.shape:
            raise _bad(
                path,
                f"{name!r} has shape {a.shape}; expected {shapes[name]} "
                f"(hidden size {H} from 'lstm.weight_hh_l0')",
            )
        if a.dtype.kind != "f":
            raise _bad(path, f"{name!r} has dtype {a.dtype}; expected floating point")
        if not np.isfinite(a).all():
            raise _bad(path, f"{name!r} holds NaN or Inf")
    return L, I, H, K, bidirectional


def params_from_state(state, forget_bias, path="state_dict", bidirectional=None):
    """lstm_cli parameters (lstm.{k}.W, lstm.{k}.b, lstm.{k}.reverse.W/b when
    bidirectional, head.W, head.b) of a checked state_dict.

    When every ``bias_hh`` is exactly forget_bias on its forget block and 0 elsewhere (what
    lstm-export writes), b is ``bias_ih`` itself; otherwise b = bias_ih + bias_hh with
    forget_bias taken out of the forget block."""
    _, _, H, _, _ = check_state(state, path, bidirectional)
    dtype = np.float64 if any(a.dtype == np.float64 for a in state.values()) else np.float32
    plain = {k[len("lstm.") :]: np.asarray(v, dtype) for k, v in state.items() if k[:5] == "lstm."}
    plain["head.weight"] = np.asarray(state["fc.weight"], dtype)
    plain["head.bias"] = np.asarray(state["fc.bias"], dtype)
    marker = np.zeros(4 * H, dtype)
    marker[H : 2 * H] = forget_bias  # PyTorch order i, f, g, o
    fold = forget_bias
    bias_hh = [k for k in plain if k.startswith("bias_hh_l")]
    if all(np.array_equal(plain[k], marker) for k in bias_hh):
        for k in bias_hh:
            plain[k] = np.zeros(4 * H, dtype)
        fold = 0.0
    params = from_pytorch(plain, forget_bias=fold)
    return {k: np.ascontiguousarray(v, dtype) for k, v in params.items()}


def _where(source, key):
    """How an error names a setting: the option (--classes) or the file and key."""
    return source if source.startswith("--") else f"{source}: {key!r}"


def _checked_labels(classes, K, source):
    if not isinstance(classes, list) or not classes:
        raise ConfigError(f"{_where(source, 'classes')} must be a non-empty list of labels")
    if len(classes) != K:
        raise ConfigError(
            f"{_where(source, 'classes')} lists {len(classes)} labels, but 'fc.weight' has "
            f"{K} rows (one per class)"
        )
    kinds = {type(c) for c in classes}
    if not (kinds <= {str} or kinds <= {int}) or any(c == "" for c in classes):
        raise ConfigError(
            f"{_where(source, 'classes')} must be all non-empty strs or all ints; got {classes!r}"
        )
    if len(set(classes)) != len(classes):
        raise ConfigError(f"{_where(source, 'classes')} lists a label twice: {classes!r}")
    return list(classes)


def _checked_norm(norm, F, source):
    if norm is None:
        return None
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise ConfigError(
            f"{_where(source, 'normalization')} must be null or {{mean: [...], std: [...]}}"
        )
    out = {}
    for name in ("mean", "std"):
        values = norm[name]
        numbers = _numbers(values) if isinstance(values, list) and len(values) == F else None
        if numbers is None or (name == "std" and min(numbers) <= 0):
            raise ConfigError(
                f"{_where(source, 'normalization.' + name)} must be {F} finite numbers "
                f"(one per input feature){', each > 0' if name == 'std' else ''}; got {values!r}"
            )
        out[name] = numbers
    return out


def _numbers(values) -> list | None:
    """The finite numbers ``values`` holds, as floats (a YAML '1e-1' is one, as in the
    config: validate.as_float), or None if any is not one."""
    try:
        floats = [as_float(v) for v in values]
    except Invalid:
        return None
    return floats if all(math.isfinite(v) for v in floats) else None


def file_settings(meta, source) -> dict:
    """Labels, normalisation, head and forget_bias from a file lstm-export wrote ({} for
    another file). A value of it that does not parse is a ConfigError naming ``source``
    and the key: skipping it would import the model without, say, its normalisation."""
    if meta.get("format") is None or not str(meta["format"]).startswith("lstm_cli"):
        return {}
    out = {}
    for key, parse in _FILE_KEYS.items():
        if key in meta:
            try:
                out[key] = parse(meta[key])
            except ValueError:
                raise ConfigError(
                    f"{_where(f'{source} metadata', key)} is {show(meta[key])}, which does not"
                    " parse: the file's lstm_cli metadata is damaged"
                ) from None
    if "head" in meta:
        if meta["head"] not in HEADS:
            raise ConfigError(
                f"{_where(f'{source} metadata', 'head')} is {show(meta['head'])}; expected one"
                f" of {', '.join(HEADS)}: the file's lstm_cli metadata is damaged"
            )
        out["head"] = meta["head"]
    return out


# the metadata keys lstm-export writes as text, and how each is read back
_FILE_KEYS = {
    "classes": json.loads,
    "normalization": json.loads,
    "forget_bias": float,
    "bidirectional": json.loads,
    "transforms": json.loads,
    "csv": json.loads,
}
# what the weights do not say: the settings a caller (lstm-import --meta) may give
SETTING_KEYS = (*_FILE_KEYS, "head")


_TRANSFORMS_OFF = {key: off for key, off in _TRANSFORM_KEYS.values()}  # as config.data keys


def build_import_meta(spec, classes, normalization, provenance, transforms=None, csv=None) -> dict:
    """The checkpoint meta of an imported model: what ``inference.load_trained`` reads
    (``model``, ``classes``, ``normalization``, the input transforms and the CSV options
    ``csv`` as ``config.data``) plus where it came from. The one place that shapes an
    imported checkpoint's meta (the trainer builds its own in Trainer.base_meta). The
    values are copied as they are: ``inference.trained_model`` judges them."""
    meta = {
        "lstm_cli_version": __version__,
        "model": spec,
        "classes": classes,
        "normalization": normalization,
        "imported_from": provenance,
    }
    t = transforms or {}
    data = {key: t.get(k, off) for k, (key, off) in _TRANSFORM_KEYS.items()}
    if csv:
        data["csv"] = csv
    if data != _TRANSFORMS_OFF:
        meta["config"] = {"data": data}
    return meta


def checkpoint_from_state(path, settings=None, sources=None):
    """(params, meta) of an lstm_cli checkpoint from the safetensors file ``path``.

    settings: {classes, normalization, head, forget_bias, bidirectional, transforms, csv}
    from the caller, each optional; they win over the file's own metadata, a None too
    (normalization None: none; bidirectional None: by the keys). sources: {key: where it
    came from} for error messages (an option such as "--classes", or a YAML file's name)."""
    path = os.fspath(path)
    sources = sources or {}
    state, file_meta = read_state(path)
    if "members" in file_meta or any(k.startswith("members.") for k in state):
        raise CheckpointError(
            f"{path} holds an ensemble (lstm-export of several checkpoints); lstm-import "
            "takes one model: export the members one by one to import them"
        )
    given = dict(settings or {})
    from_file = file_settings(file_meta, path)
    bi = given.get("bidirectional", from_file.get("bidirectional"))
    if bi is not None and not isinstance(bi, bool):
        where_bi = sources.get("bidirectional", "the caller") if "bidirectional" in given else path
        raise ConfigError(f"{_where(where_bi, 'bidirectional')} must be true or false")
    L, F, H, K, bi = check_state(state, path, bi)
    merged = {"normalization": None, "head": "last", "forget_bias": 0.0, **from_file, **given}
    merged.pop("bidirectional", None)
    where = {
        k: (sources.get(k, "the caller's settings") if k in given else f"{path} metadata")
        for k in merged
    }
    transforms = merged.pop("transforms", None)
    csv = merged.pop("csv", None)
    if not (csv is None or isinstance(csv, dict) and set(csv) <= set(CSV_OPTION_KEYS)):
        raise ConfigError(
            f"{_where(where['csv'], 'csv')} is {show(csv)}; expected a mapping of "
            f"{', '.join(CSV_OPTION_KEYS)}"
        )
    if not (
        transforms is None
        or isinstance(transforms, dict)
        and set(transforms) <= set(_TRANSFORM_KEYS)
    ):
        raise ConfigError(
            f"{_where(where['transforms'], 'transforms')} is {show(transforms)}; expected a "
            f"mapping of {', '.join(_TRANSFORM_KEYS)}"
        )
    if "classes" not in merged:
        raise ConfigError(
            f"{path} does not name its classes: give them with --classes a,b,c or in --meta"
        )
    classes = _checked_labels(merged["classes"], K, where["classes"])
    norm = _checked_norm(merged["normalization"], F, where["normalization"])
    if merged["head"] not in HEADS:
        raise ConfigError(
            f"{_where(where['head'], 'head')} must be one of {', '.join(HEADS)}; "
            f"got {merged['head']!r}"
        )
    fb = check(
        "forget_bias",
        merged["forget_bias"],
        CONSTRAINTS["forget_bias"],
        where["forget_bias"],
        ConfigError,
    )
    params = _folded(state, fb, path, bi, where["forget_bias"])
    spec = {
        "input_size": F,
        "hidden_size": H,
        "num_classes": K,
        "num_layers": L,
        "head": merged["head"],
        "forget_bias": fb,
        "dtype": str(params["head.W"].dtype),
        "bidirectional": bi,
    }
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    provenance = {"file": os.path.basename(path), "sha256": digest, "format": "safetensors"}
    meta = build_import_meta(spec, classes, norm, provenance, transforms, csv)
    try:  # what lstm-eval checks on load, so what is written is what it accepts
        trained_model(params, meta)
    except BadMetadata as bad:
        source = sources.get(bad.entry, path) if bad.entry in given else path
        raise ConfigError(f"{source}: cannot import: {bad} (lstm-eval would refuse it)") from None
    return params, meta


def _folded(state, fb, path, bi, source):
    """params_from_state, or a ConfigError when lstm_cli's bias (bias_ih + bias_hh with
    forget_bias taken out of the forget block) overflows the model's float type."""
    try:
        with np.errstate(over="raise"):
            return params_from_state(state, fb, path, bi)
    except FloatingPointError:
        what = f"{_where(source, 'forget_bias')} = {fb!r}" if fb else f"{path}: bias_ih + bias_hh"
        raise ConfigError(
            f"{what} overflows the model's float type: lstm_cli's bias, bias_ih + bias_hh - "
            "forget_bias on the forget block, would not be finite"
        ) from None

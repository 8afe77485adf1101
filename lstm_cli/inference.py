"""Using a trained model on a dataset: load a checkpoint, predict, evaluate.

The library side of ``lstm-eval`` and ``lstm-predict``; also used by the trainer for
validation. Batches are formed by length (bucketed, not shuffled) so little compute is
spent on padding, and results are returned in the dataset's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .data import SequenceDataset, encode_labels, label_text_problem, make_batches, pad_batch
from .errors import CheckpointError, DataError
from .nn.metrics import classification_report
from .nn.model import DTYPES, HEADS, INITS, LSTMClassifier, param_shapes
from .store.checkpoint import load_checkpoint
from .validate import show as _show


@dataclass
class TrainedModel:
    """A model with what it needs to read raw data: the label map and normalisation."""

    model: LSTMClassifier
    classes: list  # class index -> original label
    mean: np.ndarray | None  # (F,) or None
    std: np.ndarray | None  # (F,) or None
    meta: dict

    @property
    def num_features(self) -> int:
        return self.model.input_size


def load_trained(path) -> TrainedModel:
    """Rebuild a TrainedModel from a checkpoint written by the trainer.

    Besides what ``load_checkpoint`` verifies, every piece of the trainer's metadata that
    eval and predict use is checked before it is used: the architecture in ``model``
    (and that the stored parameters have its names and shapes and are finite), the
    label map ``classes``, the ``normalization`` statistics and the CSV options in
    ``config.data.csv``. A checkpoint that fails raises CheckpointError naming ``path``.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt.meta
    for key in ("model", "classes"):
        if key not in meta:
            raise _bad_meta(path, f"no {key!r} entry; not a checkpoint written by lstm-train")
    spec = _checked_spec(meta["model"], path)
    _check_params(ckpt.params, spec, path)
    classes = _checked_classes(meta["classes"], spec["num_classes"], path)
    mean, std = _checked_normalization(meta.get("normalization"), spec["input_size"], path)
    _check_csv_config(meta, path)
    try:
        with np.errstate(over="ignore"):  # float64 values beyond float32's range: refused below
            model = LSTMClassifier.from_spec(spec, ckpt.params)
    except (TypeError, ValueError) as err:  # pragma: no cover - everything was checked above
        raise CheckpointError(f"{path}: not an lstm_cli training checkpoint ({err})") from None
    for name, value in model.params.items():
        if not np.isfinite(value).all():  # NaN/Inf stored, or beyond float32 once cast
            raise _bad_meta(
                path,
                f"parameter {name!r} holds NaN or Inf (as {model.dtype}); a "
                "trained model's parameters are finite",
            )
    return TrainedModel(model, classes, mean, std, meta)


# ----------------------------------------------------------------- checkpoint metadata

_SIZE_KEYS = ("input_size", "hidden_size", "num_classes", "num_layers")
_SPEC_KEYS = _SIZE_KEYS + ("head", "forget_bias", "dropout", "dtype", "init")
_REQUIRED_SPEC_KEYS = ("input_size", "hidden_size", "num_classes")  # no constructor default
_CSV_LABEL_TYPES = ("auto", "str", "int")
_NORM_FORM = '{"mean": [...], "std": [...]} with one number per input feature'


def _bad_meta(path, what) -> CheckpointError:
    return CheckpointError(f"{path}: bad checkpoint metadata: {what}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _finite_number(x):
    """x as a float when it is a JSON number (not a bool) with a finite float value, else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        x = float(x)
    except OverflowError:  # an int beyond float's range
        return None
    return x if math.isfinite(x) else None


def _checked_spec(spec, path) -> dict:
    """The architecture dict ``meta["model"]``, checked key by key (LSTMClassifier's arguments)."""
    if not isinstance(spec, dict):
        raise _bad_meta(
            path, f"'model' is {_show(spec)}; expected a mapping describing the architecture"
        )
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise _bad_meta(
            path,
            f"'model' has unknown key(s) {_show(unknown)}; expected keys among "
            f"{', '.join(_SPEC_KEYS)}",
        )
    missing = [k for k in _REQUIRED_SPEC_KEYS if k not in spec]
    if missing:
        raise _bad_meta(path, f"'model' lacks {', '.join(map(repr, missing))}")
    for key in _SIZE_KEYS:
        if key in spec and not (_is_int(spec[key]) and spec[key] >= 1):
            raise _bad_meta(path, f"'model.{key}' is {_show(spec[key])}; expected an int >= 1")
    for key, options in (("head", HEADS), ("dtype", DTYPES), ("init", INITS)):
        if key in spec and not (isinstance(spec[key], str) and spec[key] in options):
            raise _bad_meta(
                path,
                f"'model.{key}' is {_show(spec[key])}; expected one of "
                f"{', '.join(map(repr, options))}",
            )
    if "forget_bias" in spec and _finite_number(spec["forget_bias"]) is None:
        raise _bad_meta(
            path, f"'model.forget_bias' is {_show(spec['forget_bias'])}; expected a finite number"
        )
    if "dropout" in spec:
        rate = _finite_number(spec["dropout"])
        if rate is None or not 0.0 <= rate < 1.0:
            raise _bad_meta(
                path, f"'model.dropout' is {_show(spec['dropout'])}; expected a number in [0, 1)"
            )
    return spec


def _check_params(params, spec, path) -> None:
    """The stored parameters have exactly the names and shapes ``spec`` needs, and float dtypes.

    Checked before the model is built, so a size edited to 10**9 fails here instead of
    allocating a model that large."""
    layers = spec.get("num_layers", 1)
    if len(params) != 2 * layers + 2:  # first: an edited num_layers of 10**9 builds no dict
        raise _bad_meta(
            path,
            f"{len(params)} parameters stored, but the architecture in 'model' "
            f"({layers} layer(s) and a head) has {2 * layers + 2}",
        )
    want = param_shapes(spec["input_size"], spec["hidden_size"], spec["num_classes"], layers)
    unexpected = sorted(set(params) - set(want))
    if unexpected:
        raise _bad_meta(
            path,
            f"parameter {unexpected[0]!r} is not part of the architecture in 'model' "
            f"(expected {_show(list(want))})",
        )
    for name, shape in want.items():
        got = params[name]
        if got.shape != shape:
            raise _bad_meta(
                path,
                f"parameter {name!r} has shape {got.shape}, but the architecture in "
                f"'model' needs {shape}",
            )
        if got.dtype.kind != "f":
            raise _bad_meta(
                path, f"parameter {name!r} has dtype {got.dtype}; expected floating point"
            )


def _checked_classes(classes, num_classes, path) -> list:
    """``meta["classes"]``: a list of num_classes distinct labels, all int64 ints or all non-empty
    strs of valid Unicode text (no lone surrogate: it could not be printed or written as UTF-8)."""
    if not isinstance(classes, list) or not classes:
        raise _bad_meta(
            path,
            f"'classes' is {_show(classes)}; expected a non-empty list of labels (strs or ints)",
        )
    if len(classes) != num_classes:
        raise _bad_meta(path, f"{len(classes)} class labels but the head has {num_classes} outputs")
    seen = set()
    for i, label in enumerate(classes):
        if _is_int(label):
            if not -(2**63) <= label < 2**63:
                raise _bad_meta(
                    path, f"'classes'[{i}] = {_show(label)} does not fit in a 64-bit integer"
                )
        elif isinstance(label, str):
            if label == "":
                raise _bad_meta(
                    path, f"'classes'[{i}] is the empty string; labels must be non-empty"
                )
            problem = label_text_problem(label)  # possible before the loaders refused such labels
            if problem is not None:
                raise _bad_meta(
                    path,
                    f"'classes'[{i}] is {_show(label)}, which holds {problem}; labels "
                    "must be valid Unicode text, as the data loaders now require: "
                    "retrain on data with valid labels",
                )
        else:
            raise _bad_meta(
                path, f"'classes'[{i}] is {_show(label)}; class labels must be strs or ints"
            )
        if type(label) is not type(classes[0]):
            raise _bad_meta(
                path,
                f"'classes' mixes ints and strs ({_show(classes[0])} and "
                f"{_show(label)}); a model's labels are all of one type",
            )
        if label in seen:
            raise _bad_meta(path, f"'classes' lists {_show(label)} twice")
        seen.add(label)
    return list(classes)


def _checked_normalization(norm, num_features, path):
    """(mean, std) float64 arrays of shape (F,) from ``meta["normalization"]``, or (None, None)."""
    if norm is None:
        return None, None
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise _bad_meta(path, f"'normalization' is {_show(norm)}; expected null or {_NORM_FORM}")
    stats = []
    for name in ("mean", "std"):
        values = norm[name]
        if not isinstance(values, list):
            raise _bad_meta(
                path,
                f"'normalization.{name}' is {_show(values)}; expected a list of "
                f"{num_features} numbers (one per input feature)",
            )
        if len(values) != num_features:
            raise _bad_meta(
                path,
                f"'normalization.{name}' has {len(values)} values, but the model "
                f"has {num_features} input features",
            )
        for j, v in enumerate(values):
            x = _finite_number(v)
            if x is None:
                raise _bad_meta(
                    path, f"'normalization.{name}'[{j}] is {_show(v)}; expected a finite number"
                )
            if name == "std" and x <= 0:
                raise _bad_meta(
                    path, f"'normalization.std'[{j}] is {_show(v)}; a feature's std must be > 0"
                )
        stats.append(np.asarray(values, dtype=np.float64))
    return stats[0], stats[1]


def _check_csv_config(meta, path) -> None:
    """The CSV reading options eval/predict take from ``meta["config"]["data"]["csv"]``."""
    if "config" not in meta:
        return
    node, where = meta["config"], "config"
    for key in ("data", "csv"):
        if not isinstance(node, dict):
            raise _bad_meta(path, f"{where!r} is {_show(node)}; expected a mapping")
        if key not in node or (key == "csv" and node[key] is None):
            return
        node, where = node[key], f"{where}.{key}"
    if not isinstance(node, dict):
        raise _bad_meta(path, f"{where!r} is {_show(node)}; expected a mapping")
    for key in ("id_column", "label_column"):
        value = node.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise _bad_meta(path, f"'{where}.{key}' is {_show(value)}; expected a non-empty str")
    columns = node.get("feature_columns")
    if columns is not None and not (
        isinstance(columns, list)
        and columns
        and all(isinstance(c, str) and c.strip() for c in columns)
        and len(set(columns)) == len(columns)
    ):
        raise _bad_meta(
            path,
            f"'{where}.feature_columns' is {_show(columns)}; expected null or a "
            "non-empty list of distinct non-empty strs",
        )
    label_type = node.get("label_type")
    if label_type is not None and not (
        isinstance(label_type, str) and label_type in _CSV_LABEL_TYPES
    ):
        raise _bad_meta(
            path,
            f"'{where}.label_type' is {_show(label_type)}; expected one of "
            f"{', '.join(map(repr, _CSV_LABEL_TYPES))}",
        )


def encode_dataset_labels(ds: SequenceDataset, classes, allow_unknown=False):
    """Class indices (N,) for ds's labels against the training label map.

    Labels match by value, or by their string form when the file's label type differs
    from the training file's (so 3 and "3" are the same class). Unknown labels raise a
    DataError naming the label and sequence, or with allow_unknown=True get index -1.
    """
    labels = ds.labels
    if labels is None:
        raise DataError(f"{ds.source}: the data has no labels")
    cls = np.array(classes)
    if (labels.dtype.kind == "U") != (cls.dtype.kind == "U"):
        labels = labels.astype(str)
        classes = [str(c) for c in classes]
    if not allow_unknown:
        return encode_labels(labels, classes, ds.source)
    known = np.isin(labels, np.array(classes))
    out = np.full(len(labels), -1, np.int64)
    if known.any():
        out[known] = encode_labels(labels[known], classes, ds.source)
    return out


def check_features(ds: SequenceDataset, tm: TrainedModel) -> None:
    if ds.num_features != tm.num_features:
        raise DataError(
            f"{ds.source}: the data has {ds.num_features} features per step, but the "
            f"model was trained on {tm.num_features}"
        )


def predict_dataset(
    model: LSTMClassifier, ds: SequenceDataset, mean=None, std=None, batch_size=256
):
    """Probabilities (N, K) for every sequence of ds, in ds order."""
    probs = np.empty((len(ds), model.num_classes))
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, model.dtype, mean, std)
        probs[idx] = model.predict_proba(x, lengths)
    return probs


def loss_and_probs(
    model: LSTMClassifier, ds: SequenceDataset, y, mean=None, std=None, batch_size=256
):
    """Per-sequence cross-entropy (N,) and probabilities (N, K) in one pass, in ds order."""
    losses = np.empty(len(ds))
    probs = np.empty((len(ds), model.num_classes))
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, model.dtype, mean, std)
        losses[idx], probs[idx] = model.evaluate_batch(x, lengths, y[idx])
    return losses, probs


def evaluate_dataset(tm: TrainedModel, ds: SequenceDataset, batch_size=256, allow_unknown=False):
    """Metrics dict (see metrics.classification_report) plus predictions.

    Returns (report, probs (N, K), y (N,) with -1 for unknown labels). With
    allow_unknown, sequences whose label the model never saw are left out of the
    metrics and counted in report["unknown_labels"].
    """
    check_features(ds, tm)
    y = encode_dataset_labels(ds, tm.classes, allow_unknown)
    known = y >= 0
    if not known.any():
        raise DataError(f"{ds.source}: no sequence has a label the model knows")
    if known.all():
        losses, probs = loss_and_probs(tm.model, ds, y, tm.mean, tm.std, batch_size)
    else:  # one forward per sequence either way: loss where the label is known
        probs = np.empty((len(ds), tm.model.num_classes))
        k_idx, u_idx = np.flatnonzero(known), np.flatnonzero(~known)
        # views, not copies: no rows copied, and errors name sequences by their index in the file
        losses, probs[k_idx] = loss_and_probs(
            tm.model, ds.view(k_idx), y[k_idx], tm.mean, tm.std, batch_size
        )
        probs[u_idx] = predict_dataset(tm.model, ds.view(u_idx), tm.mean, tm.std, batch_size)
    report = classification_report(
        y[known], probs[known].argmax(1), tm.classes, loss=float(losses.mean())
    )
    report["unknown_labels"] = int((~known).sum())
    report["source"] = ds.source
    return report, probs, y

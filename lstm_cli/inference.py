"""Using a trained model on a dataset: load a checkpoint, predict, evaluate.

The library side of ``lstm-eval`` and ``lstm-predict``; also used by the trainer for
validation. Batches are formed by length (bucketed, not shuffled) so little compute is
spent on padding, and results are returned in the dataset's order.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .config.schema import CONSTRAINTS, CsvConfig
from .data import (
    SequenceDataset,
    SequenceView,
    encode_labels,
    label_text_problem,
    make_batches,
    pad_batch,
)
from .data.csvfile import CSV_OPTION_KEYS, csv_columns_problem
from .data.framing import TRANSFORMS_OFF, transform_dataset
from .errors import CheckpointError, DataError
from .nn.metrics import classification_report
from .nn.model import LSTMClassifier, param_shapes
from .nn.spec import ARCHITECTURE, REQUIRED
from .store.checkpoint import load_checkpoint
from .validate import Interval, Invalid, Options, Str, StrList, is_int, show


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

    @property
    def csv_options(self) -> dict | None:
        """The training config's CSV reading options that were set, or None."""
        csv = ((self.meta.get("config") or {}).get("data") or {}).get("csv") or {}
        given = {k: csv[k] for k in CSV_OPTION_KEYS if csv.get(k) is not None}
        return given or None

    @property
    def transforms(self) -> dict:
        """The training config's input transforms (data.framing.transform_dataset's
        arguments); one missing or null is off (a checkpoint written before they existed
        has them all off)."""
        data = (self.meta.get("config") or {}).get("data") or {}
        return {
            k: off if data.get(f) is None else data[f] for k, (f, off) in _TRANSFORM_KEYS.items()
        }

    def prepare(self, ds):
        """Raw data as the model was trained on it: the per-sequence z-score, pooling and
        framing of the training config applied (eval, predict), and marked with them
        (SequenceDataset.transforms, by transform_dataset), so they are neither missed nor
        applied twice."""
        if ds.transforms is not None:
            raise DataError(
                f"{ds.source}: the data has been through input transforms already "
                f"({ds.transforms}); prepare the data as read"
            )
        self.check_raw(ds)
        return transform_dataset(ds, **self.transforms)

    def as_trained(self, ds):
        """``ds`` as the model reads it: prepared (self.prepare) when it is data as read,
        else checked to have been through this model's input transforms."""
        if ds.transforms is None:  # as read; with every transform off, also as trained
            if self.transforms != TRANSFORMS_OFF:
                return self.prepare(ds)
            self.check_raw(ds)
            return ds
        if ds.transforms != self.transforms:
            raise DataError(
                f"{ds.source}: the data has been through the input transforms {ds.transforms}, "
                f"but the model reads it through {self.transforms}"
            )
        return ds

    def check_raw(self, ds) -> None:
        """A DataError unless raw data ``ds`` has the features the model was trained on,
        counted in the file's own features (before framing), and, read from a CSV file
        whose header names them, in the training file's column order."""
        frame = self.transforms["frame"]
        if ds.num_features * frame != self.num_features:
            raise _feature_mismatch(ds, self.num_features // frame)
        columns = (self.csv_options or {}).get("feature_columns")
        names = getattr(ds, "feature_names", None)
        if columns and names is not None and list(names) != list(columns):
            raise DataError(
                f"{ds.source}: its features are the columns {show(list(names))}, but the "
                f"model was trained on the columns {show(list(columns))}, in that order; read "
                "it with load_dataset(path, csv_options=model.csv_options), as lstm-eval does"
            )


# transform_dataset's argument -> (data.* key in the stored config, value when absent)
_TRANSFORM_KEYS = {
    k: (key, TRANSFORMS_OFF[k])
    for k, key in (("per_sequence", "normalize_per_sequence"), ("pool", "pool"), ("frame", "frame"))
}


def load_trained(path) -> TrainedModel:
    """Rebuild a TrainedModel from a checkpoint written by the trainer.

    ``load_checkpoint`` verifies the file (format, checksum, array records). Then every piece
    of the trainer's metadata that eval and predict use is checked, before it is used,
    against the statement it must meet: the architecture in ``model`` against the model's
    own table (``nn.spec``), the stored parameters against its names and shapes (before any
    model is allocated) and for finiteness, the label map ``classes``, the
    ``normalization`` statistics and the CSV options in ``config.data.csv`` against the
    config schema. Anything wrong is one CheckpointError naming ``path``.
    """
    ckpt = load_checkpoint(path)
    try:
        return trained_model(ckpt.params, ckpt.meta)
    except BadMetadata as bad:
        raise CheckpointError(f"{path}: bad checkpoint metadata: {bad}") from None


class BadMetadata(Exception):
    """What is wrong with a checkpoint's metadata or parameters; the caller names the file.
    ``entry`` names the setting at fault for the settings lstm-import takes but does not
    check in full itself ("classes", "csv", "transforms"), else it is None."""

    entry: str | None = None


@contextmanager
def _entry(name):
    """Marks a BadMetadata raised inside as about the setting ``name``."""
    try:
        yield
    except BadMetadata as bad:
        bad.entry = name
        raise


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise BadMetadata(what)


def _checked(where: str, value, constraint, expected: str | None = None):
    """``value`` converted by ``constraint``, or BadMetadata: "<where> is <value>; expected ..."."""
    # metadata holds JSON numbers, never numbers written as text
    as_text = isinstance(value, str) and not isinstance(constraint, (Options, Str, StrList))
    try:
        if not as_text:
            return constraint.check(value)
    except Invalid:
        pass
    raise BadMetadata(f"{where} is {show(value)}; expected {expected or constraint.description()}")


def trained_model(params, meta) -> TrainedModel:
    """The TrainedModel of a checkpoint's parameters and meta, after every check
    load_trained promises; BadMetadata saying what is wrong otherwise. lstm-import runs it
    on what it is about to write, so it writes only checkpoints eval and predict accept."""
    for key in ("model", "classes"):
        _expect(key in meta, f"no {key!r} entry; not a checkpoint written by lstm-train")
    spec = _checked_spec(meta["model"])
    _check_params(params, spec)
    with _entry("classes"):
        classes = _checked_classes(meta["classes"], spec["num_classes"])
    mean, std = _checked_normalization(meta.get("normalization"), spec["input_size"])
    with _entry("csv"):
        _check_csv_config(meta)
    with _entry("transforms"):
        _check_transforms(meta, spec["input_size"])
    with np.errstate(over="ignore"):  # float64 values beyond float32's range: refused below
        model = LSTMClassifier.from_spec(spec, params)
    for name, value in model.params.items():  # NaN/Inf stored, or beyond float32 once cast
        _expect(
            np.isfinite(value).all(),
            f"parameter {name!r} holds NaN or Inf (as {model.dtype}); a trained model's "
            "parameters are finite",
        )
    return TrainedModel(model, classes, mean, std, meta)


def _checked_spec(spec) -> dict:
    """``meta["model"]`` (LSTMClassifier.spec()) checked against the architecture's table."""
    _expect(
        isinstance(spec, dict),
        f"'model' is {show(spec)}; expected a mapping describing the architecture",
    )
    unknown = sorted(set(spec) - set(ARCHITECTURE))
    _expect(
        not unknown,
        f"'model' has unknown key(s) {show(unknown)}; expected keys among "
        f"{', '.join(ARCHITECTURE)}",
    )
    missing = [k for k in REQUIRED if k not in spec]
    _expect(not missing, f"'model' lacks {', '.join(map(repr, missing))}")
    return {k: _checked(f"'model.{k}'", v, ARCHITECTURE[k]) for k, v in spec.items()}


def _check_params(params, spec) -> None:
    """The stored parameters have exactly the names and shapes ``spec`` needs, and float dtypes.

    Checked before the model is built, so a size edited to 10**9 fails here instead of
    allocating a model that large."""
    layers = spec.get("num_layers", 1)
    bidirectional = spec.get("bidirectional", False)
    count = 2 * layers * (2 if bidirectional else 1) + 2
    _expect(  # first: an edited num_layers of 10**9 builds no dict
        len(params) == count,
        f"{len(params)} parameters stored, but the architecture in 'model' "
        f"({layers} layer(s){' x 2 directions' if bidirectional else ''} and a head) has {count}",
    )
    want = param_shapes(
        spec["input_size"], spec["hidden_size"], spec["num_classes"], layers, bidirectional
    )
    unexpected = sorted(set(params) - set(want))
    if unexpected:
        raise BadMetadata(
            f"parameter {unexpected[0]!r} is not part of the architecture in 'model' "
            f"(expected {show(list(want))})"
        )
    for name, shape in want.items():
        got = params[name]
        _expect(
            got.shape == shape,
            f"parameter {name!r} has shape {got.shape}, but the architecture in 'model' "
            f"needs {shape}",
        )
        _expect(
            got.dtype.kind == "f",
            f"parameter {name!r} has dtype {got.dtype}; expected floating point",
        )


def _checked_classes(classes, num_classes) -> list:
    """``meta["classes"]``: num_classes distinct labels, all int64 ints or all non-empty strs
    of valid Unicode text (a lone surrogate could not be printed or written as UTF-8)."""
    _expect(
        isinstance(classes, list) and len(classes) > 0,
        f"'classes' is {show(classes)}; expected a non-empty list of labels (strs or ints)",
    )
    _expect(
        len(classes) == num_classes,
        f"{len(classes)} class labels but the head has {num_classes} outputs",
    )
    for i, label in enumerate(classes):
        where = f"'classes'[{i}]"
        if is_int(label):
            _expect(
                -(2**63) <= label < 2**63,
                f"{where} = {show(label)} does not fit in a 64-bit integer",
            )
        elif isinstance(label, str):
            _expect(label != "", f"{where} is the empty string; labels must be non-empty")
            problem = label_text_problem(label)  # possible before the loaders refused such labels
            _expect(
                problem is None,
                f"{where} is {show(label)}, which holds {problem}; labels must be valid Unicode "
                "text, as the data loaders now require",
            )
        else:
            _expect(False, f"{where} is {show(label)}; class labels must be strs or ints")
        _expect(
            type(label) is type(classes[0]),
            f"'classes' mixes ints and strs ({show(classes[0])} and {show(label)}); a "
            "model's labels are all of one type",
        )
        _expect(label not in classes[:i], f"'classes' lists {show(label)} twice")
    return list(classes)


_NORM_FORM = '{"mean": [...], "std": [...]} with one number per input feature'
_STATS = {  # each statistic's constraint and how a failure words it
    "mean": (Interval(float, None, None, "neither"), "a finite number"),
    "std": (Interval(float, 0.0, None, "neither"), "a finite number > 0 (a feature's std)"),
}


def _checked_normalization(norm, num_features):
    """(mean, std) float64 arrays of shape (F,) from ``meta["normalization"]``, or (None, None)."""
    if norm is None:
        return None, None
    _expect(
        isinstance(norm, dict) and set(norm) == {"mean", "std"},
        f"'normalization' is {show(norm)}; expected null or {_NORM_FORM}",
    )
    stats = []
    for name, (constraint, expected) in _STATS.items():
        values = norm[name]
        _expect(
            isinstance(values, list),
            f"'normalization.{name}' is {show(values)}; expected a list of {num_features} "
            "numbers (one per input feature)",
        )
        _expect(
            len(values) == num_features,
            f"'normalization.{name}' has {len(values)} values, but the model has "
            f"{num_features} input features",
        )
        for j, v in enumerate(values):
            _checked(f"'normalization.{name}'[{j}]", v, constraint, expected)
        stats.append(np.asarray(values, dtype=np.float64))
    return stats[0], stats[1]


def _check_csv_config(meta) -> None:
    """The CSV reading options eval/predict take from ``meta["config"]["data"]["csv"]``,
    checked against the config schema's constraints for ``data.csv.*``."""
    if "config" not in meta:
        return
    node, where = meta["config"], "config"
    for key in ("data", "csv"):
        _expect(isinstance(node, dict), f"{where!r} is {show(node)}; expected a mapping")
        if node.get(key) is None:
            return
        node, where = node[key], f"{where}.{key}"
    _expect(isinstance(node, dict), f"{where!r} is {show(node)}; expected a mapping")
    for key, value in node.items():
        constraint = CONSTRAINTS.get(f"data.csv.{key}")
        if constraint is not None and value is not None:
            _checked(f"'{where}.{key}'", value, constraint)
    defaults = CsvConfig()
    problem = csv_columns_problem(
        node.get("id_column") or defaults.id_column,
        node.get("label_column") or defaults.label_column,
        node.get("feature_columns"),
    )
    _expect(problem is None, problem and problem[1].replace("data.csv", where))


def _check_transforms(meta, input_size) -> None:
    """The input transforms in ``meta["config"]["data"]`` meet the config schema, and the
    model's input size is a multiple of the frame."""
    data = (meta.get("config") or {}).get("data") or {}
    for key, _ in _TRANSFORM_KEYS.values():
        if data.get(key) is not None:
            _checked(f"'config.data.{key}'", data[key], CONSTRAINTS[f"data.{key}"])
    frame = data.get("frame") or 1
    _expect(
        input_size % frame == 0,
        f"'config.data.frame' is {frame}, but the model's input size {input_size} is not a "
        "multiple of it",
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


def encode_labels_to_evaluate(ds: SequenceDataset, classes, allow_unknown=False):
    """encode_dataset_labels, and a DataError when no label is one the model knows
    (nothing would be left to evaluate)."""
    y = encode_dataset_labels(ds, classes, allow_unknown)
    if not (y >= 0).any():
        raise DataError(f"{ds.source}: no sequence has a label the model knows")
    return y


def check_features(ds: SequenceDataset, tm: TrainedModel) -> None:
    if ds.num_features != tm.num_features:
        raise _feature_mismatch(ds, tm.num_features)


def _feature_mismatch(ds: SequenceDataset, trained: int) -> DataError:
    n = ds.num_features
    return DataError(
        f"{ds.source}: the data has {n} feature{'' if n == 1 else 's'} per step, but the "
        f"model was trained on {trained}"
    )


def predict_dataset(
    model: LSTMClassifier, ds: SequenceDataset, mean=None, std=None, batch_size=256
):
    """Probabilities (N, K) for every sequence of ds, in ds order (not finite where the
    model overflows: check_finite_probabilities)."""
    probs = np.empty((len(ds), model.num_classes))
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, model.dtype, mean, std)
        with np.errstate(over="ignore", invalid="ignore"):
            probs[idx] = model.predict_proba(x, lengths)
    return probs


def check_finite_probabilities(probs, ds) -> None:
    """CheckpointError naming the first sequence of ``ds`` whose probabilities (a row of
    ``probs``) are not finite: the model's outputs overflow on it, as a diverged model's
    do, and argmax would silently count it as the first class."""
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if bad.size:
        n = int(ds.indices[bad[0]]) if isinstance(ds, SequenceView) else int(bad[0])
        raise CheckpointError(
            f"{ds.source}: sequence {n}: the model's probabilities are not finite (for "
            f"{bad.size} of {len(ds)} sequences): its outputs overflow on this data, as a "
            f"diverged model's do"
        )


def loss_and_probs(
    model: LSTMClassifier, ds: SequenceDataset, y, mean=None, std=None, batch_size=256
):
    """Per-sequence cross-entropy (N,) and probabilities (N, K) in one pass, in ds order."""
    losses = np.empty(len(ds))
    probs = np.empty((len(ds), model.num_classes))
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, model.dtype, mean, std)
        with np.errstate(over="ignore", invalid="ignore"):  # the caller checks the result
            losses[idx], probs[idx] = model.evaluate_batch(x, lengths, y[idx])
    return losses, probs


def evaluate_dataset(tm: TrainedModel, ds: SequenceDataset, batch_size=256, allow_unknown=False):
    """Metrics dict (see metrics.classification_report) plus predictions.

    Returns (report, probs (N, K), y (N,) with -1 for unknown labels). With
    allow_unknown, sequences whose label the model never saw are left out of the
    metrics and counted in report["unknown_labels"]. ``ds``: the data as read, or as
    ``tm.prepare`` returns it.
    """
    ds = tm.as_trained(ds)
    check_features(ds, tm)
    y = encode_labels_to_evaluate(ds, tm.classes, allow_unknown)
    known = y >= 0
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
    check_finite_probabilities(probs, ds)
    return report_from(losses, probs, y, tm.classes, ds.source), probs, y


def report_from(losses, probs, y, classes, source) -> dict:
    """The metrics report from per-sequence losses (of the known labels), probabilities
    (N, K) and class indices y (N,), -1 for a label the model does not know."""
    known = y >= 0
    report = classification_report(
        y[known], probs[known].argmax(1), classes, loss=float(losses.mean())
    )
    report["unknown_labels"] = int((~known).sum())
    report["source"] = source
    return report

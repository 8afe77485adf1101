"""Using a trained model on a dataset: load a checkpoint, predict, evaluate.

The library side of ``lstm-eval`` and ``lstm-predict``; also used by the trainer for
validation. Batches are formed by length (bucketed, not shuffled) so little compute is
spent on padding, and results are returned in the dataset's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checkpoint import load_checkpoint
from .data import SequenceDataset, encode_labels, make_batches, pad_batch
from .errors import CheckpointError, DataError
from .metrics import classification_report
from .model import LSTMClassifier


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
    """Rebuild a TrainedModel from a checkpoint written by the trainer."""
    ckpt = load_checkpoint(path)
    meta = ckpt.meta
    try:
        spec = meta["model"]
        classes = list(meta["classes"])
        norm = meta.get("normalization")
        model = LSTMClassifier.from_spec(spec, ckpt.params)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not an lstm_cli training checkpoint ({err})") from None
    if len(classes) != model.num_classes:
        raise CheckpointError(f"{path}: {len(classes)} class labels but the head has {model.num_classes} outputs")
    mean = std = None
    if norm:
        mean = np.asarray(norm["mean"], np.float64)
        std = np.asarray(norm["std"], np.float64)
    return TrainedModel(model, classes, mean, std, meta)


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
        raise DataError(f"{ds.source}: the data has {ds.num_features} features per step, but the "
                        f"model was trained on {tm.num_features}")


def predict_dataset(model: LSTMClassifier, ds: SequenceDataset, mean=None, std=None,
                    batch_size=256):
    """Probabilities (N, K) for every sequence of ds, in ds order."""
    probs = np.empty((len(ds), model.num_classes))
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, model.dtype, mean, std)
        probs[idx] = model.predict_proba(x, lengths)
    return probs


def loss_and_probs(model: LSTMClassifier, ds: SequenceDataset, y, mean=None, std=None,
                   batch_size=256):
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
        losses, probs[k_idx] = loss_and_probs(tm.model, ds.subset(k_idx), y[k_idx], tm.mean,
                                              tm.std, batch_size)
        probs[u_idx] = predict_dataset(tm.model, ds.subset(u_idx), tm.mean, tm.std, batch_size)
    report = classification_report(y[known], probs[known].argmax(1), tm.classes,
                                   loss=float(losses.mean()))
    report["unknown_labels"] = int((~known).sum())
    report["source"] = ds.source
    return report, probs, y

"""Several trained models as one classifier: the mean of their class probabilities.

The library side of ``lstm-eval A.npz B.npz ...`` and ``lstm-predict A.npz B.npz ...``.
Each member reads the data through its own checkpoint (its CSV columns, per-sequence
z-score, pooling, framing and normalisation), so members trained with different
transforms combine; they must share their labels, in the same order. For sequence n:

    P_n = (1 / M) * sum_m p_m(n)          (K,) the members' probabilities averaged
    loss_n = -log P_n[y_n]                 the ensemble's own cross-entropy

(a single model's ``lstm-eval`` loss is its training loss instead, which for the ``all``
head is the mean per-step cross-entropy).
"""

from __future__ import annotations

import numpy as np

from .data import SequenceDataset
from .errors import CheckpointError, DataError, LstmCliError
from .inference import (
    TrainedModel,
    check_features,
    check_finite_probabilities,
    encode_labels_to_evaluate,
    predict_dataset,
    report_from,
)


def check_members(tms: list[TrainedModel], names: list[str]) -> None:
    """A CheckpointError naming the first member whose labels differ from the first's."""
    classes = tms[0].classes
    for tm, name in zip(tms[1:], names[1:]):
        if tm.classes != classes:
            raise CheckpointError(
                f"{name}: its labels {tm.classes!r} differ from {names[0]}'s {classes!r}; "
                "the members of an ensemble must share their labels, in the same order"
            )


def prepare_members(raws) -> list:
    """(TrainedModel, data as it reads it) pairs -> (TrainedModel, the data as it was
    trained on) pairs. Members given the same data object with the same input transforms
    (the members of one run) share one transformed copy; each is still checked."""
    done: dict = {}  # (id of the raw data, its transforms) -> the transformed data
    out = []
    for tm, raw in raws:
        key = (id(raw), tuple(sorted(tm.transforms.items())))
        if key in done:
            tm.check_raw(raw)
        else:
            done[key] = tm.prepare(raw)
        out.append((tm, done[key]))
    return out


def _need_members(members) -> None:
    if not members:
        raise LstmCliError("an ensemble needs at least one member: a (model, data) pair")


def ensemble_probs(members, batch_size=256) -> np.ndarray:
    """members: (TrainedModel, its prepared SequenceDataset) pairs of the same sequences
    -> P (N, K), the mean of the members' probabilities."""
    _need_members(members)
    total = None
    for tm, ds in members:
        ds = tm.as_trained(ds)
        check_features(ds, tm)
        p = predict_dataset(tm.model, ds, tm.mean, tm.std, batch_size)
        check_finite_probabilities(p, ds)
        total = p if total is None else total + p
    return total / len(members)


def evaluate_ensemble(members, batch_size=256, allow_unknown=False):
    """The metrics report of the averaged probabilities, as inference.evaluate_dataset's.

    members: (TrainedModel, SequenceDataset) pairs, each dataset the same file read and
    prepared by that member. Returns (report, P (N, K), y (N,) with -1 for unknown labels).
    """
    _need_members(members)
    tm0, ds0 = members[0]
    _check_same_sequences([ds for _, ds in members])
    y = encode_labels_to_evaluate(ds0, tm0.classes, allow_unknown)
    probs = ensemble_probs(members, batch_size)
    return report_of_probs(probs, y, tm0.classes, ds0.source), probs, y


def report_of_probs(probs, y, classes, source) -> dict:
    """The metrics report of averaged probabilities P (N, K) against y (N,) (-1 for an
    unknown label), with the ensemble's loss -log P_n[y_n] (module docstring)."""
    known = y >= 0
    p_true = probs[np.flatnonzero(known), y[known]]
    losses = -np.log(np.maximum(p_true, np.finfo(np.float64).tiny))
    return report_from(losses, probs, y, classes, source)


def _check_same_sequences(datasets: list[SequenceDataset]) -> None:
    """Members with different CSV options may read one file differently: refuse that."""
    first = datasets[0]
    for ds in datasets[1:]:
        same = len(ds) == len(first) and (
            ds.labels is None
            or first.labels is None
            or np.array_equal(ds.labels.astype(str), first.labels.astype(str))
        )
        if not same:
            raise DataError(
                f"{first.source}: the members read it differently ({len(first)} and "
                f"{len(ds)} sequences, or other labels): their checkpoints' CSV options differ"
            )

"""Softmax cross-entropy from logits, with per-row weights (docs/design.md §3)."""

from __future__ import annotations

import numpy as np

from ..errors import LstmCliError
from ..validate import param_error


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (N, K) logits via log-sum-exp (max subtracted: no overflow)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (N, K)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (..., K) logits, stable for any finite input."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_cross_entropy(logits, y, weights):
    """Weighted sum of per-row cross-entropies and its gradient.

    logits (N, K), y (N,) int class indices, weights (N,) non-negative row weights
    (the caller's averaging: 1/N for a plain mean, 0 for rows that do not count).
    Returns loss = sum_n weights_n * CE(logits_n, y_n) (a Python float) and
    dlogits (N, K) = weights_n * (softmax_n - onehot(y_n)).
    """
    N = logits.shape[0]
    rows = np.arange(N)
    logp = log_softmax(logits)  # (N, K)
    loss = -float(np.dot(weights, logp[rows, y].astype(np.float64)))
    dlogits = np.exp(logp)  # (N, K) softmax
    dlogits[rows, y] -= 1.0
    dlogits *= weights[:, None].astype(dlogits.dtype, copy=False)
    return loss, dlogits


def sequence_weights(y, class_weights) -> np.ndarray:
    """Each sequence's weight in the batch loss before averaging (B,): its class's weight,
    or 1 without class weights; the loss is sum_b w_b CE_b / sum_b w_b."""
    if class_weights is None:
        return np.ones(len(y))
    return np.asarray(class_weights, np.float64)[y]


def row_weights(head, y, pb, class_weights, num_classes):
    """The loss's averaging weights per logits row (docs/design.md §3): (B,) for the last
    and mean heads, (N,) for the all head (w_b / length_b on each of sequence b's rows);
    pb: the batch's packing.PackedBatch."""
    if class_weights is not None:
        cw = np.asarray(class_weights, np.float64)
        if cw.shape != (num_classes,) or not np.isfinite(cw).all() or (cw < 0).any():
            expected = f"{num_classes} finite weights >= 0 (one per class)"
            raise param_error("class_weights", expected, class_weights, "LSTMClassifier")
    w_seq = sequence_weights(y, class_weights)  # (B,)
    if not w_seq.sum() > 0:  # only class weights can zero the batch
        raise LstmCliError("class_weights give every sequence of the batch weight 0")
    w_seq = w_seq / w_seq.sum()  # (B,)
    if head != "all":
        return w_seq
    return (w_seq / pb.lengths)[pb.seq]  # (N,)

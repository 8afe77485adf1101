"""Classification metrics from integer labels: accuracy, confusion matrix, per-class
precision / recall / F1 / support, macro and weighted F1. Pure NumPy, no I/O."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes) -> np.ndarray:
    """(K, K) int64 counts: rows are true classes, columns predicted classes."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def classification_report(y_true, y_pred, labels, loss=None) -> dict:
    """Metrics as a JSON-serialisable dict.

    labels: the class names in class-index order (the training label map).
    A class with no predictions has precision 0; with no support, recall 0 (and F1 0):
    the scikit-learn ``zero_division=0`` convention. macro_f1 averages over classes with
    support > 0 or predictions > 0; weighted_f1 weights by support.
    """
    K = len(labels)
    cm = confusion_matrix(y_true, y_pred, K)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    n = int(support.sum())
    report = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "loss": None if loss is None else float(loss),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "labels": list(labels),
        "per_class": [
            {
                "label": labels[k],
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k in range(K)
        ],
        "confusion_matrix": cm.tolist(),
    }
    return report

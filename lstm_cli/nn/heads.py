"""The two softmax heads on the top layer's hidden states (docs/design.md §3).

Both share one softmax layer V (H, K), a (K,). Hidden states come in the engine's
packed layout (lstm.py): h (N, H), one row per valid step of every sequence.

* last: logits_b = h[row of sequence b's own last step] @ V + a -> (B, K)
* all:  logits_r = h[r] @ V + a for every valid step r -> (N, K); the loss averages each
  sequence's steps and the prediction averages their probabilities (model.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LastStepCache(NamedTuple):
    h_last: np.ndarray  # (B, H) each sequence's state at its own last step
    rows: np.ndarray  # (B,) the packed row of each sequence's last step
    N: int  # rows of h


def last_step_forward(h, rows, V, a):
    """h (N, H), rows (B,) packed row of each sequence's last step, V (H, K), a (K,)
    -> logits (B, K), cache."""
    h_last = h[rows]  # (B, H), a gather (copy)
    return h_last @ V + a, LastStepCache(h_last, rows, h.shape[0])


def last_step_backward(dlogits, cache: LastStepCache, V, dense=True):
    """dlogits (B, K) -> dh (N, H) (non-zero only at each last step), dV (H, K), da (K,).

    dense=False returns dh_last (B, H), the gradient w.r.t. h_last (the rows of dh that
    are not zero), instead of dh."""
    dh_last = dlogits @ V.T  # (B, H)
    grads = cache.h_last.T @ dlogits, dlogits.sum(axis=0)
    if not dense:
        return (dh_last, *grads)
    dh = np.zeros((cache.N, V.shape[0]), dtype=dlogits.dtype)
    dh[cache.rows] = dh_last
    return (dh, *grads)


class AllStepsCache(NamedTuple):
    h: np.ndarray  # (N, H)


def all_steps_forward(h, V, a):
    """h (N, H), V (H, K), a (K,) -> logits (N, K) at every valid step, cache."""
    logits = h @ V
    logits += a
    return logits, AllStepsCache(h)


def all_steps_backward(dlogits, cache: AllStepsCache, V):
    """dlogits (N, K) -> dh (N, H), dV (H, K), da (K,)."""
    return dlogits @ V.T, cache.h.T @ dlogits, dlogits.sum(axis=0)

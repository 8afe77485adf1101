"""The two softmax heads on the top layer's hidden states (DESIGN.md §3).

Both share one softmax layer V (H, K), a (K,). Hidden states are time-major (T, B, H).

* last: logits_b = h[length_b - 1, b] @ V + a  -> (B, K)
* all:  logits_{t,b} = h[t, b] @ V + a at every step -> (T, B, K); the loss and the
  prediction only look at valid steps (t < length_b).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LastStepCache(NamedTuple):
    h_last: np.ndarray  # (B, H) each sequence's state at its own last step
    lengths: np.ndarray  # (B,)
    T: int


def last_step_forward(h, lengths, V, a):
    """h (T, B, H), lengths (B,), V (H, K), a (K,) -> logits (B, K), cache."""
    T, B, _ = h.shape
    h_last = h[lengths - 1, np.arange(B)]  # (B, H), a gather (copy)
    return h_last @ V + a, LastStepCache(h_last, lengths, T)


def last_step_backward(dlogits, cache: LastStepCache, V):
    """dlogits (B, K) -> dh (T, B, H) (non-zero only at each last step), dV (H, K), da (K,)."""
    B, H = cache.h_last.shape
    dh = np.zeros((cache.T, B, H), dtype=dlogits.dtype)
    dh[cache.lengths - 1, np.arange(B)] = dlogits @ V.T
    return dh, cache.h_last.T @ dlogits, dlogits.sum(axis=0)


class AllStepsCache(NamedTuple):
    h: np.ndarray  # (T, B, H)


def all_steps_forward(h, V, a):
    """h (T, B, H), V (H, K), a (K,) -> logits (T, B, K) at every step (padded ones too), cache."""
    T, B, H = h.shape
    logits = (h.reshape(T * B, H) @ V).reshape(T, B, -1)
    logits += a
    return logits, AllStepsCache(h)


def all_steps_backward(dlogits, cache: AllStepsCache, V):
    """dlogits (T, B, K) (zero at padded steps) -> dh (T, B, H), dV (H, K), da (K,)."""
    T, B, K = dlogits.shape
    H = cache.h.shape[2]
    d2 = dlogits.reshape(T * B, K)
    dh = (d2 @ V.T).reshape(T, B, H)
    return dh, cache.h.reshape(T * B, H).T @ d2, d2.sum(axis=0)


def valid_mask(lengths, T):
    """(T, B) boolean mask, True where t < length_b."""
    return np.arange(T)[:, None] < lengths[None, :]

"""The softmax heads on the top layer's hidden states (docs/design.md §3, §8).

All share one softmax layer V (H, K), a (K,) (H is 2H of a bidirectional model). Hidden
states come in the engine's packed layout (lstm.py): h (N, H), one row per valid step of
every sequence.

* last: logits_b = h[row of sequence b's own last step] @ V + a -> (B, K); bidirectional:
  [h-> at its last step, h<- at its step 0] (each direction's final state)
* all:  logits_r = h[r] @ V + a for every valid step r -> (N, K); the loss averages each
  sequence's steps and the prediction averages their probabilities (model.py).
* mean: logits_b = (mean of h over sequence b's valid steps) @ V + a -> (B, K)
* max:  logits_b = (max of h over sequence b's valid steps, per unit) @ V + a -> (B, K);
  each unit's gradient flows to the one step that holds its maximum (the first on a tie)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LastStepCache(NamedTuple):
    h_last: np.ndarray  # (B, H) each sequence's state at its own last step
    rows: np.ndarray  # (B,) the packed row of each sequence's last step
    N: int  # rows of h
    first_rows: np.ndarray | None = None  # (B,) bidirectional: where the reverse half is read


def last_step_forward(h, rows, V, a, first_rows=None):
    """h (N, H), rows (B,) packed row of each sequence's last step, V (H, K), a (K,)
    -> logits (B, K), cache. first_rows (B,) (bidirectional): the packed row of each
    sequence's step 0, where the reverse half h[:, H/2:] is read instead."""
    if first_rows is None:
        h_last = h[rows]  # (B, H), a gather (copy)
    else:
        half = h.shape[1] // 2
        h_last = np.concatenate([h[rows, :half], h[first_rows, half:]], axis=1)
    return h_last @ V + a, LastStepCache(h_last, rows, h.shape[0], first_rows)


def last_step_backward(dlogits, cache: LastStepCache, V, dense=True):
    """dlogits (B, K) -> dh (N, H) (non-zero only at each last step), dV (H, K), da (K,).

    dense=False returns dh_last (B, H), the gradient w.r.t. h_last (the rows of dh that
    are not zero), instead of dh."""
    dh_last = dlogits @ V.T  # (B, H)
    grads = cache.h_last.T @ dlogits, dlogits.sum(axis=0)
    if not dense:
        return (dh_last, *grads)
    dh = np.zeros((cache.N, V.shape[0]), dtype=dlogits.dtype)
    if cache.first_rows is None:
        dh[cache.rows] = dh_last
    else:
        half = V.shape[0] // 2
        dh[cache.rows, :half] = dh_last[:, :half]
        dh[cache.first_rows, half:] = dh_last[:, half:]
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


class MeanCache(NamedTuple):
    m: np.ndarray  # (B, H) each sequence's mean h over its valid steps, caller's order
    lengths: np.ndarray  # (B,) caller's order
    seq: np.ndarray  # (N,) the caller's sequence of each packed row


def mean_forward(h, offsets, order, lengths, seq, V, a):
    """h (N, H) packed (offsets (T+1,) its steps' first rows; sorted position r is the
    caller's sequence order[r]), lengths (B,), seq (N,) -> logits (B, K), cache."""
    bounds = offsets.tolist()
    total = np.zeros((len(order), h.shape[1]), h.dtype)  # (B, H), sorted order
    for t in range(len(bounds) - 1):  # step t's rows are the first n sorted sequences
        lo, hi = bounds[t], bounds[t + 1]
        total[: hi - lo] += h[lo:hi]
    m = np.empty_like(total)
    m[order] = total
    m /= lengths[:, None].astype(h.dtype)
    return m @ V + a, MeanCache(m, lengths, seq)


def mean_backward(dlogits, cache: MeanCache, V):
    """dlogits (B, K) -> dh (N, H) = dlogits_b @ V.T / length_b at each of b's rows, dV, da."""
    dm = dlogits @ V.T  # (B, H)
    dm /= cache.lengths[:, None].astype(dm.dtype)
    return dm[cache.seq], cache.m.T @ dlogits, dlogits.sum(axis=0)


class MaxCache(NamedTuple):
    m: np.ndarray  # (B, H) each sequence's per-unit max of h over its valid steps, caller's order
    rows: np.ndarray  # (B, H) the packed row holding each of those maxima, caller's order
    N: int  # rows of h


def max_forward(h, offsets, order, V, a):
    """h (N, H) packed (offsets (T+1,) its steps' first rows; sorted position r is the
    caller's sequence order[r]) -> logits (B, K), cache."""
    bounds = offsets.tolist()
    B = bounds[1] - bounds[0]  # every sequence has a step 0
    best = h[:B].copy()  # (B, H) running max, sorted order
    rows = np.broadcast_to(np.arange(B)[:, None], best.shape).copy()  # (B, H)
    for t in range(1, len(bounds) - 1):  # step t's rows are the first n sorted sequences
        lo, hi = bounds[t], bounds[t + 1]
        n = hi - lo
        higher = h[lo:hi] > best[:n]  # (n, H) strictly: the first step wins a tie
        np.copyto(best[:n], h[lo:hi], where=higher)
        np.copyto(rows[:n], np.arange(lo, hi)[:, None], where=higher)
    m = np.empty_like(best)
    m[order] = best
    rows_c = np.empty_like(rows)
    rows_c[order] = rows
    return m @ V + a, MaxCache(m, rows_c, h.shape[0])


def max_backward(dlogits, cache: MaxCache, V):
    """dlogits (B, K) -> dh (N, H) = (dlogits_b @ V.T)_j at the row of b's max of unit j, dV, da."""
    dm = dlogits @ V.T  # (B, H)
    dh = np.zeros((cache.N, V.shape[0]), dtype=dm.dtype)
    # each (row, unit) pair appears once: different sequences own different rows
    dh[cache.rows, np.arange(V.shape[0])[None, :]] = dm
    return dh, cache.m.T @ dlogits, dlogits.sum(axis=0)

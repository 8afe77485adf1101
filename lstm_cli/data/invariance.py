"""Does a dataset's class survive a change of starting point or direction? The evidence
``train.augment.roll`` / ``reverse: auto`` read (data.augment applies the options).

The test is leave-one-out 1-nearest-neighbour (Euclidean) on the training sequences, once
with each sequence as recorded and once allowing every circular shift (any start) and/or
the reversal of the neighbour. If allowing it gets clearly more sequences right, their
order carries no class information the model should learn, and augmenting with it teaches
the invariance; if not, the order is part of the signal and augmenting would erase it.

``shift_distances`` is the FFT kernel; tests/test_invariance.py holds its plain oracle (a
loop over np.roll). Numpy only, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAX_SERIES",
    "MIN_SERIES",
    "MAX_LENGTH",
    "MAX_CELLS",
    "shift_distances",
    "loo_correct",
    "common_length",
    "Evidence",
    "reorder_evidence",
    "margin",
]

# The cost is about N^2 T F: at most a few seconds at these caps. Resampling a long
# series to fewer steps aliases a fast cycle (and can change the verdict), so the length
# cap is high; a larger training set is judged on a fixed random MAX_SERIES of it. The
# (N, T, F) array stays within MAX_CELLS values (64 MB): for many features, fewer series
# (not below MIN_SERIES), then fewer steps.
MAX_SERIES = 300
MIN_SERIES = 100
MAX_LENGTH = 2048
MAX_CELLS = 2**23


def shift_distances(Q, R, any_start=False, mirror=False):
    """(M, N) squared Euclidean distance from each query Q[m] (T, F) to each reference
    R[n] (T, F) at the best circular shift of the reference (``any_start``), and/or the
    better of the reference and its reversal (``mirror``); both off = plain distance.

    Q (M, T, F), R (N, T, F): one length T. Circular cross-correlation by FFT over time,
    summed over features: <q, roll(r, s)> for every s at once.
    """
    Q, R = np.asarray(Q, np.float64), np.asarray(R, np.float64)
    T = Q.shape[1]
    norms = (Q**2).sum((1, 2))[:, None] + (R**2).sum((1, 2))[None, :]  # (M, N)
    best = np.full(norms.shape, -np.inf)  # (M, N) largest inner product over the allowed
    for ref in (R, R[:, ::-1]) if mirror else (R,):
        if not any_start:
            best = np.maximum(best, Q.reshape(len(Q), -1) @ ref.reshape(len(ref), -1).T)
            continue
        fr = np.fft.rfft(ref, axis=1)  # (N, T//2+1, F)
        fq = np.conj(np.fft.rfft(Q, axis=1))  # (M, T//2+1, F)
        for m in range(len(Q)):  # (N, T) inner product at every shift, features summed
            corr = np.fft.irfft(np.einsum("kf,nkf->nk", fq[m], fr), n=T, axis=1)
            best[m] = np.maximum(best[m], corr.max(1))
    return norms - 2.0 * best


def loo_correct(X, y, any_start=False, mirror=False) -> int:
    """How many of the sequences X (N, T, F) have a nearest other sequence (under
    shift_distances' options; ties: the first) of their own label y (N,)."""
    D = shift_distances(X, X, any_start, mirror)
    np.fill_diagonal(D, np.inf)
    y = np.asarray(y)
    return int(np.sum(y[np.argmin(D, axis=1)] == y))


def common_length(x, offsets, labels, rng=None):
    """The sequences of a stacked (total, F) ``x`` as one (N', L, F) float64 array and their
    labels (N',): at most MAX_SERIES of them (a random choice from ``rng``, default a fixed
    seed, when there are more), each resampled by linear interpolation to L = the median
    length capped at MAX_LENGTH (sequences of length L are kept as they are), then every
    feature standardised over the whole array, as the dataset z-score would weigh it.
    N' L F stays within MAX_CELLS: fewer series first (down to MIN_SERIES), then fewer steps."""
    offsets = np.asarray(offsets, np.int64)
    lengths = np.diff(offsets)
    labels = np.asarray(labels)
    F = x.shape[1]
    L = int(min(max(np.median(lengths), 1), MAX_LENGTH))
    keep = min(MAX_SERIES, max(MIN_SERIES, MAX_CELLS // (L * F)))
    pick = np.arange(lengths.size)
    if pick.size > keep:
        rng = np.random.default_rng(0) if rng is None else rng
        pick = np.sort(rng.choice(pick.size, keep, replace=False))
    L = max(1, min(L, MAX_CELLS // (pick.size * F)))
    out = np.empty((pick.size, L, F))
    for row, n in enumerate(pick):
        seq = np.asarray(x[offsets[n] : offsets[n + 1]], np.float64)  # (T_n, F)
        if seq.shape[0] == L:
            out[row] = seq
            continue
        at = np.linspace(0.0, seq.shape[0] - 1.0, L)  # (L,) positions in the sequence
        for f in range(seq.shape[1]):
            out[row, :, f] = np.interp(at, np.arange(seq.shape[0]), seq[:, f])
    mean = out.mean((0, 1))
    std = out.std((0, 1))
    out = (out - mean) / np.where(std > 0, std, 1.0)
    return out, labels[pick]


def margin(n: int) -> int:
    """Sequences more that an invariance must get right to count: 2 % of n, at least 2."""
    return max(2, math.ceil(0.02 * n))


@dataclass(frozen=True)
class Evidence:
    """Leave-one-out 1-NN counts behind an auto choice (of ``n`` sequences)."""

    n: int
    fixed: int  # correct with every sequence as recorded
    any_start: int | None  # correct allowing any start (None: not computed)
    mirror: int | None  # correct allowing the reversal too (with roll's choice of start)
    roll: bool
    reverse: bool


def reorder_evidence(X, y, roll="auto", reverse="auto") -> Evidence:
    """Resolve ``roll`` / ``reverse`` (True, False or "auto") on X (N, T, F), y (N,).

    roll "auto" is on when allowing any start gets at least margin(N) more sequences right
    than the fixed start; reverse "auto" is on when allowing the reversal, at roll's
    resolved start rule, gets margin(N) more right than without it. A given bool stays."""
    n, need = len(y), margin(len(y))
    fixed = loo_correct(X, y)
    any_start = loo_correct(X, y, any_start=True) if roll == "auto" or roll is True else None
    if roll == "auto":
        roll = any_start >= fixed + need
    base = any_start if roll else fixed
    mirror = None
    if reverse == "auto":
        mirror = loo_correct(X, y, any_start=bool(roll), mirror=True)
        reverse = mirror >= base + need
    return Evidence(n, fixed, any_start, mirror, bool(roll), bool(reverse))

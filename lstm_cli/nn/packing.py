"""The engine's packed layout of a right-padded batch (lstm.py's layout note).

A batch is sorted longest first and only its valid steps are stored, step after step:
sorted sequence r's row at step t is offsets[t] + r. ``pack_batch`` validates and packs a
batch-first batch; ``first_rows`` and ``reversal`` give the rows a bidirectional model reads
(bidirectional.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import LstmCliError
from .lstm import offsets_from_batch_sizes


class PackedBatch(NamedTuple):
    """A padded batch in the engine's packed layout (see lstm.py): sorted longest first,
    only valid steps stored, step after step."""

    x: np.ndarray  # (N, I) valid steps, model dtype
    lengths: np.ndarray  # (B,) the caller's order
    order: np.ndarray  # (B,) sorted position r holds the caller's sequence order[r]
    batch_sizes: np.ndarray  # (T,) sequences running at each step
    offsets: np.ndarray  # (T+1,) first packed row of each step
    seq: np.ndarray  # (N,) the caller's sequence index of each packed row
    last_rows: np.ndarray  # (B,) packed row of each sequence's last step, caller's order
    index: tuple  # (b, t) of each packed row in the caller's (B, T) layout
    T: int  # the longest length (the packed batch's number of steps)
    padded_T: int  # the caller's T (>= T): batch-first outputs (dx, logits) have this many steps


def pack_batch(x, lengths, input_size, dtype) -> PackedBatch:
    """Validate a right-padded batch x (B, T, input_size), lengths (B,) and pack its valid
    steps in ``dtype``. Padding values are never read, so they cannot matter (NaN included)."""
    x = np.asarray(x)
    lengths = np.asarray(lengths)
    if x.ndim != 3 or x.shape[2] != input_size:
        raise LstmCliError(f"x must have shape (batch, time, {input_size}); got {x.shape}")
    B, T, _ = x.shape
    if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
        raise LstmCliError(
            f"lengths must be an int array of shape ({B},); got {lengths.dtype} {lengths.shape}"
        )
    if B == 0 or T == 0:
        raise LstmCliError("a batch needs at least one sequence of at least one step")
    lengths = lengths.astype(np.int64)
    order = np.argsort(-lengths, kind="stable")  # (B,) longest first
    sorted_lengths = lengths[order]
    shortest, longest = int(sorted_lengths[-1]), int(sorted_lengths[0])
    if shortest < 1 or longest > T:
        raise LstmCliError(f"every length must be in [1, {T}]; got {shortest}..{longest}")
    running = np.arange(longest)[:, None] < sorted_lengths  # (T', B) sorted batch, T' = longest
    batch_sizes = running.sum(axis=1)  # (T',) sequences running at each step
    offsets = offsets_from_batch_sizes(batch_sizes)  # (T'+1,)
    # packed rows in step-major order: (t, r) for r < batch_sizes[t]
    t_idx, r_idx = np.nonzero(running)
    seq = order[r_idx]  # (N,) caller's sequence of each row
    # one gather by flat row index (faster than x[seq, t_idx]), then the model dtype
    x_packed = x.reshape(B * T, -1).take(seq * T + t_idx, axis=0).astype(dtype, copy=False)
    if not np.isfinite(x_packed).all():  # padding may hold anything; valid steps may not
        n = int(np.argwhere(~np.isfinite(x_packed))[0][0])
        raise LstmCliError(
            f"x has a non-finite value at a valid step: sequence {int(seq[n])}, "
            f"step {int(t_idx[n]) + 1}"
        )
    rank = np.empty_like(order)
    rank[order] = np.arange(B)
    last_rows = offsets[lengths - 1] + rank  # (B,)
    return PackedBatch(
        x_packed, lengths, order, batch_sizes, offsets, seq, last_rows, (seq, t_idx), longest, T
    )


def first_rows(pb: PackedBatch) -> np.ndarray:
    """(B,) the packed row of each sequence's step 0 (its sorted position), caller's order."""
    rank = np.empty_like(pb.order)
    rank[pb.order] = np.arange(len(pb.order))
    return rank


def reversal(pb: PackedBatch) -> np.ndarray:
    """(N,) the permutation that reverses every sequence's own valid steps in the packed
    layout: rev[offsets[t] + r] = offsets[length_r - 1 - t] + r. It keeps the batch sizes
    and is its own inverse."""
    r = first_rows(pb)[pb.seq]  # (N,) sorted position of each row's sequence
    return pb.offsets[pb.lengths[pb.seq] - 1 - pb.index[1]] + r


def unpack_rows(values, pb: PackedBatch) -> np.ndarray:
    """(N,) values of the packed rows -> (B, T) in the caller's layout, 0 past each end."""
    out = np.zeros((len(pb.lengths), pb.padded_T))
    out[pb.index] = values
    return out

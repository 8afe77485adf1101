"""Input transforms applied to whole sequences before batching: per-sequence z-score,
pooling and framing (config keys ``data.normalize_per_sequence``, ``data.pool``,
``data.frame``).

Every function works on the stacked layout of ``SequenceDataset``: ``x`` (total_steps, F)
and ``offsets`` (N+1,); it never mixes two sequences, and returns new arrays (a memory-
mapped ``x`` is read whole). The order is fixed: per-sequence z-score of the raw steps,
then pooling, then framing (``transform_dataset``). The same function runs at train,
eval and predict time, so a model always sees its inputs as it was trained on them.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import SequenceDataset, SequenceView, offsets_of, steps_within
from .normalize import constant_up_to_rounding

__all__ = [
    "sequence_zscore",
    "pool_steps",
    "frame_steps",
    "frame_for_length",
    "transform_dataset",
    "TRANSFORMS_OFF",
]

# transform_dataset's arguments with every transform off (its defaults)
TRANSFORMS_OFF = {"per_sequence": False, "pool": 1, "frame": 1}


def _seq_index(offsets):
    """(total_steps,) int64: the sequence each row belongs to."""
    lens = np.diff(offsets)
    return np.repeat(np.arange(lens.size, dtype=np.int64), lens)


def sequence_zscore(x, offsets):
    """Each sequence z-scored by its own per-feature mean and population std: (total, F)
    float64.

    A feature constant within a sequence (``normalize.constant_up_to_rounding``, as for
    the dataset-level statistics) gives zeros, whatever its value.
    """
    x = np.asarray(x, dtype=np.float64)  # (total, F)
    lens = np.diff(offsets).astype(np.float64)  # (N,)
    seq = _seq_index(offsets)  # (total,)
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    mean = np.add.reduceat(x, starts, axis=0) / lens[:, None]  # (N, F)
    dev = x - mean[seq]  # (total, F)
    var = np.add.reduceat(dev * dev, starts, axis=0) / lens[:, None]  # (N, F)
    constant = constant_up_to_rounding(var, mean, lens[:, None])  # (N, F)
    std = np.where(constant, 1.0, np.sqrt(var))
    return np.where(constant[seq], 0.0, dev / std[seq])


def pool_steps(x, offsets, k):
    """Mean of each run of ``k`` consecutive steps of each sequence: ((sum ceil(T_n/k)), F)
    and the new offsets. A sequence's last, partial window is the mean of the steps it has."""
    lens = np.diff(offsets)  # (N,)
    new_lens = -(-lens // k)  # ceil(T_n / k)
    new_offsets = offsets_of(new_lens)
    # window of each row: the sequence's first window plus the row's step // k
    window = np.repeat(new_offsets[:-1], lens) + steps_within(lens) // k  # (total,)
    total = int(new_offsets[-1])
    sums = np.zeros((total, x.shape[1]), dtype=np.float64)
    np.add.at(sums, window, np.asarray(x, dtype=np.float64))
    counts = np.bincount(window, minlength=total).astype(np.float64)  # (total,)
    return sums / counts[:, None], new_offsets


def frame_steps(x, offsets, k):
    """Stack each run of ``k`` consecutive steps of each sequence into one step of k*F
    features (step j*k + i fills features i*F .. i*F + F - 1 of frame j): (sum ceil(T_n/k),
    k*F) and the new offsets. A sequence's last, partial frame is padded with zeros."""
    lens = np.diff(offsets)
    F = x.shape[1]
    new_lens = -(-lens // k)
    new_offsets = offsets_of(new_lens)
    within = steps_within(lens)  # (total,)
    frame = np.repeat(new_offsets[:-1], lens) + within // k  # (total,) output row
    out = np.zeros((int(new_offsets[-1]), k, F), dtype=np.float64)
    out[frame, within % k] = np.asarray(x, dtype=np.float64)
    return out.reshape(-1, k * F), new_offsets


def frame_for_length(lengths, pool, steps) -> tuple[int, float]:
    """The frame (data.frame_to): the smallest k for which the median sequence of
    ``lengths`` (raw steps), after ``pool``, is at most ``steps`` frames long, i.e.
    k = max(1, ceil(median(ceil(T_n / pool)) / steps)). Returns (k, that median)."""
    pooled = -(-np.asarray(lengths, dtype=np.int64) // pool)  # (N,) ceil(T_n / pool)
    median = float(np.median(pooled))
    return max(1, int(np.ceil(median / steps))), median


def _applied(ds, per_sequence, pool, frame) -> dict:
    """What ``ds`` has been through once these transforms follow what it went through
    already (SequenceDataset.transforms), or a DataError when they do not continue it in
    the fixed order (each transform at most once): a second pass would transform twice."""
    done = ds.transforms or TRANSFORMS_OFF
    later = {"per_sequence": done["pool"] > 1 or done["frame"] > 1, "pool": done["frame"] > 1}
    if (
        (per_sequence and (done["per_sequence"] or later["per_sequence"]))
        or (pool > 1 and (done["pool"] > 1 or later["pool"]))
        or (frame > 1 and done["frame"] > 1)
    ):
        raise DataError(
            f"{ds.source}: the data has been through the input transforms {done} already; "
            f"transform the data as read"
        )
    return {
        "per_sequence": bool(done["per_sequence"] or per_sequence),
        "pool": done["pool"] * pool,
        "frame": done["frame"] * frame,
    }


def transform_dataset(ds, per_sequence=False, pool=1, frame=1):
    """``ds`` (a SequenceDataset or SequenceView) with the input transforms applied, in
    this order: each sequence z-scored on its own (``per_sequence``), then ``pool``, then
    ``frame``.

    With every transform off, ``ds`` itself is returned (a memory map stays on disk);
    otherwise a new in-memory SequenceDataset in ``ds.x``'s dtype (float32 for float16
    data, whose 3 digits would round the transformed values), same labels and source,
    marked with every transform it has been through (``transforms``), so a transform is
    never applied twice.
    """
    if not per_sequence and pool == 1 and frame == 1:
        return ds
    applied = _applied(ds, per_sequence, pool, frame)
    if isinstance(ds, SequenceView):  # its sequences' rows gathered (a view has no offsets)
        ds = ds.subset(np.arange(len(ds)))
    x, offsets = np.asarray(ds.x), ds.offsets
    if per_sequence:
        x = sequence_zscore(x, offsets)
    if pool > 1:
        x, offsets = pool_steps(x, offsets, pool)
    if frame > 1:
        x, offsets = frame_steps(x, offsets, frame)
    x = np.asarray(x, dtype=np.result_type(ds.x.dtype, np.float32))
    return SequenceDataset(x, offsets, ds.labels, ds.source, transforms=applied)

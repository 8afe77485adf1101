"""Batches: index batches of similar lengths, and right-padded (B, T, F) arrays of them."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError, LstmCliError
from ..validate import Interval, check
from .dataset import SequenceView, steps_within


def pad_batch(ds, indices, dtype=np.float32, mean=None, std=None):
    """Gather sequences ``indices`` into a right-padded batch.

    Returns x of shape (B, T, F) in ``dtype`` (T = longest sequence of the batch,
    zeros after each sequence's end) and lengths (B,) int64. When given, ``mean``
    and ``std`` ((F,) each) normalise the real rows as (x - mean) / std; padding
    stays exactly 0. A normalised value that is not finite in ``dtype`` (a value within
    float32's range can overflow it when the training std is tiny) raises DataError
    naming ds.source, the sequence, step and feature.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
    F = ds.num_features
    lens = ds.lengths[idx]  # (B,)
    B = idx.size
    if B == 0:
        return np.zeros((0, 0, F), dtype=dtype), lens
    T = int(lens.max())
    data = ds.rows(idx)  # (S, F), S = lens.sum()
    if mean is not None or std is not None:
        data = data.astype(np.float64)
        for name, stat in (("mean", mean), ("std", std)):
            if stat is not None and np.shape(stat) != (F,):
                raise DataError(f"pad_batch: {name} has shape {np.shape(stat)}, expected ({F},)")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
            if mean is not None:
                data = data - np.asarray(mean, dtype=np.float64)
            if std is not None:
                data = data / np.asarray(std, dtype=np.float64)
    out = np.zeros((B, T, F), dtype=dtype)  # (B, T, F)
    b_of_row = np.repeat(np.arange(B), lens)  # (S,)
    t_of_row = steps_within(lens)  # (S,)
    if mean is None and std is None:  # the loaders checked the raw values
        out[b_of_row, t_of_row] = data
    else:
        with np.errstate(over="ignore"):  # a cast beyond dtype's range gives inf: checked next
            out[b_of_row, t_of_row] = data
        if not np.isfinite(out).all():  # one pass over the batch; the padding is 0
            _raise_not_finite_after_normalisation(ds, idx, out, mean, std)
    return out, lens.astype(np.int64)


def _raise_not_finite_after_normalisation(ds, idx, out, mean, std):
    """DataError for the first value of pad_batch's normalised batch ``out`` (B, T, F) that is
    not finite, naming the sequence (its index in the file, also for a view), step and feature."""
    b, t, f = (int(k) for k in np.argwhere(~np.isfinite(out))[0])
    value = float(ds.x[int(ds.starts[idx[b]]) + t, f])
    n = int(ds.indices[idx[b]]) if isinstance(ds, SequenceView) else int(idx[b])
    stats = [
        f"{name} {float(np.asarray(stat)[f]):.6g}"
        for name, stat in (("mean", mean), ("std", std))
        if stat is not None
    ]
    raise DataError(
        f"{ds.source}: sequence {n}, step {t + 1}, feature {f + 1}: the value {value:.6g} is not"
        f" finite in {out.dtype} once normalised with the training {' and '.join(stats)} (|x -"
        f" mean| / std must be <= {float(np.finfo(out.dtype).max):.4g}); is this data on the scale"
        " of the training data?"
    )


def make_batches(lengths, batch_size, rng=None, shuffle=True, bucket=True, pool_batches=32):
    """Split ``range(N)`` into index batches covering every sequence exactly once.

    ``bucket=True`` with ``shuffle``: shuffle, cut into pools of ``pool_batches *
    batch_size`` sequences, sort each pool by length, cut it into batches, then shuffle
    the order of all batches. Each batch holds similar lengths (little padding) while
    the pools make batch membership change from epoch to epoch (a global sort would
    give nearly the same batches every epoch). ``bucket=False``: shuffled (or natural)
    order cut into batches. ``shuffle=False`` uses no randomness (a global sort by
    length, ties by index, batches in length order). Deterministic given ``rng``'s
    state; ``rng`` is required when ``shuffle`` is True.
    """
    lengths = np.asarray(lengths).reshape(-1)
    batch_size = check("batch_size", batch_size, Interval(int, 1), error=ConfigError)
    if shuffle and rng is None:
        raise LstmCliError("make_batches: pass an rng (np.random.Generator) when shuffle=True")
    n = lengths.size
    if n == 0:
        return []
    if bucket and shuffle:
        perm = rng.permutation(n).astype(np.int64)  # (N,) also the random tie-break
        pool = batch_size * max(int(pool_batches), 1)
        batches = []
        for start in range(0, n, pool):
            members = perm[start : start + pool]
            batches += _cut(members[np.argsort(lengths[members], kind="stable")], batch_size)
        return [batches[k] for k in rng.permutation(len(batches))]
    if bucket:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(n) if shuffle else np.arange(n)
    return _cut(order.astype(np.int64), batch_size)


def _cut(order, batch_size):
    """``order`` cut into consecutive batches of ``batch_size`` (the last may be shorter)."""
    return [order[s : s + batch_size] for s in range(0, order.size, batch_size)]


def padded_fraction(batches, lengths):
    """Fraction of padded steps over all (B x T) steps of ``batches``; 0.0 for no steps."""
    lengths = np.asarray(lengths)
    total = 0
    real = 0
    for b in batches:
        if len(b) == 0:
            continue
        lens = lengths[np.asarray(b)]
        total += int(lens.max()) * lens.size
        real += int(lens.sum())
    return 0.0 if total == 0 else (total - real) / total

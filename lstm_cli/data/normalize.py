"""Feature statistics, the normalisation check, and the training data's fingerprint.

Each reads a dataset's rows in chunks and releases a memory map's pages after each one,
so a pass over a large memory-mapped file keeps the process's resident memory small.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import DataError
from ..validate import Interval, check
from .batching import pad_batch
from .common import rows_per_chunk
from .dataset import SequenceView, release_pages


def feature_stats(ds, chunk_rows=None):
    """Per-feature mean and std, (F,) float64 each, over every step of ``ds`` (a dataset
    or a view). See ``feature_summary``, which also gives each feature's min and max."""
    return feature_summary(ds, chunk_rows)[:2]


def feature_summary(ds, chunk_rows=None):
    """Per-feature mean, std, min and max, (F,) float64 each, over every step of ``ds`` (a
    dataset or a view), in one pass over its rows.

    Reads the rows in chunks of about ``chunk_rows`` rows (memory-map friendly: each
    chunk's pages are released after use) and merges chunk statistics with Chan et al.'s
    pairwise formula. The std is the population std, except that a feature constant in
    the data (``constant_up_to_rounding``) gets std 1, so it is only centred, as
    scikit-learn's StandardScaler does: a floor such as 1e-8 would multiply any variation
    it shows at test time by 1e8. An exactly constant feature's mean is its value.
    """
    chunk_rows = rows_per_chunk(ds.x) if chunk_rows is None else chunk_rows
    check("chunk_rows", chunk_rows, Interval(int, 1), owner="feature_summary")
    if int(np.sum(ds.lengths)) == 0:
        raise DataError(f"{ds.source}: no data to compute feature statistics on")
    count = 0
    mean = np.zeros(ds.num_features, dtype=np.float64)  # (F,)
    m2 = np.zeros(ds.num_features, dtype=np.float64)  # (F,) sum of squared deviations
    lo = np.full(ds.num_features, np.inf)  # (F,)
    hi = np.full(ds.num_features, -np.inf)  # (F,)
    for block in _row_chunks(ds, chunk_rows):
        block = np.asarray(block, dtype=np.float64)  # (c, F)
        c = block.shape[0]
        if c == 0:
            continue
        np.minimum(lo, block.min(axis=0), out=lo)
        np.maximum(hi, block.max(axis=0), out=hi)
        block_mean = block.mean(axis=0)  # (F,)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)  # (F,)
        total = count + c
        delta = block_mean - mean
        mean = mean + delta * (c / total)
        m2 = m2 + block_m2 + delta**2 * (count * c / total)
        count = total
        release_pages(ds)
    var = m2 / count
    exact = lo == hi  # (F,)
    constant = exact | constant_up_to_rounding(var, mean, count)
    mean = np.where(exact, lo, mean)  # exactly: such a feature then normalises to 0
    return mean, np.where(constant, 1.0, np.sqrt(var)), lo, hi


def constant_up_to_rounding(var, mean, n):
    """Whether a feature with population variance ``var`` and mean ``mean`` over ``n``
    values (float64 arrays that broadcast) is constant as far as float64 can tell: its
    variance within the error of computing it, n eps var + (n eps |mean|)^2 (the bound of
    the two-pass algorithm). Relative to the data's own scale, so a feature in small
    units (a std of 1e-21) is not constant. The one statement of the rule that the
    dataset-level and per-sequence z-scores share (the ONNX and PyTorch exports repeat
    it in their own operations)."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * eps * mean) ** 2


def fingerprint(ds, blocks=64, block_rows=64) -> str:
    """A short digest of a dataset (not a view): its sequence lengths in order, its labels
    and the values of ``blocks`` evenly spaced runs of ``block_rows`` consecutive rows.

    A resume compares it to catch training data that was reordered, relabelled or edited
    (an edit confined to unsampled rows can go unseen). It reads only those runs, and
    releases each run's pages before the next, so that on a memory-mapped file its memory
    use does not grow with the file.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.offsets, dtype="<i8").tobytes())
    if ds.labels is not None:
        h.update(repr(np.asarray(ds.labels).tolist()).encode("utf-8", "surrogatepass"))
    rows = ds.x.shape[0]
    starts = np.unique(np.linspace(0, max(rows - block_rows, 0), num=blocks).astype(np.int64))
    for start in starts.tolist():
        h.update(np.ascontiguousarray(ds.x[start : start + block_rows], dtype="<f8").tobytes())
        release_pages(ds)
    return h.hexdigest()[:32]


def check_normalisable(ds, mean, std, dtype, bounds=None) -> None:
    """Raise DataError (naming file, sequence, step, feature) if some value of ``ds`` is
    not finite in ``dtype`` once normalised as (x - mean) / std, before training starts
    (pad_batch would find it only when it reaches that batch). ``bounds``: each feature's
    (min, max) over ds when already known (feature_summary), else one pass finds them;
    the precise search runs only when a bound overflows."""
    lo, hi = feature_summary(ds)[2:] if bounds is None else bounds
    with np.errstate(over="ignore", invalid="ignore"):
        worst = np.maximum(np.abs(lo - mean), np.abs(hi - mean)) / np.asarray(std, np.float64)
    if np.all(worst <= np.finfo(dtype).max):
        return
    step = 256
    for start in range(0, len(ds.lengths), step):  # pad_batch raises with the details
        pad_batch(ds, np.arange(start, min(start + step, len(ds.lengths))), dtype, mean, std)
    release_pages(ds)


def _row_chunks(ds, chunk_rows):
    """Yield the rows of ds's sequences in blocks of about chunk_rows rows: contiguous
    slices of x for a whole dataset, groups of whole sequences for a view."""
    if not isinstance(ds, SequenceView):
        for start in range(0, ds.x.shape[0], chunk_rows):
            yield ds.x[start : start + chunk_rows]
        return
    lengths = ds.lengths
    ends = np.cumsum(lengths)
    first = 0
    while first < len(ds):
        # sequences first..last-1 hold about chunk_rows rows (at least one sequence)
        last = max(
            first + 1,
            int(np.searchsorted(ends, ends[first] - lengths[first] + chunk_rows, "right")),
        )
        yield ds.rows(np.arange(first, last))
        first = last

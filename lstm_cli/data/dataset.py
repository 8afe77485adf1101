"""The in-memory dataset: N variable-length sequences stacked into one (total_steps, F) array.

``SequenceDataset`` holds every step of every sequence in ``x`` with ``offsets`` (N+1,)
marking where each sequence starts, so that a memory-mapped ``x`` is never copied whole;
``SequenceView`` picks some of its sequences by index without copying their rows.
``rows(indices)`` is the one way batching and statistics read a set of sequences' rows:
a memory-mapped ``x`` is read with one positioned read per sequence, so that the
process's resident memory stays the size of a batch whatever the size of the file.
"""

from __future__ import annotations

import mmap as _mmap
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .labels import labels_to_array


def offsets_of(lengths):
    """(N+1,) int64 start of each sequence and the total, from (N,) lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths, dtype=np.int64)
    return offsets


def steps_within(lens):
    """(sum(lens),) int64: for each row of sequences of lengths ``lens`` stacked, its step
    inside its own sequence (0 .. lens[k] - 1)."""
    lens = np.asarray(lens, dtype=np.int64)  # (B,)
    first = np.cumsum(lens) - lens  # (B,) row where each sequence starts
    return np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(first, lens)


def _ranges(starts, lens):
    """Concatenated index ranges [starts[k], starts[k] + lens[k]) as one int64 array."""
    return np.repeat(np.asarray(starts, dtype=np.int64), lens) + steps_within(lens)


@dataclass(eq=False)
class SequenceDataset:
    """N variable-length sequences stored as one (total_steps, F) array.

    Attributes
    ----------
    x : ndarray of shape (total_steps, F), floating; may be a read-only ``np.memmap``
    offsets : ndarray of shape (N + 1,), int64; sequence n is ``x[offsets[n]:offsets[n+1]]``
    labels : ndarray of shape (N,), int64 or unicode, or None when the file had none
    source : str, the file the data came from (used in messages)
    feature_names : tuple of str, the CSV columns the features were read from, in order;
        None for the other formats (their features have no names)
    transforms : dict, the input transforms it has been through (TrainedModel.prepare:
        {per_sequence, pool, frame}); None for data as read
    """

    x: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray | None
    source: str = "<memory>"
    feature_names: tuple[str, ...] | None = None
    transforms: dict | None = None

    def __post_init__(self):
        where = self.source
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 2 or self.x.dtype.kind != "f":
            raise DataError(f"{where}: x must be a 2-D floating array (total_steps, F)")
        offsets = np.asarray(self.offsets)
        if offsets.ndim != 1 or offsets.size < 1 or offsets.dtype.kind not in "iu":
            raise DataError(f"{where}: offsets must be a 1-D integer array of length N+1")
        self.offsets = offsets.astype(np.int64, copy=False)
        if self.offsets[0] != 0 or self.offsets[-1] != self.x.shape[0]:
            raise DataError(
                f"{where}: offsets must start at 0 and end at len(x) = {self.x.shape[0]}, got"
                f" {int(self.offsets[0])} and {int(self.offsets[-1])}"
            )
        if np.any(np.diff(self.offsets) < 1):
            raise DataError(f"{where}: every sequence needs at least 1 step")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (len(self),) or labels.dtype.kind not in "iuU":
                raise DataError(
                    f"{where}: labels must be an int or str array of shape ({len(self)},)"
                )
            self.labels = labels.astype(np.int64) if labels.dtype.kind in "iu" else labels

    @classmethod
    def from_sequences(cls, sequences, labels=None, source="<memory>", dtype=np.float64):
        """Build a dataset from a list of (T_n, F) arrays and optional labels."""
        seqs = [np.asarray(s, dtype=dtype) for s in sequences]
        if not seqs:
            raise DataError(f"{source}: no sequences")
        offsets = offsets_of([s.shape[0] for s in seqs])
        lab = None if labels is None else labels_to_array(list(labels), source)
        return cls(np.concatenate(seqs, axis=0), offsets, lab, source)

    @property
    def lengths(self):
        """(N,) int64 number of steps of each sequence."""
        return np.diff(self.offsets)

    @property
    def starts(self):
        """(N,) int64 first row of each sequence in ``x``."""
        return self.offsets[:-1]

    def view(self, indices):
        """The sequences ``indices`` as a SequenceView: nothing is copied."""
        return SequenceView(self, indices)

    def __len__(self):
        return self.offsets.shape[0] - 1

    @property
    def num_features(self):
        """F, the number of features per step."""
        return self.x.shape[1]

    def sequence(self, n):
        """(T_n, F) view of sequence n (negative n counts from the end)."""
        num = len(self)
        if not -num <= n < num:
            raise IndexError(f"sequence index {n} out of range for {num} sequences")
        n = n % num
        return self.x[self.offsets[n] : self.offsets[n + 1]]

    def rows(self, indices):
        """The rows of sequences ``indices`` concatenated: (sum of their lengths, F)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
        return _gather_rows(self.x, self.starts[idx], self.lengths[idx])

    def subset(self, indices):
        """A new in-memory dataset of the sequences ``indices`` (in that order), rows copied."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (M,)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for {len(self)} sequences")
        idx = idx % max(len(self), 1)
        lens = self.lengths[idx]  # (M,)
        rows = _ranges(self.offsets[idx], lens)  # (sum lens,)
        offsets = offsets_of(lens)
        x = np.asarray(self.x[rows])  # fancy index: a copy of just these rows, also for a memmap
        labels = None if self.labels is None else self.labels[idx]
        return SequenceDataset(x, offsets, labels, self.source, self.feature_names, self.transforms)


class SequenceView:
    """Some sequences of a SequenceDataset, chosen by index, without copying their rows
    (a memory-mapped dataset stays on disk; a training/validation split costs only the
    index arrays). Offers what batching, normalisation statistics and inference read:
    ``x``, ``starts``, ``lengths``, ``labels``, ``num_features``, ``source``, ``len()``.
    """

    def __init__(self, base, indices):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)  # (M,)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(base)):
            raise IndexError(f"view index out of range for {len(base)} sequences")

    x = property(lambda self: self.base.x)
    source = property(lambda self: self.base.source)
    transforms = property(lambda self: self.base.transforms)
    num_features = property(lambda self: self.base.num_features)
    starts = property(lambda self: self.base.starts[self.indices])
    lengths = property(lambda self: self.base.lengths[self.indices])

    @property
    def labels(self):
        return None if self.base.labels is None else self.base.labels[self.indices]

    def __len__(self):
        return self.indices.size

    def sequence(self, n):
        return self.base.sequence(int(self.indices[n]))

    def rows(self, indices):
        """The rows of the view's sequences ``indices`` concatenated: (sum of lengths, F)."""
        return self.base.rows(self.indices[np.asarray(indices, dtype=np.int64)])

    def subset(self, indices):
        """A new in-memory SequenceDataset of the view's sequences ``indices`` (rows copied)."""
        return self.base.subset(self.indices[np.asarray(indices, dtype=np.int64)])

    def view(self, indices):
        return SequenceView(self.base, self.indices[np.asarray(indices, dtype=np.int64)])


def _gather_rows(x, starts, lens):
    """The rows of the sequences (starts, lens) of x, concatenated: (sum(lens), F).

    In memory: one fancy index. Memory-mapped (np.memmap of a file): one positioned read
    per sequence straight into the result, never a touch through the map, which would make
    whole page-cache folios resident in the process for a few KB of data each.
    """
    filename = getattr(x, "filename", None)
    if not (isinstance(x, np.memmap) and filename and x.ndim == 2 and x.flags.c_contiguous):
        return np.asarray(x[_ranges(starts, lens)])
    F = x.shape[1]
    row_bytes = F * x.dtype.itemsize
    out = np.empty((int(lens.sum()), F), dtype=x.dtype)
    buf = memoryview(out.reshape(-1).view(np.uint8))
    base = int(x.offset)
    pos = 0
    with open(filename, "rb", buffering=0) as fh:
        fd = fh.fileno()
        for start, n in zip(starts.tolist(), lens.tolist()):  # one read per sequence
            nbytes = n * row_bytes
            got = os.preadv(fd, [buf[pos : pos + nbytes]], base + start * row_bytes)
            if got != nbytes:
                raise DataError(
                    f"{filename}: short read ({got} of {nbytes} bytes); was the file truncated?"
                )
            pos += nbytes
    return out


def _madvise(x, advice):
    """Best-effort madvise(advice) on the map of np.memmap ``x``; a no-op elsewhere."""
    mm = getattr(x, "_mmap", None)
    advice = getattr(_mmap, advice, None)
    if isinstance(x, np.memmap) and mm is not None and hasattr(mm, "madvise") and advice:
        try:
            mm.madvise(advice)
        except (OSError, ValueError):  # only memory use depends on it
            pass


def release_pages(ds) -> None:
    """Tell the OS that the pages of a memory-mapped dataset read so far may be dropped.

    Rows read through a memory map stay resident (and counted in the process's RSS) until
    the kernel needs the memory; after each pass over the data a caller releases them, so
    that peak RSS does not depend on the dataset's size. A no-op for in-memory data.
    """
    _madvise(getattr(ds, "x", ds), "MADV_DONTNEED")  # a dataset, a view or the array itself


def advise_random(arr):
    """Turn off the kernel's read-ahead on memory-mapped ``arr`` (batches read scattered
    sequences: read-ahead would make the rows around each one resident too); returns arr."""
    _madvise(arr, "MADV_RANDOM")
    return arr

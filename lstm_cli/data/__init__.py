"""Sequence datasets: the dataset type, readers and writers, labels, batching.

A dataset is N sequences of T_n >= 1 steps with F features each, plus one label per
sequence (docs: "Data formats"). One module per job:

- ``dataset``: :class:`SequenceDataset` and :class:`SequenceView`, and the one read of a
  set of sequences' rows (memory-map aware);
- ``jsonl``, ``npz``, ``npyfolder``, ``csvfile``, ``ts``: one format each, a reader and a
  writer (``arrays``: the checks NPZ and .npy folders share);
- ``formats``: ``load_dataset``, which picks a reader;
- ``labels``: label checks, the label -> class-index map, stratified splits;
- ``batching``: index batches and padded arrays; ``normalize``: feature statistics, the
  normalisation check and the training data's fingerprint;
- ``synthetic``: generated tasks;
- ``framing``: per-sequence z-score, pooling and framing; ``augment``: training-time
  augmentation; ``invariance``: the 1-NN test that ``roll`` / ``reverse: auto`` read.

Every problem with a file's content raises :class:`DataError` with one line naming the
file, the 1-based line (text formats) or the array and its 0-based index (NPZ/NPY), what
is wrong and what was expected.
"""

from __future__ import annotations

from ..errors import DataError
from .batching import make_batches, pad_batch, padded_fraction
from .csvfile import read_csv, write_csv
from .dataset import SequenceDataset, SequenceView, release_pages
from .formats import FORMATS, load_dataset
from .jsonl import read_jsonl, write_jsonl
from .labels import (
    class_list,
    encode_labels,
    label_text_problem,
    stratified_folds,
    stratified_split,
)
from .normalize import check_normalisable, feature_stats, feature_summary, fingerprint
from .npyfolder import NPY_FOLDER_ARRAYS, read_npy_dir, write_npy_dir
from .npz import read_npz, write_npz
from .ts import read_ts, write_ts

__all__ = [
    "DataError",
    "SequenceDataset",
    "SequenceView",
    "load_dataset",
    "read_jsonl",
    "read_npz",
    "read_npy_dir",
    "read_csv",
    "read_ts",
    "write_jsonl",
    "write_npz",
    "write_npy_dir",
    "write_csv",
    "write_ts",
    "encode_labels",
    "class_list",
    "label_text_problem",
    "stratified_folds",
    "stratified_split",
    "feature_stats",
    "feature_summary",
    "check_normalisable",
    "fingerprint",
    "release_pages",
    "pad_batch",
    "make_batches",
    "padded_fraction",
    "FORMATS",
    "NPY_FOLDER_ARRAYS",
]

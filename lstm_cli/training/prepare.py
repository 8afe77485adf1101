"""Data preparation: load the files, split, label map, normalisation and class weights.

Everything user-supplied is checked here, before the run folder is touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..data import (
    SequenceDataset,
    check_normalisable,
    class_list,
    feature_summary,
    fingerprint,
    load_dataset,
    release_pages,
    stratified_folds,
    stratified_split,
)
from ..data.framing import frame_for_length, transform_dataset
from ..data.invariance import common_length, margin, reorder_evidence
from ..errors import ConfigError, DataError
from ..inference import encode_dataset_labels
from .rundir import RUN_FILES, earlier_members, member_index


@dataclass
class PreparedData:
    train: SequenceDataset
    valid: SequenceDataset | None
    test: SequenceDataset | None
    classes: list
    y_train: np.ndarray
    y_valid: np.ndarray | None
    mean: np.ndarray | None
    std: np.ndarray | None
    fingerprint: str | None = None  # of the training file (data.fingerprint), checked on resume
    class_weights: np.ndarray | None = None  # (K,) loss weights from train.class_weights
    # the training split before framing, for train.augment's reverse, roll and shift
    # (data.augment); else None
    train_steps: SequenceDataset | None = None
    # (V,) the validation sequences' indices in data.train when carved from it; else None
    valid_index: np.ndarray | None = None
    # the config as trained: data.frame_to resolved into data.frame (resolve_frame),
    # train.augment.roll / reverse "auto" into true or false (resolve_reorders), the CSV
    # feature columns named (resolve_csv_columns)
    cfg: Config | None = None
    notes: tuple[str, ...] = ()  # how those were resolved, for the log

    def split(self) -> dict:
        """Which sequences train and which validate, as a checkpoint records it, so a
        resume can refuse a split drawn otherwise (by another version of lstm_cli or of
        numpy's generators): the two sizes and a digest of valid_index. Nothing is drawn
        from a data.valid file: then "valid" and "valid_index" are None."""
        index = self.valid_index
        if index is None:
            return {"train": len(self.train), "valid": None, "valid_index": None}
        digest = hashlib.sha256(np.asarray(index, "<i8").tobytes()).hexdigest()[:16]
        return {"train": len(self.train), "valid": len(index), "valid_index": digest}


def run_rng(cfg: Config) -> np.random.Generator:
    """The run's generator (init, split, shuffling, dropout): train.seed's, or for member
    ``train.fold`` of a train.folds ensemble one of its own, so members start apart."""
    seed = cfg.train.seed
    return np.random.default_rng(seed if cfg.train.fold is None else [seed, cfg.train.fold])


def fold_split(cfg: Config, labels) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, valid_idx) of member ``train.fold``: the folds come from train.seed
    alone (data.labels.stratified_folds), so every member of an ensemble cuts the same."""
    K = cfg.train.folds
    _, counts = np.unique(labels, return_counts=True)
    foldable = int(counts[counts >= 2].sum())  # dealt round-robin: each fold gets one if K <= it
    if foldable < K:
        raise DataError(
            f"{cfg.data.train}: train.folds {K} needs at least {K} sequences in labels with "
            f"2 or more; it has {foldable}. "
            + ("Give a smaller train.folds" if foldable >= 2 else "Give train.folds 0 (one model)")
        )
    folds = stratified_folds(labels, K, np.random.default_rng(cfg.train.seed))
    valid_idx = folds[cfg.train.fold]
    keep = np.ones(len(labels), dtype=bool)
    keep[valid_idx] = False
    return np.flatnonzero(keep).astype(np.int64), valid_idx


LONG_STEPS = 300  # a model-step count past which the log suggests framing


def _long_sequence_note(full: SequenceDataset) -> str | None:
    """What the log says when the median training sequence, as the model reads it (after
    pool and frame), is longer than LONG_STEPS: the gradient fades over that many steps."""
    median = float(np.median(full.lengths))
    if median <= LONG_STEPS:
        return None
    return (
        f"the median training sequence is {median:g} model steps long; an LSTM's gradient"
        ' fades before it reaches the start of so many (docs/results.md, "Framing and the'
        ' gradient"): data.frame_to (e.g. 40) stacks consecutive steps into fewer'
    )


def _no_validation_note(cfg: Config, n: int) -> str:
    """What the log says when data.valid_fraction carved no sequence from data.train
    (no class holds two): the run goes on as with data.valid_fraction 0 (Trainer)."""
    return (
        f"data.valid_fraction {cfg.data.valid_fraction} of the {n} sequences of"
        f" {cfg.data.train} leaves none for validation (no class has two): training without"
        " it, so the best checkpoint (and a plateau schedule) follow the training loss and"
        " early stopping is off"
    )


def _refuse_data_among_run_files(cfg: Config) -> None:
    """A ConfigError when a file the run reads (data, train.init_from) is one of the files
    it writes or, with --overwrite, removes: RUN_FILES in output.dir, in the folders of
    the earlier ensemble there (rundir.earlier_members) and, for a member, in the
    ensemble's folder and its K members' folders."""
    member = cfg.train.fold is not None  # in OUT/fold-i, beside the ensemble's OUT
    ensemble = os.path.dirname(os.path.normpath(cfg.output.dir)) if member else cfg.output.dir
    run_dirs = [cfg.output.dir, ensemble]
    run_dirs += [os.path.join(ensemble, n) for n in earlier_members(ensemble)]
    written = {os.path.realpath(os.path.join(d, n)): n for d in run_dirs for n in RUN_FILES}

    def run_file(path) -> str | None:
        real = os.path.realpath(path)
        folder, name = os.path.split(real)
        # the K members' folders are matched, not listed: train.folds may be huge here
        index = member_index(os.path.basename(folder))
        if member and name in RUN_FILES and index is not None and index < cfg.train.folds:
            if os.path.dirname(folder) == os.path.realpath(ensemble):
                return name
        return written.get(real)

    for key, path in (("data.train", cfg.data.train), ("data.valid", cfg.data.valid),
                      ("data.test", cfg.data.test),
                      ("train.init_from", cfg.train.init_from)):  # fmt: skip
        name = run_file(path) if path else None
        if name is not None:
            raise ConfigError(
                f"'{key}' {path} is the run folder's {name}, which this run writes; move "
                "(or copy) it, or choose another output.dir"
            )


def load(path, cfg: Config, require_labels=True) -> SequenceDataset:
    """One dataset file read with the config's format and CSV column options."""
    csv_opts = dataclasses.asdict(cfg.data.csv)  # the schema's CsvConfig: read_csv's options
    return load_dataset(path, cfg.data.format, require_labels=require_labels, csv_options=csv_opts)


def input_transform(cfg: Config, ds: SequenceDataset) -> SequenceDataset:
    """``ds`` with the config's per-sequence z-score, pooling and framing applied
    (data.framing.transform_dataset), as eval and predict apply them from the checkpoint."""
    d = cfg.data
    return transform_dataset(ds, d.normalize_per_sequence, d.pool, d.frame)


def resolve_csv_columns(cfg: Config, raw: SequenceDataset) -> Config:
    """cfg with data.csv.feature_columns set to the CSV columns the training file's
    features were read from, when it named none. The run and its checkpoints record them,
    so every later file (validation, test, lstm-eval, lstm-predict, an export's metadata)
    reads the features by name: one with its columns in another order is read as trained,
    one without them is refused, where reading by position gave other inputs silently."""
    if raw.feature_names is None or cfg.data.csv.feature_columns is not None:
        return cfg
    csv = dataclasses.replace(cfg.data.csv, feature_columns=raw.feature_names)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, csv=csv))


def resolve_frame(cfg: Config, raw: SequenceDataset) -> tuple[Config, str | None]:
    """cfg with data.frame_to replaced by the frame it chooses on the whole training file
    (data.framing.frame_for_length; the same for every member of an ensemble and every
    rank), and a sentence saying so. The returned config (data.frame k, data.frame_to
    null) is what the run folder and checkpoints record, so eval, predict, export and
    resume apply that frame."""
    d = cfg.data
    if d.frame_to is None:
        return cfg, None
    k, median = frame_for_length(raw.lengths, d.pool, d.frame_to)
    if k < 2 and cfg.train.augment.shift:
        raise ConfigError(
            f"'data.frame_to' {d.frame_to} gives frame 1 for {d.train} (median length "
            f"{median:g} steps after pooling), and 'train.augment.shift' needs a frame >= 2"
        )
    note = (
        f"data.frame_to {d.frame_to}: frame {k} (median training length {median:g} steps"
        f"{' after pool ' + str(d.pool) if d.pool > 1 else ''} -> {int(np.ceil(median / k))})"
    )
    return dataclasses.replace(cfg, data=dataclasses.replace(d, frame=k, frame_to=None)), note


def resolve_reorders(cfg: Config, steps: SequenceDataset, comm=None) -> tuple[Config, str | None]:
    """cfg with train.augment.roll / reverse "auto" replaced by what the training file's
    evidence says (data.invariance.reorder_evidence, on ``steps``: the whole file before
    framing, as roll and reverse see it), and a sentence saying so. Like resolve_frame it
    is decided once on the whole file, for every member and rank (rank 0 computes, under
    MPI, and shares the result); the run folder records the resolved bools."""
    aug = cfg.train.augment
    if "auto" not in (aug.roll, aug.reverse):
        return cfg, None
    ev = None
    if comm is None or comm.rank == 0:
        X, y = common_length(steps.x, steps.offsets, steps.labels)
        ev = reorder_evidence(X, y, aug.roll, aug.reverse)
    if comm is not None and comm.size > 1:
        ev = comm.bcast(ev)
    said = [
        f"train.augment.{key} auto: {'on' if on else 'off'}"
        for key, given, on in (("roll", aug.roll, ev.roll), ("reverse", aug.reverse, ev.reverse))
        if given == "auto"
    ]
    counts = [f"{ev.fixed} right as recorded"]
    if ev.any_start is not None:
        counts.append(f"{ev.any_start} at any start")
    if ev.mirror is not None:
        counts.append(f"{ev.mirror} {'also reversed' if ev.roll else 'allowing the reversal'}")
    note = (
        f"{', '.join(said)} (leave-one-out 1-NN on {ev.n} training sequences: "
        f"{', '.join(counts)}; switching on needs {margin(ev.n)} more)"
    )
    augment = dataclasses.replace(aug, roll=ev.roll, reverse=ev.reverse)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, augment=augment)), note


def prepare_data(cfg: Config, rng, comm=None) -> PreparedData:
    """Load train/valid/test, apply the input transforms (per-sequence z-score, pool,
    frame) to whole sequences, carve the validation split (seeded, stratified) if needed,
    fix the label map and compute normalisation statistics on the training split only, of
    the transformed features. The class weights are left to fit (class_weight_vector),
    after the resume checks. Under MPI (``comm``) the passes over every row (statistics,
    the range checks, the fingerprint) run on rank 0 alone and their results are shared,
    so no other rank reads a memory-mapped training file whole."""
    writer = comm is None or comm.rank == 0
    _refuse_data_among_run_files(cfg)
    raw = load(cfg.data.train, cfg)
    cfg = resolve_csv_columns(cfg, raw)
    cfg, frame_note = resolve_frame(cfg, raw)
    raw_valid = load(cfg.data.valid, cfg) if cfg.data.valid else None
    raw_test = load(cfg.data.test, cfg) if cfg.data.test else None
    for other in (raw_valid, raw_test):  # the files' own feature counts, before framing
        if other is not None and other.num_features != raw.num_features:
            raise DataError(
                f"{other.source}: {other.num_features} features per step, but the "
                f"training data {raw.source} has {raw.num_features}"
            )
    # whole sequences, before the split; the statistics below are of the transformed steps
    aug, d = cfg.train.augment, cfg.data
    if aug.shift or aug.roll or aug.reverse:  # "auto" too: resolve_reorders reads the steps
        steps = transform_dataset(raw, d.normalize_per_sequence, d.pool)
        cfg, reorder_note = resolve_reorders(cfg, steps, comm)
        full = transform_dataset(steps, frame=d.frame)  # = input_transform(cfg, raw)
        if not cfg.train.augment.reorders:  # "auto" resolved off
            steps = None
    else:
        steps, full, reorder_note = None, input_transform(cfg, raw), None
    va_idx, valid_note = None, None
    if raw_valid is not None:
        train, valid = full, input_transform(cfg, raw_valid)
    elif cfg.train.fold is not None or cfg.data.valid_fraction > 0:
        if cfg.train.fold is not None:
            tr_idx, va_idx = fold_split(cfg, full.labels)
        else:
            tr_idx, va_idx = stratified_split(full.labels, cfg.data.valid_fraction, rng)
        if not va_idx.size:
            valid_note = _no_validation_note(cfg, len(full))
        # views: the split copies no rows (a memory-mapped training file stays on disk)
        train, valid = full.view(tr_idx), (full.view(va_idx) if va_idx.size else None)
        steps = None if steps is None else steps.view(tr_idx)
    else:
        train, valid = full, None
    test = input_transform(cfg, raw_test) if raw_test is not None else None
    classes = training_classes(train.labels, cfg.data.train)
    y_train = encode_dataset_labels(train, classes)
    y_valid = encode_dataset_labels(valid, classes) if valid is not None else None
    if test is not None:
        try:  # fail now, not after training
            encode_dataset_labels(test, classes)
        except DataError as err:
            raise DataError(
                f"{err}; to train anyway, set data.test to null and evaluate that file"
                " afterwards with lstm-eval --allow-unknown (it leaves unknown labels out)"
            ) from None
    mean = std = digest = None
    if writer:
        if cfg.data.normalize:
            mean, std, lo, hi = feature_summary(train)
            release_pages(full)
            # every value must survive normalisation: fail now, not at its batch
            check_normalisable(train, mean, std, cfg.model.dtype, bounds=(lo, hi))
            for ds in (valid, test):
                if ds is not None:
                    check_normalisable(ds, mean, std, cfg.model.dtype)
        digest = fingerprint(raw)
    if comm is not None and comm.size > 1:  # a rank 0 that failed never gets here: it aborts
        mean, std, digest = comm.bcast((mean, std, digest))
    return PreparedData(
        train,
        valid,
        test,
        classes,
        y_train,
        y_valid,
        mean,
        std,
        digest,
        train_steps=steps,
        valid_index=None if valid is None else va_idx,
        cfg=cfg,
        notes=tuple(
            n for n in (frame_note, reorder_note, _long_sequence_note(full), valid_note) if n
        ),
    )


def training_classes(labels, source) -> list:
    """The classes of training labels (class_list); DataError naming ``source`` when
    there are fewer than 2."""
    classes = class_list(labels)
    if len(classes) < 2:
        raise DataError(f"{source}: training needs at least 2 classes; found {classes!r}")
    return classes


def class_weight_vector(cfg: Config, classes, y_train, origin=None):
    """(K,) per-class loss weights from train.class_weights, or None.

    origin: where train.class_weights came from (the config file, or the --set that gave
    it: config.value_origin), named in the error message."""
    cw = cfg.train.class_weights
    if cw is None:
        return None
    K = len(classes)
    if cw == "balanced":
        counts = np.bincount(y_train, minlength=K).astype(np.float64)
        return len(y_train) / (K * np.maximum(counts, 1.0))
    by_name = {str(label): float(w) for label, w in cw}
    unknown = sorted(set(by_name) - {str(c) for c in classes})
    if unknown:
        where = f"{origin}: " if origin else ""
        raise ConfigError(
            f"{where}train.class_weights names labels not in the training data: "
            f"{unknown}; the labels are {classes}"
        )
    return np.array([by_name.get(str(c), 1.0) for c in classes])

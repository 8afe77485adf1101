"""The training loop: data -> model -> epochs of BPTT -> checkpoints and metrics.

``fit(cfg)`` is the library entry point behind ``lstm-train``. It validates everything
it can (data files, labels, feature counts, the run folder) *before* it writes anything,
so a bad input never damages an existing run. Every file it writes is replaced
atomically (checkpoint.save_checkpoint, _atomic_write_text), so a crash leaves the last
complete version under each name.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, config_to_dict, dump_config
from .data import (
    SequenceDataset,
    class_list,
    feature_stats,
    load_dataset,
    make_batches,
    pad_batch,
    padded_fraction,
    stratified_split,
)
from .errors import CheckpointError, ConfigError, DataError, TrainingError
from .inference import TrainedModel, encode_dataset_labels, evaluate_dataset, loss_and_probs
from .model import LSTMClassifier
from .optim import LRSchedule, clip_by_global_norm, make_optimizer

METRIC_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                  "grad_norm", "seconds", "padded_fraction", "sequences_per_second"]
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "last.npz", "best.npz", "summary.json")
# Config keys that may change when a run is resumed (everything else must match).
RESUMABLE_CHANGES = ("train.epochs", "output.dir", "data.test")


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


@dataclass
class TrainResult:
    """What ``fit`` returns: the best model (restored), its history and where it was saved."""

    trained: TrainedModel
    history: list
    best_epoch: int
    run_dir: str
    stopped_early: bool = False
    test_report: dict | None = None
    summary: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def _load(path, cfg: Config, require_labels=True):
    csv_opts = {"id_column": cfg.data.csv.id_column, "label_column": cfg.data.csv.label_column,
                "feature_columns": cfg.data.csv.feature_columns}
    return load_dataset(path, cfg.data.format, require_labels=require_labels, csv_options=csv_opts)


def prepare_data(cfg: Config, rng) -> PreparedData:
    """Load train/valid/test, carve the validation split (seeded, stratified) if needed,
    fix the label map and compute normalisation statistics on the training split only."""
    full = _load(cfg.data.train, cfg)
    if cfg.data.valid:
        train, valid = full, _load(cfg.data.valid, cfg)
    elif cfg.data.valid_fraction > 0:
        tr_idx, va_idx = stratified_split(full.labels, cfg.data.valid_fraction, rng)
        train, valid = full.subset(tr_idx), (full.subset(va_idx) if va_idx.size else None)
    else:
        train, valid = full, None
    test = _load(cfg.data.test, cfg) if cfg.data.test else None
    classes = class_list(train.labels)
    if len(classes) < 2:
        raise DataError(f"{cfg.data.train}: training needs at least 2 classes; found {classes!r}")
    for other in (valid, test):
        if other is not None and other.num_features != train.num_features:
            raise DataError(f"{other.source}: {other.num_features} features per step, but the "
                            f"training data {train.source} has {train.num_features}")
    y_train = encode_dataset_labels(train, classes)
    y_valid = encode_dataset_labels(valid, classes) if valid is not None else None
    if test is not None:
        encode_dataset_labels(test, classes)  # fail now, not after training
    mean = std = None
    if cfg.data.normalize:
        mean, std = feature_stats(train)
    return PreparedData(train, valid, test, classes, y_train, y_valid, mean, std)


def class_weight_vector(cfg: Config, classes, y_train):
    """(K,) per-class loss weights from train.class_weights, or None."""
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
        raise ConfigError(f"train.class_weights names labels not in the training data: {unknown}; "
                          f"the labels are {classes}")
    return np.array([by_name.get(str(c), 1.0) for c in classes])


# --------------------------------------------------------------------------- files


def _atomic_write_text(path, text: str) -> None:
    """Write text to path via a same-folder temp file + fsync + os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_metrics(run_dir, history) -> None:
    """Rewrite metrics.jsonl and metrics.csv (small: one row per epoch) atomically."""
    _atomic_write_text(os.path.join(run_dir, "metrics.jsonl"),
                       "".join(json.dumps(row) + "\n" for row in history))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else row[c] for c in METRIC_COLUMNS])
    _atomic_write_text(os.path.join(run_dir, "metrics.csv"), buf.getvalue())


def check_run_dir(run_dir, overwrite=False, resume=False) -> None:
    """Refuse a non-empty run folder unless overwrite/resume; create it otherwise."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"output.dir {run_dir!r} exists and is not a folder")
    if resume:
        if not os.path.isfile(os.path.join(run_dir, "last.npz")):
            raise CheckpointError(f"cannot resume: {os.path.join(run_dir, 'last.npz')} does not exist")
        return
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not overwrite:
        raise ConfigError(f"run folder {run_dir!r} is not empty; pass --overwrite to replace its "
                          f"files, --resume to continue it, or choose another --output")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create run folder {run_dir!r}: {err.strerror}") from None


# --------------------------------------------------------------------------- training


def _metric_better(metric, value, best, min_delta):
    if best is None:
        return True
    if metric == "val_accuracy":
        return value > best + min_delta
    return value < best - min_delta


def _kept(run_dir, history):
    if not history:
        return "No epoch finished, so this run wrote no checkpoint."
    return (f"Training stopped; last.npz and best.npz in {run_dir} are from epoch "
            f"{history[-1]['epoch']} and earlier, untouched.")


def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def fit(cfg: Config, *, overwrite=False, resume=False, progress=True, log=print) -> TrainResult:
    """Train a model as ``cfg`` says; write the run folder; return the best model.

    overwrite: replace the files of a non-empty run folder. resume: continue the run in
    cfg.output.dir from its last.npz (parameters, optimizer and schedule state, RNG state,
    history, early-stopping state). progress: show a tqdm bar on stderr (it turns itself
    off when stderr is not a terminal). log: where the per-epoch summary lines go.
    """
    run_dir = cfg.output.dir
    rng = np.random.default_rng(cfg.train.seed)
    data = prepare_data(cfg, rng)  # everything user-supplied is validated before any write
    resumed = _load_resume_state(cfg, run_dir) if resume else None
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)

    m = cfg.model
    model = LSTMClassifier(data.train.num_features, m.hidden_size, len(data.classes),
                           num_layers=m.num_layers, head=m.head, forget_bias=m.forget_bias,
                           dropout=m.dropout, dtype=m.dtype, init=m.init, seed=rng)
    o = cfg.train.optimizer
    optimizer = make_optimizer(o.name, model.params, o.lr, momentum=o.momentum, nesterov=o.nesterov,
                               betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    s = cfg.train.schedule
    schedule = LRSchedule(s.name, o.lr, cfg.train.epochs, step_size=s.step_size, gamma=s.gamma,
                          min_lr=s.min_lr, patience=s.patience, factor=s.factor)
    class_weights = class_weight_vector(cfg, data.classes, data.y_train)
    es = cfg.train.early_stopping
    has_valid = data.valid is not None
    best_metric_name = es.metric if has_valid else "train_loss"
    norm = None if data.mean is None else {"mean": data.mean.tolist(), "std": data.std.tolist()}

    history, start_epoch, step = [], 0, 0
    best_value, best_epoch, bad_epochs = None, 0, 0
    best_params = {k: v.copy() for k, v in model.params.items()}
    if resumed is not None:
        ckpt = resumed
        model.set_params(ckpt.params)
        optimizer.load_state_dict(ckpt.optim_arrays, ckpt.meta["optimizer"])
        schedule.load_state_dict(ckpt.meta["schedule"])
        rng.bit_generator.state = ckpt.meta["rng_state"]
        state = ckpt.meta["train_state"]
        history = ckpt.meta["history"]
        start_epoch, step = state["epoch"], state["step"]
        best_value, best_epoch, bad_epochs = state["best_value"], state["best_epoch"], state["bad_epochs"]
        best_ckpt = os.path.join(run_dir, "best.npz")
        best_params = (load_checkpoint(best_ckpt).params if os.path.isfile(best_ckpt)
                       else {k: v.copy() for k, v in model.params.items()})
        log(f"resuming {run_dir} after epoch {start_epoch} (step {step})")
    else:
        _atomic_write_text(os.path.join(run_dir, "config.yaml"), dump_config(cfg))
        for name in RUN_FILES[1:]:  # --overwrite: stale outputs of an earlier run go now
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                os.unlink(path)

    base_meta = {"lstm_cli_version": __version__, "model": model.spec(), "classes": data.classes,
                 "normalization": norm, "config": config_to_dict(cfg)}

    def checkpoint_meta(epoch):
        return {**base_meta, "epoch": epoch, "step": step,
                "metrics": history[-1] if history else None,
                "history": history, "optimizer": optimizer.state_dict()[1],
                "schedule": schedule.state_dict(), "rng_state": rng.bit_generator.state,
                "train_state": {"epoch": epoch, "step": step, "best_value": best_value,
                                "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                                "best_metric": best_metric_name}}

    stopped_early = False
    train_lengths = data.train.lengths
    last_finite_loss = None
    from tqdm.auto import tqdm

    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        optimizer.lr = schedule.lr_for_epoch(epoch)
        batches = make_batches(train_lengths, cfg.train.batch_size, rng, shuffle=True,
                               bucket=cfg.data.bucket)
        pad_frac = padded_fraction(batches, train_lengths)
        loss_sum, correct, seen, norm_sum = 0.0, 0, 0, 0.0
        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch",
                   file=sys.stderr, leave=False, dynamic_ncols=True,
                   disable=None if progress else True)
        # non-finite values are detected explicitly below, so numpy's warnings are noise here
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                for idx in batches:
                    x, lengths = pad_batch(data.train, idx, model.dtype, data.mean, data.std)
                    y = data.y_train[idx]
                    logits, cache = model.forward(x, lengths, training=True, rng=rng)
                    loss, dlogits = model.loss_from_logits(logits, cache, y, class_weights)
                    step += 1
                    if not math.isfinite(loss):
                        raise TrainingError(
                            f"epoch {epoch + 1} step {step}: the training loss is not finite ({loss}); "
                            f"last finite loss {_fmt(last_finite_loss)}. {_kept(run_dir, history)} "
                            f"Try a lower train.optimizer.lr or set train.clip_grad_norm.")
                    grads, _ = model.backward(dlogits, cache)
                    grads, gnorm = clip_by_global_norm(grads, cfg.train.clip_grad_norm or None)
                    if not math.isfinite(gnorm):
                        raise TrainingError(
                            f"epoch {epoch + 1} step {step}: the gradient norm is not finite; last finite "
                            f"loss {_fmt(last_finite_loss)}. {_kept(run_dir, history)}")
                    optimizer.step(model.params, grads)
                    last_finite_loss = loss
                    B = len(idx)
                    loss_sum += loss * B
                    correct += int((model.probabilities(logits, cache).argmax(1) == y).sum())
                    seen += B
                    norm_sum += gnorm
                    bar.update(1)
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}",
                                    seq_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
            finally:
                bar.close()

        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": None, "val_accuracy": None, "lr": optimizer.lr,
               "grad_norm": norm_sum / len(batches)}
        if has_valid:
            v_losses, v_probs = loss_and_probs(model, data.valid, data.y_valid, data.mean, data.std)
            row["val_loss"] = float(v_losses.mean())
            row["val_accuracy"] = float((v_probs.argmax(1) == data.y_valid).mean())
        seconds = time.perf_counter() - t0
        row.update(seconds=round(seconds, 4), padded_fraction=round(pad_frac, 4),
                   sequences_per_second=round(seen / seconds, 1))
        history.append(row)

        value = row[best_metric_name]
        improved = _metric_better(best_metric_name, value, best_value, es.min_delta)
        if improved:
            best_value, best_epoch, bad_epochs = value, epoch + 1, 0
            best_params = {k: v.copy() for k, v in model.params.items()}
        else:
            bad_epochs += 1
        schedule.observe(value, mode="max" if best_metric_name == "val_accuracy" else "min")

        # Order matters for crash safety: best.npz first, then last.npz (which records
        # best_epoch), then the metrics files.
        if improved:
            save_checkpoint(os.path.join(run_dir, "best.npz"), model.params, checkpoint_meta(epoch + 1))
        save_checkpoint(os.path.join(run_dir, "last.npz"), model.params, checkpoint_meta(epoch + 1),
                        extra_arrays=optimizer.state_dict()[0])
        _write_metrics(run_dir, history)
        log(f"epoch {epoch + 1}/{cfg.train.epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.3f}  val loss {_fmt(row['val_loss'])} "
            f"acc {_fmt(row['val_accuracy'], '.3f')}  lr {row['lr']:.2e}  {seconds:.1f}s"
            + ("  *" if improved else ""))
        if es.patience is not None and has_valid and bad_epochs >= es.patience:
            stopped_early = True
            log(f"early stopping: {best_metric_name} has not improved for {bad_epochs} epochs; "
                f"best epoch {best_epoch}")
            break

    model.set_params(best_params)
    trained = TrainedModel(model, data.classes, data.mean, data.std, base_meta)
    test_report = None
    if data.test is not None:
        test_report, _, _ = evaluate_dataset(trained, data.test)
        log(f"test ({data.test.source}): accuracy {test_report['accuracy']:.4f}  loss "
            f"{test_report['loss']:.4f}  macro F1 {test_report['macro_f1']:.4f}  (best epoch {best_epoch})")
    summary = {"best_epoch": best_epoch, "best_metric": best_metric_name, "best_value": best_value,
               "epochs_run": len(history), "stopped_early": stopped_early,
               "num_parameters": model.num_parameters(), "train_sequences": len(data.train),
               "valid_sequences": 0 if data.valid is None else len(data.valid),
               "classes": data.classes, "test": test_report}
    _atomic_write_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return TrainResult(trained, history, best_epoch, run_dir, stopped_early, test_report, summary)


def _load_resume_state(cfg: Config, run_dir):
    """Read run_dir/last.npz and check that cfg may continue it (same architecture, data, seed...)."""
    path = os.path.join(run_dir, "last.npz")
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot resume: {path} does not exist")
    ckpt = load_checkpoint(path)
    if "train_state" not in ckpt.meta or "config" not in ckpt.meta:
        raise CheckpointError(f"{path}: not a resumable lstm_cli training checkpoint")
    old = _flatten(ckpt.meta["config"])
    new = _flatten(config_to_dict(cfg))
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(f"cannot resume {run_dir}: the config changed in a way that breaks the "
                          f"run ({details}). Only {', '.join(RESUMABLE_CHANGES)} may change.")
    return ckpt


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_for_resume(run_dir, overrides=()) -> Config:
    """The config stored in run_dir/last.npz, with --set overrides applied."""
    path = os.path.join(run_dir, "last.npz")
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot resume: {path} does not exist")
    meta = load_checkpoint(path).meta
    if "config" not in meta:
        raise CheckpointError(f"{path}: not a resumable lstm_cli training checkpoint")
    return config_from_dict(meta["config"], source=path, overrides=overrides)

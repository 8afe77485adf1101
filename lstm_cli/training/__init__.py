"""The training loop: data -> model -> epochs of BPTT -> checkpoints and metrics.

``fit(cfg)`` is the library entry point behind ``lstm-train``. It validates everything
it can (data files, labels, feature counts, the run folder) *before* it writes anything,
so a bad input never damages an existing run. Every file it writes is replaced
atomically (checkpoint.save_checkpoint, atomic.write_text), so a crash leaves the last
complete version under each name.
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from ..config import Config, config_from_dict, config_to_dict, dump_config
from ..data import (
    SequenceDataset,
    check_normalisable,
    class_list,
    feature_summary,
    fingerprint,
    load_dataset,
    make_batches,
    pad_batch,
    padded_fraction,
    release_pages,
    stratified_split,
)
from ..errors import (
    CheckpointError,
    ConfigError,
    DataError,
    Interrupted,
    LstmCliError,
    TrainingError,
)
from ..inference import TrainedModel, encode_dataset_labels, evaluate_dataset, loss_and_probs
from ..nn.model import LSTMClassifier
from ..nn.optim import LRSchedule, clip_by_global_norm, make_optimizer
from ..store.atomic import write_text
from ..store.checkpoint import load_checkpoint, read_meta, save_checkpoint

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
    "seconds",
    "padded_fraction",
    "sequences_per_second",
]
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
    fingerprint: str | None = None  # of the training file (data.fingerprint), checked on resume


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
    csv_opts = {
        "id_column": cfg.data.csv.id_column,
        "label_column": cfg.data.csv.label_column,
        "feature_columns": cfg.data.csv.feature_columns,
        "label_type": cfg.data.csv.label_type,
    }
    return load_dataset(path, cfg.data.format, require_labels=require_labels, csv_options=csv_opts)


def prepare_data(cfg: Config, rng) -> PreparedData:
    """Load train/valid/test, carve the validation split (seeded, stratified) if needed,
    fix the label map and compute normalisation statistics on the training split only."""
    full = _load(cfg.data.train, cfg)
    if cfg.data.valid:
        train, valid = full, _load(cfg.data.valid, cfg)
    elif cfg.data.valid_fraction > 0:
        tr_idx, va_idx = stratified_split(full.labels, cfg.data.valid_fraction, rng)
        # views: the split copies no rows (a memory-mapped training file stays on disk)
        train, valid = full.view(tr_idx), (full.view(va_idx) if va_idx.size else None)
    else:
        train, valid = full, None
    test = _load(cfg.data.test, cfg) if cfg.data.test else None
    classes = class_list(train.labels)
    if len(classes) < 2:
        raise DataError(f"{cfg.data.train}: training needs at least 2 classes; found {classes!r}")
    for other in (valid, test):
        if other is not None and other.num_features != train.num_features:
            raise DataError(
                f"{other.source}: {other.num_features} features per step, but the "
                f"training data {train.source} has {train.num_features}"
            )
    y_train = encode_dataset_labels(train, classes)
    y_valid = encode_dataset_labels(valid, classes) if valid is not None else None
    if test is not None:
        encode_dataset_labels(test, classes)  # fail now, not after training
    mean = std = None
    if cfg.data.normalize:
        mean, std, lo, hi = feature_summary(train)
        release_pages(full)
        # every value must survive normalisation: fail now, not at its batch
        check_normalisable(train, mean, std, cfg.model.dtype, bounds=(lo, hi))
        for ds in (valid, test):
            if ds is not None:
                check_normalisable(ds, mean, std, cfg.model.dtype)
    return PreparedData(train, valid, test, classes, y_train, y_valid, mean, std, fingerprint(full))


def class_weight_vector(cfg: Config, classes, y_train, source=None):
    """(K,) per-class loss weights from train.class_weights, or None.

    source: where train.class_weights came from (the config file, or the --set that gave
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
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}train.class_weights names labels not in the training data: "
            f"{unknown}; the labels are {classes}"
        )
    return np.array([by_name.get(str(c), 1.0) for c in classes])


# --------------------------------------------------------------------------- files


def _remove_run_file(path) -> None:
    try:
        if os.path.lexists(path):
            os.unlink(path)
    except OSError as err:
        raise LstmCliError(
            f"cannot remove {path} (a file of the earlier run): {err.strerror or err}"
        ) from None


def _write_metrics(run_dir, history) -> None:
    """Rewrite metrics.jsonl and metrics.csv (small: one row per epoch) atomically."""
    write_text(
        os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(row) + "\n" for row in history)
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else row[c] for c in METRIC_COLUMNS])
    write_text(os.path.join(run_dir, "metrics.csv"), buf.getvalue())


def resume_checkpoint_path(run_dir) -> str:
    """run_dir/last.npz, or a CheckpointError saying a resume is impossible without it."""
    path = os.path.join(run_dir, "last.npz")
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot resume: {path} does not exist")
    return path


def check_run_dir(run_dir, overwrite=False, resume=False) -> None:
    """Refuse a non-empty run folder unless overwrite/resume; create it otherwise."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"output.dir {run_dir!r} exists and is not a folder")
    if resume:
        resume_checkpoint_path(run_dir)
        return
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not overwrite:
        raise ConfigError(
            f"run folder {run_dir!r} is not empty; pass --overwrite to replace its "
            f"files, --resume to continue it, or choose another --output"
        )
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create run folder {run_dir!r}: {err.strerror}") from None


# --------------------------------------------------------------------------- training


def _metric_better(metric, value, best, min_delta):
    if best is None or not math.isfinite(best):  # a NaN first epoch must not block every later one
        return True
    if metric == "val_accuracy":
        return value > best + min_delta
    return value < best - min_delta


def fmt_metric(v, spec=".4f"):
    """A metric for a log line: formatted, or '-' when there is none."""
    return "-" if v is None else format(v, spec)


class _SignalGuard:
    """While active, SIGINT/SIGTERM only set a flag (the loop saves and stops after the
    current batch); a second signal restores the default behaviour and interrupts at once.
    Only installed in the main thread (signal handlers cannot be set elsewhere)."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up at once
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


class Trainer:
    """One training run: the model, optimizer, schedule, RNG and bookkeeping, with the
    state needed to checkpoint and resume at any epoch end or every N steps.

    The RNG (one numpy Generator seeded by train.seed) is used, in order, for the
    validation split, the initialisation, then per epoch for the batch order and
    dropout masks; its state is saved in every checkpoint, so a resumed run draws exactly
    what the uninterrupted run would have drawn.
    """

    def __init__(
        self, cfg: Config, data: PreparedData, rng, *, progress=True, log=print, source=None
    ):
        self.cfg, self.data, self.rng, self.progress, self.log = cfg, data, rng, progress, log
        self.run_dir = cfg.output.dir
        m, o, s = cfg.model, cfg.train.optimizer, cfg.train.schedule
        try:
            self.model = LSTMClassifier(
                data.train.num_features,
                m.hidden_size,
                len(data.classes),
                num_layers=m.num_layers,
                head=m.head,
                forget_bias=m.forget_bias,
                dropout=m.dropout,
                dtype=m.dtype,
                init=m.init,
                seed=rng,
            )
        except LstmCliError as err:  # too large for this machine (model.hidden_size / num_layers)
            raise ConfigError(f"model: {err}") from None
        self.optimizer = make_optimizer(
            o.name,
            self.model.params,
            o.lr,
            momentum=o.momentum,
            nesterov=o.nesterov,
            betas=tuple(o.betas),
            eps=o.eps,
            weight_decay=o.weight_decay,
        )
        self.schedule = LRSchedule(
            s.name,
            o.lr,
            cfg.train.epochs,
            step_size=s.step_size,
            gamma=s.gamma,
            min_lr=s.min_lr,
            patience=s.patience,
            factor=s.factor,
        )
        self.class_weights = class_weight_vector(cfg, data.classes, data.y_train, source)
        self.best_metric = (
            cfg.train.early_stopping.metric if data.valid is not None else "train_loss"
        )
        norm = None if data.mean is None else {"mean": data.mean.tolist(), "std": data.std.tolist()}
        self.base_meta = {
            "lstm_cli_version": __version__,
            "model": self.model.spec(),
            "classes": data.classes,
            "normalization": norm,
            "config": config_to_dict(cfg),
            "blas_threads": _blas_threads(),
            "data_fingerprint": data.fingerprint,
        }
        # progress of the run
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.history = []
        self.best_value, self.best_epoch, self.bad_epochs = None, 0, 0
        self.best_params = self._copy_params()
        self.stopped_early = False
        self.last_finite_loss = None
        self.partial = None  # state of an unfinished epoch: batches, position, sums
        # files of an earlier run in the folder (--overwrite): removed only when this run
        # writes its first checkpoint (see _retire_earlier_run)
        self.earlier_run = []

    # ------------------------------------------------------------------ state
    def _copy_params(self):
        return {k: v.copy() for k, v in self.model.params.items()}

    def _meta(self):
        train_state = {
            "epoch": self.epoch,
            "step": self.step,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_metric": self.best_metric,
            "last_finite_loss": self.last_finite_loss,
            "stopped_early": self.stopped_early,
            "partial_epoch": self.partial,
        }
        return {
            **self.base_meta,
            "epoch": self.epoch,
            "step": self.step,
            "metrics": self.history[-1] if self.history else None,
            "history": self.history,
            "optimizer": self.optimizer.state_dict()[1],
            "schedule": self.schedule.state_dict(),
            "rng_state": self.rng.bit_generator.state,
            "train_state": train_state,
        }

    def restore(self, ckpt, path="last.npz") -> None:
        """Continue from a last.npz written by this trainer (see _load_resume_state); a
        state it cannot continue from is a CheckpointError naming ``path``."""
        try:
            self._restore(ckpt)
        except (LstmCliError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise CheckpointError(f"{path}: cannot resume from it: {detail}") from None
        best_path = os.path.join(self.run_dir, "best.npz")
        if os.path.isfile(best_path):
            best = load_checkpoint(best_path).params
            try:
                self.best_params = self.model.conform_params(best)
            except LstmCliError as err:
                raise CheckpointError(
                    f"{best_path}: not this run's best checkpoint ({err}; the run is "
                    f"{path}); move it away to resume"
                ) from None
        where = (
            f"epoch {self.epoch + 1}, batch {self.partial['position']}"
            if self.partial
            else f"the end of epoch {self.epoch}"
        )
        self.log(f"resuming {self.run_dir} from {where} (step {self.step})")
        if self.stopped_early:
            self.log(
                f"the run stopped early after epoch {self.epoch} (best epoch {self.best_epoch}); "
                f"nothing left to train"
            )

    def _restore(self, ckpt) -> None:
        self.model.set_params(ckpt.params)
        self.optimizer.load_state_dict(ckpt.optim_arrays, ckpt.meta["optimizer"])
        self.schedule.load_state_dict(ckpt.meta["schedule"])
        self.rng.bit_generator.state = ckpt.meta["rng_state"]
        st = ckpt.meta["train_state"]
        self.history = ckpt.meta["history"]
        self.epoch, self.step = st["epoch"], st["step"]
        self.best_value, self.best_epoch, self.bad_epochs = (
            st["best_value"],
            st["best_epoch"],
            st["bad_epochs"],
        )
        self.last_finite_loss = st.get("last_finite_loss")
        self.partial = st.get("partial_epoch")
        self.stopped_early = bool(st.get("stopped_early", False))  # early stopping stays decided

    def save_last(self) -> None:
        self._retire_earlier_run()
        save_checkpoint(
            os.path.join(self.run_dir, "last.npz"),
            self.model.params,
            self._meta(),
            extra_arrays=self.optimizer.state_dict()[0],
        )

    def _retire_earlier_run(self) -> None:
        """Before this run's first checkpoint (best.npz or last.npz): remove the earlier run's
        files and write this run's config.yaml, so the folder never holds files of two runs
        (a mix would resume one run with the other's best weights). Until then a run that
        fails (bad data found late, a non-finite first loss, a signal before any checkpoint)
        leaves them untouched."""
        if not self.earlier_run:
            return
        names, self.earlier_run = self.earlier_run, []
        for name in names:
            if name != "config.yaml":
                _remove_run_file(os.path.join(self.run_dir, name))
        self.write_config()

    def write_config(self) -> None:
        """The run folder's config.yaml: this run's resolved config."""
        write_text(os.path.join(self.run_dir, "config.yaml"), dump_config(self.cfg))

    def kept(self) -> str:
        """What a failed run leaves behind, for its error message."""
        if self.earlier_run:
            return (
                f"This run wrote no checkpoint; the earlier run's files in {self.run_dir} "
                f"are untouched."
            )
        if not self.history:
            if os.path.isfile(os.path.join(self.run_dir, "last.npz")):  # this run's, mid-epoch
                return (
                    f"No epoch finished; {self.run_dir}/last.npz is from inside epoch 1, untouched."
                )
            return "No epoch finished, so this run wrote no checkpoint."
        return (
            f"Training stopped; last.npz and best.npz in {self.run_dir} are from epoch "
            f"{self.history[-1]['epoch']} and earlier, untouched."
        )

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        cfg = self.cfg
        with _SignalGuard() as guard:
            while self.epoch < cfg.train.epochs and not self.stopped_early:
                self._run_epoch(guard)

    def _run_epoch(self, guard) -> None:
        from tqdm.auto import tqdm

        cfg, data = self.cfg, self.data
        epoch = self.epoch  # 0-based index of the epoch being run
        t0 = time.perf_counter()
        self.optimizer.lr = self.schedule.lr_for_epoch(epoch)
        if self.partial is None:
            batches = make_batches(
                data.train.lengths,
                cfg.train.batch_size,
                self.rng,
                shuffle=True,
                bucket=cfg.data.bucket,
            )
            self.partial = {
                "batches": [b.tolist() for b in batches],
                "position": 0,
                "loss_sum": 0.0,
                "correct": 0,
                "seen": 0,
                "norm_sum": 0.0,
                "seconds": 0.0,
            }
        p = self.partial
        batches = [np.asarray(b, np.int64) for b in p["batches"]]
        every = cfg.train.checkpoint_every_steps
        bar = tqdm(
            total=len(batches),
            initial=p["position"],
            unit="batch",
            file=sys.stderr,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=None if self.progress else True,
        )
        # non-finite values are detected explicitly, so numpy's warnings are noise here
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                while p["position"] < len(batches):
                    idx = batches[p["position"]]
                    loss, correct = self._train_step(idx, epoch)
                    p["position"] += 1
                    p["loss_sum"] += loss * len(idx)
                    p["correct"] += correct
                    p["seen"] += len(idx)
                    bar.update(1)
                    elapsed = p["seconds"] + time.perf_counter() - t0
                    bar.set_postfix(
                        loss=f"{p['loss_sum'] / p['seen']:.4f}",
                        acc=f"{p['correct'] / p['seen']:.3f}",
                        seq_s=f"{p['seen'] / max(elapsed, 1e-9):.0f}",
                        refresh=False,
                    )
                    if guard.signum is not None and p["position"] < len(batches):
                        self._stop_on_signal(guard.signum, t0)
                    if every and self.step % every == 0 and p["position"] < len(batches):
                        p["seconds"] += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        self.save_last()
            finally:
                bar.close()
        self._finish_epoch(batches, time.perf_counter() - t0 + p["seconds"])
        if guard.signum is not None:
            self._stop_on_signal(guard.signum, None)

    def _train_step(self, idx, epoch):
        """One batch: forward, loss, BPTT, clip, update. Returns (loss, number correct)."""
        data, model = self.data, self.model
        x, lengths = pad_batch(data.train, idx, model.dtype, data.mean, data.std)
        y = data.y_train[idx]
        with np.errstate(all="ignore"):  # a non-finite loss is reported just below
            loss, grads, probs = model.loss_and_grads(
                x, lengths, y, self.class_weights, training=True, rng=self.rng, return_probs=True
            )
        self.step += 1
        if not math.isfinite(loss):
            raise TrainingError(
                f"epoch {epoch + 1} step {self.step}: the training loss is not finite ({loss}); "
                f"last finite loss {fmt_metric(self.last_finite_loss)}. {self.kept()} "
                f"Try a lower train.optimizer.lr or set train.clip_grad_norm."
            )
        grads, gnorm = clip_by_global_norm(grads, self.cfg.train.clip_grad_norm or None)
        if not math.isfinite(gnorm):
            raise TrainingError(
                f"epoch {epoch + 1} step {self.step}: the gradient norm is not finite; last finite "
                f"loss {fmt_metric(self.last_finite_loss)}. {self.kept()}"
            )
        self.optimizer.step(model.params, grads)
        self.last_finite_loss = loss
        self.partial["norm_sum"] += gnorm
        return loss, int((probs.argmax(1) == y).sum())

    def _finish_epoch(self, batches, seconds) -> None:
        data, p = self.data, self.partial
        row = {
            "epoch": self.epoch + 1,
            "train_loss": p["loss_sum"] / p["seen"],
            "train_accuracy": p["correct"] / p["seen"],
            "val_loss": None,
            "val_accuracy": None,
            "lr": self.optimizer.lr,
            "grad_norm": p["norm_sum"] / len(batches),
        }
        if data.valid is not None:
            with np.errstate(all="ignore"):  # a non-finite val loss shows in the epoch line
                v_losses, v_probs = loss_and_probs(
                    self.model,
                    data.valid,
                    data.y_valid,
                    data.mean,
                    data.std,
                    batch_size=self.cfg.train.batch_size,
                )
            row["val_loss"] = float(v_losses.mean())
            row["val_accuracy"] = float((v_probs.argmax(1) == data.y_valid).mean())
        row.update(
            seconds=round(seconds, 4),
            padded_fraction=round(padded_fraction(batches, data.train.lengths), 4),
            sequences_per_second=round(p["seen"] / max(seconds, 1e-9), 1),
        )
        self.history.append(row)
        self.epoch += 1
        self.partial = None

        es = self.cfg.train.early_stopping
        value = row[self.best_metric]
        improved = _metric_better(self.best_metric, value, self.best_value, es.min_delta)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            self.best_params = self._copy_params()
        else:
            self.bad_epochs += 1
        self.schedule.observe(value, mode="max" if self.best_metric == "val_accuracy" else "min")
        if es.patience is not None and data.valid is not None and self.bad_epochs >= es.patience:
            self.stopped_early = True
        # Crash-safe order: best.npz, then last.npz (which records best_epoch), then metrics.
        if improved:
            self._retire_earlier_run()
            save_checkpoint(os.path.join(self.run_dir, "best.npz"), self.model.params, self._meta())
        self.save_last()
        _write_metrics(self.run_dir, self.history)
        self.log(
            f"epoch {self.epoch}/{self.cfg.train.epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.3f}  val loss {fmt_metric(row['val_loss'])} "
            f"acc {fmt_metric(row['val_accuracy'], '.3f')}  lr {row['lr']:.2e}  {seconds:.1f}s"
            + ("  *" if improved else "")
        )
        if self.stopped_early:
            self.log(
                f"early stopping: {self.best_metric} has not improved for {self.bad_epochs} "
                f"epochs; best epoch {self.best_epoch}"
            )

    def _stop_on_signal(self, signum, t0) -> None:
        name = (
            "SIGINT"
            if signum == signal.SIGINT
            else "SIGTERM"
            if signum == signal.SIGTERM
            else str(signum)
        )
        if self.earlier_run:  # --overwrite, no checkpoint yet: keep the earlier run, save nothing
            raise Interrupted(
                f"{name}: training stopped in epoch {self.epoch + 1} before this run's first "
                f"checkpoint; the earlier run's files in {self.run_dir} are untouched "
                f"(nothing to resume)",
                signum,
            )
        if self.partial is not None and t0 is not None:
            self.partial["seconds"] += time.perf_counter() - t0
        self.save_last()
        where = (
            f"in epoch {self.epoch + 1} after batch {self.partial['position']}"
            if self.partial
            else f"after epoch {self.epoch}"
        )
        raise Interrupted(
            f"{name}: training stopped {where}; saved {self.run_dir}/last.npz. "
            f"Continue with: lstm-train --resume {self.run_dir}",
            signum,
        )


def _blas_threads():
    """What decides the BLAS's summation order: the library numpy loaded and its thread
    count (asked from OpenBLAS itself when possible), plus the thread variables. Recorded
    in checkpoints because bitwise-identical resumes assume the same values."""
    info = {
        "env": {
            v: os.environ[v]
            for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
            if v in os.environ
        },
        "library": None,
        "threads": None,
    }
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            libs = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower()})
    except OSError:
        return info
    for path in libs:
        info["library"] = os.path.basename(path)
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in (
            "openblas_get_num_threads",
            "openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads",
        ):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                info["threads"] = int(fn())
                return info
    return info


def fit(
    cfg: Config, *, overwrite=False, resume=False, progress=True, log=print, source=None
) -> TrainResult:
    """Train a model as ``cfg`` says; write the run folder; return the best model.

    overwrite: replace the files of a non-empty run folder. resume: continue the run in
    cfg.output.dir from its last.npz (parameters, optimizer and schedule state, RNG state,
    history, early-stopping state, position inside an unfinished epoch). progress: show
    a tqdm bar on stderr (it turns itself off when stderr is not a terminal). log: where
    the per-epoch summary lines go. source: where train.class_weights came from, the
    config file or the --set that gave it (config.value_origin); named in its error.
    SIGINT/SIGTERM save last.npz after the current batch and raise Interrupted.
    """
    run_dir = cfg.output.dir
    rng = np.random.default_rng(cfg.train.seed)
    data = prepare_data(cfg, rng)  # everything user-supplied is validated before any write
    resumed = _load_resume_state(cfg, run_dir, data) if resume else None  # (checkpoint, its path)
    trainer = Trainer(cfg, data, rng, progress=progress, log=log, source=source)
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    if resumed is not None:
        trainer.restore(*resumed)
        trainer.write_config()  # the run as continued (train.epochs, data.test may differ)
    else:
        # --overwrite of a folder holding an earlier run: its files stay until this run
        # writes its first checkpoint (Trainer._retire_earlier_run), so a run that fails
        # early loses nothing.
        trainer.earlier_run = [n for n in RUN_FILES if os.path.lexists(os.path.join(run_dir, n))]
        if not trainer.earlier_run:
            trainer.write_config()
    trainer.run()

    model = trainer.model
    model.set_params(trainer.best_params)
    trained = TrainedModel(model, data.classes, data.mean, data.std, trainer.base_meta)
    test_report = None
    if data.test is not None:
        test_report, _, _ = evaluate_dataset(trained, data.test)
        log(
            f"test ({data.test.source}): accuracy {test_report['accuracy']:.4f}  loss "
            f"{test_report['loss']:.4f}  macro F1 {test_report['macro_f1']:.4f}  "
            f"(best epoch {trainer.best_epoch})"
        )
    summary = {
        "best_epoch": trainer.best_epoch,
        "best_metric": trainer.best_metric,
        "best_value": trainer.best_value,
        "epochs_run": len(trainer.history),
        "stopped_early": trainer.stopped_early,
        "num_parameters": model.num_parameters(),
        "train_sequences": len(data.train),
        "valid_sequences": 0 if data.valid is None else len(data.valid),
        "classes": data.classes,
        "test": test_report,
    }
    write_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    model.release_buffers()  # the training batches' work arrays are not needed any more
    return TrainResult(
        trained,
        trainer.history,
        trainer.best_epoch,
        run_dir,
        trainer.stopped_early,
        test_report,
        summary,
    )


def _load_resume_state(cfg: Config, run_dir, data: PreparedData):
    """Read run_dir/last.npz and check that cfg and data may continue it (same architecture,
    data shape and classes, seed...). Returns (the checkpoint, its path)."""
    path = resume_checkpoint_path(run_dir)
    ckpt = load_checkpoint(path)
    if "train_state" not in ckpt.meta or "config" not in ckpt.meta or "model" not in ckpt.meta:
        raise CheckpointError(f"{path}: not a resumable lstm_cli training checkpoint")
    old = _flatten(ckpt.meta["config"])
    new = _flatten(config_to_dict(cfg))
    changed = sorted(
        k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
    )
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            f"cannot resume {run_dir}: the config changed in a way that breaks the "
            f"run ({details}). Only {', '.join(RESUMABLE_CHANGES)} may change."
        )
    done = (
        ckpt.meta["train_state"].get("epoch")
        if isinstance(ckpt.meta["train_state"], dict)
        else None
    )
    if isinstance(done, int) and cfg.train.epochs < done:
        raise ConfigError(
            f"cannot resume {run_dir}: train.epochs {cfg.train.epochs} is below the {done} "
            f"epochs the run has done; give train.epochs >= {done}"
        )
    spec = ckpt.meta["model"]
    features = data.train.num_features
    if isinstance(spec, dict) and spec.get("input_size") != features:
        raise DataError(
            f"cannot resume {run_dir}: the training data {data.train.source} now has "
            f"{features} features per step; the run was trained on {spec.get('input_size')}"
        )
    if ckpt.meta.get("classes") != data.classes:
        raise DataError(
            f"cannot resume {run_dir}: the labels of the training data {data.train.source} "
            f"are now {_short(data.classes)}; the run was trained on "
            f"{_short(ckpt.meta.get('classes'))}"
        )
    old_print = ckpt.meta.get("data_fingerprint")
    if old_print is not None and data.fingerprint is not None and old_print != data.fingerprint:
        raise DataError(
            f"cannot resume {run_dir}: the training data {data.train.source} changed since "
            f"the run started (its sequences, their order, labels or values differ), so "
            f"the validation split and normalisation would not be the run's"
        )
    return ckpt, path


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    path = resume_checkpoint_path(run_dir)
    meta = read_meta(path)  # fit() loads and verifies the whole checkpoint once, later
    if "config" not in meta:
        raise CheckpointError(f"{path}: not a resumable lstm_cli training checkpoint")
    return config_from_dict(meta["config"], source=path, overrides=overrides)

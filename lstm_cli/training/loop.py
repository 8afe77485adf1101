"""The training loop: the Trainer's epochs and steps of BPTT, its checkpoints and
metrics, and its stop on a non-finite loss or a signal."""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

from .. import __version__
from ..config import Config, config_to_dict
from ..data import make_batches, pad_batch, padded_fraction
from ..errors import ConfigError, Interrupted, LstmCliError, TrainingError
from ..inference import loss_and_probs
from ..nn.model import LSTMClassifier
from ..nn.optim import LRSchedule, clip_by_global_norm, make_optimizer
from ..store.checkpoint import save_checkpoint
from .env import blas_threads
from .prepare import PreparedData
from .resume import restore as restore_state
from .rundir import (
    retire_earlier_run,
    write_config,
    write_metrics,
)
from .signals import SignalGuard, signal_name


def _metric_better(metric, value, best, min_delta):
    if best is None or not math.isfinite(best):  # a NaN first epoch must not block every later one
        return True
    if metric == "val_accuracy":
        return value > best + min_delta
    return value < best - min_delta


def fmt_metric(v, spec=".4f"):
    """A metric for a log line: formatted, or '-' when there is none."""
    return "-" if v is None else format(v, spec)


class Trainer:
    """One training run: the model, optimizer, schedule, RNG and bookkeeping, with the
    state needed to checkpoint and resume at any epoch end or every N steps.

    The RNG (one numpy Generator seeded by train.seed) is used, in order, for the
    validation split, the initialisation, then per epoch for the batch order and
    dropout masks; its state is saved in every checkpoint, so a resumed run draws exactly
    what the uninterrupted run would have drawn.
    """

    def __init__(self, cfg: Config, data: PreparedData, rng, *, progress=True, log=print):
        self.cfg, self.data, self.rng, self.progress, self.log = cfg, data, rng, progress, log
        self.run_dir = cfg.output.dir
        o, s = cfg.train.optimizer, cfg.train.schedule
        try:
            self.model = LSTMClassifier.from_config(
                data.train.num_features, len(data.classes), cfg.model, seed=rng
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
            warmup_epochs=s.warmup_epochs,
        )
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
            "blas_threads": blas_threads(),
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
        """Continue from a last.npz written by this trainer (resume.load_resume_state)."""
        restore_state(self, ckpt, path)
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
        retire_earlier_run(self.run_dir, names)
        write_config(self.run_dir, self.cfg)

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
        with SignalGuard() as guard:
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
                x, lengths, y, data.class_weights, training=True, rng=self.rng, return_probs=True
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
        write_metrics(self.run_dir, self.history)
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
        name = signal_name(signum)
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

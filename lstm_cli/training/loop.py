"""The training loop: the Trainer's epochs and steps of BPTT, its checkpoints and
metrics, and its stop on a non-finite loss or a signal."""

from __future__ import annotations

import math
import os
import signal
import sys
import time

import numpy as np

from .. import __version__
from ..config import Config, config_to_dict
from ..data import make_batches, padded_fraction
from ..data.augment import Augmenter
from ..errors import ConfigError, Interrupted, LstmCliError, TrainingError
from ..inference import loss_and_probs
from ..nn.losses import sequence_weights
from ..nn.model import LSTMClassifier
from ..nn.optim import LRSchedule, clip_by_global_norm, make_optimizer
from ..store.checkpoint import save_checkpoint
from .distributed import FlatBuffer, SingleProcess, check_in_sync, rows_by_shard, split_batch
from .env import blas_threads
from .gradflow import FlowRecorder
from .prepare import PreparedData
from .resume import init_from_checkpoint
from .resume import restore as restore_state
from .rundir import (
    retire_earlier_run,
    write_config,
    write_metrics,
)
from .signals import SignalGuard, signal_name

_LOWER_LR = " Try a lower train.optimizer.lr or set train.clip_grad_norm."  # after a divergence


def _metric_better(metric, value, best, min_delta):
    if not math.isfinite(value):  # never the best: best.npz would predict NaN
        return False
    if best is None or not math.isfinite(best):  # (a run resumed from before that rule)
        return True
    gain = value - best if metric == "val_accuracy" else best - value
    if min_delta == 0:
        return gain > 0
    # a gain of min_delta counts, however its subtraction rounds (0.3 - 0.2 < 0.1)
    return gain >= min_delta * (1 - 1e-9)


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

    Under MPI (``comm`` of more than one process, docs/design.md §9) every rank runs this
    same loop with the same RNG: each global batch is split into shards, every rank
    computes its shard's share of the gradient, one Allreduce sums the shares (and the
    metric sums and stop flags), and all ranks take the same optimizer step. Only rank 0
    (``writer``) writes files.
    """

    def __init__(
        self,
        cfg: Config,
        data: PreparedData,
        rng,
        *,
        progress=True,
        log=print,
        comm=None,
        resuming=False,
    ):
        self.cfg, self.data, self.rng, self.progress, self.log = cfg, data, rng, progress, log
        self.comm = comm or SingleProcess()
        self.writer = self.comm.rank == 0
        self.run_dir = cfg.output.dir
        o, s = cfg.train.optimizer, cfg.train.schedule
        try:
            self.model = LSTMClassifier.from_config(
                data.train.num_features, len(data.classes), cfg.model, seed=rng
            )
        except LstmCliError as err:  # too large for this machine (model.hidden_size / num_layers)
            raise ConfigError(f"model: {err}") from None
        # fine-tuning; a resume takes the weights from last.npz, so init_from is not read
        # (the run may outlive the checkpoint it started from)
        if cfg.train.init_from and not resuming:
            init_from_checkpoint(self.model, cfg.train.init_from, data.classes)
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
        aug = cfg.train.augment
        self.augmenter = Augmenter(
            data.train,
            steps=data.train_steps,
            frame=cfg.data.frame,
            shift=aug.shift,
            noise=aug.noise,
            roll=aug.roll,
            reverse=aug.reverse,
        )
        shapes = {k: v.shape for k, v in self.model.params.items()}
        self.exchange = FlatBuffer(shapes, ("loss", "correct", "sigint", "sigterm"))
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
            "split": data.split(),
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
        self.guard = None  # the SignalGuard while run() runs
        self.agreed_signal = None  # a stop signal all ranks have seen (see _train_step)
        self.flow = None  # a FlowRecorder during an epoch that records gradient flow
        # files of an earlier run in the folder (--overwrite): removed, and a new run's
        # config.yaml written (config_pending), only when this run writes its first
        # checkpoint (see _retire_earlier_run)
        self.earlier_run = []
        self.config_pending = False
        self.before_first_checkpoint = None  # a callable run then (an ensemble's take-over)

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

    def _check_parameters(self) -> None:
        """TrainingError (on every rank: they hold the same parameters) when the last
        update overflowed a parameter, the loss still finite: no checkpoint may hold it."""
        if not all(np.isfinite(v).all() for v in self.model.params.values()):
            raise self._diverged("the parameters are not finite after the update", _LOWER_LR)

    def _diverged(self, what, advice="") -> TrainingError:
        """The error of a training that diverged in this step: ``what``, the last finite
        loss, what the run keeps (kept()), then ``advice``."""
        return TrainingError(
            f"epoch {self.epoch + 1} step {self.step}: {what}; last finite loss "
            f"{fmt_metric(self.last_finite_loss)}. {self.kept()}{advice}"
        )

    def save_last(self) -> None:
        """last.npz mid-epoch (checkpoint_every_steps, a signal); _finish_epoch checks the
        parameters itself, before validation, and writes with _write_last."""
        self._check_parameters()
        self._write_last()

    def _write_last(self) -> None:
        self._retire_earlier_run()  # every rank: they agree the earlier run is gone
        if not self.writer:
            return
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
        leaves them untouched, and a new folder empty, so the same command can run again."""
        if not (self.earlier_run or self.config_pending or self.before_first_checkpoint):
            return
        names, self.earlier_run = self.earlier_run, []  # on every rank: they agree on it
        hook, self.before_first_checkpoint = self.before_first_checkpoint, None
        self.config_pending = False
        if self.writer:
            if hook is not None:
                hook()
            retire_earlier_run(self.run_dir, names)
            write_config(self.run_dir, self.cfg)

    def _taken_over(self) -> bool:
        """Whether the earlier run's files are gone before this run's first checkpoint:
        its ensemble's take-over has run for another member (--jobs: the hook's done)."""
        return bool(getattr(self.before_first_checkpoint, "done", False))

    def kept(self) -> str:
        """What a failed run leaves behind, for its error message."""
        if self.earlier_run and not self._taken_over():
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
        if not os.path.isfile(os.path.join(self.run_dir, "best.npz")):
            return (
                f"Training stopped; last.npz in {self.run_dir} is from epoch "
                f"{self.history[-1]['epoch']}, untouched; no epoch had a finite "
                f"{self.best_metric}, so there is no best.npz."
            )
        return (
            f"Training stopped; last.npz and best.npz in {self.run_dir} are from epoch "
            f"{self.history[-1]['epoch']} and earlier, untouched."
        )

    # ------------------------------------------------------------------ loop
    @property
    def epochs_left(self) -> bool:
        """Whether run() has an epoch to train: train.epochs not reached, no early stop."""
        return self.epoch < self.cfg.train.epochs and not self.stopped_early

    def run(self) -> None:
        with SignalGuard() as guard:
            self.guard = guard
            try:
                while self.epochs_left:
                    self._run_epoch(guard)
            finally:
                self.guard = None

    def _run_epoch(self, guard) -> None:
        from tqdm.auto import tqdm

        cfg, data = self.cfg, self.data
        epoch = self.epoch  # 0-based index of the epoch being run
        t0 = time.perf_counter()
        self.optimizer.lr = self.schedule.lr_for_epoch(epoch)
        every = cfg.train.gradflow_every
        recording = every and (epoch + 1) % every == 0
        # an epoch resumed mid-way records only its batches after the resume
        self.flow = (
            FlowRecorder(self.partial is not None, self.model.directions) if recording else None
        )
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
                    stop = self.agreed_signal
                    if stop is not None and p["position"] < len(batches):
                        self._stop_on_signal(stop, t0)
                    if every and self.step % every == 0 and p["position"] < len(batches):
                        p["seconds"] += time.perf_counter() - t0
                        self.save_last()  # not training time: the clock restarts after it
                        t0 = time.perf_counter()
            finally:
                bar.close()
        self._finish_epoch(batches, time.perf_counter() - t0 + p["seconds"])
        stop = self._agree_on_stop(guard.signum)  # a signal during validation or writing
        if stop is not None:
            self._stop_on_signal(stop, None)

    def _train_step(self, idx, epoch):
        """One batch: forward, loss, BPTT, clip, update. Returns (loss, number correct) and
        sets ``agreed_signal``: the stop signal every rank has seen by this step, or None."""
        data, model = self.data, self.model
        signum = self.guard.signum if self.guard is not None else None
        y = data.y_train[idx]
        plan = self.augmenter.draw(self.rng, idx)  # before dropout's draws, on every rank
        if self.comm.size == 1:
            x, lengths = self.augmenter.batch(plan, None, model.dtype, data.mean, data.std)
            loss, grads, correct = self._local_step(x, lengths, y, data.class_weights, rng=self.rng)
            self.agreed_signal = self.guard.signum if self.guard is not None else None
        else:
            loss, grads, correct, self.agreed_signal = self._sharded_step(plan, y, signum)
        self.step += 1
        if not math.isfinite(loss):
            raise self._diverged(f"the training loss is not finite ({loss})", _LOWER_LR)
        grads, gnorm = clip_by_global_norm(grads, self.cfg.train.clip_grad_norm or None)
        if not math.isfinite(gnorm):
            raise self._diverged("the gradient norm is not finite")
        self.optimizer.step(model.params, grads)
        self.last_finite_loss = loss
        self.partial["norm_sum"] += gnorm
        return loss, correct

    def _local_step(self, x, lengths, y, class_weights, *, rng=None, masks=None):
        """This process's rows of the batch (x (B, T, I), lengths and y (B,)): loss_and_grads
        with dropout drawn from ``rng`` or given as ``masks``, the gradient flow recorded.
        Returns (loss, grads, number correct); a non-finite loss is _train_step's to report."""
        flow = None if self.flow is None else []
        with np.errstate(all="ignore"):
            loss, grads, probs = self.model.loss_and_grads(
                x,
                lengths,
                y,
                class_weights,
                training=True,
                rng=rng,
                dropout_masks=masks,
                return_probs=True,
                flow=flow,
            )
        if flow is not None:
            self.flow.add(flow, lengths, y, class_weights)
        return loss, grads, int((probs.argmax(1) == y).sum())

    def _sharded_step(self, plan, y, signum):
        """This rank's share of the batch's (``plan``: data.augment.Plan) loss and gradient,
        summed over all ranks.

        The augmentation plan and the dropout masks are drawn for the whole batch (as one
        process draws them) and each shard uses its rows; each shard's loss is weighted by
        its share of the batch's loss weight, so the shares add up to the one-process loss."""
        data, model, comm = self.data, self.model, self.comm
        lengths = plan.lengths  # (B,)
        idx = plan.idx
        masks = None
        if model.dropout > 0.0 and model.num_layers > 1:
            masks = model.draw_dropout_masks(self.rng, len(idx), int(lengths.max()))
        w = sequence_weights(y, data.class_weights)  # (B,)
        if not w.sum() > 0:
            raise LstmCliError("class_weights give every sequence of the batch weight 0")
        mine = split_batch(np.arange(len(idx)), lengths, comm.size)[comm.rank]  # positions
        share = float(w[mine].sum() / w.sum())
        grads = {k: np.zeros(v.shape) for k, v in model.params.items()}
        loss = correct = 0.0
        if len(mine):
            x, lens = self.augmenter.batch(plan, mine, model.dtype, data.mean, data.std)
            cw = data.class_weights if share > 0 else None
            mine_masks = None if masks is None else [m[mine, : x.shape[1]] for m in masks]
            loss, grads, correct = self._local_step(x, lens, y[mine], cw, masks=mine_masks)
        flags = {
            "sigint": float(signum == signal.SIGINT),
            "sigterm": float(signum == signal.SIGTERM),
        }
        buf = self.exchange.pack(grads, {"loss": loss, "correct": correct, **flags})
        buf[: self.exchange.array_length] *= share
        buf[self.exchange.array_length] *= share  # the loss
        grads, sums = self.exchange.unpack(comm.allreduce_sum(buf), model.dtype)
        return sums["loss"], grads, int(round(sums["correct"])), _stop_signal(sums)

    def _agree_on_stop(self, signum):
        """The stop signal any rank has received (all ranks learn it), or None."""
        if self.comm.size == 1:
            return signum
        flags = np.array([signum == signal.SIGINT, signum == signal.SIGTERM], np.float64)
        return _stop_signal(dict(zip(("sigint", "sigterm"), self.comm.allreduce_sum(flags))))

    def losses_and_probs(self, ds, y):
        """Per-sequence losses (N,) and probabilities (N, K) of ``ds`` in its order (under
        MPI each rank computes a shard: distributed.rows_by_shard)."""
        model, data, bs = self.model, self.data, self.cfg.train.batch_size

        def compute(part, y_part):
            return loss_and_probs(model, part, y_part, data.mean, data.std, batch_size=bs)

        return rows_by_shard(self.comm, ds, y, compute, model.num_classes)

    def _finish_epoch(self, batches, seconds) -> None:
        data, p = self.data, self.partial
        self._check_parameters()  # before this epoch's validation and checkpoints
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
                v_losses, v_probs = self.losses_and_probs(data.valid, data.y_valid)
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
        check_in_sync(self.comm, self.model.params, self.epoch)

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
        # Crash-safe order: gradflow.jsonl (not in last.npz: written before it, so a crash
        # between the two re-runs the epoch, whose records then replace these), best.npz,
        # then last.npz (which records best_epoch), then metrics (rebuilt from last.npz).
        self._retire_earlier_run()  # before the epoch's first file, on every rank
        if self.flow is not None:
            T = int(self.data.train.lengths.max())
            self.flow.write(self.comm, self.run_dir, self.epoch, self.model.num_layers, T)
            self.flow = None
        if improved and self.writer:
            save_checkpoint(os.path.join(self.run_dir, "best.npz"), self.model.params, self._meta())
        self._write_last()
        if self.writer:
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
        """Save last.npz (t0 None: at an epoch end, where it was just saved) and raise
        Interrupted; under MPI every rank gets here at the same step and waits for rank 0's
        save before raising (the others exit quietly: cli.common)."""
        name = signal_name(signum)
        if self._taken_over():  # nothing earlier left to keep: save as a run of its own
            self._retire_earlier_run()
        # --overwrite, no checkpoint yet (here or, for an ensemble's first member, in its
        # folder: the take-over pending): keep the earlier run, save nothing
        if self.earlier_run or self.before_first_checkpoint is not None:
            where = "" if self.before_first_checkpoint is not None else f" in {self.run_dir}"
            raise Interrupted(
                f"{name}: training stopped in epoch {self.epoch + 1} before this run's first "
                f"checkpoint; the earlier run's files{where} are untouched",
                signum,
            )
        if self.partial is not None and t0 is not None:
            self.partial["seconds"] += time.perf_counter() - t0
        if t0 is not None:
            self.save_last()
        self.comm.bcast(None)  # every rank waits until rank 0 has saved
        where = (
            f"in epoch {self.epoch + 1} after batch {self.partial['position']}"
            if self.partial
            else f"after epoch {self.epoch}"
        )
        raise Interrupted(
            f"{name}: training stopped {where}; saved {self.run_dir}/last.npz",
            signum,
            resume=self.run_dir,
        )


def _stop_signal(sums):
    """SIGTERM if any rank got it, else SIGINT if any did, else None (from summed flags)."""
    if sums["sigterm"] > 0:
        return signal.SIGTERM
    return signal.SIGINT if sums["sigint"] > 0 else None

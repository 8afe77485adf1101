"""Epoch-level learning-rate schedules (``LRSchedule``); re-exported by ``optim``."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..errors import CheckpointError, LstmCliError
from ..validate import Interval, Options, check

SCHEDULES = ("constant", "step", "cosine", "plateau")

_NON_NEGATIVE = Interval(float, 0.0, None, closed="left")  # [0, inf)
_POSITIVE = Interval(float, 0.0, None, closed="neither")  # (0, inf)


def is_saved_rate(lr) -> bool:
    """A learning rate as a saved state holds it: a finite JSON number >= 0 (not a bool)."""
    return (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr >= 0
    )


class LRSchedule:
    """Epoch-level learning-rate schedule: ``constant``, ``step``, ``cosine`` or ``plateau``.

    * ``step``: ``base_lr * gamma ** (epoch // step_size)``.
    * ``cosine``: ``min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``;
      epochs are 0-based, so epoch 0 gives ``base_lr`` and the last epoch
      (``epochs - 1``) is one step short of ``min_lr``; epochs past ``epochs`` stay at
      ``min_lr`` instead of rising again.
    * ``plateau``: the lr starts at ``base_lr``; ``observe`` counts consecutive epochs
      without strict improvement of the metric and, when the count **reaches**
      ``patience`` (Keras semantics; PyTorch waits for ``patience + 1``), multiplies
      the lr by ``factor`` (never below ``min_lr``) and resets the count.
    * ``constant``: always the current lr (``base_lr``).
    * ``warmup_epochs`` W > 0 (any schedule): during epochs 0 .. W-1 the schedule's lr is
      multiplied by ``(epoch + 1) / (W + 1)``, a linear ramp from ``lr / (W + 1)`` (never
      0: no epoch is wasted) to the full lr at epoch W. The schedule itself is not
      shifted: cosine still counts its ``epochs`` from epoch 0, and plateau observes
      every epoch, the warm-up ones included. The ramp is a function of the epoch, so
      the state to resume is the schedule's own.

    The trainer calls ``lr_for_epoch(epoch)`` at the start of each epoch, assigns it to
    ``optimizer.lr``, and calls ``observe(val_metric)`` at the end of the epoch.
    """

    def __init__(
        self,
        name,
        base_lr,
        epochs,
        step_size=10,
        gamma=0.5,
        min_lr=0.0,
        patience=5,
        factor=0.5,
        warmup_epochs=0,
    ):
        owner = "LRSchedule"
        self.name = check("name", name, Options(*SCHEDULES), owner)
        self.base_lr = check("base_lr", base_lr, _NON_NEGATIVE, owner)
        self.epochs = check("epochs", epochs, Interval(int, 1), owner)
        self.step_size = check("step_size", step_size, Interval(int, 1), owner)
        self.gamma = check("gamma", gamma, _POSITIVE, owner)
        self.min_lr = check("min_lr", min_lr, _NON_NEGATIVE, owner)
        if name in ("cosine", "plateau") and self.min_lr > self.base_lr:
            raise LstmCliError(
                f"LRSchedule {name!r}: min_lr ({self.min_lr}) must not exceed base_lr "
                f"({self.base_lr})"
            )
        self.patience = check("patience", patience, Interval(int, 0), owner)
        self.factor = check("factor", factor, Interval(float, 0.0, 1.0, closed="neither"), owner)
        self.warmup_epochs = check("warmup_epochs", warmup_epochs, Interval(int, 0), owner)
        self.lr = self.base_lr  # current lr of the plateau/constant schedules
        self.best: float | None = None  # best metric seen so far (plateau)
        self.mode: str | None = None  # "min" or "max", fixed by the first observe()
        self.num_bad_epochs = 0

    def lr_for_epoch(self, epoch) -> float:
        """Return the learning rate to use during 0-based ``epoch``."""
        epoch = check("epoch", epoch, Interval(int, 0), "LRSchedule.lr_for_epoch")
        lr = self._scheduled(epoch)
        if epoch < self.warmup_epochs:
            return lr * (epoch + 1) / (self.warmup_epochs + 1)
        return lr

    def _scheduled(self, epoch) -> float:
        """The schedule's lr for ``epoch`` before the warm-up factor."""
        if self.name == "step":
            return self.base_lr * self.gamma ** (epoch // self.step_size)
        if self.name == "cosine":
            frac = min(epoch, self.epochs) / self.epochs
            return (
                self.min_lr + (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * frac)) / 2.0
            )
        return self.lr

    def observe(self, metric_value, mode="min") -> None:
        """Record an epoch's validation metric (plateau only; other schedules ignore it).

        ``mode="min"`` for losses, ``"max"`` for accuracies. A NaN metric counts as no
        improvement.
        """
        check("mode", mode, Options("min", "max"), "LRSchedule.observe")
        if self.name != "plateau":
            return
        if self.mode is None:
            self.mode = mode
        elif mode != self.mode:
            raise LstmCliError(f"LRSchedule.observe: mode changed from {self.mode!r} to {mode!r}")
        value = float(metric_value)
        if self.best is None:
            improved = math.isfinite(value)
        elif mode == "min":
            improved = value < self.best
        else:
            improved = value > self.best
        if improved:
            self.best = value
            self.num_bad_epochs = 0
            return
        self.num_bad_epochs += 1
        if self.num_bad_epochs >= self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.num_bad_epochs = 0

    def state_dict(self) -> dict:
        """Return the JSON-serialisable state (name, hyperparameters, current lr, counters)."""
        return {
            "name": self.name,
            "base_lr": self.base_lr,
            "epochs": self.epochs,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "min_lr": self.min_lr,
            "patience": self.patience,
            "factor": self.factor,
            "warmup_epochs": self.warmup_epochs,
            "lr": self.lr,
            "best": self.best,
            "mode": self.mode,
            "num_bad_epochs": self.num_bad_epochs,
        }

    def load_state_dict(self, d: Mapping) -> None:
        """Restore the mutable state (lr, best, mode, counter); hyperparameters stay as built.

        Raises ``CheckpointError`` if ``d`` belongs to another schedule or is malformed.
        """
        if not isinstance(d, Mapping):
            raise CheckpointError("schedule state must be a dict")
        if d.get("name") != self.name:
            raise CheckpointError(
                f"schedule state was written by {d.get('name')!r}, "
                f"cannot load it into {self.name!r}"
            )
        lr, best, mode, bad = d.get("lr"), d.get("best"), d.get("mode"), d.get("num_bad_epochs")
        if not is_saved_rate(lr):
            raise CheckpointError(f"schedule state: bad lr {lr!r}")
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
            raise CheckpointError(f"schedule state: bad best {best!r}")
        if mode not in (None, "min", "max"):
            raise CheckpointError(f"schedule state: bad mode {mode!r}")
        if isinstance(bad, bool) or not isinstance(bad, int) or bad < 0:
            raise CheckpointError(f"schedule state: bad num_bad_epochs {bad!r}")
        self.lr = float(lr)
        self.best = None if best is None else float(best)
        self.mode = mode
        self.num_bad_epochs = bad

"""Training-time augmentation of batches (config section ``train.augment``): each
sequence reversed with probability 1/2 (``reverse``), started at a random step of its
own and wrapped round (``roll``, for closed outlines whose starting point is arbitrary),
a random framing phase per sequence (``shift``), and Gaussian noise on the normalised
inputs (``noise``). The first three act on the unframed steps, in that order, before
framing; noise acts on the model's inputs. Evaluation and prediction never augment.

Every random number of a step is drawn for the whole batch by ``Augmenter.draw``, in a
fixed order (reversals, starts, phases, then noise; only what is switched on, so a run
without a new option draws what it drew before), and ``Augmenter.batch`` builds any
subset of the batch's rows from that plan. Under MPI every rank draws the same plan and
builds only its shard, so the shards together are exactly the one-process batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batching import pad_batch
from .dataset import SequenceDataset, offsets_of, steps_within
from .framing import frame_steps

__all__ = ["Plan", "Augmenter", "drop_leading_steps", "reorder_steps"]


@dataclass(frozen=True)
class Plan:
    """The random draws of one batch."""

    idx: np.ndarray  # (B,) the batch's sequences in the training split
    lengths: np.ndarray  # (B,) steps of each sequence as the model sees it
    phase: np.ndarray | None  # (B,) leading steps dropped before framing; None = no shift
    noise: np.ndarray | None  # (B, T, F) float64, T = lengths.max(); None = no noise
    reverse: np.ndarray | None = None  # (B,) bool, sequence reversed; None = no reverse
    start: np.ndarray | None = None  # (B,) step that comes first after rolling; None = no roll


def drop_leading_steps(x, lengths, drop):
    """Each sequence of the stacked ``x`` (sum(lengths), F) without its first ``drop[n]``
    steps: (sum(lengths - drop), F). ``drop[n] < lengths[n]`` is required."""
    keep = steps_within(lengths) >= np.repeat(drop, lengths)  # (S,)
    return x[keep]


def reorder_steps(x, lengths, reverse=None, start=None):
    """Each sequence of the stacked ``x`` (sum(lengths), F), reversed where ``reverse[n]``
    and then rotated to begin at its step ``start[n]`` (wrapping round): step j of the
    result is step (j + start[n]) mod lengths[n] of the (reversed) sequence. Same shape."""
    lengths = np.asarray(lengths, np.int64)  # (B,)
    j = steps_within(lengths)  # (S,) step within each sequence
    L = np.repeat(lengths, lengths)  # (S,) its sequence's length
    if start is not None:
        j = (j + np.repeat(np.asarray(start, np.int64), lengths)) % L
    if reverse is not None:
        j = np.where(np.repeat(np.asarray(reverse, bool), lengths), L - 1 - j, j)
    first = np.repeat(offsets_of(lengths)[:-1], lengths)  # (S,) row each sequence starts at
    return x[first + j]


class Augmenter:
    """Builds training batches of ``train`` (the model's inputs, after every transform),
    augmented as ``train.augment`` says.

    steps: the same sequences before framing (after the per-sequence z-score and pool),
    needed when ``reverse``, ``roll`` or ``shift`` is on; frame: data.frame; noise: the
    std of the noise added to each normalised value of a real step (padding stays 0).
    """

    def __init__(
        self, train, *, steps=None, frame=1, shift=False, noise=0.0, roll=False, reverse=False
    ):
        if shift and frame < 2:
            raise ValueError("Augmenter: shift needs frame > 1")
        if (shift or roll or reverse) and steps is None:
            raise ValueError("Augmenter: reverse, roll and shift need the unframed steps")
        self.train, self.steps, self.frame = train, steps, int(frame)
        self.shift, self.noise = bool(shift), float(noise)
        self.roll, self.reverse = bool(roll), bool(reverse)

    @property
    def active(self) -> bool:
        return self.shift or self.roll or self.reverse or self.noise > 0.0

    def draw(self, rng, idx) -> Plan:
        """The plan of batch ``idx``; draws from ``rng`` only what is switched on."""
        idx = np.asarray(idx, np.int64)
        phase = reverse = start = None
        if self.reverse:
            reverse = rng.random(idx.size) < 0.5  # (B,)
        if self.roll:
            start = rng.integers(0, self.steps.lengths[idx])  # (B,) each below its length
        if self.shift:
            raw = self.steps.lengths[idx]  # (B,)
            # never drop a whole sequence: at most its length - 1 steps
            phase = np.minimum(rng.integers(0, self.frame, idx.size), raw - 1)
            lengths = -(-(raw - phase) // self.frame)
        else:
            lengths = self.train.lengths[idx]
        noise = None
        if self.noise > 0.0 and idx.size:
            shape = (idx.size, int(lengths.max()), self.train.num_features)
            noise = self.noise * rng.standard_normal(shape)
        return Plan(idx, np.asarray(lengths, np.int64), phase, noise, reverse, start)

    def batch(self, plan: Plan, rows=None, dtype=np.float32, mean=None, std=None):
        """Right-padded x (b, T, F) in ``dtype`` and lengths (b,) of the plan's positions
        ``rows`` (None = all), T = their longest; normalised by ``mean``/``std`` as
        ``pad_batch`` does, then the noise added to the real steps."""
        rows = np.arange(plan.idx.size) if rows is None else np.asarray(rows, np.int64)
        idx = plan.idx[rows]
        if plan.phase is None and plan.reverse is None and plan.start is None:
            x, lengths = pad_batch(self.train, idx, dtype, mean, std)
        else:
            raw_lengths = self.steps.lengths[idx]
            kept = reorder_steps(
                self.steps.rows(idx),
                raw_lengths,
                None if plan.reverse is None else plan.reverse[rows],
                None if plan.start is None else plan.start[rows],
            )
            if plan.phase is not None:
                kept = drop_leading_steps(kept, raw_lengths, plan.phase[rows])
                raw_lengths = raw_lengths - plan.phase[rows]
            framed, offsets = frame_steps(kept, offsets_of(raw_lengths), self.frame)
            ds = SequenceDataset(
                framed.astype(self.train.x.dtype), offsets, None, self.train.source
            )
            x, lengths = pad_batch(ds, np.arange(idx.size), dtype, mean, std)
        if plan.noise is not None and idx.size:
            T = x.shape[1]
            real = (np.arange(T)[None, :] < lengths[:, None])[:, :, None]  # (b, T, 1)
            x = (x + np.where(real, plan.noise[rows, :T], 0.0)).astype(dtype)
        return x, lengths

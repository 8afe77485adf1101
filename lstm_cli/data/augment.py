"""Training-time augmentation of batches (config section ``train.augment``): each
sequence replaced by a random mixture of itself and another training sequence of its
class and length (``mix``), reversed with probability 1/2 (``reverse``), started at a
random step of its own and wrapped round (``roll``, for closed outlines whose starting
point is arbitrary), a random framing phase per sequence (``shift``), and Gaussian noise
on the normalised inputs (``noise``). The first four act on the unframed steps, in that
order, before framing; noise acts on the model's inputs. Evaluation and prediction never
augment.

Every random number of a step is drawn for the whole batch by ``Augmenter.draw``, in a
fixed order (mixtures, reversals, starts, phases, then noise; only what is switched on,
so a run without a new option draws what it drew before), and ``Augmenter.batch`` builds
any subset of the batch's rows from that plan. Under MPI every rank draws the same plan
and builds only its shard, so the shards together are exactly the one-process batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batching import pad_batch
from .dataset import SequenceDataset, offsets_of, steps_within
from .framing import frame_steps

__all__ = ["Plan", "Augmenter", "drop_leading_steps", "reorder_steps", "MixGroups"]


@dataclass(frozen=True)
class Plan:
    """The random draws of one batch."""

    idx: np.ndarray  # (B,) the batch's sequences in the training split
    lengths: np.ndarray  # (B,) steps of each sequence as the model sees it
    phase: np.ndarray | None  # (B,) leading steps dropped before framing; None = no shift
    noise: np.ndarray | None  # (B, T, F) float64, T = lengths.max(); None = no noise
    reverse: np.ndarray | None = None  # (B,) bool, sequence reversed; None = no reverse
    start: np.ndarray | None = None  # (B,) step that comes first after rolling; None = no roll
    partner: np.ndarray | None = None  # (B,) sequence mixed in (itself if none); None = no mix
    weight: np.ndarray | None = None  # (B,) weight of the sequence itself in its mixture


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


@dataclass(frozen=True)
class MixGroups:
    """The sequences grouped by (label, length): the ones each sequence may be mixed with."""

    group: np.ndarray  # (N,) group of each sequence
    members: np.ndarray  # (N,) sequences sorted by group (stable)
    first: np.ndarray  # (G,) where each group starts in members
    size: np.ndarray  # (G,) sequences per group
    position: np.ndarray  # (N,) each sequence's place within its group

    @classmethod
    def of(cls, labels, lengths) -> MixGroups:
        _, label_ids = np.unique(np.asarray(labels), return_inverse=True)
        keys = np.stack([label_ids.reshape(-1), np.asarray(lengths, np.int64)], axis=1)
        _, group = np.unique(keys, axis=0, return_inverse=True)  # (N,)
        group = group.reshape(-1).astype(np.int64)
        members = np.argsort(group, kind="stable")  # (N,)
        size = np.bincount(group).astype(np.int64)  # (G,)
        first = np.cumsum(size) - size
        position = np.empty_like(group)
        position[members] = np.arange(group.size) - first[group[members]]
        return cls(group, members, first, size, position)

    def draw(self, rng, idx) -> np.ndarray:
        """(B,) a partner for each sequence of ``idx``, uniform over the other members of
        its group; a sequence alone in its group is its own partner. One draw each."""
        g = self.group[idx]  # (B,)
        others = self.size[g] - 1  # (B,)
        k = (rng.random(idx.size) * np.maximum(others, 1)).astype(np.int64)
        k = k + (k >= self.position[idx])  # skip the sequence itself
        return np.where(others > 0, self.members[self.first[g] + np.minimum(k, others)], idx)


class Augmenter:
    """Builds training batches of ``train`` (the model's inputs, after every transform),
    augmented as ``train.augment`` says.

    steps: the same sequences before framing (after the per-sequence z-score and pool),
    needed when ``mix``, ``reverse``, ``roll`` or ``shift`` is on (with ``mix``, with
    their labels); frame: data.frame; noise: the
    std of the noise added to each normalised value of a real step (padding stays 0).
    """

    def __init__(
        self,
        train,
        *,
        steps=None,
        frame=1,
        shift=False,
        noise=0.0,
        roll=False,
        reverse=False,
        mix=False,
    ):
        if shift and frame < 2:
            raise ValueError("Augmenter: shift needs frame > 1")
        if (shift or roll or reverse or mix) and steps is None:
            raise ValueError("Augmenter: mix, reverse, roll and shift need the unframed steps")
        self.train, self.steps, self.frame = train, steps, int(frame)
        self.shift, self.noise = bool(shift), float(noise)
        self.roll, self.reverse, self.mix = bool(roll), bool(reverse), bool(mix)
        self.groups = MixGroups.of(steps.labels, steps.lengths) if self.mix else None

    @property
    def active(self) -> bool:
        return self.shift or self.roll or self.reverse or self.mix or self.noise > 0.0

    def draw(self, rng, idx) -> Plan:
        """The plan of batch ``idx``; draws from ``rng`` only what is switched on."""
        idx = np.asarray(idx, np.int64)
        phase = reverse = start = partner = weight = None
        if self.mix:
            partner = self.groups.draw(rng, idx)  # (B,)
            weight = rng.random(idx.size)  # (B,) in [0, 1)
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
        return Plan(
            idx, np.asarray(lengths, np.int64), phase, noise, reverse, start, partner, weight
        )

    def batch(self, plan: Plan, rows=None, dtype=np.float32, mean=None, std=None):
        """Right-padded x (b, T, F) in ``dtype`` and lengths (b,) of the plan's positions
        ``rows`` (None = all), T = their longest; normalised by ``mean``/``std`` as
        ``pad_batch`` does, then the noise added to the real steps."""
        rows = np.arange(plan.idx.size) if rows is None else np.asarray(rows, np.int64)
        idx = plan.idx[rows]
        if all(a is None for a in (plan.phase, plan.reverse, plan.start, plan.partner)):
            x, lengths = pad_batch(self.train, idx, dtype, mean, std)
        else:
            raw_lengths = self.steps.lengths[idx]
            steps = self.steps.rows(idx)  # (S, F)
            if plan.partner is not None:  # partners have the same lengths, row for row
                w = np.repeat(plan.weight[rows], raw_lengths)[:, None]  # (S, 1)
                steps = w * steps + (1.0 - w) * self.steps.rows(plan.partner[rows])
            kept = reorder_steps(
                steps,
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

"""Training-time augmentation of batches (config section ``train.augment``): each
sequence reversed with probability 1/2 (``reverse``), started at a random step of its
own and wrapped round (``roll``, for closed outlines whose starting point is arbitrary),
played at a smoothly varying speed (``warp``, same length and end points), a random
framing phase per sequence (``shift``), and Gaussian noise on the normalised inputs
(``noise``). The first four act on the unframed steps, in that order, before framing;
noise acts on the model's inputs. Evaluation and prediction never augment.

Every random number of a step is drawn for the whole batch by ``Augmenter.draw``, in a
fixed order (reversals, starts, phases, noise, then warps; only what is switched on, so a
run without a new option draws what it drew before), and ``Augmenter.batch`` builds any
subset of the batch's rows from that plan. Under MPI every rank draws the same plan and
builds only its shard, so the shards together are exactly the one-process batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batching import pad_batch
from .dataset import SequenceDataset, offsets_of, steps_within
from .framing import frame_steps

__all__ = [
    "Plan",
    "Augmenter",
    "drop_leading_steps",
    "reorder_steps",
    "warp_steps",
    "warp_steps_reference",
    "WARP_KNOTS",
]

# knots of a warp's log speed, evenly spaced from a sequence's first step to its last
WARP_KNOTS = 4


@dataclass(frozen=True)
class Plan:
    """The random draws of one batch."""

    idx: np.ndarray  # (B,) the batch's sequences in the training split
    lengths: np.ndarray  # (B,) steps of each sequence as the model sees it
    phase: np.ndarray | None  # (B,) leading steps dropped before framing; None = no shift
    noise: np.ndarray | None  # (B, T, F) float64, T = lengths.max(); None = no noise
    reverse: np.ndarray | None = None  # (B,) bool, sequence reversed; None = no reverse
    start: np.ndarray | None = None  # (B,) step that comes first after rolling; None = no roll
    warp: np.ndarray | None = None  # (B, WARP_KNOTS) log speed at the knots; None = no warp


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


def _warp_positions(lengths, log_speed):
    """(S,) float64: the fractional step of its own sequence that each stacked step of the
    warped sequences reads. Within sequence n (length L), step j advances by
    exp(z(j)), z the log speed interpolated linearly between ``log_speed[n]`` (K knots at
    steps 0, (L-1)/(K-1), ..., L-1); the positions are scaled so that step 0 reads 0 and
    step L-1 reads L-1. A one-step sequence reads 0."""
    lengths = np.asarray(lengths, np.int64)  # (B,)
    log_speed = np.asarray(log_speed, np.float64)  # (B, K)
    K = log_speed.shape[1]
    j = steps_within(lengths).astype(np.float64)  # (S,)
    last = np.repeat(np.maximum(lengths - 1, 1), lengths).astype(np.float64)  # (S,) L - 1
    u = j / last * (K - 1)  # (S,) knot coordinate in [0, K-1]
    k0 = np.minimum(u.astype(np.int64), K - 2)  # (S,) knot to the left
    frac = u - k0
    row = np.repeat(np.arange(lengths.size), lengths)  # (S,) sequence of each step
    z = log_speed[row, k0] * (1.0 - frac) + log_speed[row, k0 + 1] * frac  # (S,)
    speed = np.exp(z)  # (S,) advance from step j to j + 1 (the last step's is unused)
    csum = np.cumsum(speed)
    first = offsets_of(lengths)[:-1]  # (B,) row each sequence starts at
    before = np.concatenate([[0.0], csum])[first]  # (B,) sum of earlier sequences' speeds
    pos = csum - speed - np.repeat(before, lengths)  # (S,) exclusive sum within sequence
    pos[first] = 0.0  # exactly, not a rounding residue of the subtraction
    end = csum[np.maximum(first + lengths - 1, 0)] - speed[np.maximum(first + lengths - 1, 0)]
    end = end - before  # (B,) position of each last step before scaling; 0 when L == 1
    scale = np.where(end > 0, (lengths - 1) / np.where(end > 0, end, 1.0), 0.0)  # (B,)
    return np.minimum(pos * np.repeat(scale, lengths), np.repeat(lengths - 1, lengths))


def warp_steps(x, lengths, log_speed):
    """Each sequence of the stacked ``x`` (sum(lengths), F) played at a smoothly varying
    speed (``_warp_positions``), values linearly interpolated between neighbouring steps:
    same shape and lengths, first and last steps unchanged, in x's dtype."""
    lengths = np.asarray(lengths, np.int64)  # (B,)
    if not lengths.size:
        return x
    pos = _warp_positions(lengths, log_speed)  # (S,)
    L = np.repeat(lengths, lengths)  # (S,)
    lo = np.minimum(np.floor(pos).astype(np.int64), np.maximum(L - 2, 0))  # (S,)
    w = (pos - lo)[:, None]  # (S, 1) weight of the step after lo
    hi = np.minimum(lo + 1, L - 1)
    first = np.repeat(offsets_of(lengths)[:-1], lengths)  # (S,)
    x64 = np.asarray(x, np.float64)
    out = x64[first + lo] * (1.0 - w) + x64[first + hi] * w  # (S, F)
    return out.astype(x.dtype)


def warp_steps_reference(x, lengths, log_speed):
    """``warp_steps`` one sequence and one feature at a time with np.interp: its oracle."""
    out, start = np.empty_like(x), 0
    K = log_speed.shape[1]
    for n, L in enumerate(np.asarray(lengths, np.int64)):
        seq = np.asarray(x[start : start + L], np.float64)  # (L, F)
        if L == 1:
            out[start] = seq[0]
        else:
            steps = np.arange(L, dtype=np.float64)
            z = np.interp(steps, np.linspace(0.0, L - 1, K), log_speed[n])  # (L,)
            pos = np.concatenate([[0.0], np.cumsum(np.exp(z[:-1]))])  # (L,)
            pos *= (L - 1) / pos[-1]
            for f in range(seq.shape[1]):
                out[start : start + L, f] = np.interp(pos, steps, seq[:, f])
        start += L
    return out


class Augmenter:
    """Builds training batches of ``train`` (the model's inputs, after every transform),
    augmented as ``train.augment`` says.

    steps: the same sequences before framing (after the per-sequence z-score and pool),
    needed when ``reverse``, ``roll`` or ``shift`` is on; frame: data.frame; noise: the
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
        warp=0.0,
    ):
        if shift and frame < 2:
            raise ValueError("Augmenter: shift needs frame > 1")
        if (shift or roll or reverse or warp) and steps is None:
            raise ValueError("Augmenter: reverse, roll, warp and shift need the unframed steps")
        self.train, self.steps, self.frame = train, steps, int(frame)
        self.shift, self.noise = bool(shift), float(noise)
        self.roll, self.reverse = bool(roll), bool(reverse)
        self.warp = float(warp)

    @property
    def active(self) -> bool:
        return self.shift or self.roll or self.reverse or self.warp > 0.0 or self.noise > 0.0

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
        warp = None
        if self.warp > 0.0:
            warp = self.warp * rng.standard_normal((idx.size, WARP_KNOTS))  # (B, K)
        return Plan(idx, np.asarray(lengths, np.int64), phase, noise, reverse, start, warp)

    def batch(self, plan: Plan, rows=None, dtype=np.float32, mean=None, std=None):
        """Right-padded x (b, T, F) in ``dtype`` and lengths (b,) of the plan's positions
        ``rows`` (None = all), T = their longest; normalised by ``mean``/``std`` as
        ``pad_batch`` does, then the noise added to the real steps."""
        rows = np.arange(plan.idx.size) if rows is None else np.asarray(rows, np.int64)
        idx = plan.idx[rows]
        if plan.phase is None and plan.reverse is None and plan.start is None and plan.warp is None:
            x, lengths = pad_batch(self.train, idx, dtype, mean, std)
        else:
            raw_lengths = self.steps.lengths[idx]
            kept = reorder_steps(
                self.steps.rows(idx),
                raw_lengths,
                None if plan.reverse is None else plan.reverse[rows],
                None if plan.start is None else plan.start[rows],
            )
            if plan.warp is not None:
                kept = warp_steps(kept, raw_lengths, plan.warp[rows])
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

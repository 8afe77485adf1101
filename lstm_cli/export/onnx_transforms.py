"""The training config's input transforms as ONNX nodes (docs/data-formats.md, "Input
transforms"; lstm_cli.data.framing computes the same on stacked sequences).

On a right-padded batch x (B, T, F) with lengths (B,), in float64 and in the fixed order:

1. per-sequence z-score: each sequence's own per-feature mean m and population variance
   v over its valid steps (n of them); a feature with v <= n eps v + (n eps |m|)^2 is
   constant (data.normalize.constant_up_to_rounding) and gives 0;
2. pool k: the time axis padded with zeros to a multiple of k and reshaped (B, T/k, k, F);
   window j's sum divided by its count of valid steps clip(length - j*k, 1, k), so the
   last, partial window is the mean of the steps it has (a window past the end is 0);
3. frame k: the same zero padding, reshaped (B, T/k, k*F): step j*k + i fills features
   i*F .. i*F + F - 1 of frame j, and the last, partial frame is padded with zeros.

Each of 2 and 3 maps lengths to ceil(length / k). Every padded step is exactly 0 after
each transform, which 2 and 3 rely on. Shapes stay dynamic in batch and time.
"""

from __future__ import annotations

import numpy as np


def _i64(g, name, value):
    return g.const(name, np.array(value, np.int64))


def _zscore(g, x, valid, lengths, DOUBLE):
    """Each sequence z-scored over its valid steps: (B, T, F) float64, padding 0."""
    lens = g.op("Cast", [lengths], to=DOUBLE)
    lens = g.op("Unsqueeze", [lens, _i64(g, "tf.axes12", [1, 2])])  # (B, 1, 1)
    time = _i64(g, "tf.time_axis", [1])
    zero = g.const("tf.zero64", np.zeros((), np.float64))
    mean = g.op("Div", [g.op("ReduceSum", [x, time], keepdims=1), lens])  # (B, 1, F)
    dev = g.op("Where", [valid, g.op("Sub", [x, mean]), zero])
    var = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [dev, dev]), time], keepdims=1), lens])
    n_eps = g.op("Mul", [lens, g.const("tf.eps", np.array(np.finfo(np.float64).eps))])
    rounding = g.op("Mul", [n_eps, g.op("Abs", [mean])])
    bound = g.op("Add", [g.op("Mul", [n_eps, var]), g.op("Mul", [rounding, rounding])])
    constant = g.op("LessOrEqual", [var, bound])  # (B, 1, F)
    one = g.const("tf.one64", np.ones((), np.float64))
    std = g.op("Where", [constant, one, g.op("Sqrt", [var])])
    return g.op("Where", [constant, zero, g.op("Div", [dev, std])])


def _padded_windows(g, x, T, k, tag):
    """x (B, T, F) zero-padded on the time axis to ceil(T/k)*k steps -> (x', ceil(T/k), k)."""
    kk = _i64(g, f"tf.{tag}.k", k)
    Tk = g.op("Div", [g.op("Add", [T, _i64(g, f"tf.{tag}.km1", k - 1)]), kk])  # ceil(T/k)
    extra = g.op("Sub", [g.op("Mul", [Tk, kk]), T])
    extra = g.op("Unsqueeze", [extra, _i64(g, f"tf.{tag}.axis0", [0])])  # (1,)
    pads = g.op(
        "Concat",
        [_i64(g, f"tf.{tag}.pads0", [0, 0, 0, 0]), extra, _i64(g, f"tf.{tag}.pads1", [0])],
        axis=0,
    )  # [B, T, F begin; B, T, F end]
    return g.op("Pad", [x, pads]), Tk, kk


def _ceil_lengths(g, lengths, k, tag):
    plus = g.op("Add", [lengths, _i64(g, f"tf.{tag}.len_km1", k - 1)])
    return g.op("Div", [plus, _i64(g, f"tf.{tag}.len_k", k)])


def _pool(g, x, T, lengths, k, F, DOUBLE):
    xp, Tk, kk = _padded_windows(g, x, T, k, "pool")
    windows = g.op("Reshape", [xp, _i64(g, "tf.pool.shape", [0, -1, k, F])])  # (B, T', k, F)
    sums = g.op("ReduceSum", [windows, _i64(g, "tf.pool.axis2", [2])], keepdims=0)
    window = g.op("Range", [_i64(g, "tf.pool.r0", 0), Tk, _i64(g, "tf.pool.r1", 1)])
    starts = g.op("Mul", [window, kk])  # (T',) first step of each window
    left = g.op("Sub", [g.op("Unsqueeze", [lengths, _i64(g, "tf.pool.axis1", [1])]), starts])
    counts = g.op("Clip", [left, _i64(g, "tf.pool.lo", 1), _i64(g, "tf.pool.hi", k)])
    counts = g.op("Unsqueeze", [g.op("Cast", [counts], to=DOUBLE), _i64(g, "tf.pool.axis2b", [2])])
    return g.op("Div", [sums, counts]), Tk, _ceil_lengths(g, lengths, k, "pool")


def _frame(g, x, T, lengths, k, F):
    xp, Tk, _ = _padded_windows(g, x, T, k, "frame")
    framed = g.op("Reshape", [xp, _i64(g, "tf.frame.shape", [0, -1, k * F])])
    return framed, Tk, _ceil_lengths(g, lengths, k, "frame")


def transforms_on(transforms) -> bool:
    """Whether any input transform (inference.TrainedModel.transforms) is on."""
    t = transforms or {}
    return bool(t.get("per_sequence")) or t.get("pool", 1) > 1 or t.get("frame", 1) > 1


def add_transforms(g, TP, x, lengths, transforms, F):
    """Nodes applying ``transforms`` ({per_sequence, pool, frame}) to x (B, T, F) float32
    with lengths (B,) int64 -> (x' (B, T', F') float64 with 0 past each new length, the new
    lengths (B,) int64)."""
    DOUBLE = TP.DOUBLE
    T = g.op("Gather", [g.op("Shape", [x]), _i64(g, "tf.time_index", 1)])
    steps = g.op("Range", [_i64(g, "tf.t0", 0), T, _i64(g, "tf.t1", 1)])
    valid = g.op("Less", [g.op("Unsqueeze", [steps, _i64(g, "tf.axis0", [0])]),
                          g.op("Unsqueeze", [lengths, _i64(g, "tf.axis1", [1])])])  # fmt: skip
    valid = g.op("Unsqueeze", [valid, _i64(g, "tf.axis2", [2])])  # (B, T, 1)
    x = g.op("Where", [valid, g.op("Cast", [x], to=DOUBLE), g.const("tf.pad64", np.zeros(()))])
    if transforms.get("per_sequence"):
        x = _zscore(g, x, valid, lengths, DOUBLE)
    if transforms.get("pool", 1) > 1:
        x, T, lengths = _pool(g, x, T, lengths, int(transforms["pool"]), F, DOUBLE)
    if transforms.get("frame", 1) > 1:
        x, T, lengths = _frame(g, x, T, lengths, int(transforms["frame"]), F)
    return x, lengths

"""Gate order and activations shared by the LSTM code (docs/design.md §1).

``TF`` names the gate blocks of the public layout (W's columns, b, dz, checkpoints):
TensorFlow's order i, j, f, o. ``Gate`` names the blocks of the fast layer's gate-major
(4, ...) arrays, candidate first. ``INTERNAL_FROM_TF`` is the one mapping between them.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function as 0.5 * tanh(z / 2) + 0.5: never overflows, 4 ufunc calls.

    Accurate to ~1e-16 *absolute* (deep in the lower tail, e.g. z < -40, it returns 0
    rather than a tiny positive number), which is all a gate value needs.
    """
    out = np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


class TF:
    """Gate blocks of the public (..., 4H) layout, in TensorFlow's order i, j, f, o."""

    I, J, F, O = 0, 1, 2, 3
    IJF = slice(I, F + 1)  # i, j and f: adjacent (their dz share the factor dc)
    FO = slice(F, O + 1)  # f and o: adjacent


class Gate:
    """Gate blocks of the fast layer's gate-major (4, ...) arrays: j, i, f, o (candidate
    first, so that the three sigmoid gates are one contiguous block)."""

    J, I, F, O = 0, 1, 2, 3
    SIGMOID = slice(I, O + 1)  # i, f, o: the gates activated by a sigmoid
    FO = slice(F, O + 1)  # f and o: adjacent in both orders


INTERNAL_FROM_TF = np.array([TF.J, TF.I, TF.F, TF.O])  # Gate block k is TF block [k]


def _tf_block(k: int, H: int) -> slice:
    """The columns of TF gate block k (TF.I, ...) in a (..., 4H) array; k may be a slice."""
    if isinstance(k, slice):
        return slice(k.start * H, k.stop * H)
    return slice(k * H, (k + 1) * H)


def split_gates(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split a public-layout (..., 4H) array into the views i, j, f, o (each (..., H))."""
    H = z.shape[-1] // 4
    return tuple(z[..., _tf_block(k, H)] for k in (TF.I, TF.J, TF.F, TF.O))


def activate_gates(z: np.ndarray, forget_bias: float, out: np.ndarray | None = None) -> np.ndarray:
    """Pre-activations (..., 4H) -> gate values [i|j|f|o] (..., 4H), forget_bias inside f's
    sigmoid (public layout, TF order)."""
    H = z.shape[-1] // 4
    i, j, f, o, fo = (_tf_block(k, H) for k in (TF.I, TF.J, TF.F, TF.O, TF.FO))
    if out is None:
        out = np.empty_like(z)
    sigmoid(z[..., i], out=out[..., i])
    np.tanh(z[..., j], out=out[..., j])
    # f and o are adjacent: add forget_bias to f, then one sigmoid over both.
    np.add(z[..., f], forget_bias, out=out[..., f])
    np.copyto(out[..., o], z[..., o])
    sigmoid(out[..., fo], out=out[..., fo])
    return out

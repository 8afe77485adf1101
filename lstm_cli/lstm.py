"""One LSTM layer (TensorFlow BasicLSTMCell convention): forward and hand-written BPTT.

Equations (DESIGN.md §1), rows are batch entries, gate order i, j, f, o::

    z   = [x_t, h_{t-1}] @ W + b                W: (I+H, 4H), b: (4H,)
    i   = sigmoid(z_i)      j = tanh(z_j)
    f   = sigmoid(z_f + forget_bias)            o = sigmoid(z_o)
    c_t = f * c_{t-1} + i * j
    h_t = o * tanh(c_t)

Sequences are *time-major* inside the engine: x is (T, B, I), so that the state of
every batch entry at step t is one contiguous (B, H) block and the input projection
of all steps is one (T*B, I) @ (I, 4H) GEMM. The model converts from the batch-first
public layout once per call.

Padding: batches are right-padded. The layer simply runs over the padded steps; since
they come after the real ones they cannot change a valid step, and the heads never
read them, so their gradient is exactly zero (DESIGN.md §2).

There are two levels here:

* ``lstm_step_forward`` / ``lstm_step_backward``: one time step, written to read like
  the equations; used by tests and as the reference for the layer.
* ``lstm_layer_forward`` / ``lstm_layer_backward``: a whole sequence, vectorised over
  the batch and, wherever the recurrence allows, over time (one GEMM for the input
  projection, one (B, H) @ (H, 4H) GEMM per step, the weight gradients in one GEMM
  each after the loop).
"""

from __future__ import annotations

from typing import NamedTuple

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


def split_gates(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split (..., 4H) into the views i, j, f, o (each (..., H)). The one place the gate order lives."""
    H = z.shape[-1] // 4
    return z[..., :H], z[..., H : 2 * H], z[..., 2 * H : 3 * H], z[..., 3 * H :]


def activate_gates(z: np.ndarray, forget_bias: float, out: np.ndarray | None = None) -> np.ndarray:
    """Pre-activations (..., 4H) -> gate values [i|j|f|o] (..., 4H), forget_bias inside f's sigmoid."""
    H = z.shape[-1] // 4
    if out is None:
        out = np.empty_like(z)
    sigmoid(z[..., :H], out=out[..., :H])
    np.tanh(z[..., H : 2 * H], out=out[..., H : 2 * H])
    # f and o are adjacent in TF order: add forget_bias to f, then one sigmoid over both.
    np.add(z[..., 2 * H : 3 * H], forget_bias, out=out[..., 2 * H : 3 * H])
    np.copyto(out[..., 3 * H :], z[..., 3 * H :])
    sigmoid(out[..., 2 * H :], out=out[..., 2 * H :])
    return out


# --------------------------------------------------------------------------- one step


class StepCache(NamedTuple):
    x: np.ndarray  # (B, I)
    h_prev: np.ndarray  # (B, H)
    c_prev: np.ndarray  # (B, H)
    gates: np.ndarray  # (B, 4H) post-activation [i|j|f|o]
    tanh_c: np.ndarray  # (B, H)


def lstm_step_forward(x, h_prev, c_prev, W, b, forget_bias=1.0):
    """One step. x (B, I), h_prev (B, H), c_prev (B, H), W (I+H, 4H), b (4H,).

    Returns h (B, H), c (B, H) and a StepCache.
    """
    xh = np.concatenate([x, h_prev], axis=1)  # (B, I+H)
    gates = activate_gates(xh @ W + b, forget_bias)  # (B, 4H)
    i, j, f, o = split_gates(gates)  # each (B, H)
    c = f * c_prev + i * j  # (B, H)
    tanh_c = np.tanh(c)  # (B, H)
    h = o * tanh_c  # (B, H)
    return h, c, StepCache(x, h_prev, c_prev, gates, tanh_c)


def lstm_step_backward(dh, dc_next, cache: StepCache, W):
    """Backward of one step.

    dh (B, H): total gradient w.r.t. this step's h (head part + part from step t+1).
    dc_next (B, H): gradient w.r.t. this step's c arriving from step t+1.
    Returns dx (B, I), dh_prev (B, H), dc_prev (B, H), dW (I+H, 4H), db (4H,).
    """
    i, j, f, o = split_gates(cache.gates)  # each (B, H)
    tc = cache.tanh_c  # (B, H)
    do = dh * tc  # (B, H)
    dc = dh * o * (1.0 - tc**2) + dc_next  # (B, H), a new array
    di = dc * j
    dj = dc * i
    df = dc * cache.c_prev
    dz = np.concatenate(
        [di * i * (1.0 - i), dj * (1.0 - j**2), df * f * (1.0 - f), do * o * (1.0 - o)], axis=1
    )  # (B, 4H)
    xh = np.concatenate([cache.x, cache.h_prev], axis=1)  # (B, I+H)
    dW = xh.T @ dz  # (I+H, 4H)
    db = dz.sum(axis=0)  # (4H,)
    dxh = dz @ W.T  # (B, I+H)
    I = cache.x.shape[1]
    return dxh[:, :I], dxh[:, I:], dc * f, dW, db


# --------------------------------------------------------------------------- a layer
#
# Inside the layer the gate columns are kept in the order [j | i | f | o] (candidate
# first), and the columns of the three sigmoid gates are pre-scaled by 1/2, so that one
# tanh over the whole (B, 4H) block activates every gate:
#     j = tanh(z_j),   sigmoid(z) = 0.5 * tanh(z / 2) + 0.5   for i, f, o (contiguous)
# The public layout (TF order i, j, f, o; W (I+H, 4H) unscaled) is converted at the
# boundary: weights on the way in, weight gradients on the way out.

_TF_TO_INTERNAL = (1, 0, 2, 3)  # internal block k holds TF block _TF_TO_INTERNAL[k]


def _to_internal(a, H):
    """Reorder the last axis (4H) from TF [i|j|f|o] to internal [j|i|f|o] (a copy)."""
    return np.concatenate([a[..., k * H : (k + 1) * H] for k in _TF_TO_INTERNAL], axis=-1)


_to_tf = _to_internal  # swapping blocks 0 and 1 is its own inverse


class LayerCache(NamedTuple):
    x: np.ndarray  # (T, B, I) the layer's input sequence
    gates: np.ndarray  # (T, B, 4H) post-activation, internal order [j|i|f|o]
    c: np.ndarray  # (T, B, H) cell states c_1..c_T (zero past each sequence's end)
    tanh_c: np.ndarray  # (T, B, H)
    h: np.ndarray  # (T, B, H) hidden states h_1..h_T, the layer's output (zero past the end)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)
    batch_sizes: np.ndarray  # (T,) rows active at each step (non-increasing)


def batch_sizes_from_lengths(lengths, T):
    """(T,) number of sequences still running at each step; lengths sorted descending."""
    lengths = np.asarray(lengths)
    return (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.int64)


def lstm_layer_forward(x, W, b, forget_bias=1.0, h0=None, c0=None, batch_sizes=None):
    """Run one layer over a time-major sequence.

    x (T, B, I), W (I+H, 4H) in TF gate order, b (4H,), h0/c0 (B, H) or None for zeros.
    batch_sizes (T,) optional: when the batch is sorted by length (longest first), only
    the first batch_sizes[t] rows are computed at step t (the rest are past their end:
    their h and c stay zero). None computes every row at every step.
    Returns h (T, B, H) and a LayerCache for the backward pass.
    """
    T, B, I = x.shape
    H = W.shape[1] // 4
    dtype = W.dtype
    if batch_sizes is None:
        batch_sizes = np.full(T, B, np.int64)
    h0 = np.zeros((B, H), dtype) if h0 is None else h0
    c0 = np.zeros((B, H), dtype) if c0 is None else c0

    # Internal weights: gate blocks reordered, sigmoid blocks scaled by 1/2.
    scale = np.ones(4 * H, dtype)
    scale[H:] = 0.5
    W_s = _to_internal(W, H) * scale  # (I+H, 4H)
    bias = b.copy()  # (4H,) TF order
    bias[2 * H : 3 * H] += forget_bias  # forget_bias inside the forget gate's sigmoid
    bias_s = _to_internal(bias, H) * scale
    Wx_s, Wh_s = W_s[:I], W_s[I:]  # (I, 4H), (H, 4H)

    # The x-part and bias of every step at once.
    gates = (x.reshape(T * B, I) @ Wx_s).reshape(T, B, 4 * H)  # (T, B, 4H)
    gates += bias_s

    full = bool(batch_sizes[-1] == B)
    alloc = np.empty if full else np.zeros  # rows past a sequence's end must read as zero
    h = alloc((T, B, H), dtype)
    c = alloc((T, B, H), dtype)
    tanh_c = alloc((T, B, H), dtype)
    hWh = np.empty((B, 4 * H), dtype)  # recurrent projection buffer
    ij = np.empty((B, H), dtype)
    h_prev, c_prev = h0, c0
    for t in range(T):
        n = int(batch_sizes[t])
        g = gates[t, :n]  # (n, 4H) view, contiguous
        np.matmul(h_prev[:n], Wh_s, out=hWh[:n])
        g += hWh[:n]
        np.tanh(g, out=g)  # j final; i, f, o hold tanh(z/2)
        sig = g[:, H:]
        sig *= 0.5
        sig += 0.5  # i, f, o = sigmoid(z)
        j, i, f, o = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
        c_t = c[t, :n]
        np.multiply(f, c_prev[:n], out=c_t)
        np.multiply(i, j, out=ij[:n])
        c_t += ij[:n]
        np.tanh(c_t, out=tanh_c[t, :n])
        np.multiply(o, tanh_c[t, :n], out=h[t, :n])
        h_prev, c_prev = h[t], c[t]
    return h, LayerCache(x, gates, c, tanh_c, h, h0, c0, np.asarray(batch_sizes, np.int64))


def lstm_layer_backward(dh, cache: LayerCache, W):
    """BPTT through one layer (DESIGN.md §4).

    dh (T, B, H): gradient of the loss w.r.t. the layer's outputs h_t coming from above
    (the head or the next layer) — zero at padded steps. W (I+H, 4H) is passed in (TF
    order, as given to forward), not cached.
    Returns dx (T, B, I), dW (I+H, 4H), db (4H,) (TF order), dh0 (B, H), dc0 (B, H).
    """
    T, B, I = cache.x.shape
    H = W.shape[1] // 4
    dtype = W.dtype
    gates, tanh_c, sizes = cache.gates, cache.tanh_c, cache.batch_sizes
    WhT = np.ascontiguousarray(_to_internal(W[I:], H).T)  # (4H, H) unscaled, internal order

    # Everything that does not depend on the recurrence, vectorised over time:
    #   dz_j = dc * (i * (1-j^2)),  dz_i = dc * (j * i(1-i)),  dz_f = dc * (c_prev * f(1-f))
    #   dz_o = dh * (tanh_c * o(1-o)),  dc = dh * (o * (1-tanh_c^2)) + dc_next
    j, i, f, o = (gates[..., k * H : (k + 1) * H] for k in range(4))  # each (T, B, H)
    dgate = np.empty((T, B, 4 * H), dtype)  # per unit of dc (j, i, f) or of dh (o)
    dgj, dgi, dgf, dgo = (dgate[..., k * H : (k + 1) * H] for k in range(4))
    np.multiply(j, j, out=dgj)
    np.subtract(1.0, dgj, out=dgj)
    dgj *= i
    np.multiply(i, 1.0 - i, out=dgi)
    dgi *= j
    np.multiply(f, 1.0 - f, out=dgf)
    dgf[0] *= cache.c0  # times c_{t-1}, without materialising the shifted sequence
    dgf[1:] *= cache.c[:-1]
    np.multiply(o, 1.0 - o, out=dgo)
    dgo *= tanh_c
    dc_from_h = np.multiply(tanh_c, tanh_c)  # (T, B, H): o * (1 - tanh_c^2)
    np.subtract(1.0, dc_from_h, out=dc_from_h)
    dc_from_h *= o

    full = bool(sizes[-1] == B)
    dz = (np.empty if full else np.zeros)((T, B, 4 * H), dtype)  # w.r.t. pre-activations
    dh_next = np.zeros((B, H), dtype)  # from step t+1, w.r.t. h_t
    dc_next = np.zeros((B, H), dtype)  # from step t+1, w.r.t. c_t
    dh_t = np.empty((B, H), dtype)
    dc = np.empty((B, H), dtype)
    for t in range(T - 1, -1, -1):
        n = int(sizes[t])
        np.add(dh[t, :n], dh_next[:n], out=dh_t[:n])
        np.multiply(dh_t[:n], dc_from_h[t, :n], out=dc[:n])
        dc[:n] += dc_next[:n]
        dz_t = dz[t, :n]
        # j, i, f blocks share the factor dc: one broadcast multiply over (n, 3, H)
        np.multiply(dgate[t, :n].reshape(n, 4, H)[:, :3], dc[:n, None, :],
                    out=dz_t.reshape(n, 4, H)[:, :3])
        np.multiply(dh_t[:n], dgo[t, :n], out=dz_t[:, 3 * H :])
        np.matmul(dz_t, WhT, out=dh_next[:n])
        np.multiply(dc[:n], f[t, :n], out=dc_next[:n])

    dz2 = dz.reshape(T * B, 4 * H)
    dW = np.empty_like(W)
    np.matmul(cache.x.reshape(T * B, I).T, dz2, out=dW[:I])
    # h-rows: sum_t h_{t-1}^T dz_t, with h_{t-1} = h0 at t = 0 (no shifted copy of h)
    np.matmul(cache.h0.T, dz[0], out=dW[I:])
    if T > 1:
        dW[I:] += cache.h[:-1].reshape((T - 1) * B, H).T @ dz[1:].reshape((T - 1) * B, 4 * H)
    db = dz2.sum(axis=0)
    dx = (dz2 @ _to_internal(W[:I], H).T).reshape(T, B, I)
    return dx, _to_tf(dW, H), _to_tf(db, H), dh_next, dc_next

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


class LayerCache(NamedTuple):
    x: np.ndarray  # (T, B, I) the layer's input sequence
    gates: np.ndarray  # (T, B, 4H) post-activation [i|j|f|o]
    c: np.ndarray  # (T, B, H) cell states c_1..c_T
    tanh_c: np.ndarray  # (T, B, H)
    h: np.ndarray  # (T, B, H) hidden states h_1..h_T (the layer's output)
    h0: np.ndarray  # (B, H)
    c0: np.ndarray  # (B, H)


def lstm_layer_forward(x, W, b, forget_bias=1.0, h0=None, c0=None):
    """Run one layer over a time-major sequence.

    x (T, B, I), W (I+H, 4H), b (4H,), h0/c0 (B, H) or None for zeros.
    Returns h (T, B, H) and a LayerCache for the backward pass.
    """
    T, B, I = x.shape
    H = W.shape[1] // 4
    dtype = W.dtype
    Wx, Wh = W[:I], W[I:]  # (I, 4H), (H, 4H)
    h0 = np.zeros((B, H), dtype) if h0 is None else h0
    c0 = np.zeros((B, H), dtype) if c0 is None else c0

    # The x-part and bias of every step at once; forget_bias folded into the bias.
    bias = b.copy()  # (4H,)
    bias[2 * H : 3 * H] += forget_bias
    gates = (x.reshape(T * B, I) @ Wx).reshape(T, B, 4 * H)  # (T, B, 4H)
    gates += bias

    h = np.empty((T, B, H), dtype)
    c = np.empty((T, B, H), dtype)
    tanh_c = np.empty((T, B, H), dtype)
    hWh = np.empty((B, 4 * H), dtype)  # recurrent projection buffer
    ij = np.empty((B, H), dtype)
    h_prev, c_prev = h0, c0
    for t in range(T):
        g = gates[t]  # (B, 4H) view
        np.matmul(h_prev, Wh, out=hWh)
        g += hWh
        # forget_bias is already in g, so activate without adding it again
        sigmoid(g[:, :H], out=g[:, :H])
        np.tanh(g[:, H : 2 * H], out=g[:, H : 2 * H])
        sigmoid(g[:, 2 * H :], out=g[:, 2 * H :])
        i, j, f, o = split_gates(g)
        np.multiply(f, c_prev, out=c[t])
        np.multiply(i, j, out=ij)
        c[t] += ij
        np.tanh(c[t], out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=h[t])
        h_prev, c_prev = h[t], c[t]
    return h, LayerCache(x, gates, c, tanh_c, h, h0, c0)


def lstm_layer_backward(dh, cache: LayerCache, W):
    """BPTT through one layer (DESIGN.md §4).

    dh (T, B, H): gradient of the loss w.r.t. the layer's outputs h_t coming from above
    (the head or the next layer) — zero at padded steps. W (I+H, 4H) is passed in, not
    cached. Returns dx (T, B, I), dW (I+H, 4H), db (4H,), dh0 (B, H), dc0 (B, H).
    """
    T, B, I = cache.x.shape
    H = W.shape[1] // 4
    dtype = W.dtype
    Wx, Wh = W[:I], W[I:]  # (I, 4H), (H, 4H)
    gates, tanh_c = cache.gates, cache.tanh_c

    # Everything that does not depend on the recurrence, vectorised over time:
    #   dz_i = dc * (j * i(1-i)),  dz_j = dc * (i * (1-j^2)),  dz_f = dc * (c_prev * f(1-f))
    #   dz_o = dh * (tanh_c * o(1-o)),  dc = dh * (o * (1-tanh_c^2)) + dc_next
    i, j, f, o = split_gates(gates)  # each (T, B, H)
    dgate = np.empty((T, B, 4 * H), dtype)  # d z / d (gate input), per unit of dc or dh
    dgi, dgj, dgf, dgo = split_gates(dgate)
    np.multiply(i, 1.0 - i, out=dgi)
    dgi *= j
    np.multiply(j, j, out=dgj)
    np.subtract(1.0, dgj, out=dgj)
    dgj *= i
    np.multiply(f, 1.0 - f, out=dgf)
    dgf[0] *= cache.c0  # times c_{t-1}, without materialising the shifted sequence
    dgf[1:] *= cache.c[:-1]
    np.multiply(o, 1.0 - o, out=dgo)
    dgo *= tanh_c
    dc_from_h = np.multiply(tanh_c, tanh_c)  # (T, B, H): o * (1 - tanh_c^2)
    np.subtract(1.0, dc_from_h, out=dc_from_h)
    dc_from_h *= o

    dz = np.empty((T, B, 4 * H), dtype)  # gradient w.r.t. the pre-activations
    dh_next = np.zeros((B, H), dtype)  # from step t+1, w.r.t. h_t
    dc_next = np.zeros((B, H), dtype)  # from step t+1, w.r.t. c_t
    dh_t = np.empty((B, H), dtype)
    dc = np.empty((B, H), dtype)
    WhT = np.ascontiguousarray(Wh.T)  # (4H, H)
    for t in range(T - 1, -1, -1):
        np.add(dh[t], dh_next, out=dh_t)
        np.multiply(dh_t, dc_from_h[t], out=dc)
        dc += dc_next
        dz_t = dz[t]
        # i, j, f blocks share the factor dc: one broadcast multiply over (B, 3, H)
        np.multiply(dgate[t].reshape(B, 4, H)[:, :3], dc[:, None, :], out=dz_t.reshape(B, 4, H)[:, :3])
        np.multiply(dh_t, dgo[t], out=dz_t[:, 3 * H :])
        np.matmul(dz_t, WhT, out=dh_next)
        np.multiply(dc, f[t], out=dc_next)

    dz2 = dz.reshape(T * B, 4 * H)
    dW = np.empty_like(W)
    np.matmul(cache.x.reshape(T * B, I).T, dz2, out=dW[:I])
    # h-rows: sum_t h_{t-1}^T dz_t, with h_{t-1} = h0 at t = 0 (no shifted copy of h)
    np.matmul(cache.h0.T, dz[0], out=dW[I:])
    if T > 1:
        dW[I:] += cache.h[:-1].reshape((T - 1) * B, H).T @ dz[1:].reshape((T - 1) * B, 4 * H)
    db = dz2.sum(axis=0)
    dx = (dz2 @ Wx.T).reshape(T, B, I)
    return dx, dW, db, dh_next, dc_next

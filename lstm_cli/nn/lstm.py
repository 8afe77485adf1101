"""One LSTM layer (TensorFlow BasicLSTMCell convention): forward and hand-written BPTT.

Equations (docs/design.md §1), rows are batch entries, gate order i, j, f, o::

    z   = [x_t, h_{t-1}] @ W + b                W: (I+H, 4H), b: (4H,)
    i   = sigmoid(z_i)      j = tanh(z_j)
    f   = sigmoid(z_f + forget_bias)            o = sigmoid(z_o)
    c_t = f * c_{t-1} + i * j
    h_t = o * tanh(c_t)

Sequences are *time-major* inside the engine (packed, see the layout note below), so
that the state of every running sequence at step t is one contiguous block. The model
converts from the batch-first, right-padded public layout once per call; padded steps
are never stored or computed, so they cannot change a result (docs/design.md §2).

There are two levels here:

* ``lstm_step_forward`` / ``lstm_step_backward``: one time step, written to read like
  the equations; used by tests.
* ``lstm_layer_forward`` / ``lstm_layer_backward``: a whole sequence, vectorised over
  the batch and, wherever the recurrence allows, over time (one [1, x_t, h_{t-1}] GEMM
  per step forward, one dz_t @ W_h^T GEMM per step backward, the weight and bias
  gradients in one GEMM after the loop). Its oracle is ``lstm_cli.nn.reference``, the
  plain docs/design.md §1-§4 over a whole padded batch; tests check the two agree.

The gate blocks are named once, in gates.py: ``TF.I, TF.J, TF.F, TF.O`` for the public
(..., 4H) layout, ``Gate.J, Gate.I, Gate.F, Gate.O`` for the layer's gate-major arrays.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .gates import INTERNAL_FROM_TF, TF, Gate, activate_gates, sigmoid, split_gates

__all__ = [
    "INTERNAL_FROM_TF",
    "TF",
    "Gate",
    "activate_gates",
    "sigmoid",
    "split_gates",
    "StepCache",
    "lstm_step_forward",
    "lstm_step_backward",
    "Workspace",
    "batch_sizes_from_lengths",
    "offsets_from_batch_sizes",
    "LayerCache",
    "internal_weights",
    "lstm_layer_forward",
    "lstm_layer_backward",
]


# --------------------------------------------------------------------------- one step


class StepCache(NamedTuple):
    x: np.ndarray  # (B, I)
    h_prev: np.ndarray  # (B, H)
    c_prev: np.ndarray  # (B, H)
    gates: np.ndarray  # (B, 4H) post-activation, public layout [i|j|f|o]
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
# Packed layout. A layer works on the valid steps only, stored like PyTorch's
# PackedSequence: the batch is sorted by length (longest first), and the rows of step t
# are the first batch_sizes[t] sequences, stacked step after step into one (N, F) array
# (N = sum of the lengths). Step t's rows are the contiguous block
# offsets[t]:offsets[t+1], and sequence b's row at step t is offsets[t] + b. Padding is
# never stored, so it costs nothing and cannot leak into any result. A full time-major
# batch (T, B, F) is the special case batch_sizes = [B] * T (and is accepted as such).
#
# Inside the layer the gates are stored gate-major as (4, N, H) in the Gate order (j, i,
# f, o), and the weights of the three sigmoid gates are pre-scaled by 1/2, so that one
# tanh over a step's whole (4, n, H) block activates every gate:
#     j = tanh(z_j),   sigmoid(z) = 0.5 * tanh(z / 2) + 0.5   for Gate.SIGMOID (i, f, o)
# dz, which feeds the GEMMs, is row-major (N, 4H) in TF order, so dW comes out in TF order.
# Each row's GEMM input is kept as xh = [1, x_t, h_{t-1}] (N, 1+I+H): the column of ones
# multiplies the bias row of the internal weights (internal_weights), so a forward step
# is one GEMM, and the backward's bias-, x- and h-gradients are one GEMM xh^T @ dz.
# A step's gates are computed in a contiguous (4, n, H) scratch block (ufuncs over a
# contiguous block skip numpy's strided iteration) and then copied into the cache for
# the backward pass.
# The public layout (TF order i, j, f, o; W (I+H, 4H) unscaled) is converted once per
# call on the way in (internal_weights); the gradients need no conversion, since dz is
# kept in TF order.

_CHUNK_BYTES = 1 << 19  # backward computes gate factors for this many bytes of steps at a time


class Workspace:
    """Arrays reused from one call to the next, by name (a training loop allocates the same
    large buffers every step; fresh ones cost page faults and memory traffic).

    ``get`` returns an *uninitialised* view of the requested shape, growing the named
    buffer when needed. Whatever a previous call left in a buffer is overwritten by the
    next call that uses the same workspace, so a workspace belongs to one forward/backward
    pair at a time (LSTMClassifier.loss_and_grads uses its own; forward() uses none by
    default).
    """

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        size = math.prod(shape)
        key = (name, np.dtype(dtype))
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            buf = np.empty(size if buf is None else max(size, buf.size + buf.size // 4), dtype)
            self._buffers[key] = buf
        return buf[:size].reshape(shape)


def _allocator(workspace, prefix):
    if workspace is None:
        return lambda name, shape, dtype: np.empty(shape, dtype)
    return lambda name, shape, dtype: workspace.get(prefix + name, shape, dtype)


def batch_sizes_from_lengths(lengths, T=None):
    """(T,) number of sequences still running at each step; lengths sorted longest first."""
    lengths = np.asarray(lengths)
    T = int(lengths.max()) if T is None else T
    return (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.int64)


def offsets_from_batch_sizes(batch_sizes):
    """(T+1,) first packed row of each step (and N at the end) from batch_sizes (T,)."""
    offsets = np.zeros(len(batch_sizes) + 1, np.int64)
    np.cumsum(batch_sizes, out=offsets[1:])
    return offsets


class LayerCache(NamedTuple):
    xh: np.ndarray  # (N, 1+I+H) each valid row's [1, x_t, h_{t-1}]
    c_prev: np.ndarray  # (N, H) each row's c_{t-1}
    gates: np.ndarray  # (4, N, H) post-activation, gate-major, Gate order (j, i, f, o)
    tanh_c: np.ndarray  # (N, H)
    batch_sizes: np.ndarray  # (T,) rows of each step (non-increasing)
    offsets: np.ndarray  # (T+1,) first row of each step
    shape: tuple  # the input's shape: (N, I) packed or (T, B, I) full

    @property
    def input_size(self) -> int:
        return self.shape[-1]


def internal_weights(W, b, forget_bias):
    """The layer's weights as the step GEMM uses them: (4, 1+I+H, H), gate-major.

    Rows [b; W_x; W_h] (the bias is the row multiplied by xh's column of ones, forget_bias
    folded into the forget gate's bias), gate blocks in the Gate order and the three
    sigmoid gates scaled by 1/2 (see the layout note above). W (I+H, 4H), b (4H,) TF order.
    """
    IH, H4 = W.shape  # IH = I + H
    H = H4 // 4
    W_g = np.empty((4, 1 + IH, H), W.dtype)
    W_g[:, 0] = b.reshape(4, H)[INTERNAL_FROM_TF]  # the bias row
    W_g[:, 1:] = W.reshape(IH, 4, H)[:, INTERNAL_FROM_TF].transpose(1, 0, 2)
    # (scalars as 0-d arrays of W's dtype, so they never change the arrays' dtype)
    W_g[Gate.F, 0] += np.array(forget_bias, W.dtype)  # forget_bias inside f's sigmoid
    W_g[Gate.SIGMOID] *= np.array(0.5, W.dtype)  # sigmoid(z) = 0.5 * tanh(z / 2) + 0.5
    return W_g


def lstm_layer_forward(
    x, W, b, forget_bias=1.0, h0=None, c0=None, batch_sizes=None, need_cache=True, workspace=None
):
    """Run one layer over a sequence batch.

    x: packed (N, I) with batch_sizes (T,) (see the layout note above), or a full
    time-major batch (T, B, I) with batch_sizes None. W (I+H, 4H) in TF gate order,
    b (4H,), h0/c0 (B, H) or None for zeros (B = batch_sizes[0]).
    Returns h in x's layout ((N, H) or (T, B, H)) and a LayerCache for the backward
    pass (None when need_cache is False: inference keeps only h). workspace: a Workspace
    to take the large arrays from (h and the cache then live in it until its next use).

    Each step is one GEMM, [1, x_t, h_{t-1}] (n, 1+I+H) @ W_g (4, 1+I+H, H) -> the
    step's (4, n, H) pre-activations, bias included.
    """
    alloc = _allocator(workspace, "fwd.")
    shape = x.shape
    if batch_sizes is None:
        T, B, I = shape
        batch_sizes = np.full(T, B, np.int64)
        x = x.reshape(T * B, I)
    batch_sizes = np.asarray(batch_sizes, np.int64)
    offsets = offsets_from_batch_sizes(batch_sizes)
    N, I = x.shape
    H = W.shape[1] // 4
    B = int(batch_sizes[0])
    dtype = W.dtype
    if N != offsets[-1]:
        raise ValueError(f"x has {N} rows but batch_sizes sum to {offsets[-1]}")
    W_g = internal_weights(W, b, forget_bias)  # (4, 1+I+H, H)
    half = np.array(0.5, dtype)  # 0-d, the layer's dtype

    # xh holds every row's [1, x_t, h_{t-1}]; the h-part is written step by step.
    xh = alloc("xh", (N, 1 + I + H), dtype)
    xh[:, 0] = 1.0
    xh[:, 1 : 1 + I] = x
    xh_h = xh[:, 1 + I :]  # (N, H) view: every row's h_{t-1}
    xh_h[:B] = 0.0 if h0 is None else h0
    c0 = np.zeros((B, H), dtype) if c0 is None else c0
    h = alloc("h", (N, H), dtype)
    ij = alloc("ij", (B, H), dtype)
    # A step's (4, n, H) gate block is the first 4nH floats of g_buf (contiguous, not
    # g_buf[:, :n]). Its views are made once per batch size n.
    g_buf = alloc("g", (4 * B * H,), dtype)
    views = {}
    T = len(batch_sizes)
    bounds = offsets.tolist()
    if need_cache:
        gates = alloc("gates", (4, N, H), dtype)
        tanh_c = alloc("tanh_c", (N, H), dtype)
        # Step t writes its n_t cell states straight into the rows of step t+1's c_prev
        # (B rows of slack at the end). Rows past n_{t+1} belong to step t+2 and are
        # overwritten by step t+1, so only the finished sequences' last c is not kept.
        c_prev_all = alloc("c_prev", (N + B, H), dtype)
        c_prev_all[:B] = c0
    else:  # inference: c in one scratch block, updated in place (c_prev and c_t alias)
        c_buf = alloc("c", (B, H), dtype)
        c_buf[...] = c0
        tc_buf = alloc("tc", (B, H), dtype)
    for t in range(T):
        lo, hi = bounds[t], bounds[t + 1]
        n = hi - lo
        v = views.get(n)
        if v is None:
            g = g_buf[: 4 * n * H].reshape(4, n, H)
            v = views[n] = (g, g[Gate.SIGMOID], g[Gate.J], g[Gate.I], g[Gate.F], g[Gate.O], ij[:n])
        if need_cache:
            c_prev, c_t, tc_t = c_prev_all[lo:hi], c_prev_all[hi : hi + n], tanh_c[lo:hi]
        else:  # the next step's c_{t-1} is the first rows of this step's c_t
            c_prev = c_t = c_buf[:n]
            tc_t = tc_buf[:n]
        h_t = _cell_step(xh[lo:hi], W_g, half, v, c_prev, c_t, tc_t, h[lo:hi])
        if need_cache:
            gates[:, lo:hi] = v[0]  # the cache's (4, n, H) view is strided across gates
        if t + 1 < T:  # the next step's h_prev rows
            hi_next = bounds[t + 2]
            xh_h[hi:hi_next] = h_t[: hi_next - hi]
    h_out = h.reshape(shape[:-1] + (H,))
    if not need_cache:
        return h_out, None
    return h_out, LayerCache(xh, c_prev_all[:N], gates, tanh_c, batch_sizes, offsets, shape)


def _cell_step(xh_rows, W_g, half, views, c_prev, c_t, tc_t, h_t):
    """One step's cell for n rows, into the given arrays; returns h_t (n, H).

    xh_rows (n, 1+I+H), W_g (4, 1+I+H, H) (internal_weights), half a 0-d 0.5 of the
    layer's dtype, views = (g, g[Gate.SIGMOID], j, i, f, o, ij) over one contiguous
    (4, n, H) gate block plus an (n, H) scratch; c_prev may be c_t (updated in place).
    """
    g, sig, j, i, f, o, ij_t = views
    np.matmul(xh_rows, W_g, g)  # (4, n, H) pre-activations
    np.tanh(g, g)  # j final; i, f, o hold tanh(z/2)
    sig *= half
    sig += half  # i, f, o = sigmoid(z)
    np.multiply(f, c_prev, c_t)  # c_t = f * c_{t-1} + i * j
    np.multiply(i, j, ij_t)
    c_t += ij_t
    np.tanh(c_t, tc_t)
    return np.multiply(o, tc_t, h_t)


def _gate_factors(gates, tanh_c, c_prev, out_dgate, out_dc_from_h):
    """Gate-local parts of dz for a block of m rows, written into the out arrays.

    gates (4, m, H) gate-major in the Gate order; out_dgate (4, m, H) gate-major in the TF
    order (as dz's columns); out_dc_from_h (m, H). With dh and dc as in docs/design.md §4:
    dz_i = dc * (j i (1 - i)),  dz_j = dc * (i (1 - j^2)),  dz_f = dc * (c_prev f (1 - f)),
    dz_o = dh * (tanh_c o (1 - o)),  and dc = dh * (o (1 - tanh_c^2)) + dc_next.
    """
    j, i, o = gates[Gate.J], gates[Gate.I], gates[Gate.O]
    dg = out_dgate
    dgi, dgj, dgf, dgo = dg[TF.I], dg[TF.J], dg[TF.F], dg[TF.O]
    np.subtract(1.0, i, out=dgi)  # s (1 - s) for the sigmoid gates
    dgi *= i
    np.subtract(1.0, gates[Gate.FO], out=dg[TF.FO])
    dg[TF.FO] *= gates[Gate.FO]
    dgi *= j
    dgf *= c_prev
    dgo *= tanh_c
    np.multiply(j, j, out=dgj)
    np.subtract(1.0, dgj, out=dgj)
    dgj *= i
    np.multiply(tanh_c, tanh_c, out=out_dc_from_h)
    np.subtract(1.0, out_dc_from_h, out=out_dc_from_h)
    out_dc_from_h *= o


def lstm_layer_backward(
    dh, cache: LayerCache, W, workspace=None, need_dx=True, dh_last=None, flow=None
):
    """BPTT through one layer (docs/design.md §4; lstm_cli.nn.reference.backward is its oracle).

    dh: gradient of the loss w.r.t. the layer's outputs h (from the head or the next
    layer), in the layout of forward's x ((N, H) packed or (T, B, H) full). W (I+H, 4H)
    is passed in (TF order, as given to forward), not cached.
    dh_last (B, H), with dh=None: instead, the gradient w.r.t. each sequence's *final* h
    only (what the last-step head gives), row r for the r-th sequence of the packed
    batch (longest first). Same result as the dense dh with those rows, without building
    it and without an add per step.
    Returns dx (x's layout), dW (I+H, 4H), db (4H,) (TF order), dh0 (B, H), dc0 (B, H).
    workspace: scratch arrays (and dx) are taken from it; dW, db, dh0, dc0 are always new.
    need_dx=False skips the input gradient's GEMM (the first layer's input is data) and
    returns None for dx.
    flow: optional pair of (N,) arrays, filled with the L2 norm over the units of the total
    dL/dh_t and dL/dc_t of every packed row (gradient flow through time; None costs nothing).
    """
    alloc = _allocator(workspace, "bwd.")
    N = cache.xh.shape[0]
    I = cache.input_size
    H = W.shape[1] // 4
    B = int(cache.batch_sizes[0])
    dtype = W.dtype
    bounds = cache.offsets.tolist()
    dh_next = np.zeros((B, H), dtype)  # from step t+1, w.r.t. h_t
    dc_next = np.zeros((B, H), dtype)  # from step t+1, w.r.t. c_t
    if dh is not None:
        total_dh = _dense_dh(dh.reshape(N, H), alloc("dh_t", (B, H), dtype))
    elif dh_last is None or dh_last.shape != (B, H):
        raise ValueError(f"give dh, or dh=None and dh_last of shape {(B, H)}")
    else:
        total_dh = _last_step_dh(dh_last, dh_next, bounds)
    dz = alloc("dz", (N, 4 * H), dtype)  # gradient w.r.t. the pre-activations, TF order
    _bptt(cache, W, total_dh, dz, dh_next, dc_next, alloc, flow)

    dWb = np.matmul(cache.xh.T, dz)  # (1+I+H, 4H): the bias (ones column), x-rows, h-rows
    dW, db = dWb[1:], dWb[0]  # (I+H, 4H), (4H,)
    dx = None
    if need_dx:
        WxT = np.ascontiguousarray(W[:I].T)  # (4H, I)
        dx = np.matmul(dz, WxT, out=alloc("dx", (N, I), dtype))  # (N, I)
        dx = dx.reshape(cache.shape)
    return dx, dW, db, dh_next, dc_next


def _dense_dh(dh, dh_t):
    """Total dL/dh_t when the upstream gives every valid step a gradient (the all-steps
    head, or the layer above): dh (N, H) packed, dh_t (B, H) scratch."""

    def total(t, lo, hi, dh_next_n):
        return np.add(dh[lo:hi], dh_next_n, out=dh_t[: hi - lo])  # (n, H)

    return total


def _last_step_dh(dh_last, dh_next, bounds):
    """Total dL/dh_t when only each sequence's last step has a head gradient, dh_last (B, H)
    in packed-batch order: the sequences ending at step t are rows n_{t+1}..n_t, whose
    dh_next rows nothing has written yet (zero), so the head gradient is simply put there."""
    T = len(bounds) - 1

    def total(t, lo, hi, dh_next_n):
        n = hi - lo
        n_after = bounds[t + 2] - hi if t + 1 < T else 0  # sequences still running at t+1
        if n_after < n:
            dh_next[n_after:n] = dh_last[n_after:n]
        return dh_next_n  # (n, H), read before the step's GEMM overwrites it

    return total


def row_norms(a):
    """(n, H) -> (n,) float64: the L2 norm of each row over float32's whole range and
    float64's. The squares are summed in float64, where no float32 value's square
    underflows or overflows (an unscaled float32 norm reads 0 below about 4e-23 per unit
    and inf above about 2e19: gradient flow far back in a long sequence, or before a loss
    diverges); the rare row whose sum nears float64's own limits is scaled by its largest
    entry first."""
    # float64 accumulation in einsum's buffers, without a float64 copy (as optim.global_norm)
    norms = np.sqrt(np.einsum("nh,nh->n", a, a, dtype=np.float64, casting="safe"))
    odd = ~((norms > 1e-140) & (norms < 1e140))  # also 0, inf, nan: checked by scaling
    if odd.any():
        rows = a[odd].astype(np.float64)
        peak = np.abs(rows).max(axis=1)
        scale = np.where((peak > 0) & np.isfinite(peak), peak, 1.0)
        unit = rows / scale[:, None]  # |values| <= 1
        norms[odd] = scale * np.sqrt(np.einsum("nh,nh->n", unit, unit))
    return norms


def _bptt(cache: LayerCache, W, total_dh, dz, dh_next, dc_next, alloc, flow=None):
    """The step loop of the backward, t = T-1 down to 0: fills dz (N, 4H) (TF order) and
    leaves dh0, dc0 in dh_next, dc_next (B, H). total_dh(t, lo, hi, dh_next[:n]) gives
    step t's (n, H) total dL/dh_t (head part + part from step t+1). flow: (dh_norm,
    dc_norm) (N,) arrays to fill with each row's norm of dL/dh_t and dL/dc_t, or None."""
    gates, bounds = cache.gates, cache.offsets.tolist()  # gates (4, N, H), Gate order
    N, H = cache.tanh_c.shape
    B = dh_next.shape[0]
    dtype = dz.dtype
    I = cache.input_size
    WhT = np.ascontiguousarray(W[I:].T)  # (4H, H); a transposed view would run a slower GEMM

    # Gate factors are computed a chunk of steps at a time (about _CHUNK_BYTES), so they
    # are still in cache when the step loop reads them.
    steps_per_chunk = max(1, _CHUNK_BYTES // max(1, B * 5 * H * dtype.itemsize))
    chunk_rows = int(min(N, B * steps_per_chunk))
    dgate_buf = alloc("dgate", (4, chunk_rows, H), dtype)  # TF order
    dcfh_buf = alloc("dc_from_h", (chunk_rows, H), dtype)
    dc = alloc("dc", (B, H), dtype)
    T = len(bounds) - 1
    chunk_lo = bounds[T]
    dz_4 = dz.reshape(N, 4, H).transpose(1, 0, 2)  # (4, N, H) view, TF order
    dz_ijf, dz_o = dz_4[TF.IJF], dz_4[TF.O]
    f_all = gates[Gate.F]  # (N, H)
    views = {}  # the (n, H) views of the per-step state, made once per batch size n
    for t in range(T - 1, -1, -1):
        lo, hi = bounds[t], bounds[t + 1]
        n = hi - lo
        v = views.get(n)
        if v is None:
            v = views[n] = (dh_next[:n], dc[:n], dc_next[:n])
        dh_next_n, dc_n, dc_next_n = v
        if lo < chunk_lo:  # next chunk (backwards in time): steps t_first..t
            t_first = t
            while t_first > 0 and hi - bounds[t_first - 1] <= chunk_rows:
                t_first -= 1
            chunk_lo, chunk_hi = bounds[t_first], hi
            m = chunk_hi - chunk_lo
            _gate_factors(
                gates[:, chunk_lo:chunk_hi],
                cache.tanh_c[chunk_lo:chunk_hi],
                cache.c_prev[chunk_lo:chunk_hi],
                dgate_buf[:, :m],
                dcfh_buf[:m],
            )
        r = lo - chunk_lo  # this step's first row in the chunk
        dh_n = total_dh(t, lo, hi, dh_next_n)  # (n, H) dL/dh_t
        np.multiply(dh_n, dcfh_buf[r : r + n], out=dc_n)
        dc_n += dc_next_n  # dc = dh * o * (1 - tanh_c^2) + dc_next
        if flow is not None:  # before the GEMM below overwrites dh_n (last-step mode)
            flow[0][lo:hi] = row_norms(dh_n)
            flow[1][lo:hi] = row_norms(dc_n)
        np.multiply(dgate_buf[TF.IJF, r : r + n], dc_n, out=dz_ijf[:, lo:hi])
        np.multiply(dh_n, dgate_buf[TF.O, r : r + n], out=dz_o[lo:hi])
        np.matmul(dz[lo:hi], WhT, out=dh_next_n)  # dh_next = dz @ W_h^T
        np.multiply(dc_n, f_all[lo:hi], out=dc_next_n)  # dc_next = dc * f

"""A bidirectional layer on the engine's packed layout (docs/design.md §8).

Per layer a forward LSTM and a reverse LSTM, each with its own W, b. The reverse one reads
each sequence's *own* valid steps from length_b - 1 down to 0, never the padding: it is the
forward kernel (lstm.py) run on the packed batch with every sequence's steps reversed. In
the packed layout (sorted longest first, step-major) sequence r's row at step t is
offsets[t] + r; reversing each sequence keeps the batch sizes, so the reversed batch is the
same rows permuted by

    rev[offsets[t] + r] = offsets[length_r - 1 - t] + r

which is its own inverse (reversing twice is the identity): packing.reversal. The
layer's output at each packed row is [h->_t, h<-_t] (N, 2H); its backward splits the
upstream gradient the same way, runs §4 per direction (the reverse one on the reversed
rows) and adds the two input gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .lstm import lstm_layer_backward, lstm_layer_forward


class BiLayerCache(NamedTuple):
    forward: object  # lstm.LayerCache of the forward direction (packed order), or None
    reverse: object  # lstm.LayerCache of the reverse direction (reversed rows), or None
    rev: np.ndarray  # (N,) packing.reversal of the batch


def bi_layer_forward(
    x, params, forget_bias, batch_sizes, rev, need_cache=True, workspaces=(None, None)
):
    """x (N, I) packed, params (W, b, W_reverse, b_reverse) -> h (N, 2H) new, BiLayerCache."""
    W, b, Wr, br = params
    H = W.shape[1] // 4
    h_f, cache_f = lstm_layer_forward(
        x, W, b, forget_bias, batch_sizes=batch_sizes, need_cache=need_cache,
        workspace=workspaces[0],
    )  # fmt: skip
    h_r, cache_r = lstm_layer_forward(
        x[rev], Wr, br, forget_bias, batch_sizes=batch_sizes, need_cache=need_cache,
        workspace=workspaces[1],
    )  # fmt: skip
    h = np.empty((x.shape[0], 2 * H), W.dtype)
    h[:, :H] = h_f
    h[:, H:] = h_r[rev]  # back to each row's own step
    return h, BiLayerCache(cache_f, cache_r, rev)


def bi_layer_backward(dh, cache: BiLayerCache, W, Wr, workspaces=(None, None), need_dx=True,
                      dh_last=None, flow=None):  # fmt: skip
    """BPTT of bi_layer_forward. dh (N, 2H) packed, or dh=None and dh_last (B, 2H): the
    gradient w.r.t. [h-> at each sequence's last step, h<- at its step 0] (what the last-step
    head gives; both are their direction's final state), rows in packed-batch order.
    flow: None, or ((dh_norm, dc_norm) forward, (dh_norm, dc_norm) reverse), four (N,)
    arrays to fill with each packed row's norm of its direction's total dL/dh_t and
    dL/dc_t (lstm_layer_backward's flow), the reverse ones at each row's own step too.
    Returns dx (N, I) or None, (dW, db), (dW_reverse, db_reverse)."""
    H = W.shape[1] // 4
    rev = cache.rev
    if dh is None:
        args_f = dict(dh=None, dh_last=np.ascontiguousarray(dh_last[:, :H]))
        args_r = dict(dh=None, dh_last=np.ascontiguousarray(dh_last[:, H:]))
    else:
        args_f = dict(dh=dh[:, :H], dh_last=None)
        args_r = dict(dh=dh[rev, H:], dh_last=None)
    flow_f, flow_r = (None, None) if flow is None else flow
    rows_r = None if flow is None else (np.zeros(len(rev)), np.zeros(len(rev)))  # reversed rows
    dx_f, dW, db, _, _ = lstm_layer_backward(
        cache=cache.forward, W=W, workspace=workspaces[0], need_dx=need_dx, flow=flow_f, **args_f
    )
    dx_r, dWr, dbr, _, _ = lstm_layer_backward(
        cache=cache.reverse, W=Wr, workspace=workspaces[1], need_dx=need_dx, flow=rows_r,
        **args_r,
    )  # fmt: skip
    if flow is not None:
        for out, rows in zip(flow_r, rows_r):
            out[:] = rows[rev]  # back to each row's own step
    dx = dx_f + dx_r[rev] if need_dx else None
    return dx, (dW, db), (dWr, dbr)

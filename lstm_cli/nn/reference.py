"""A plain reference LSTM layer over a whole right-padded batch: the oracle of the fast kernel.

Written to be read against docs/design.md §1-§4 line by line, cs231n style: one pure
``forward`` returning the outputs and an explicitly named cache, one ``backward`` taking
the upstream gradient and that cache. Batch-first, TF gate order i, j, f, o everywhere,
no packing, no scratch buffers, no pre-scaled weights. Slow on purpose; use
``lstm.lstm_layer_forward`` / ``lstm_layer_backward`` for training.

Letters: B sequences, T steps (the padded length), I inputs, H hidden units.

``classifier_loss_and_grads`` stacks these layers under any head (docs/design.md §3, §8), and
bidirectionally (a reverse direction is this forward run on each sequence's valid steps
reversed, ``reverse_steps``): the whole model's loss and gradients, the oracle of
``LSTMClassifier.loss_and_grads``.

Padding: the forward simply runs over the padded steps (they come after every valid step,
so they cannot change one); the backward gives padded steps no head gradient and a zero
dz, so they change no gradient either (docs/design.md §2, §4). Padding values must be finite
(0 * nan is nan in dW); the model never passes padding to the kernel at all.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class ReferenceCache(NamedTuple):
    """Everything ``backward`` needs, by name; each array batch-first, step t at [:, t]."""

    xh: np.ndarray  # (B, T, I+H) [x_t, h_{t-1}] of every step
    c_prev: np.ndarray  # (B, T, H) c_{t-1}
    c: np.ndarray  # (B, T, H) c_t
    i: np.ndarray  # (B, T, H) input gate
    j: np.ndarray  # (B, T, H) candidate
    f: np.ndarray  # (B, T, H) forget gate (forget_bias inside its sigmoid)
    o: np.ndarray  # (B, T, H) output gate
    valid: np.ndarray  # (B, T) True where t < lengths[b]
    W: np.ndarray  # (I+H, 4H)


def forward(x, lengths, W, b, forget_bias=1.0, h0=None, c0=None):
    """docs/design.md §1 over a right-padded batch.

    x (B, T, I), lengths (B,) each in [1, T], W (I+H, 4H) and b (4H,) in TF gate order
    i, j, f, o, h0 / c0 (B, H) or None for zeros.
    Returns h (B, T, H) (padded steps hold whatever running over the padding gave) and a
    ReferenceCache.
    """
    B, T, I = x.shape
    H = W.shape[1] // 4
    h_prev = np.zeros((B, H), W.dtype) if h0 is None else h0  # (B, H)
    c_prev = np.zeros((B, H), W.dtype) if c0 is None else c0  # (B, H)
    h = np.zeros((B, T, H), W.dtype)
    names = ("xh", "c_prev", "c", "i", "j", "f", "o")
    store = {n: np.zeros((B, T, I + H if n == "xh" else H), W.dtype) for n in names}
    for t in range(T):
        xh = np.concatenate([x[:, t], h_prev], axis=1)  # (B, I+H) input first, then state
        z = xh @ W + b  # (B, 4H)
        z_i, z_j, z_f, z_o = np.split(z, 4, axis=1)  # each (B, H), gate order i, j, f, o
        i = _sigmoid(z_i)  # input gate
        j = np.tanh(z_j)  # candidate
        f = _sigmoid(z_f + forget_bias)  # forget gate
        o = _sigmoid(z_o)  # output gate
        c = f * c_prev + i * j  # (B, H)
        h_t = o * np.tanh(c)  # (B, H)
        for n, v in zip(names, (xh, c_prev, c, i, j, f, o)):
            store[n][:, t] = v
        h[:, t] = h_t
        h_prev, c_prev = h_t, c
    valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]  # (B, T)
    return h, ReferenceCache(**store, valid=valid, W=W)


def backward(dh_head, cache: ReferenceCache):
    """docs/design.md §4: BPTT from t = T-1 down to 0 with dh_next = dc_next = 0 at T-1.

    dh_head (B, T, H): the heads' gradient w.r.t. each step's h (the all-steps head: every
    valid step; the last-step head: only step lengths[b] - 1). Padded steps get none,
    whatever dh_head holds there.
    Returns dx (B, T, I) (zero at padded steps), dW (I+H, 4H), db (4H,), dh0 (B, H),
    dc0 (B, H).
    """
    W, valid = cache.W, cache.valid
    B, T, IH = cache.xh.shape
    H = W.shape[1] // 4
    I = IH - H
    dx = np.zeros((B, T, I), W.dtype)
    dW = np.zeros_like(W)  # (I+H, 4H)
    db = np.zeros(4 * H, W.dtype)  # (4H,)
    dh_next = np.zeros((B, H), W.dtype)  # from step t+1, w.r.t. h_t
    dc_next = np.zeros((B, H), W.dtype)  # from step t+1, w.r.t. c_t
    for t in range(T - 1, -1, -1):
        m = valid[:, t, None]  # (B, 1) this step counts
        i, j, f, o = cache.i[:, t], cache.j[:, t], cache.f[:, t], cache.o[:, t]  # each (B, H)
        dh = np.where(m, dh_head[:, t], 0.0) + dh_next  # (B, H) head part + part from t+1
        tc = np.tanh(cache.c[:, t])  # (B, H)
        do = dh * tc
        dc = dh * o * (1 - tc**2) + dc_next  # (B, H)
        di = dc * j
        dj = dc * i
        df = dc * cache.c_prev[:, t]
        dz_i = di * i * (1 - i)
        dz_j = dj * (1 - j**2)
        dz_f = df * f * (1 - f)
        dz_o = do * o * (1 - o)
        dz = np.concatenate([dz_i, dz_j, dz_f, dz_o], axis=1)  # (B, 4H)
        dz = np.where(m, dz, 0.0)  # zero for padded steps
        dW += cache.xh[:, t].T @ dz  # (I+H, 4H)
        db += dz.sum(axis=0)  # (4H,)
        dxh = dz @ W.T  # (B, I+H)
        dx[:, t] = dxh[:, :I]
        dh_next = dxh[:, I:]  # (B, H)
        dc_next = dc * f  # (B, H)
    return dx, dW, db, dh_next, dc_next


def last_step_dh(dh_last, lengths, T):
    """(B, T, H) upstream gradient that is dh_last[b] at step lengths[b] - 1 and 0 elsewhere
    (what the last-step head gives, docs/design.md §3)."""
    B, H = dh_last.shape
    dh = np.zeros((B, T, H), dh_last.dtype)
    dh[np.arange(B), np.asarray(lengths) - 1] = dh_last
    return dh


def reverse_steps(a, lengths):
    """a (B, T, ...) with each sequence's valid steps 0..lengths[b]-1 reversed (padding left
    where it is); its own inverse."""
    out = a.copy()
    for b, n in enumerate(np.asarray(lengths)):
        out[b, :n] = a[b, n - 1 :: -1]
    return out


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def classifier_loss_and_grads(params, x, lengths, y, head="last", forget_bias=1.0):
    """Loss, gradients and dx of the whole model (no dropout, no class weights).

    params: ``lstm.{k}.W``, ``lstm.{k}.b`` per layer (and ``lstm.{k}.reverse.W`` / ``.b``
    for a bidirectional model), ``head.W`` (H or 2H, K), ``head.b`` (K,); x (B, T, I)
    right-padded, lengths (B,), y (B,) class indices; head "last", "all", "mean" or "max".
    Returns loss (float), grads (params' keys) and dx (B, T, I) (zero at padded steps).
    """
    B, T, _ = x.shape
    lengths = np.asarray(lengths)
    num_layers = sum(1 for k in params if k.endswith(".W") and k.startswith("lstm."))
    bidirectional = "lstm.0.reverse.W" in params
    if bidirectional:
        num_layers //= 2
    valid = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
    h, caches = x, []
    for k in range(num_layers):
        h_f, cache = forward(h, lengths, params[f"lstm.{k}.W"], params[f"lstm.{k}.b"], forget_bias)
        if bidirectional:  # [h->_t, h<-_t], h<- from the reversed valid steps
            W_r, b_r = params[f"lstm.{k}.reverse.W"], params[f"lstm.{k}.reverse.b"]
            h_r, cache_r = forward(reverse_steps(h, lengths), lengths, W_r, b_r, forget_bias)
            h_f = np.concatenate([h_f, reverse_steps(h_r, lengths)], axis=2)
            cache = (cache, cache_r)
        h = np.where(valid[..., None], h_f, 0.0)  # (B, T, D*H), the next layer's x
        caches.append(cache)
    V, a = params["head.W"], params["head.b"]  # (D*H, K), (K,)
    H = V.shape[0] // 2 if bidirectional else V.shape[0]
    onehot = np.eye(V.shape[1])[y]  # (B, K)
    if head == "mean":  # logits_b = (mean over valid t of h_t) @ V + a
        m = h.sum(axis=1) / lengths[:, None]  # (B, D*H); h is 0 at padded steps
        logp = _log_softmax(m @ V + a)  # (B, K)
        loss = -(logp * onehot).sum() / B
        dlogits = (np.exp(logp) - onehot) / B  # (B, K)
        grads = {"head.W": m.T @ dlogits, "head.b": dlogits.sum(axis=0)}
        dh = (dlogits @ V.T / lengths[:, None])[:, None, :] * valid[..., None]  # (B, T, D*H)
    elif head == "max":  # logits_b = (per-unit max over valid t of h_t) @ V + a
        hv = np.where(valid[..., None], h, -np.inf)  # (B, T, D*H)
        t_max = hv.argmax(axis=1)  # (B, D*H) the first step holding each unit's max
        m = np.take_along_axis(h, t_max[:, None, :], axis=1)[:, 0]  # (B, D*H)
        logp = _log_softmax(m @ V + a)  # (B, K)
        loss = -(logp * onehot).sum() / B
        dlogits = (np.exp(logp) - onehot) / B  # (B, K)
        grads = {"head.W": m.T @ dlogits, "head.b": dlogits.sum(axis=0)}
        at_max = np.arange(T)[None, :, None] == t_max[:, None, :]  # (B, T, D*H)
        dh = (dlogits @ V.T)[:, None, :] * at_max  # (B, T, D*H)
    elif head == "last":  # logits_b = h_{length_b - 1} @ V + a; loss = mean over b of CE
        h_last = h[np.arange(B), lengths - 1]  # (B, D*H)
        if bidirectional:  # the reverse direction ends at step 0
            h_last = np.concatenate([h_last[:, :H], h[:, 0, H:]], axis=1)
        logp = _log_softmax(h_last @ V + a)  # (B, K)
        loss = -(logp * onehot).sum() / B
        dlogits = (np.exp(logp) - onehot) / B  # (B, K)
        grads = {"head.W": h_last.T @ dlogits, "head.b": dlogits.sum(axis=0)}
        dh_last = dlogits @ V.T  # (B, D*H)
        dh = last_step_dh(dh_last, lengths, T)  # (B, T, D*H)
        if bidirectional:
            dh[..., H:] = 0.0
            dh[:, 0, H:] = dh_last[:, H:]
    else:  # logits at every valid step; loss = mean over b of (mean over valid t of CE)
        w = valid / lengths[:, None] / B  # (B, T) each step's weight in the loss
        logp = _log_softmax(h @ V + a)  # (B, T, K)
        loss = -(w[..., None] * logp * onehot[:, None]).sum()
        dlogits = (np.exp(logp) - onehot[:, None]) * w[..., None]  # (B, T, K)
        grads = {"head.W": np.einsum("bth,btk->hk", h, dlogits), "head.b": dlogits.sum((0, 1))}
        dh = dlogits @ V.T  # (B, T, H)
    for k in range(num_layers - 1, -1, -1):
        if not bidirectional:
            dh, grads[f"lstm.{k}.W"], grads[f"lstm.{k}.b"], _, _ = backward(dh, caches[k])
            continue
        cache_f, cache_r = caches[k]
        dx_f, grads[f"lstm.{k}.W"], grads[f"lstm.{k}.b"], _, _ = backward(dh[..., :H], cache_f)
        dx_r, gW, gb, _, _ = backward(reverse_steps(dh[..., H:], lengths), cache_r)
        grads[f"lstm.{k}.reverse.W"], grads[f"lstm.{k}.reverse.b"] = gW, gb
        dh = dx_f + reverse_steps(dx_r, lengths)
    return float(loss), {k: grads[k] for k in params}, dh

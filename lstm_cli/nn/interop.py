"""Convert parameters between lstm_cli (TF BasicLSTMCell layout) and PyTorch / Keras layouts.

docs/design.md §5 (weight layouts). lstm_cli keeps one kernel W (I+H, 4H) per layer, x-rows
first, gate order i, j, f, o, and a separate forget_bias added inside the forget sigmoid.
PyTorch's nn.LSTM keeps weight_ih (4H, I), weight_hh (4H, H), bias_ih + bias_hh in gate
order i, f, g, o; Keras keeps kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,) in order
i, f, c, o. Neither has a separate forget_bias, so it is folded into the forget slice
of the bias. Pure NumPy: no framework is imported here.
"""

from __future__ import annotations

import numpy as np

from ..errors import LstmCliError

# Where each block of the framework order i, f, g(=j), o comes from in TF's i, j, f, o.
_TF_BLOCKS_IN_IFGO = (0, 2, 1, 3)


def _perm(H):
    """Column index that reorders TF [i|j|f|o] into [i|f|j|o] (an involution: its own inverse)."""
    return np.concatenate([np.arange(k * H, (k + 1) * H) for k in _TF_BLOCKS_IN_IFGO])


def _layers(params):
    n = 0
    while f"lstm.{n}.W" in params:
        n += 1
    return n


def _layer_ifgo(params, k, forget_bias):
    """Layer k's weights in the frameworks' gate order i, f, g(=j), o with forget_bias folded
    into the bias: (W_x (I, 4H), W_h (H, 4H), bias (4H,)), new arrays."""
    W, b = params[f"lstm.{k}.W"], params[f"lstm.{k}.b"]
    H = W.shape[1] // 4
    I = W.shape[0] - H
    perm = _perm(H)
    bias = b[perm].copy()
    bias[H : 2 * H] += forget_bias  # order i, f, g, o: f is the second block
    return W[:I, perm], W[I:, perm], bias


def _layer_from_ifgo(W_x, W_h, bias, forget_bias):
    """Inverse of _layer_ifgo: (W (I+H, 4H), b (4H,)) in TF order, forget_bias taken out."""
    H = W_h.shape[0]
    perm = _perm(H)
    bias = np.array(bias, copy=True)
    bias[H : 2 * H] -= forget_bias
    return np.concatenate([W_x, W_h], axis=0)[:, perm], bias[perm]


def to_pytorch(params, forget_bias=1.0):
    """lstm_cli params -> dict of nn.LSTM state names (weight_ih_l{k}, weight_hh_l{k},
    bias_ih_l{k}, bias_hh_l{k}) plus nn.Linear's as head.weight (K, H), head.bias (K,).

    forget_bias is folded into bias_ih's forget slice; bias_hh is zero.
    """
    out = {}
    for k in range(_layers(params)):
        W_x, W_h, bias = _layer_ifgo(params, k, forget_bias)
        out[f"weight_ih_l{k}"] = np.ascontiguousarray(W_x.T)
        out[f"weight_hh_l{k}"] = np.ascontiguousarray(W_h.T)
        out[f"bias_ih_l{k}"] = bias
        out[f"bias_hh_l{k}"] = np.zeros_like(bias)
    out["head.weight"] = np.ascontiguousarray(params["head.W"].T)
    out["head.bias"] = params["head.b"].copy()
    return out


def _array(value):
    """A numpy array of a numpy array, a list, or a torch tensor / Parameter (detached, on
    the CPU; duck-typed, so torch is not imported here)."""
    for method in ("detach", "cpu"):
        if hasattr(value, method):
            value = getattr(value, method)()
    return np.asarray(value)


def from_pytorch(state, forget_bias=1.0):
    """Inverse of ``to_pytorch``: bias = bias_ih + bias_hh with forget_bias taken out of f.

    Also converts *gradients* of a PyTorch model with forget_bias=0 and only one of the
    two bias gradients (they are equal), e.g. {..., "bias_ih_l0": g, "bias_hh_l0": 0}.
    """
    num_layers = 0
    while f"weight_ih_l{num_layers}" in state:
        num_layers += 1
    expected = {"head.weight", "head.bias"} | {
        f"{w}_l{k}"
        for k in range(num_layers)
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }
    extra = sorted(set(state) - expected)
    if num_layers == 0 or extra:  # e.g. a bidirectional (*_reverse) or proj_size (weight_hr) LSTM
        raise LstmCliError(
            "from_pytorch needs the keys of a unidirectional nn.LSTM without projections "
            "(weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}) plus head.weight and "
            "head.bias, with no prefix; "
            + (f"unexpected keys: {extra[:6]}" if extra else "no weight_ih_l0 found")
        )
    params = {}
    for k in range(num_layers):
        bias = _array(state[f"bias_ih_l{k}"]) + _array(state[f"bias_hh_l{k}"])
        params[f"lstm.{k}.W"], params[f"lstm.{k}.b"] = _layer_from_ifgo(
            _array(state[f"weight_ih_l{k}"]).T,
            _array(state[f"weight_hh_l{k}"]).T,
            bias,
            forget_bias,
        )
    params["head.W"] = np.ascontiguousarray(_array(state["head.weight"]).T)
    params["head.b"] = _array(state["head.bias"]).copy()
    return params


def to_keras(params, forget_bias=1.0):
    """lstm_cli params -> list of per-layer [kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]
    in Keras order i, f, c, o with forget_bias folded in, plus [W (H, K), b (K,)] for a Dense head.
    """
    layers = [list(_layer_ifgo(params, k, forget_bias)) for k in range(_layers(params))]
    return layers, [params["head.W"].copy(), params["head.b"].copy()]


def from_keras(layers, head, forget_bias=1.0):
    """Inverse of ``to_keras``."""
    params = {}
    for k, (kernel, recurrent, bias) in enumerate(layers):
        params[f"lstm.{k}.W"], params[f"lstm.{k}.b"] = _layer_from_ifgo(
            kernel, recurrent, bias, forget_bias
        )
    params["head.W"] = np.array(head[0], copy=True)
    params["head.b"] = np.array(head[1], copy=True)
    return params

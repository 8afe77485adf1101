"""Convert parameters between lstm_cli (TF BasicLSTMCell layout) and PyTorch / Keras layouts.

docs/design.md §5 (weight layouts). lstm_cli keeps one kernel W (I+H, 4H) per layer, x-rows
first, gate order i, j, f, o, and a separate forget_bias added inside the forget sigmoid.
PyTorch's nn.LSTM keeps weight_ih (4H, I), weight_hh (4H, H), bias_ih + bias_hh in gate
order i, f, g, o; Keras keeps kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,) in order
i, f, c, o. Neither has a separate forget_bias, so it is folded into the forget slice
of the bias. Pure NumPy: no framework is imported here.

Bidirectional: lstm_cli's ``lstm.{k}.reverse.W`` / ``.b`` are nn.LSTM(bidirectional=True)'s
``*_l{k}_reverse`` weights, and Keras ``Bidirectional(LSTM)``'s backward layer (its
``get_weights()`` lists the forward layer's three arrays, then the backward layer's).
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


def _directions(params):
    """("",) or ("", ".reverse") for a bidirectional model's parameters."""
    return ("", ".reverse") if "lstm.0.reverse.W" in params else ("",)


def _layer_ifgo(params, k, forget_bias, direction=""):
    """Layer k's weights (direction "" or ".reverse") in the frameworks' gate order i, f,
    g(=j), o with forget_bias folded into the bias: (W_x (I, 4H), W_h (H, 4H), bias (4H,))."""
    W, b = params[f"lstm.{k}{direction}.W"], params[f"lstm.{k}{direction}.b"]
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
    bias_ih_l{k}, bias_hh_l{k}, and the same with the suffix _reverse for a bidirectional
    model) plus nn.Linear's as head.weight (K, H), head.bias (K,).

    forget_bias is folded into bias_ih's forget slice; bias_hh is zero.
    """
    out = {}
    for k in range(_layers(params)):
        for direction in _directions(params):
            W_x, W_h, bias = _layer_ifgo(params, k, forget_bias, direction)
            suffix = "_reverse" if direction else ""
            out[f"weight_ih_l{k}{suffix}"] = np.ascontiguousarray(W_x.T)
            out[f"weight_hh_l{k}{suffix}"] = np.ascontiguousarray(W_h.T)
            out[f"bias_ih_l{k}{suffix}"] = bias
            out[f"bias_hh_l{k}{suffix}"] = np.zeros_like(bias)
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
    suffixes = ("", "_reverse") if "weight_ih_l0_reverse" in state else ("",)
    expected = {"head.weight", "head.bias"} | {
        f"{w}_l{k}{s}"
        for k in range(num_layers)
        for s in suffixes
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }
    extra = sorted(set(state) - expected)
    missing = sorted(expected - set(state))
    if num_layers == 0 or extra or missing:  # e.g. a proj_size (weight_hr) LSTM
        raise LstmCliError(
            "from_pytorch needs the keys of an nn.LSTM without projections "
            "(weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, and the same with "
            "_reverse for every layer of a bidirectional one) plus head.weight and head.bias, "
            "with no prefix; "
            + (
                f"unexpected keys: {extra[:6]}"
                if extra
                else f"missing keys: {missing[:6]}"
                if missing
                else "no weight_ih_l0 found"
            )
        )
    params = {}
    for k in range(num_layers):
        for s in suffixes:
            bias = _array(state[f"bias_ih_l{k}{s}"]) + _array(state[f"bias_hh_l{k}{s}"])
            name = f"lstm.{k}.reverse" if s else f"lstm.{k}"
            params[f"{name}.W"], params[f"{name}.b"] = _layer_from_ifgo(
                _array(state[f"weight_ih_l{k}{s}"]).T,
                _array(state[f"weight_hh_l{k}{s}"]).T,
                bias,
                forget_bias,
            )
    params["head.W"] = np.ascontiguousarray(_array(state["head.weight"]).T)
    params["head.b"] = _array(state["head.bias"]).copy()
    return params


def to_keras(params, forget_bias=1.0):
    """lstm_cli params -> list of per-layer [kernel (I, 4H), recurrent_kernel (H, 4H), bias (4H,)]
    in Keras order i, f, c, o with forget_bias folded in, plus [W (H, K), b (K,)] for a Dense head.
    A bidirectional model's layers are Bidirectional(LSTM)'s six arrays: forward, then backward.
    """
    layers = [
        [a for d in _directions(params) for a in _layer_ifgo(params, k, forget_bias, d)]
        for k in range(_layers(params))
    ]
    return layers, [params["head.W"].copy(), params["head.b"].copy()]


def from_keras(layers, head, forget_bias=1.0):
    """Inverse of ``to_keras`` (a layer of six arrays is a Bidirectional one)."""
    params = {}
    for k, arrays in enumerate(layers):
        if len(arrays) not in (3, 6):
            raise LstmCliError(
                f"from_keras: layer {k} has {len(arrays)} arrays; expected 3 (LSTM) or 6 "
                f"(Bidirectional LSTM: forward then backward)"
            )
        for d, name in enumerate((f"lstm.{k}", f"lstm.{k}.reverse")[: len(arrays) // 3]):
            kernel, recurrent, bias = arrays[3 * d : 3 * d + 3]
            params[f"{name}.W"], params[f"{name}.b"] = _layer_from_ifgo(
                kernel, recurrent, bias, forget_bias
            )
    params["head.W"] = np.array(head[0], copy=True)
    params["head.b"] = np.array(head[1], copy=True)
    return params

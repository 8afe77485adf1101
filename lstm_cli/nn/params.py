"""A model's parameters: names, shapes, count and initialisation (re-exported by ``model``).

Names are the public contract, shared with checkpoints: ``lstm.{k}.W`` (I_k+H, 4H),
``lstm.{k}.b`` (4H,) for layer k (0-based; I_0 is the input size, I_k = H above),
``head.W`` (H, K), ``head.b`` (K,). A bidirectional model adds the reverse direction's
``lstm.{k}.reverse.W`` / ``lstm.{k}.reverse.b`` (same shapes) after each layer's forward
pair; its layers above the first read 2H inputs (I_k = 2H) and its head W is (2H, K).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import LstmCliError
from ..validate import Options, param_error
from .spec import INITS


def init_params(
    input_size,
    hidden_size,
    num_classes,
    num_layers=1,
    *,
    dtype="float32",
    init="uniform",
    rng=None,
    bidirectional=False,
):
    """Fresh parameters as a dict of arrays (names and shapes: the module docstring).

    init="uniform": every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)) (the PyTorch scheme),
    head bias the same with H as fan-in.
    init="glorot_orthogonal": per gate block, the x-rows Glorot-uniform, the h-rows a random
    orthogonal (H, H) matrix, LSTM biases zero; head Glorot-uniform, bias zero.
    rng: a numpy Generator (or a seed); same seed => identical parameters.
    """
    rng = np.random.default_rng(rng)
    H, K = hidden_size, num_classes
    D = 2 if bidirectional else 1  # directions
    params = {}
    for k, suffix in _layer_names(num_layers, bidirectional):
        I = input_size if k == 0 else D * H
        if init == "uniform":
            bound = 1.0 / np.sqrt(H)
            W = rng.uniform(-bound, bound, size=(I + H, 4 * H))
            b = rng.uniform(-bound, bound, size=4 * H)
        elif init == "glorot_orthogonal":
            limit = np.sqrt(6.0 / (I + H))
            Wx = rng.uniform(-limit, limit, size=(I, 4 * H))
            Wh = np.concatenate([_orthogonal(H, rng) for _ in range(4)], axis=1)  # (H, 4H)
            W = np.concatenate([Wx, Wh], axis=0)
            b = np.zeros(4 * H)
        else:
            raise param_error("init", Options(*INITS).description(), init, "init_params")
        params[f"lstm.{k}{suffix}.W"] = W.astype(dtype)
        params[f"lstm.{k}{suffix}.b"] = b.astype(dtype)
    if init == "uniform":
        bound = 1.0 / np.sqrt(H)
        params["head.W"] = rng.uniform(-bound, bound, size=(D * H, K)).astype(dtype)
        params["head.b"] = rng.uniform(-bound, bound, size=K).astype(dtype)
    else:
        limit = np.sqrt(6.0 / (D * H + K))
        params["head.W"] = rng.uniform(-limit, limit, size=(D * H, K)).astype(dtype)
        params["head.b"] = np.zeros(K, dtype)
    return params


def _layer_names(num_layers, bidirectional):
    """(k, suffix) of each direction's parameters in order: suffix "" forward, ".reverse"."""
    suffixes = ("", ".reverse") if bidirectional else ("",)
    return [(k, s) for k in range(num_layers) for s in suffixes]


def _orthogonal(n, rng):
    """A random (n, n) orthogonal matrix (QR of a Gaussian, signs fixed so it is uniform)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def param_shapes(input_size, hidden_size, num_classes, num_layers, bidirectional=False) -> dict:
    """{name: shape} of a model's parameters, in order: lstm.{k}.W (I_k+H, 4H) and
    lstm.{k}.b (4H,) per layer (I_0 = input_size, I_k = D*H above), then with bidirectional
    lstm.{k}.reverse.W / .b of the same shapes; head.W (D*H, K), head.b (K,); D = 2 with
    bidirectional, else 1."""
    H, K = hidden_size, num_classes
    D = 2 if bidirectional else 1
    shapes = {}
    for k, suffix in _layer_names(num_layers, bidirectional):
        shapes[f"lstm.{k}{suffix}.W"] = ((input_size if k == 0 else D * H) + H, 4 * H)
        shapes[f"lstm.{k}{suffix}.b"] = (4 * H,)
    shapes["head.W"], shapes["head.b"] = (D * H, K), (K,)
    return shapes


def parameter_count(input_size, hidden_size, num_classes, num_layers, bidirectional=False) -> int:
    """Number of parameters (the sizes of param_shapes, in closed form: num_layers may be a
    typo of 10**8, which must be refused without building a dict that long)."""
    I, H, K, L = input_size, hidden_size, num_classes, num_layers
    D = 2 if bidirectional else 1
    return D * (4 * H * (I + H + 1) + (L - 1) * 4 * H * (D * H + H + 1)) + D * H * K + K


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(model) -> None:
    """Refuse, before allocating anything, a model whose parameters alone (x3: parameters,
    gradients and a copy) would not fit in this machine's memory; a typo such as
    hidden_size: 50000 or num_layers: 100000000 would otherwise end in a MemoryError
    traceback or a long hang."""
    count = parameter_count(
        model.input_size, model.hidden_size, model.num_classes, model.num_layers,
        model.bidirectional,
    )  # fmt: skip
    need = 3 * count * model.dtype.itemsize
    memory = _physical_memory()
    if memory is not None and need > memory:
        raise LstmCliError(
            f"a model with input_size {model.input_size}, hidden_size {model.hidden_size}, "
            f"num_layers {model.num_layers} and {model.num_classes} classes has {count:,} "
            f"parameters; they need {_bytes(need)} with their gradients, more than this "
            f"machine's {_bytes(memory)}"
        )


def _bytes(n) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"

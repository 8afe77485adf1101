"""Optimizers and gradient clipping over parameter dicts (LRSchedule: schedules.py, re-exported).

Parameters and gradients are plain ``dict[str, np.ndarray]`` with the model's public
names (``lstm.0.W``, ``lstm.0.b``, ..., ``head.W``, ``head.b``); the gradients dict has
exactly the same keys and shapes as the parameters dict.

The update rules follow the formulas PyTorch documents for ``torch.optim.SGD``,
``Adam`` and ``AdamW`` (no dampening, no AMSGrad, no ``maximize``):

* SGD: ``g <- g + wd * p`` (coupled L2); with momentum ``mu`` the buffer is
  ``b <- g`` on the first step, then ``b <- mu * b + g``; the update direction is
  ``g + mu * b`` with Nesterov, else ``b``; ``p <- p - lr * direction``.
* Adam: ``g <- g + wd * p`` (coupled L2); ``m <- b1 m + (1 - b1) g``,
  ``v <- b2 v + (1 - b2) g^2``; ``p <- p - lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)``.
* AdamW (``Adam(decoupled=True)``): ``p <- p * (1 - lr * wd)`` first, then the Adam
  update with the raw gradient.

``step`` updates the parameter arrays **in place** (the model owns them) and never
writes to the gradient arrays. Optimizer state is kept in each parameter's dtype, so a
float32 model stays float32. Scalars enter the arithmetic as Python floats, which NumPy
treats as "weak" and therefore never upcasts a float32 array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import CheckpointError, LstmCliError
from ..validate import Bool, Interval, Options, check, param_error
from .schedules import SCHEDULES, LRSchedule, is_saved_rate

__all__ = [
    "global_norm",
    "clip_by_global_norm",
    "SGD",
    "Adam",
    "make_optimizer",
    "LRSchedule",
    "OPTIMIZERS",
    "SCHEDULES",
]

OPTIMIZERS = ("sgd", "adam", "adamw")


# --------------------------------------------------------------------------- helpers


_NON_NEGATIVE = Interval(float, 0.0, None, closed="left")  # [0, inf)
_POSITIVE = Interval(float, 0.0, None, closed="neither")  # (0, inf)
_UNIT = Interval(float, 0.0, 1.0, closed="left")  # [0, 1)


def _check_grads(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], keys):
    """Check that params and grads both cover exactly the optimizer's keys with equal shapes."""
    if params.keys() != keys or grads.keys() != keys:
        missing_p = sorted(keys - params.keys())
        missing_g = sorted(keys - grads.keys())
        extra = sorted((params.keys() | grads.keys()) - keys)
        parts = []
        if missing_p:
            parts.append(f"params lack {missing_p}")
        if missing_g:
            parts.append(f"grads lack {missing_g}")
        if extra:
            parts.append(f"unknown keys {extra}")
        raise LstmCliError("optimizer step: " + "; ".join(parts))
    for k in keys:
        if grads[k].shape != params[k].shape:
            raise LstmCliError(
                f"optimizer step: gradient {k!r} has shape {grads[k].shape}, "
                f"expected {params[k].shape} like the parameter"
            )


# ------------------------------------------------------------------------- clipping


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """Return sqrt(sum of squares) over every array in ``grads``, accumulated in float64."""
    total = 0.0
    for g in grads.values():
        flat = np.asarray(g).ravel()
        if flat.dtype == np.float64:
            total += float(np.dot(flat, flat))  # BLAS
        else:
            # Cast in einsum's internal buffers: float64 accumulation without a full copy.
            total += float(np.einsum("i,i->", flat, flat, dtype=np.float64, casting="safe"))
    return math.sqrt(total)


def clip_by_global_norm(grads: Mapping[str, np.ndarray], max_norm):
    """Scale all gradients by one factor so that their global norm is at most ``max_norm``.

    Returns ``(clipped, norm_before)``. When scaling happens, ``clipped`` holds **new**
    arrays (the caller's arrays are never modified), each keeping its dtype. When no
    scaling is needed, when ``max_norm`` is None or 0 (clipping disabled), or when the
    norm is not finite (inf/nan: scaling would only turn inf into nan; the trainer is
    expected to detect the non-finite norm), ``clipped`` is a new dict holding the very
    same arrays. The norm is always computed so it can be logged.
    The scale factor is exactly ``max_norm / norm`` (PyTorch adds 1e-6 to the norm).
    """
    norm = global_norm(grads)
    if max_norm is None:
        return dict(grads), norm
    max_norm = check("max_norm", max_norm, _NON_NEGATIVE, "clip_by_global_norm")
    if max_norm == 0.0 or not math.isfinite(norm) or norm <= max_norm:
        return dict(grads), norm
    scale = max_norm / norm  # Python float: weak scalar, keeps float32 arrays float32
    return {k: g * scale for k, g in grads.items()}, norm


# ----------------------------------------------------------------------- optimizers


class _Optimizer:
    """Shared bookkeeping: keys, step count, scratch buffers, state (de)serialisation."""

    name = ""
    _slots: tuple[str, ...] = ()  # names of the per-parameter state arrays

    def __init__(self, params_or_keys, lr):
        if isinstance(params_or_keys, Mapping):
            keys = list(params_or_keys.keys())
            self._shapes = {}
            for k, p in params_or_keys.items():
                p = np.asarray(p)
                if not np.issubdtype(p.dtype, np.floating):
                    raise LstmCliError(
                        f"parameter {k!r} has dtype {p.dtype}; optimizers need float arrays"
                    )
                self._shapes[k] = (p.shape, p.dtype)
        elif isinstance(params_or_keys, (str, bytes)):
            raise param_error(
                "params",
                "a params dict or an iterable of keys",
                params_or_keys,
                type(self).__name__,
            )
        else:
            keys = list(params_or_keys)
            self._shapes = {}
        if not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise param_error("params", "distinct string keys", keys, type(self).__name__)
        self._keys = keys
        self._keyset = frozenset(keys)
        self.lr = check("lr", lr, _NON_NEGATIVE, type(self).__name__)
        self.steps = 0
        self._state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self._slots}
        self._scratch: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def keys(self) -> list[str]:
        """The parameter names this optimizer updates, in order."""
        return list(self._keys)

    def _prepare(self, params, grads):
        _check_grads(params, grads, self._keyset)
        # Re-check the per-step lr: the scheduler (or a user) assigns it directly.
        check("lr", self.lr, _NON_NEGATIVE, type(self).__name__)
        for k in self._keys:
            p = params[k]
            known = self._shapes.get(k)
            if known is None:
                if not np.issubdtype(p.dtype, np.floating):
                    raise LstmCliError(
                        f"parameter {k!r} has dtype {p.dtype}; optimizers need float arrays"
                    )
                # State loaded before the shapes were known (keys-only constructor).
                for slot, arrays in self._state.items():
                    a = arrays.get(k)
                    if a is not None and a.shape != p.shape:
                        raise CheckpointError(
                            f"optimizer state array '{slot}.{k}' has shape {a.shape}, "
                            f"expected {p.shape} like the parameter"
                        )
                    if a is not None and a.dtype != p.dtype:
                        arrays[k] = a.astype(p.dtype)
                self._shapes[k] = (p.shape, p.dtype)
            elif known != (p.shape, p.dtype):
                raise LstmCliError(
                    f"optimizer step: parameter {k!r} is {p.shape} {p.dtype}, but the optimizer "
                    f"was set up for {known[0]} {known[1]}"
                )

    def _buffers(self, k, p):
        """Two scratch arrays shaped like ``p`` (reused every step: no allocation per batch)."""
        s = self._scratch.get(k)
        if s is None or s[0].shape != p.shape or s[0].dtype != p.dtype:
            s = (np.empty_like(p), np.empty_like(p))
            self._scratch[k] = s
        return s

    # --- serialisation -------------------------------------------------------------

    def _hyper(self) -> dict:
        raise NotImplementedError

    def state_dict(self):
        """Return ``(arrays, meta)``: copies of the state arrays and JSON-safe metadata.

        Arrays are named ``"<slot>.<param key>"`` (``m.lstm.0.W``, ``momentum.head.b``).
        ``meta`` holds the optimizer name, the step count, the current lr and the
        hyperparameters (the latter for the record: loading keeps the constructor's).
        """
        arrays = {
            f"{slot}.{k}": np.array(a, copy=True)
            for slot in self._slots
            for k, a in self._state[slot].items()
        }
        meta = {"name": self.name, "step": self.steps, "lr": float(self.lr), **self._hyper()}
        return arrays, meta

    def _expected_slots(self, steps: int) -> tuple[str, ...]:
        return self._slots if steps > 0 else ()

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
        """Restore the state written by ``state_dict`` (e.g. from a checkpoint).

        Restores the step count, the lr and the state arrays (copied, cast to the
        parameter dtype when it is known). Hyperparameters other than lr keep the
        values given to the constructor. Raises ``CheckpointError`` for another
        optimizer's state, missing or unexpected arrays, or shape mismatches; nothing
        is changed when it raises.
        """
        if not isinstance(meta, Mapping):
            raise CheckpointError("optimizer state: meta must be a dict")
        if meta.get("name") != self.name:
            raise CheckpointError(
                f"optimizer state was written by {meta.get('name')!r}, "
                f"cannot load it into {self.name!r}"
            )
        steps = meta.get("step")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise CheckpointError(f"optimizer state: bad step count {steps!r}")
        lr = meta.get("lr", self.lr)
        if not is_saved_rate(lr):
            raise CheckpointError(f"optimizer state: bad lr {lr!r}")
        slots = self._expected_slots(steps)
        expected = {f"{slot}.{k}": (slot, k) for slot in slots for k in self._keys}
        missing = sorted(set(expected) - set(arrays))
        if missing:
            raise CheckpointError(f"optimizer state ({self.name}) is missing arrays {missing}")
        unexpected = sorted(set(arrays) - set(expected))
        if unexpected:
            raise CheckpointError(
                f"optimizer state ({self.name}) has unexpected arrays {unexpected}"
            )
        new_state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self._slots}
        for name, (slot, k) in expected.items():
            a = np.asarray(arrays[name])
            known = self._shapes.get(k)
            if known is not None and a.shape != known[0]:
                raise CheckpointError(
                    f"optimizer state array {name!r} has shape {a.shape}, "
                    f"expected {known[0]} like parameter {k!r}"
                )
            if not np.issubdtype(a.dtype, np.floating):
                raise CheckpointError(f"optimizer state array {name!r} has dtype {a.dtype}")
            dtype = known[1] if known is not None else a.dtype
            new_state[slot][k] = np.array(a, dtype=dtype, copy=True)
        self._state = new_state
        self.steps = steps
        self.lr = float(lr)


class SGD(_Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and coupled L2 decay."""

    name = "sgd"
    _slots = ("momentum",)

    def __init__(self, params_keys_or_params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params_keys_or_params, lr)
        self.momentum = check("momentum", momentum, _UNIT, "SGD")
        self.weight_decay = check("weight_decay", weight_decay, _NON_NEGATIVE, "SGD")
        nesterov = check("nesterov", nesterov, Bool(), "SGD")
        if nesterov and self.momentum == 0.0:
            raise LstmCliError("SGD: nesterov=True needs momentum > 0")
        self.nesterov = nesterov

    def _hyper(self):
        return {
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _expected_slots(self, steps):
        return self._slots if steps > 0 and self.momentum != 0.0 else ()

    def step(self, params: dict, grads: Mapping[str, np.ndarray]) -> None:
        """Apply one update to ``params`` in place."""
        self._prepare(params, grads)
        lr, mu, wd = float(self.lr), self.momentum, self.weight_decay
        bufs = self._state["momentum"]
        for k in self._keys:
            p, g = params[k], grads[k]
            a, b = self._buffers(k, p)
            d = g
            if wd != 0.0:
                np.multiply(p, wd, out=a)
                a += g  # a = g + wd * p
                d = a
            if mu != 0.0:
                buf = bufs.get(k)
                if buf is None:
                    buf = bufs[k] = np.array(d, dtype=p.dtype, copy=True)  # b_1 = g_1
                else:
                    buf *= mu
                    buf += d  # b_t = mu b_{t-1} + g_t
                if self.nesterov:
                    np.multiply(buf, mu, out=b)
                    b += d  # g_t + mu b_t
                    d = b
                else:
                    d = buf
            np.multiply(d, lr, out=b)
            p -= b
        self.steps += 1


class Adam(_Optimizer):
    """Adam with bias correction; ``decoupled=True`` gives AdamW (decoupled weight decay)."""

    _slots = ("m", "v")

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        super().__init__(params, lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise param_error("betas", "a pair (beta1, beta2)", betas, "Adam") from None
        self.betas = (check("betas[0]", b1, _UNIT, "Adam"), check("betas[1]", b2, _UNIT, "Adam"))
        self.eps = check("eps", eps, _POSITIVE, "Adam")
        self.weight_decay = check("weight_decay", weight_decay, _NON_NEGATIVE, "Adam")
        self.decoupled = check("decoupled", decoupled, Bool(), "Adam")

    @property
    def name(self):  # type: ignore[override]
        return "adamw" if self.decoupled else "adam"

    def _hyper(self):
        return {
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "decoupled": self.decoupled,
        }

    def step(self, params: dict, grads: Mapping[str, np.ndarray]) -> None:
        """Apply one update to ``params`` in place."""
        self._prepare(params, grads)
        lr, wd, eps = float(self.lr), self.weight_decay, self.eps
        b1, b2 = self.betas
        t = self.steps + 1
        step_size = lr / (1.0 - b1**t)
        bc2_sqrt = math.sqrt(1.0 - b2**t)
        ms, vs = self._state["m"], self._state["v"]
        for k in self._keys:
            p, g = params[k], grads[k]
            a, b = self._buffers(k, p)
            if wd != 0.0:
                if self.decoupled:
                    p *= 1.0 - lr * wd  # AdamW: decay the weights directly
                else:
                    np.multiply(p, wd, out=a)
                    a += g  # coupled L2: g + wd * p
                    g = a
            m = ms.get(k)
            if m is None:
                m = ms[k] = np.zeros_like(p)
                vs[k] = np.zeros_like(p)
            v = vs[k]
            m *= b1
            np.multiply(g, 1.0 - b1, out=b)
            m += b  # m = b1 m + (1 - b1) g
            v *= b2
            np.multiply(g, g, out=b)
            b *= 1.0 - b2
            v += b  # v = b2 v + (1 - b2) g^2
            np.sqrt(v, out=b)
            b /= bc2_sqrt
            b += eps  # sqrt(v_hat) + eps
            np.divide(m, b, out=b)
            b *= step_size
            p -= b
        self.steps = t


def make_optimizer(
    name, params, lr, momentum=0.9, nesterov=False, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
):
    """Build ``"sgd"`` (SGD), ``"adam"`` (Adam + coupled L2) or ``"adamw"`` (decoupled decay)."""
    name = check("name", name, Options(*OPTIMIZERS), "make_optimizer")
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return Adam(
        params, lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=(name == "adamw")
    )

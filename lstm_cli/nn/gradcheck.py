"""Gradient checking: analytic BPTT gradients against central finite differences.

One implementation shared by the tests and by ``lstm-gradcheck``. Everything runs in
float64. An entry passes when |a - n| <= max(tol * max(|a|, |n|), noise): relative
error tol, except that entries too small for finite differences to resolve are judged
against ``noise``, the round-off floor of the difference quotient (``roundoff_floor``:
16 x the stencil's weight x machine epsilon x max(|loss|, 1) / eps, ~1e-11 at the
defaults). The error reported per entry is |a - n| / max(|a|, |n|, noise / tol), so a
parameter passes when its largest error is <= tol, and 0 vs 0 counts as 0.

Why the floor: the loss itself is only known to ~1e-16 |L|, so a difference quotient
cannot resolve an entry below ~1e-16 |L| / eps however right the gradient is, and
entries of 1e-8 and less are common deep in a stacked LSTM. With a pure relative
measure, lstm-gradcheck failed correct gradients on ~6 % of random problems. A wrong
gradient is still caught: the floor is ~1e-11 in absolute terms, far below any real bug.

Why the default stencil is the fourth-order one: the five-point central stencil
(-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h has truncation error O(h^4), so at
h = 1e-3 the truncation error (~1e-12 relative) sits well under tol while the round-off
floor stays ~1e-11. The two-point form (f(x+h) - f(x-h)) / 2h (``order=2``, h = 1e-5)
has truncation O(h^2) and a floor ~100x higher. Calibration (40 seeds x both heads x
1-3 layers, correct gradients): the worst entry used 6 % of its allowance at order 4,
h = 1e-3 (at h = 3e-3, truncation made 1 of 240 problems fail), 8 % at order 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .model import LSTMClassifier


def rel_error(analytic, numeric, floor=1e-12) -> np.ndarray:
    """Elementwise |a - n| / max(|a|, |n|, floor)."""
    a = np.asarray(analytic, np.float64)
    n = np.asarray(numeric, np.float64)
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)


DEFAULT_EPS = {2: 1e-5, 4: 1e-3}
ROUNDOFF_MARGIN = 16.0  # roundoff_floor's safety factor over the one-ulp estimate
# order -> ((offset k in units of h, weight of f(x+kh) - f(x-kh)), ...), denominator in units of h.
# Written as symmetric differences so that a loss that does not depend on an entry gives
# exactly 0 (a weighted sum of equal values would not, in floating point).
_STENCILS = {
    2: (((1.0, 1.0),), 2.0),
    4: (((1.0, 8.0), (2.0, -1.0)), 12.0),
}


def roundoff_floor(loss, eps=None, order=4) -> float:
    """Absolute error a central difference of ``loss`` with step eps cannot get below.

    Each f(x +- kh) carries a rounding error of ~machine epsilon x |loss|; the stencil
    adds them with weights w_k / (denominator x eps). ROUNDOFF_MARGIN covers the loss
    being computed through many operations (measured: the actual error stays <= ~1/16
    of this floor on random problems).
    """
    eps = DEFAULT_EPS[order] if eps is None else float(eps)
    pairs, denom = _STENCILS[order]
    weight = 2.0 * sum(abs(w) for _, w in pairs) / denom
    return (
        ROUNDOFF_MARGIN
        * weight
        * float(np.finfo(np.float64).eps)
        * max(abs(float(loss)), 1.0)
        / eps
    )


def numerical_gradient(f, array, flat_indices, eps=None, order=4) -> np.ndarray:
    """Central differences of the scalar f() w.r.t. array.flat[i] for i in flat_indices.

    order=2: (f(x+h) - f(x-h)) / 2h; order=4: the five-point stencil (module docstring).
    eps=None takes DEFAULT_EPS[order]. ``array`` is perturbed in place and restored
    exactly (the saved value is written back).
    """
    if order not in _STENCILS:
        raise ValueError(f"order must be 2 or 4; got {order!r}")
    eps = DEFAULT_EPS[order] if eps is None else float(eps)
    pairs, denom = _STENCILS[order]
    flat = array.reshape(-1)  # a view: array must be contiguous
    if not np.shares_memory(flat, array):
        raise ValueError("numerical_gradient needs a contiguous array")
    out = np.empty(len(flat_indices))
    for n, idx in enumerate(flat_indices):
        saved = flat[idx]
        total = 0.0
        for k, w in pairs:
            flat[idx] = saved + k * eps
            f_plus = f()
            flat[idx] = saved - k * eps
            total += w * (f_plus - f())
        flat[idx] = saved
        out[n] = total / (denom * eps)
    return out


def vjp_check(forward, inputs: dict, upstream, eps=None, order=4):
    """Finite-difference gradients of sum(forward(**inputs) * upstream) w.r.t. each input.

    The cs231n vector-Jacobian form: ``upstream`` is a random array shaped like the
    output, never ones. Returns {name: numeric gradient} for every array in ``inputs``.
    """

    def f():
        return float(np.sum(forward(**inputs) * upstream))

    grads = {}
    for name, arr in inputs.items():
        grads[name] = numerical_gradient(f, arr, np.arange(arr.size), eps, order).reshape(arr.shape)
    return grads


@dataclass
class ParamCheck:
    name: str
    shape: tuple
    checked: int
    max_rel_error: float
    passed: bool


@dataclass
class GradcheckReport:
    head: str
    num_layers: int
    eps: float
    order: int
    tol: float
    loss: float
    noise: float = (
        0.0  # roundoff_floor: entries are judged by |a - n| <= max(tol max(|a|, |n|), noise)
    )
    rows: list = field(default_factory=list)
    bidirectional: bool = False

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        for r in d["rows"]:
            r["shape"] = list(r["shape"])
        return d


def random_problem(
    input_size=3,
    hidden_size=4,
    num_classes=3,
    num_layers=1,
    head="last",
    batch=4,
    max_len=5,
    forget_bias=1.0,
    seed=0,
    scale=0.5,
    bidirectional=False,
):
    """A small float64 model with *every* parameter randomised (biases too), and a random
    right-padded batch with mixed lengths including 1 and max_len (padding filled with
    large garbage, which must not matter). Returns (model, x (B,T,I), lengths (B,), y (B,)).
    """
    rng = np.random.default_rng(seed)
    model = LSTMClassifier(
        input_size,
        hidden_size,
        num_classes,
        num_layers=num_layers,
        head=head,
        forget_bias=forget_bias,
        dtype="float64",
        seed=rng,
        bidirectional=bidirectional,
    )
    for p in model.params.values():
        p[...] = rng.normal(0.0, scale, size=p.shape)
    lengths = rng.integers(1, max_len + 1, size=batch)
    lengths[0] = max_len
    if batch > 1:
        lengths[1] = 1
    x = rng.normal(size=(batch, max_len, input_size))
    pad = np.arange(max_len)[None, :] >= lengths[:, None]
    x[pad] = rng.normal(0.0, 100.0, size=(int(pad.sum()), input_size))
    y = rng.integers(0, num_classes, size=batch)
    return model, x, lengths, y


def check_model(
    model: LSTMClassifier,
    x,
    lengths,
    y,
    *,
    eps=None,
    order=4,
    tol=1e-6,
    max_entries=None,
    seed=0,
    class_weights=None,
    analytic=None,
) -> GradcheckReport:
    """Compare ``model.loss_and_grads`` (or ``analytic``) with central differences.

    Checks every entry of every parameter (or a seeded random sample of ``max_entries``
    per parameter when it has more) and of the input x. ``analytic`` is an optional
    callable (model, x, lengths, y) -> (loss, grads, dx), so a test can substitute a
    deliberately broken backward and see the check fail.
    """
    x = np.array(x, dtype=np.float64)  # our own copy, perturbed in place
    if analytic is None:
        loss, grads, dx = model.loss_and_grads(x, lengths, y, class_weights, return_dx=True)
    else:
        loss, grads, dx = analytic(model, x, lengths, y)
    rng = np.random.default_rng(seed)

    def f():
        return model.loss(x, lengths, y, class_weights)

    eps = DEFAULT_EPS[order] if eps is None else float(eps)
    noise = roundoff_floor(loss, eps, order)
    report = GradcheckReport(
        model.head, model.num_layers, eps, order, tol, float(loss), noise,
        bidirectional=model.bidirectional,
    )  # fmt: skip
    targets = [(k, model.params[k], grads[k]) for k in model.params] + [("input x", x, dx)]
    for name, arr, a_grad in targets:
        if max_entries and arr.size > max_entries:
            idx = np.sort(rng.choice(arr.size, size=max_entries, replace=False))
        else:
            idx = np.arange(arr.size)
        numeric = numerical_gradient(f, arr, idx, eps, order)
        err = rel_error(
            np.asarray(a_grad).reshape(-1)[idx], numeric, floor=max(noise / tol, 1e-300)
        )
        worst = float(err.max()) if err.size else 0.0
        report.rows.append(ParamCheck(name, tuple(arr.shape), int(idx.size), worst, worst <= tol))
    return report

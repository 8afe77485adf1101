"""Gradient checking: analytic BPTT gradients against central finite differences.

One implementation shared by the tests and by ``lstm-gradcheck``. Everything runs in
float64. An entry passes when |a - n| <= max(tol * max(|a|, |n|), noise): relative
error tol, except that entries too small for finite differences to resolve are judged
against ``noise``, the round-off floor of the difference quotient (``roundoff_floor``:
16 x the stencil's weight x machine epsilon x max(|loss|, 1) / eps, ~1e-11 at the
defaults). The error reported per entry is |a - n| / max(|a|, |n|, noise / tol), so a
parameter passes when its largest error is <= tol, and 0 vs 0 counts as 0. A check
whose floor is above tol x the largest gradient entry is unresolved, and fails
(``GradcheckReport.resolved``): an eps that small lets any gradient through.

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
    return piecewise_gradient(f, None, array, flat_indices, eps, order)[0]


KINK_RETRIES = 3  # piecewise_gradient: a stencil across a kink is redone at eps/10, /100, /1000


def piecewise_gradient(f, piece, array, flat_indices, eps=None, order=4):
    """numerical_gradient of a piecewise-smooth f: (gradient, step) per entry.

    piece: None (f is smooth), or a callable giving, right after a call of f, which
    smooth piece of f that point was in (an array: the max head's chosen steps). An
    entry whose stencil leaves the piece of the unperturbed point differentiates across
    a kink, where the difference quotient is not the gradient: it is redone with a step
    10x smaller, up to KINK_RETRIES times; its step is the one used, or NaN (and its
    gradient NaN) when every step crossed the kink.
    """
    if order not in _STENCILS:
        raise ValueError(f"order must be 2 or 4; got {order!r}")
    eps = DEFAULT_EPS[order] if eps is None else float(eps)
    pairs, denom = _STENCILS[order]
    flat = array.reshape(-1)  # a view: array must be contiguous
    if not np.shares_memory(flat, array):
        raise ValueError("numerical_gradient needs a contiguous array")
    if piece is None:
        tries, left = 1, lambda: False
    else:
        f()
        here = np.array(piece(), copy=True)
        tries, left = KINK_RETRIES + 1, lambda: not np.array_equal(piece(), here)
    out = np.full(len(flat_indices), np.nan)
    steps = np.full(len(flat_indices), np.nan)
    for n, idx in enumerate(flat_indices):
        saved = flat[idx]
        for h in eps / 10.0 ** np.arange(tries):
            total, crossed = 0.0, False
            for k, w in pairs:
                flat[idx] = saved + k * h
                f_plus = f()
                crossed = crossed or left()  # right after the call of f it describes
                flat[idx] = saved - k * h
                total += w * (f_plus - f())
                crossed = crossed or left()
            flat[idx] = saved
            if not crossed:
                out[n], steps[n] = total / (denom * h), h
                break
    return out, steps


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
    at_kink: int = 0  # entries left out: every step crossed a kink of the max head


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
    largest: float = 0.0  # the largest |gradient| entry checked, analytic or numeric

    @property
    def resolved(self) -> bool:
        """Whether the check can tell: the round-off floor is at most tol x the largest
        gradient entry, so that entry at least is held to the relative tolerance. With an
        eps so small that the floor is above the gradients, any gradient, a zeroed one
        included, would be within it."""
        return self.noise <= self.tol * self.largest

    @property
    def passed(self) -> bool:
        return self.resolved and all(r.passed for r in self.rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"], d["resolved"] = self.passed, self.resolved
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
    right-padded batch (padding filled with large garbage, which must not matter) of
    lengths spread from max_len down to 1, placed so that their longest-first order is
    one cycle (no involution, so a mix-up of a permutation with its inverse shows), and
    padded one step past the longest. Returns (model, x (B, max_len + 1, I), lengths
    (B,), y (B,))."""
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
    k = np.arange(batch)
    longest_first = max_len - ((max_len - 1) * k) // max(batch - 1, 1)  # max_len .. 1
    lengths = np.empty(batch, dtype=np.int64)
    lengths[(k + 1) % batch] = longest_first
    x = rng.normal(size=(batch, max_len + 1, input_size))
    pad = np.arange(max_len + 1)[None, :] >= lengths[:, None]
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
    dropout_masks=None,
) -> GradcheckReport:
    """Compare ``model.loss_and_grads`` (or ``analytic``) with central differences.

    Checks every entry of every parameter (or a seeded random sample of ``max_entries``
    per parameter when it has more) and of the input x. ``analytic`` is an optional
    callable (model, x, lengths, y) -> (loss, grads, dx), so a test can substitute a
    deliberately broken backward and see the check fail. dropout_masks: check training
    mode with these fixed masks (as ``model.draw_dropout_masks`` gives them).
    """
    x = np.array(x, dtype=np.float64)  # our own copy, perturbed in place
    mode = {} if dropout_masks is None else {"training": True, "dropout_masks": dropout_masks}
    if analytic is None:
        loss, grads, dx = model.loss_and_grads(x, lengths, y, class_weights, return_dx=True, **mode)
    else:
        loss, grads, dx = analytic(model, x, lengths, y)
    rng = np.random.default_rng(seed)
    chosen = []  # the max head's piece: the step holding each unit's maximum

    def f():
        logits, cache = model.forward(x, lengths, **mode)
        if model.head == "max":
            chosen[:] = [cache.head.rows]
        return model.loss_from_logits(logits, cache, y, class_weights)[0]

    piece = (lambda: chosen[0]) if model.head == "max" else None
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
        numeric, steps = piecewise_gradient(f, piece, arr, idx, eps, order)
        smooth = ~np.isnan(steps)  # the entries not at a kink of the max head
        a_checked, numeric = np.asarray(a_grad).reshape(-1)[idx][smooth], numeric[smooth]
        floor = noise * (eps / steps[smooth]) / tol  # a smaller step: a higher floor
        err = rel_error(a_checked, numeric, floor=np.maximum(floor, 1e-300))
        worst = float(err.max()) if err.size else 0.0
        if err.size:
            report.largest = max(
                report.largest, float(np.max(np.abs(a_checked))), float(np.max(np.abs(numeric)))
            )
        report.rows.append(
            ParamCheck(
                name, tuple(arr.shape), int(smooth.sum()), worst, worst <= tol,
                at_kink=int(idx.size - smooth.sum()),
            )
        )  # fmt: skip
    return report

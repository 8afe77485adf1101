"""Heads and the softmax cross-entropy: forward values and backward vs finite differences."""

import numpy as np
import pytest

from lstm_cli.nn.gradcheck import numerical_gradient, rel_error, vjp_check
from lstm_cli.nn.heads import (
    all_steps_backward,
    all_steps_forward,
    last_step_backward,
    last_step_forward,
    max_backward,
    max_forward,
    mean_backward,
    mean_forward,
)
from lstm_cli.nn.losses import log_softmax, softmax, softmax_cross_entropy

TOL = 1e-6


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_last_step_gathers_the_given_rows(rng):
    N, H, K = 9, 2, 4
    h = rng.normal(size=(N, H))
    rows = np.array([7, 1, 4])
    logits, _ = last_step_forward(h, rows, np.eye(H, K), np.zeros(K))
    np.testing.assert_array_equal(logits[:, :H], h[rows])


def test_last_step_backward(rng):
    N, H, K = 9, 2, 4
    h = rng.normal(size=(N, H))
    V = rng.normal(size=(H, K))
    a = rng.normal(size=K)
    rows = np.array([7, 1, 4])
    up = rng.normal(size=(3, K))
    numeric = vjp_check(
        lambda h, V, a: last_step_forward(h, rows, V, a)[0], dict(h=h, V=V, a=a), up
    )
    _, cache = last_step_forward(h, rows, V, a)
    dh, dV, da = last_step_backward(up, cache, V)
    for name, an in dict(h=dh, V=dV, a=da).items():
        assert rel_error(an, numeric[name]).max() < TOL, name
    # only the last step of each sequence receives gradient
    assert sorted(np.flatnonzero(np.abs(dh).sum(axis=1))) == [1, 4, 7]
    dh_last, dV2, da2 = last_step_backward(up, cache, V, dense=False)  # just those rows
    np.testing.assert_array_equal(dh_last, dh[rows])
    np.testing.assert_array_equal(dV2, dV)
    np.testing.assert_array_equal(da2, da)


def test_all_steps_backward(rng):
    N, H, K = 7, 2, 3
    h = rng.normal(size=(N, H))
    V = rng.normal(size=(H, K))
    a = rng.normal(size=K)
    up = rng.normal(size=(N, K))
    numeric = vjp_check(lambda h, V, a: all_steps_forward(h, V, a)[0], dict(h=h, V=V, a=a), up)
    _, cache = all_steps_forward(h, V, a)
    dh, dV, da = all_steps_backward(up, cache, V)
    for name, an in dict(h=dh, V=dV, a=da).items():
        assert rel_error(an, numeric[name]).max() < TOL, name


def test_bidirectional_last_step_backward(rng):
    """With first_rows, the forward half is read at each sequence's last row and the reverse
    half at its first row; the dense and the dense=False gradients agree."""
    N, H2, K = 9, 4, 3
    h = rng.normal(size=(N, H2))
    V = rng.normal(size=(H2, K))
    a = rng.normal(size=K)
    rows, first = np.array([7, 1, 4]), np.array([0, 1, 2])
    logits, cache = last_step_forward(h, rows, V, a, first)
    top = np.concatenate([h[rows, :2], h[first, 2:]], axis=1)
    np.testing.assert_allclose(logits, top @ V + a, rtol=1e-14)
    up = rng.normal(size=(3, K))
    numeric = vjp_check(
        lambda h, V, a: last_step_forward(h, rows, V, a, first)[0], dict(h=h, V=V, a=a), up
    )
    dh, dV, da = last_step_backward(up, cache, V)
    for name, an in dict(h=dh, V=dV, a=da).items():
        assert rel_error(an, numeric[name]).max() < TOL, name
    dh_last = last_step_backward(up, cache, V, dense=False)[0]
    np.testing.assert_array_equal(dh_last[:, :2], dh[rows, :2])
    np.testing.assert_array_equal(dh_last[:, 2:], dh[first, 2:])


def test_mean_head_forward_and_backward(rng):
    """Packed layout of lengths (3, 1, 2) sorted as (3, 2, 1): steps of 3, 2, 1 rows; the
    caller's sequence 0 is sorted first, sequence 2 second, sequence 1 last."""
    H, K = 3, 4
    offsets, order = np.array([0, 3, 5, 6]), np.array([0, 2, 1])
    lengths = np.array([3, 1, 2])
    seq = np.array([0, 2, 1, 0, 2, 0])  # the caller's sequence of each packed row
    h = rng.normal(size=(6, H))
    V = rng.normal(size=(H, K))
    a = rng.normal(size=K)
    logits, cache = mean_forward(h, offsets, order, lengths, seq, V, a)
    m = np.stack([h[seq == b].mean(axis=0) for b in range(3)])
    np.testing.assert_allclose(logits, m @ V + a, rtol=1e-14)
    up = rng.normal(size=(3, K))
    numeric = vjp_check(
        lambda h, V, a: mean_forward(h, offsets, order, lengths, seq, V, a)[0],
        dict(h=h, V=V, a=a),
        up,
    )
    dh, dV, da = mean_backward(up, cache, V)
    for name, an in dict(h=dh, V=dV, a=da).items():
        assert rel_error(an, numeric[name]).max() < TOL, name


def test_max_head_forward_and_backward(rng):
    """The packed layout of the mean head's test; each unit's gradient lands on the one
    row of its sequence that holds the unit's maximum, the first of them on a tie."""
    H, K = 3, 4
    offsets, order = np.array([0, 3, 5, 6]), np.array([0, 2, 1])
    seq = np.array([0, 2, 1, 0, 2, 0])  # the caller's sequence of each packed row
    h = rng.normal(size=(6, H))
    V = rng.normal(size=(H, K))
    a = rng.normal(size=K)
    logits, cache = max_forward(h, offsets, order, V, a)
    m = np.stack([h[seq == b].max(axis=0) for b in range(3)])
    np.testing.assert_allclose(logits, m @ V + a, rtol=1e-14)
    up = rng.normal(size=(3, K))
    numeric = vjp_check(lambda h, V, a: max_forward(h, offsets, order, V, a)[0],
                        dict(h=h, V=V, a=a), up)  # fmt: skip
    dh, dV, da = max_backward(up, cache, V)
    for name, an in dict(h=dh, V=dV, a=da).items():
        assert rel_error(an, numeric[name]).max() < TOL, name
    assert (dh != 0).sum() == 3 * H  # one row per (sequence, unit)
    h[3] = h[0]  # sequence 0's steps 0 and 1 tie on every unit: step 0 keeps the gradient
    dh = max_backward(up, max_forward(h, offsets, order, V, a)[1], V)[0]
    assert not dh[3].any() and (dh[0] == (up[0] @ V.T) * (h[0] >= h[5])).all()


def test_cross_entropy_gradient(rng):
    N, K = 5, 4
    logits = rng.normal(size=(N, K))
    y = rng.integers(0, K, size=N)
    w = rng.uniform(0.1, 1.0, size=N)
    loss, dlogits = softmax_cross_entropy(logits, y, w)
    numeric = numerical_gradient(
        lambda: softmax_cross_entropy(logits, y, w)[0], logits, np.arange(logits.size)
    ).reshape(N, K)
    assert rel_error(dlogits, numeric).max() < TOL
    expected = -np.sum(w * np.log(softmax(logits)[np.arange(N), y]))
    assert loss == pytest.approx(expected, rel=1e-12)


def test_uniform_logits_give_log_k():
    K = 7
    loss, _ = softmax_cross_entropy(np.zeros((3, K)), np.array([0, 3, 6]), np.full(3, 1 / 3))
    assert loss == pytest.approx(np.log(K), rel=1e-12)


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_huge_logits_stay_finite(scale):
    logits = np.array([[scale, -scale, 0.0], [-scale, scale, 0.5]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        loss, dlogits = softmax_cross_entropy(logits, np.array([1, 1]), np.full(2, 0.5, np.float32))
        lp = log_softmax(logits)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits)) and np.all(np.isfinite(lp))
    assert loss == pytest.approx(0.5 * 2 * scale, rel=1e-6)  # first row is wrong by 2*scale


def test_piecewise_gradient_redoes_a_stencil_across_a_kink():
    """f = max(x0, x1) near a tie: a step of 1e-3 crosses it, 1e-4 does not; at the tie
    itself every step crosses, and that entry is left out (NaN)."""
    from lstm_cli.nn.gradcheck import piecewise_gradient

    x = np.array([1.0, 1.0005])
    numeric, steps = piecewise_gradient(lambda: x.max(), lambda: x.argmax(), x, [0, 1], 1e-3)
    np.testing.assert_allclose(numeric, [0.0, 1.0], atol=1e-10)
    np.testing.assert_array_equal(steps, [1e-4, 1e-4])  # both cross at 1e-3 (and 2e-3)
    assert numerical_gradient(lambda: x.max(), x, [1], 1e-3)[0] != pytest.approx(1.0)
    x[:] = 1.0
    numeric, steps = piecewise_gradient(lambda: x.max(), lambda: x.argmax(), x, [0], 1e-3)
    assert np.isnan(numeric[0]) and np.isnan(steps[0])
    np.testing.assert_array_equal(x, [1.0, 1.0])  # restored

"""The LSTM cell and layer: equations, hand-written backward vs finite differences."""

import numpy as np
import pytest

from lstm_cli.nn import reference
from lstm_cli.nn.gradcheck import rel_error, vjp_check
from lstm_cli.nn.lstm import (
    lstm_layer_backward,
    lstm_layer_forward,
    lstm_step_backward,
    lstm_step_forward,
    sigmoid,
)

TOL = 1e-6


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _layer_problem(rng, T=4, B=3, I=2, H=3):
    x = rng.normal(size=(T, B, I))
    W = rng.normal(0, 0.6, size=(I + H, 4 * H))
    b = rng.normal(0, 0.6, size=4 * H)
    h0 = rng.normal(0, 0.5, size=(B, H))
    c0 = rng.normal(0, 0.5, size=(B, H))
    return x, W, b, h0, c0


def test_sigmoid_is_stable_and_exact():
    z = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4])
    with np.errstate(all="raise"):
        s = sigmoid(z)
    # the tanh form is accurate to ~1e-16 absolute (not relative deep in the lower tail)
    np.testing.assert_allclose(s[1:-1], _sig(z[1:-1]), rtol=0, atol=2e-16)
    assert s[0] == 0.0 and s[-1] == 1.0


def test_zero_weights_give_half_gates():
    B, I, H = 2, 3, 4
    x = np.ones((B, I))
    c_prev = np.full((B, H), 0.8)
    h, c, cache = lstm_step_forward(
        x, np.zeros((B, H)), c_prev, np.zeros((I + H, 4 * H)), np.zeros(4 * H), forget_bias=0.0
    )
    # i = f = o = 0.5, j = tanh(0) = 0  =>  c = 0.5 * c_prev, h = 0.5 * tanh(c)
    np.testing.assert_allclose(cache.gates[:, :H], 0.5)
    np.testing.assert_allclose(cache.gates[:, H : 2 * H], 0.0)
    np.testing.assert_allclose(c, 0.4)
    np.testing.assert_allclose(h, 0.5 * np.tanh(0.4))


def test_forget_bias_inside_the_sigmoid():
    B, I, H = 1, 1, 1
    zeros = np.zeros((I + H, 4 * H))
    _, _, cache = lstm_step_forward(
        np.zeros((B, I)),
        np.zeros((B, H)),
        np.zeros((B, H)),
        zeros,
        np.zeros(4 * H),
        forget_bias=1.0,
    )
    np.testing.assert_allclose(cache.gates[0, 2], _sig(1.0))  # f = sigmoid(0 + 1)
    np.testing.assert_allclose(cache.gates[0, 0], 0.5)  # i unaffected


@pytest.mark.parametrize("forget_bias", [0.0, 1.0, -0.7])
def test_layer_forward_matches_tf_reference(rng, forget_bias):
    x, W, b, h0, c0 = _layer_problem(rng, T=6, B=4, I=3, H=5)
    h, _ = lstm_layer_forward(x, W, b, forget_bias, h0, c0)
    ref, _ = reference.forward(x.transpose(1, 0, 2), np.full(4, 6), W, b, forget_bias, h0, c0)
    np.testing.assert_allclose(h.transpose(1, 0, 2), ref, rtol=1e-13, atol=1e-14)


def test_layer_forward_matches_step_forward(rng):
    x, W, b, h0, c0 = _layer_problem(rng)
    h_layer, cache = lstm_layer_forward(x, W, b, 0.9, h0, c0)
    h, c = h0, c0
    for t in range(x.shape[0]):
        h, c, _ = lstm_step_forward(x[t], h, c, W, b, 0.9)
        np.testing.assert_allclose(h_layer[t], h, rtol=1e-14, atol=1e-15)
        if t + 1 < x.shape[0]:  # c_t is the c_prev of step t+1
            np.testing.assert_allclose(
                cache.c_prev.reshape(h_layer.shape)[t + 1], c, rtol=1e-14, atol=1e-15
            )


def test_step_backward_matches_finite_differences(rng):
    B, I, H = 3, 2, 3
    x = rng.normal(size=(B, I))
    h_prev = rng.normal(size=(B, H))
    c_prev = rng.normal(size=(B, H))
    W = rng.normal(0, 0.6, size=(I + H, 4 * H))
    b = rng.normal(0, 0.6, size=4 * H)
    up_h = rng.normal(size=(B, H))  # random upstream gradients (VJP form), never ones
    up_c = rng.normal(size=(B, H))

    def fwd(x, h_prev, c_prev, W, b):
        h, c, _ = lstm_step_forward(x, h_prev, c_prev, W, b, 1.0)
        return np.concatenate([h, c], axis=1)

    upstream = np.concatenate([up_h, up_c], axis=1)
    inputs = dict(x=x, h_prev=h_prev, c_prev=c_prev, W=W, b=b)
    numeric = vjp_check(fwd, inputs, upstream)
    _, _, cache = lstm_step_forward(x, h_prev, c_prev, W, b, 1.0)
    dx, dh_prev, dc_prev, dW, db = lstm_step_backward(up_h, up_c, cache, W)
    for name, analytic in dict(x=dx, h_prev=dh_prev, c_prev=dc_prev, W=dW, b=db).items():
        assert rel_error(analytic, numeric[name]).max() < TOL, name


@pytest.mark.parametrize("forget_bias", [1.0, 0.0])
def test_layer_backward_matches_finite_differences(rng, forget_bias):
    x, W, b, h0, c0 = _layer_problem(rng, T=5, B=3, I=2, H=3)
    upstream = rng.normal(size=(5, 3, 3))

    def fwd(x, W, b, h0, c0):
        return lstm_layer_forward(x, W, b, forget_bias, h0, c0)[0]

    numeric = vjp_check(fwd, dict(x=x, W=W, b=b, h0=h0, c0=c0), upstream)
    _, cache = lstm_layer_forward(x, W, b, forget_bias, h0, c0)
    dx, dW, db, dh0, dc0 = lstm_layer_backward(upstream, cache, W)
    for name, analytic in dict(x=dx, W=dW, b=db, h0=dh0, c0=dc0).items():
        err = rel_error(analytic, numeric[name]).max()
        assert err < TOL, f"{name}: max relative error {err:.2e}"


def test_layer_backward_equals_chained_step_backward(rng):
    x, W, b, h0, c0 = _layer_problem(rng)
    upstream = rng.normal(size=x.shape[:2] + (3,))
    _, cache = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    dx, dW, db, dh0, dc0 = lstm_layer_backward(upstream, cache, W)
    # reference: the per-step backward chained by hand (README.md, "The model")
    steps, h, c = [], h0, c0
    for t in range(x.shape[0]):
        h, c, sc = lstm_step_forward(x[t], h, c, W, b, 1.0)
        steps.append(sc)
    dh_next = np.zeros_like(h0)
    dc_next = np.zeros_like(c0)
    dW_ref, db_ref = np.zeros_like(W), np.zeros_like(b)
    for t in reversed(range(x.shape[0])):
        dx_t, dh_next, dc_next, dW_t, db_t = lstm_step_backward(
            upstream[t] + dh_next, dc_next, steps[t], W
        )
        np.testing.assert_allclose(dx[t], dx_t, rtol=1e-12, atol=1e-14)
        dW_ref = dW_ref + dW_t
        db_ref = db_ref + db_t
    np.testing.assert_allclose(dW, dW_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dh0, dh_next, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dc0, dc_next, rtol=1e-12, atol=1e-14)


def test_broken_backward_is_caught(rng):
    """Dropping the recurrent term from dh (backward run with the h-rows of W zeroed, so
    dh_next = dz @ Wh.T vanishes) must make the finite-difference check fail."""
    x, W, b, h0, c0 = _layer_problem(rng, T=5)
    upstream = rng.normal(size=(5, 3, 3))
    numeric = vjp_check(lambda W: lstm_layer_forward(x, W, b, 1.0, h0, c0)[0], dict(W=W), upstream)
    _, cache = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    W_broken = W.copy()
    W_broken[x.shape[2] :] = 0.0
    _, dW_broken, _, _, _ = lstm_layer_backward(upstream, cache, W_broken)
    assert rel_error(dW_broken, numeric["W"]).max() > 1e-2
    _, dW, _, _, _ = lstm_layer_backward(upstream, cache, W)
    assert rel_error(dW, numeric["W"]).max() < TOL


def test_inputs_are_not_mutated(rng):
    x, W, b, h0, c0 = _layer_problem(rng)
    upstream = rng.normal(size=(4, 3, 3))
    copies = [a.copy() for a in (x, W, b, h0, c0, upstream)]
    _, cache = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    lstm_layer_backward(upstream, cache, W)
    for before, after in zip(copies, (x, W, b, h0, c0, upstream)):
        np.testing.assert_array_equal(before, after)


def test_float32_stays_float32(rng):
    x, W, b, h0, c0 = (a.astype(np.float32) for a in _layer_problem(rng))
    h, cache = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    dx, dW, db, dh0, dc0 = lstm_layer_backward(np.ones_like(h), cache, W)
    assert {a.dtype for a in (h, dx, dW, db, dh0, dc0)} == {np.dtype(np.float32)}


def test_packed_layer_equals_running_over_padding(rng):
    """With rows sorted by length, the packed layout (only the running sequences at each
    step) gives the same valid outputs and the same gradients as running every row of a
    full time-major batch over its padding, and its own gradients match finite differences."""
    from lstm_cli.nn.lstm import batch_sizes_from_lengths

    x, W, b, h0, c0 = _layer_problem(rng, T=6, B=3, I=2, H=3)
    lengths = np.array([6, 4, 1])
    sizes = batch_sizes_from_lengths(lengths, 6)
    np.testing.assert_array_equal(sizes, [3, 2, 2, 2, 1, 1])
    valid = np.arange(6)[:, None] < lengths[None, :]  # (T, B): packed order is t-major
    upstream = rng.normal(size=(6, 3, 3)) * valid[..., None]
    h_full, cache_full = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    h_packed, cache_packed = lstm_layer_forward(x[valid], W, b, 1.0, h0, c0, batch_sizes=sizes)
    assert h_packed.shape == (lengths.sum(), 3)
    np.testing.assert_allclose(h_packed, h_full[valid], rtol=1e-13, atol=1e-14)
    x_masked = np.where(valid[..., None], x, 0.0)
    _, cache_full = lstm_layer_forward(x_masked, W, b, 1.0, h0, c0)
    dx_f, dW_f, db_f, dh0_f, dc0_f = lstm_layer_backward(upstream, cache_full, W)
    dx_p, dW_p, db_p, dh0_p, dc0_p = lstm_layer_backward(upstream[valid], cache_packed, W)
    np.testing.assert_allclose(dx_p, dx_f[valid], rtol=1e-12, atol=1e-14)
    for name, p, f in (
        ("dW", dW_p, dW_f),
        ("db", db_p, db_f),
        ("dh0", dh0_p, dh0_f),
        ("dc0", dc0_p, dc0_f),
    ):
        np.testing.assert_allclose(p, f, rtol=1e-12, atol=1e-14, err_msg=name)
    x_packed = x[valid]
    numeric = vjp_check(
        lambda x_packed, W: lstm_layer_forward(x_packed, W, b, 1.0, h0, c0, batch_sizes=sizes)[0],
        dict(x_packed=x_packed, W=W),
        upstream[valid],
    )
    assert rel_error(dW_p, numeric["W"]).max() < TOL
    assert rel_error(dx_p, numeric["x_packed"]).max() < TOL


@pytest.mark.parametrize("chunk_bytes", [1, 200, 1 << 20])
def test_backward_chunking_does_not_change_gradients(rng, monkeypatch, chunk_bytes):
    """The gate factors are computed a chunk of steps at a time; any chunk size gives the
    same result."""
    from lstm_cli.nn import lstm as lstm_module

    x, W, b, h0, c0 = _layer_problem(rng, T=7, B=2, I=2, H=3)
    upstream = rng.normal(size=(7, 2, 3))
    _, cache = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    reference = lstm_layer_backward(upstream, cache, W)
    monkeypatch.setattr(lstm_module, "_CHUNK_BYTES", chunk_bytes)
    for got, want in zip(lstm_layer_backward(upstream, cache, W), reference):
        np.testing.assert_array_equal(got, want)


def test_inference_forward_without_cache_matches(rng):
    """The inference loop (its own scratch, c updated in place) gives exactly the training
    forward's h, for a full batch and for a packed one whose batch shrinks step by step."""
    from lstm_cli.nn.lstm import batch_sizes_from_lengths

    x, W, b, h0, c0 = _layer_problem(rng, T=5, B=4)
    h, cache = lstm_layer_forward(x, W, b, 1.0, h0, c0)
    h2, none = lstm_layer_forward(x, W, b, 1.0, h0, c0, need_cache=False)
    assert none is None
    np.testing.assert_array_equal(h, h2)
    lengths = np.array([5, 3, 3, 1])
    valid = np.arange(5)[:, None] < lengths[None, :]
    sizes = batch_sizes_from_lengths(lengths, 5)  # [4, 3, 3, 1, 1]
    for dtype in (np.float64, np.float32):
        args = [a.astype(dtype) for a in (x[valid], W, b)]
        h_train, _ = lstm_layer_forward(
            *args, 0.5, h0.astype(dtype), c0.astype(dtype), batch_sizes=sizes
        )
        h_infer, _ = lstm_layer_forward(
            *args, 0.5, h0.astype(dtype), c0.astype(dtype), batch_sizes=sizes, need_cache=False
        )
        np.testing.assert_array_equal(h_infer, h_train)
        h_full = lstm_layer_forward(x, W, b, 0.5, h0, c0)[0][valid]  # float64, padded batch
        tol = 1e-5 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(h_train, h_full, rtol=tol, atol=tol)


def test_backward_from_final_states_only_equals_the_dense_form(rng):
    """dh=None with dh_last (the last head's gradient w.r.t. each sequence's final h) gives
    the same gradients as the dense dh that is zero everywhere else, and matches finite
    differences of sum(dh_last * final h)."""
    from lstm_cli.nn.lstm import batch_sizes_from_lengths

    T, B, I, H = 7, 5, 2, 3
    x, W, b, h0, c0 = _layer_problem(rng, T=T, B=B, I=I, H=H)
    lengths = np.array([7, 7, 4, 2, 1])  # two end together, one ends at the first step
    sizes = batch_sizes_from_lengths(lengths, T)
    valid = np.arange(T)[:, None] < lengths[None, :]
    x_packed = x[valid]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    last_rows = offsets[lengths - 1] + np.arange(B)  # sorted batch: rank = position
    dh_last = rng.normal(size=(B, H))
    dh_dense = np.zeros((lengths.sum(), H))
    dh_dense[last_rows] = dh_last
    _, cache = lstm_layer_forward(x_packed, W, b, 0.8, h0, c0, batch_sizes=sizes)
    dense = lstm_layer_backward(dh_dense, cache, W)
    sparse = lstm_layer_backward(None, cache, W, dh_last=dh_last)
    for name, got, want in zip(("dx", "dW", "db", "dh0", "dc0"), sparse, dense):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15, err_msg=name)
    numeric = vjp_check(
        lambda x_packed, W, b: lstm_layer_forward(x_packed, W, b, 0.8, h0, c0, batch_sizes=sizes)[
            0
        ][last_rows],
        dict(x_packed=x_packed, W=W, b=b),
        dh_last,
    )
    assert rel_error(sparse[1], numeric["W"]).max() < TOL
    assert rel_error(sparse[2], numeric["b"]).max() < TOL
    assert rel_error(sparse[0], numeric["x_packed"]).max() < TOL
    with pytest.raises(ValueError, match="dh_last"):
        lstm_layer_backward(None, cache, W)


# ------------------------------------------------- the reference (lstm_cli.nn.reference)

LENGTHS = np.array([3, 7, 1, 7, 4])  # unsorted, two ending together, one of length 1


def _padded_problem(rng, lengths=LENGTHS, T=8, I=2, H=3):
    """A right-padded batch (T past the longest length) with every parameter random."""
    B = len(lengths)
    x = rng.normal(size=(B, T, I))
    W = rng.normal(0, 0.6, size=(I + H, 4 * H))
    b = rng.normal(0, 0.6, size=4 * H)
    h0 = rng.normal(0, 0.5, size=(B, H))
    c0 = rng.normal(0, 0.5, size=(B, H))
    valid = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
    return x, W, b, h0, c0, valid


@pytest.mark.parametrize("mode", ["dense", "last"])
def test_reference_matches_finite_differences(rng, mode):
    x, W, b, h0, c0, valid = _padded_problem(rng)
    B, T, _ = x.shape
    H = h0.shape[1]
    if mode == "dense":  # dh at every valid step (the all-steps head)
        dh = rng.normal(size=(B, T, H)) * valid[..., None]

        def fwd(x, W, b, h0, c0):
            return reference.forward(x, LENGTHS, W, b, 0.7, h0, c0)[0]

        upstream = dh
    else:  # dh only at each sequence's last step (the last-step head)
        upstream = rng.normal(size=(B, H))
        dh = reference.last_step_dh(upstream, LENGTHS, T)

        def fwd(x, W, b, h0, c0):
            return reference.forward(x, LENGTHS, W, b, 0.7, h0, c0)[0][np.arange(B), LENGTHS - 1]

    numeric = vjp_check(fwd, dict(x=x, W=W, b=b, h0=h0, c0=c0), upstream)
    _, cache = reference.forward(x, LENGTHS, W, b, 0.7, h0, c0)
    dx, dW, db, dh0, dc0 = reference.backward(dh, cache)
    assert not dx[~valid].any()  # padded steps get no gradient
    for name, analytic in dict(x=dx, W=dW, b=db, h0=dh0, c0=dc0).items():
        err = rel_error(analytic, numeric[name]).max()
        assert err < TOL, f"{name}: max relative error {err:.2e}"


def test_reference_ignores_head_gradient_at_padded_steps(rng):
    x, W, b, h0, c0, valid = _padded_problem(rng)
    dh = rng.normal(size=x.shape[:2] + (3,))
    _, cache = reference.forward(x, LENGTHS, W, b, 1.0, h0, c0)
    want = reference.backward(dh * valid[..., None], cache)
    for got, expected in zip(reference.backward(dh, cache), want):
        np.testing.assert_array_equal(got, expected)


def _pack(a, order, valid_sorted):
    """(B, T, ...) caller's order -> packed (N, ...) rows (sorted longest first, step-major)."""
    return a[order].transpose(1, 0, *range(2, a.ndim))[valid_sorted.T]


@pytest.mark.parametrize("mode", ["dense", "last"])
@pytest.mark.parametrize("forget_bias", [1.0, -0.4])
def test_packed_kernel_equals_the_reference(rng, mode, forget_bias):
    """The fast packed kernel gives the reference's outputs and gradients (float64), for
    both heads' dh patterns and mixed lengths including 1."""
    from lstm_cli.nn.lstm import batch_sizes_from_lengths

    x, W, b, h0, c0, valid = _padded_problem(rng)
    B, T, _ = x.shape
    H = h0.shape[1]
    order = np.argsort(-LENGTHS, kind="stable")  # longest first
    sizes = batch_sizes_from_lengths(LENGTHS[order])
    valid_sorted = valid[order][:, : sizes.size]  # (B, T') T' = longest length
    h_ref, cache_ref = reference.forward(x, LENGTHS, W, b, forget_bias, h0, c0)
    x_packed = _pack(x[:, : sizes.size], order, valid_sorted)
    h, cache = lstm_layer_forward(
        x_packed, W, b, forget_bias, h0[order], c0[order], batch_sizes=sizes
    )
    np.testing.assert_allclose(h, _pack(h_ref[:, : sizes.size], order, valid_sorted), 1e-13, 1e-14)
    if mode == "dense":
        dh_ref = rng.normal(size=(B, T, H)) * valid[..., None]
        got = lstm_layer_backward(_pack(dh_ref[:, : sizes.size], order, valid_sorted), cache, W)
    else:
        dh_last = rng.normal(size=(B, H))
        dh_ref = reference.last_step_dh(dh_last, LENGTHS, T)
        got = lstm_layer_backward(None, cache, W, dh_last=dh_last[order])
    dx_ref, dW_ref, db_ref, dh0_ref, dc0_ref = reference.backward(dh_ref, cache_ref)
    dx, dW, db, dh0, dc0 = got
    want = dict(
        dx=_pack(dx_ref[:, : sizes.size], order, valid_sorted),
        dW=dW_ref,
        db=db_ref,
        dh0=dh0_ref[order],
        dc0=dc0_ref[order],
    )
    for name, g in dict(dx=dx, dW=dW, db=db, dh0=dh0, dc0=dc0).items():
        np.testing.assert_allclose(g, want[name], rtol=1e-12, atol=1e-13, err_msg=name)

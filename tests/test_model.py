"""LSTMClassifier: whole-model gradients, padding invariance, dropout, API contract."""

import numpy as np
import pytest

from lstm_cli.errors import LstmCliError
from lstm_cli.nn.gradcheck import check_model, random_problem
from lstm_cli.nn.model import LSTMClassifier
from lstm_cli.nn.spec import HEADS

TOL = 1e-6


@pytest.mark.parametrize("head", ["last", "all"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_model_gradients_match_finite_differences(head, num_layers, seed):
    model, x, lengths, y = random_problem(
        num_layers=num_layers, head=head, seed=seed, forget_bias=0.8
    )
    report = check_model(model, x, lengths, y, tol=TOL)
    failures = [f"{r.name}: {r.max_rel_error:.2e}" for r in report.rows if not r.passed]
    assert not failures, failures
    assert {r.name for r in report.rows} == set(model.params) | {"input x"}


@pytest.mark.parametrize("head", ["last", "all"])
def test_class_weighted_loss_gradients(head):
    model, x, lengths, y = random_problem(num_layers=2, head=head, seed=3, num_classes=3)
    report = check_model(model, x, lengths, y, tol=TOL, class_weights=np.array([0.5, 2.0, 1.3]))
    assert report.passed, [(r.name, r.max_rel_error) for r in report.rows]


def test_two_point_stencil_also_available():
    model, x, lengths, y = random_problem(num_layers=1, head="last", seed=1)
    report = check_model(model, x, lengths, y, order=2, tol=1e-5)
    assert report.passed and report.order == 2 and report.eps == 1e-5


def test_gradcheck_fails_on_a_broken_backward():
    """The checker must be able to fail: a backward with one gradient perturbed or with
    the recurrent term dropped is reported, naming the parameter."""
    model, x, lengths, y = random_problem(num_layers=2, head="all", seed=0)

    def wrong_bias(model, x, lengths, y):
        loss, grads, dx = model.loss_and_grads(x, lengths, y, return_dx=True)
        grads["lstm.1.b"] = grads["lstm.1.b"] * 1.01
        return loss, grads, dx

    report = check_model(model, x, lengths, y, analytic=wrong_bias)
    assert not report.passed
    assert [r.name for r in report.rows if not r.passed] == ["lstm.1.b"]

    from lstm_cli.nn import model as model_module
    from lstm_cli.nn.lstm import lstm_layer_backward

    def no_recurrent_term(dh, cache, W, **kw):  # dh_next = dz @ Wh.T becomes zero
        I = cache.input_size
        W_broken = W.copy()
        W_broken[I:] = 0.0
        return lstm_layer_backward(dh, cache, W_broken, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(model_module, "lstm_layer_backward", no_recurrent_term)
    try:
        report = check_model(model, x, lengths, y)
    finally:
        mp.undo()
    assert not report.passed
    assert "lstm.0.W" in [r.name for r in report.rows if not r.passed]


@pytest.mark.parametrize("head", ["last", "all"])
def test_padding_invariance(head):
    """A sequence's logits, loss and gradients are the same alone and batched with longer
    sequences, whatever the padding values."""
    rng = np.random.default_rng(5)
    model = LSTMClassifier(3, 4, 3, num_layers=2, head=head, dtype="float64", seed=1)
    for p in model.params.values():
        p[...] = rng.normal(0, 0.5, size=p.shape)
    short = rng.normal(size=(1, 3, 3))
    y_short = np.array([2])
    loss_alone, grads_alone = model.loss_and_grads(short, np.array([3]), y_short)
    logits_alone = model.logits(short, np.array([3]))
    probs_alone = model.predict_proba(short, np.array([3]))

    for pad_value in (0.0, 1e3, np.nan):
        x = np.full((3, 7, 3), pad_value)
        x[0, :3] = short[0]
        x[1] = rng.normal(size=(7, 3))
        x[2, :5] = rng.normal(size=(5, 3))
        lengths = np.array([3, 7, 5])
        logits = model.logits(x, lengths)
        if head == "last":
            np.testing.assert_allclose(logits[0], logits_alone[0], rtol=0, atol=1e-12)
        else:
            np.testing.assert_allclose(logits[0, :3], logits_alone[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            model.predict_proba(x, lengths)[0], probs_alone[0], rtol=0, atol=1e-12
        )
        # gradients of sequence 0 alone: give the other sequences zero class weight
        loss, grads, dx = model.loss_and_grads(
            x, lengths, np.array([2, 0, 1]), class_weights=None, return_dx=True
        )
        weights_only_first = _loss_of_first(model, x, lengths, y_short[0])
        assert weights_only_first[0] == pytest.approx(loss_alone, abs=1e-12)
        for k in grads_alone:
            np.testing.assert_allclose(weights_only_first[1][k], grads_alone[k], rtol=0, atol=1e-12)
        assert np.all(dx[0, 3:] == 0.0) and np.all(np.isfinite(dx))


def test_pack_layout_and_input_forms():
    """pack: rows step after step, longest first, each the right (sequence, step) of x;
    the same for a non-contiguous x, a float64 or int x (cast to the model dtype), and
    unsigned lengths; last_rows point at each sequence's own last step."""
    rng = np.random.default_rng(3)
    model = LSTMClassifier(2, 3, 2)  # float32
    lengths = np.array([2, 5, 1, 5, 3])
    x = rng.normal(size=(5, 6, 2))
    expected_rows = []
    order = [1, 3, 4, 0, 2]  # longest first, ties in the caller's order
    for t in range(5):
        expected_rows += [(b, t) for b in order if lengths[b] > t]
    expected = np.array([x[b, t] for b, t in expected_rows], np.float32)
    for xi, li in (
        (x, lengths),
        (np.asfortranarray(x), lengths.astype(np.uint8)),
        (x.transpose(1, 0, 2).copy().transpose(1, 0, 2), lengths),
    ):
        pb = model.pack(xi, li)
        assert pb.x.dtype == np.float32 and pb.x.flags.c_contiguous
        np.testing.assert_array_equal(pb.x, expected)
        assert pb.batch_sizes.tolist() == [5, 4, 3, 2, 2] and pb.T == 5
        assert pb.order.tolist() == order
        assert [expected_rows[r] for r in pb.last_rows] == [(b, lengths[b] - 1) for b in range(5)]
        assert list(zip(*pb.index)) == expected_rows
    xi = rng.integers(-3, 3, size=(5, 6, 2))
    np.testing.assert_array_equal(
        model.pack(xi, lengths).x, np.array([xi[b, t] for b, t in expected_rows], np.float32)
    )


def _loss_of_first(model, x, lengths, y0):
    """Loss/grads of sequence 0 only, via per-class weights that zero the others' classes."""
    K = model.num_classes
    others = [k for k in range(K) if k != y0]
    y = np.array([y0] + others[: len(lengths) - 1])
    cw = np.zeros(K)
    cw[y0] = 1.0
    return model.loss_and_grads(x, lengths, y, class_weights=cw)


def test_dropout_gradients_with_a_fixed_mask():
    """With the dropout mask fixed (same rng state at every call), training-mode gradients
    match finite differences too."""
    model, x, lengths, y = random_problem(num_layers=3, head="last", seed=2)
    model.dropout = 0.4

    masks = model.draw_dropout_masks(np.random.default_rng(9), *x.shape[:2])
    report = check_model(model, x, lengths, y, dropout_masks=masks)
    assert report.passed, [(r.name, r.max_rel_error) for r in report.rows]
    # dropout is really on in training mode and off otherwise
    l_train = model.loss_and_grads(x, lengths, y, training=True, rng=np.random.default_rng(1))[0]
    assert l_train != pytest.approx(model.loss(x, lengths, y))


@pytest.mark.parametrize("head", ["last", "all"])
def test_training_dropout_is_the_rescaled_mask(head):
    """Training-mode logits equal a hand-built forward that multiplies layer 0's h by
    mask / (1 - p), mask = rng.random((B, T, H)) >= p from the same seeded rng, read at
    each packed row's (sequence, step)."""
    from lstm_cli.nn.lstm import lstm_layer_forward

    p = 0.3
    model, x, lengths, y = random_problem(num_layers=2, head=head, seed=4)
    model.dropout = p
    logits, _ = model.forward(x, lengths, training=True, rng=np.random.default_rng(5))
    P, pb = model.params, model.pack(x, lengths)
    h, _ = lstm_layer_forward(
        pb.x, P["lstm.0.W"], P["lstm.0.b"], model.forget_bias, batch_sizes=pb.batch_sizes
    )
    B, T = x.shape[:2]
    mask = np.random.default_rng(5).random((B, T, model.hidden_size)) >= p  # (B, T, H)
    mask = mask[pb.index]  # (N, H) kept units of the packed rows
    h = h * mask / (1.0 - p)
    h, _ = lstm_layer_forward(
        h, P["lstm.1.W"], P["lstm.1.b"], model.forget_bias, batch_sizes=pb.batch_sizes
    )
    if head == "last":
        h = h[pb.last_rows]
    np.testing.assert_allclose(logits, h @ P["head.W"] + P["head.b"], rtol=1e-12, atol=1e-14)


def test_dropout_is_off_at_inference():
    """A model with dropout 0.5 predicts the same probabilities at every call, equal to the
    same weights with dropout 0, and different from a training-mode forward."""
    model, x, lengths, y = random_problem(num_layers=3, head="all", seed=6)
    model.dropout = 0.5
    twin = LSTMClassifier.from_spec({**model.spec(), "dropout": 0.0}, model.params)
    probs = model.predict_proba(x, lengths)
    np.testing.assert_array_equal(model.predict_proba(x, lengths), probs)
    np.testing.assert_array_equal(twin.predict_proba(x, lengths), probs)
    np.testing.assert_array_equal(model.evaluate_batch(x, lengths, y)[1], probs)
    assert model.loss(x, lengths, y) == twin.loss(x, lengths, y)
    logits, cache = model.forward(x, lengths, training=True, rng=np.random.default_rng(0))
    assert np.abs(model.probabilities(logits, cache) - probs).max() > 1e-3


def test_same_seed_same_parameters_and_dtypes():
    a = LSTMClassifier(4, 5, 3, num_layers=2, seed=11)
    b = LSTMClassifier(4, 5, 3, num_layers=2, seed=11)
    c = LSTMClassifier(4, 5, 3, num_layers=2, seed=12)
    assert list(a.params) == ["lstm.0.W", "lstm.0.b", "lstm.1.W", "lstm.1.b", "head.W", "head.b"]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
        assert a.params[k].dtype == np.float32
    assert not np.array_equal(a.params["lstm.0.W"], c.params["lstm.0.W"])
    shapes = {k: v.shape for k, v in a.params.items()}
    assert shapes == {
        "lstm.0.W": (9, 20),
        "lstm.0.b": (20,),
        "lstm.1.W": (10, 20),
        "lstm.1.b": (20,),
        "head.W": (5, 3),
        "head.b": (3,),
    }


@pytest.mark.parametrize("init", ["uniform", "glorot_orthogonal"])
def test_init_schemes(init):
    m = LSTMClassifier(3, 6, 2, init=init, seed=0)
    W = m.params["lstm.0.W"].astype(np.float64)
    if init == "uniform":
        assert np.abs(W).max() <= 1 / np.sqrt(6)
    else:
        Wh_i = W[3:, :6]
        np.testing.assert_allclose(Wh_i.T @ Wh_i, np.eye(6), atol=1e-5)
        assert not m.params["lstm.0.b"].any()


def test_float32_training_step_keeps_dtype():
    m = LSTMClassifier(3, 4, 2, seed=0)
    rng = np.random.default_rng(0)
    loss, grads = m.loss_and_grads(rng.normal(size=(2, 5, 3)), np.array([5, 2]), np.array([0, 1]))
    assert all(g.dtype == np.float32 for g in grads.values())
    assert np.isfinite(loss)


def test_float32_agrees_with_float64():
    m64 = LSTMClassifier(3, 8, 4, num_layers=2, head="all", dtype="float64", seed=3)
    m32 = LSTMClassifier.from_spec({**m64.spec(), "dtype": "float32"}, m64.params)
    rng = np.random.default_rng(1)
    x, lengths, y = rng.normal(size=(4, 6, 3)), np.array([6, 1, 3, 4]), np.array([0, 1, 2, 3])
    l64, g64 = m64.loss_and_grads(x, lengths, y)
    l32, g32 = m32.loss_and_grads(x, lengths, y)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        dict(x=np.zeros((2, 3)), lengths=np.array([1, 1])),
        dict(x=np.zeros((2, 3, 5)), lengths=np.array([1, 1])),
        dict(x=np.zeros((2, 3, 3)), lengths=np.array([0, 1])),
        dict(x=np.zeros((2, 3, 3)), lengths=np.array([4, 1])),
        dict(x=np.zeros((2, 3, 3)), lengths=np.array([1.0, 1.0])),
    ],
)
def test_bad_batches_raise_clear_errors(bad):
    m = LSTMClassifier(3, 4, 2)
    with pytest.raises(LstmCliError):
        m.predict_proba(bad["x"], bad["lengths"])


def test_bad_labels_and_constructor_arguments():
    m = LSTMClassifier(3, 4, 2)
    with pytest.raises(LstmCliError, match="class indices"):
        m.loss(np.zeros((1, 2, 3)), np.array([2]), np.array([2]))
    with pytest.raises(LstmCliError, match="head"):
        LSTMClassifier(3, 4, 2, head="first")
    with pytest.raises(LstmCliError, match="hidden_size"):
        LSTMClassifier(3, 0, 2)
    with pytest.raises(LstmCliError, match="dropout"):
        LSTMClassifier(3, 4, 2, dropout=1.0)


def test_set_params_checks_names_and_shapes():
    m = LSTMClassifier(3, 4, 2)
    p = {k: v.copy() for k, v in m.params.items()}
    p["head.W"] = np.zeros((5, 2))
    with pytest.raises(LstmCliError, match="head.W"):
        m.set_params(p)
    del p["head.W"]
    with pytest.raises(LstmCliError, match="missing"):
        m.set_params(p)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_length_5000_and_length_1_stay_finite(head, bidirectional):
    """Very long and length-1 sequences train without overflow (large inputs saturate the
    gates; the stable sigmoid and log-sum-exp keep every value finite)."""
    rng = np.random.default_rng(0)
    model = LSTMClassifier(3, 8, 4, num_layers=2, head=head, seed=0, bidirectional=bidirectional)
    x = (rng.normal(size=(3, 5000, 3)) * 50.0).astype(np.float32)
    lengths = np.array([5000, 1, 2500])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grads = model.loss_and_grads(x, lengths, np.array([0, 1, 3]))
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_concurrent_calls_from_threads_do_not_share_buffers():
    """numpy releases the GIL inside its loops: two threads using one model must get the
    results of serial calls (each thread has its own work arrays)."""
    import threading

    model = LSTMClassifier(4, 16, 3, num_layers=2, seed=0)
    rng = np.random.default_rng(0)
    jobs = []
    for k in range(3):
        x = rng.normal(size=(16, 30, 4)).astype(np.float32)
        lengths = rng.integers(1 + 10 * k, 31, size=16)
        y = rng.integers(0, 3, size=16)
        jobs.append(
            (x, lengths, y, model.predict_proba(x, lengths), model.loss_and_grads(x, lengths, y))
        )
    failures = []

    def work(k):
        x, lengths, y, probs, (loss, grads) = jobs[k]
        for _ in range(30):
            if not np.array_equal(model.predict_proba(x, lengths), probs):
                failures.append((k, "probs"))
            loss2, grads2 = model.loss_and_grads(x, lengths, y)
            if loss2 != loss or any(not np.array_equal(grads2[n], grads[n]) for n in grads):
                failures.append((k, "grads"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_release_buffers_and_copies():
    import copy
    import pickle

    model = LSTMClassifier(3, 8, 2, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 5, 3))
    lengths = np.array([5, 3, 2, 1])
    probs = model.predict_proba(x, lengths)
    clone = pickle.loads(pickle.dumps(model))  # no buffers pickled (threading.local cannot be)
    twin = copy.deepcopy(model)
    model.release_buffers()
    for m in (model, clone, twin):
        np.testing.assert_array_equal(m.predict_proba(x, lengths), probs)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_batch_padded_past_its_longest_sequence(head, bidirectional):
    # x (B, T, I) with T > max(lengths): dx and the all head's logits keep x's T (zeros
    # past each end), and the gradient check runs on such a batch.
    model = LSTMClassifier(3, 4, 3, head=head, dtype="float64", seed=0, bidirectional=bidirectional)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 9, 3))
    lengths, y = np.array([4, 2, 1]), np.array([0, 1, 2])
    loss, grads, dx = model.loss_and_grads(x, lengths, y, return_dx=True)
    assert dx.shape == x.shape and not dx[:, 4:].any()
    loss_cut, grads_cut, dx_cut = model.loss_and_grads(x[:, :4], lengths, y, return_dx=True)
    assert loss == loss_cut
    np.testing.assert_array_equal(dx[:, :4], dx_cut)
    if head == "all":
        assert model.logits(x, lengths).shape == (3, 9, 3)
    report = check_model(model, x, lengths, y, max_entries=20)
    assert report.passed, [(r.name, r.max_rel_error) for r in report.rows]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_evaluate_batch_losses_average_to_the_training_loss(head, bidirectional, dtype):
    # evaluate_batch's per-sequence losses are what val_loss and lstm-eval's loss average;
    # the all head's is the mean over the sequence's own valid steps (not over T).
    model = LSTMClassifier(
        3, 5, 4, num_layers=2, head=head, dtype=dtype, seed=2, bidirectional=bidirectional
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 11, 3))
    lengths, y = np.array([7, 1, 11, 3, 7]), np.array([0, 3, 1, 2, 3])
    ce, probs = model.evaluate_batch(x, lengths, y)
    assert ce.shape == (5,) and probs.shape == (5, 4)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert ce.mean() == pytest.approx(model.loss(x, lengths, y), rel=rtol)
    for b in range(5):  # each sequence alone, unpadded
        alone, _ = model.evaluate_batch(
            x[b : b + 1, : lengths[b]], lengths[b : b + 1], y[b : b + 1]
        )
        assert alone[0] == pytest.approx(ce[b], rel=rtol)
        assert alone[0] == pytest.approx(
            model.loss(x[b : b + 1, : lengths[b]], lengths[b : b + 1], y[b : b + 1]), rel=rtol
        )
    np.testing.assert_allclose(probs, model.predict_proba(x, lengths), rtol=rtol)


def test_parameter_count_and_size_check(monkeypatch):
    from lstm_cli.nn import model as model_mod

    for args in ((3, 4, 2, 1), (5, 7, 3, 3), (1, 1, 2, 2)):
        model = LSTMClassifier(*args[:3], num_layers=args[3])
        assert model_mod.parameter_count(*args) == model.num_parameters()
        assert model_mod.param_shapes(*args) == {k: v.shape for k, v in model.params.items()}
        assert list(model_mod.param_shapes(*args)) == list(model.params)
    from lstm_cli.nn import params as params_mod

    monkeypatch.setattr(params_mod, "_physical_memory", lambda: 10_000)
    LSTMClassifier(3, 4, 2)  # 3 x 4 x 154 bytes fits
    with pytest.raises(LstmCliError, match="hidden_size 64,.* more than this machine's"):
        LSTMClassifier(3, 64, 2)


def test_api_arguments_are_checked():
    model = LSTMClassifier(3, 4, 3, dtype="float64", seed=0)
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    lengths, y = np.array([5, 3]), np.array([0, 2])
    for cw in ([1.0, 2.0], [1.0, np.nan, 1.0], [1.0, -1.0, 1.0]):
        with pytest.raises(
            LstmCliError,
            match=r"The 'class_weights' parameter of LSTMClassifier must be 3 finite weights >= 0 "
            r"\(one per class\)\. Got .* instead\.",
        ):
            model.loss_and_grads(x, lengths, y, class_weights=cw)
    with pytest.raises(LstmCliError, match="weight 0"):
        model.loss(x, lengths, y, class_weights=[0.0, 1.0, 0.0])
    x_nan = x.copy()
    x_nan[1, 4] = np.nan  # padding of sequence 1 (length 3): fine
    model.predict(x_nan, lengths)
    x_nan[1, 2, 0] = np.nan  # its last valid step: refused, named
    with pytest.raises(LstmCliError, match="sequence 1, step 3"):
        model.predict(x_nan, lengths)
    with pytest.raises(
        LstmCliError,
        match=r"The 'forget_bias' parameter of LSTMClassifier must be a float in the range "
        r"\(-inf, inf\)\. Got nan instead\.",
    ):
        LSTMClassifier(3, 4, 3, forget_bias=float("nan"))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("head", HEADS)
def test_stacked_model_equals_the_reference(head, bidirectional):
    """Three packed layers (one direction or both) plus a head give the reference's loss,
    every gradient and dx (float64), for mixed lengths including 1 and padding past the
    longest sequence."""
    rng = np.random.default_rng(7)
    lengths = np.array([4, 1, 6, 6, 2])
    x = rng.normal(size=(5, 8, 3))
    y = np.array([0, 2, 1, 1, 0])
    model = LSTMClassifier(
        3, 4, 3, num_layers=3, head=head, forget_bias=0.8, dtype="float64",
        bidirectional=bidirectional,
    )  # fmt: skip
    for p in model.params.values():
        p[...] = rng.normal(0.0, 0.6, size=p.shape)
    loss, grads, dx = model.loss_and_grads(x, lengths, y, return_dx=True)
    from lstm_cli.nn import reference

    loss_ref, grads_ref, dx_ref = reference.classifier_loss_and_grads(
        model.params, x, lengths, y, head=head, forget_bias=0.8
    )
    assert loss == pytest.approx(loss_ref, rel=1e-13)
    valid = np.arange(8)[None, :] < lengths[:, None]
    np.testing.assert_allclose(dx, dx_ref * valid[..., None], rtol=1e-11, atol=1e-14)
    for k in model.params:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-11, atol=1e-14, err_msg=k)

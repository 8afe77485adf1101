"""Bidirectional layers and the mean head (docs/design.md §8): gradients, the reference,
padding invariance, dropout layout, parameter names."""

import numpy as np
import pytest

from lstm_cli.nn import packing, reference
from lstm_cli.nn.gradcheck import check_model, random_problem
from lstm_cli.nn.model import LSTMClassifier, param_shapes, parameter_count

TOL = 1e-6
CASES = [
    (True, "last"),
    (True, "all"),
    (True, "mean"),
    (False, "mean"),
    (True, "max"),
    (False, "max"),
]


def _random_model(head, bidirectional, num_layers=2, seed=5, forget_bias=0.8):
    rng = np.random.default_rng(seed)
    model = LSTMClassifier(
        3, 4, 3, num_layers=num_layers, head=head, forget_bias=forget_bias, dtype="float64",
        bidirectional=bidirectional,
    )  # fmt: skip
    for p in model.params.values():
        p[...] = rng.normal(0.0, 0.6, size=p.shape)
    return model, rng


@pytest.mark.parametrize("bidirectional,head", CASES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_gradients_match_finite_differences(bidirectional, head, num_layers):
    """Every parameter of both directions, the head and the input (float64)."""
    model, x, lengths, y = random_problem(
        num_layers=num_layers, head=head, seed=2, forget_bias=0.8, bidirectional=bidirectional
    )
    report = check_model(model, x, lengths, y, tol=TOL)
    failures = [f"{r.name}: {r.max_rel_error:.2e}" for r in report.rows if not r.passed]
    assert not failures, failures
    assert {r.name for r in report.rows} == set(model.params) | {"input x"}
    assert report.bidirectional == bidirectional


@pytest.mark.parametrize("bidirectional,head", CASES)
def test_class_weighted_gradients(bidirectional, head):
    model, x, lengths, y = random_problem(
        num_layers=2, head=head, seed=3, bidirectional=bidirectional
    )
    report = check_model(model, x, lengths, y, tol=TOL, class_weights=np.array([0.5, 2.0, 1.3]))
    assert report.passed, [(r.name, r.max_rel_error) for r in report.rows]


def test_reverse_direction_reads_each_sequence_backwards():
    """Independently of the reference: a one-layer bidirectional model's top h is
    [forward LSTM on x_b, reversed(forward LSTM with the reverse weights on reversed x_b)],
    each sequence on its own valid steps; the last head reads [h-> at length-1, h<- at 0]."""
    model, rng = _random_model("last", True, num_layers=1)
    P = model.params
    lengths = np.array([2, 5, 1, 4])
    x = rng.normal(size=(4, 6, 3))
    logits = model.logits(x, lengths)
    for b, n in enumerate(lengths):
        seq = x[b : b + 1, :n]
        h_f, _ = reference.forward(seq, [n], P["lstm.0.W"], P["lstm.0.b"], 0.8)
        h_r, _ = reference.forward(
            seq[:, ::-1], [n], P["lstm.0.reverse.W"], P["lstm.0.reverse.b"], 0.8
        )
        h_r = h_r[:, ::-1]  # back to each step's own time
        top = np.concatenate([h_f[0, n - 1], h_r[0, 0]])
        np.testing.assert_allclose(logits[b], top @ P["head.W"] + P["head.b"], rtol=1e-12)


def test_mean_head_is_the_mean_of_the_valid_steps():
    model, rng = _random_model("mean", False, num_layers=1)
    P = model.params
    lengths = np.array([3, 1, 5])
    x = rng.normal(size=(3, 5, 3))
    h, _ = reference.forward(x, lengths, P["lstm.0.W"], P["lstm.0.b"], 0.8)
    m = np.stack([h[b, :n].mean(axis=0) for b, n in enumerate(lengths)])
    logits = m @ P["head.W"] + P["head.b"]
    np.testing.assert_allclose(model.logits(x, lengths), logits, rtol=1e-12)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(x, lengths), probs, rtol=1e-12)
    ce, p = model.evaluate_batch(x, lengths, np.array([0, 1, 2]))
    np.testing.assert_allclose(ce, -np.log(probs[np.arange(3), [0, 1, 2]]), rtol=1e-12)


@pytest.mark.parametrize("bidirectional,head", CASES)
def test_padding_invariance(bidirectional, head):
    """A sequence's logits, probabilities, loss and gradients are the same alone and batched
    with longer sequences, whatever the padding values (NaN included)."""
    model, rng = _random_model(head, bidirectional)
    short = rng.normal(size=(1, 3, 3))
    loss_alone, grads_alone = model.loss_and_grads(short, np.array([3]), np.array([2]))
    logits_alone = model.logits(short, np.array([3]))
    probs_alone = model.predict_proba(short, np.array([3]))
    for pad_value in (0.0, 1e3, np.nan):
        x = np.full((3, 7, 3), pad_value)
        x[0, :3] = short[0]
        x[1] = rng.normal(size=(7, 3))
        x[2, :5] = rng.normal(size=(5, 3))
        lengths = np.array([3, 7, 5])
        logits = model.logits(x, lengths)
        want = logits_alone[0]
        got = logits[0, :3] if head == "all" else logits[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            model.predict_proba(x, lengths)[0], probs_alone[0], rtol=0, atol=1e-12
        )
        cw = np.array([0.0, 0.0, 1.0])  # only sequence 0 (class 2) counts
        loss, grads, dx = model.loss_and_grads(
            x, lengths, np.array([2, 0, 1]), class_weights=cw, return_dx=True
        )
        assert loss == pytest.approx(loss_alone, abs=1e-12)
        for k in grads_alone:
            np.testing.assert_allclose(grads[k], grads_alone[k], rtol=0, atol=1e-12, err_msg=k)
        assert np.all(dx[0, 3:] == 0.0) and np.all(np.isfinite(dx))


@pytest.mark.parametrize("head", ["last", "mean", "max"])
def test_bidirectional_dropout_masks_in_the_padded_layout(head):
    """Masks are (B, T, 2H), read at each packed row's (sequence, step): a hand-built
    forward with the same masks gives the same logits, and the gradients with those fixed
    masks pass finite differences."""
    from lstm_cli.nn.bidirectional import bi_layer_forward

    model, x, lengths, y = random_problem(num_layers=2, head=head, seed=4, bidirectional=True)
    model.dropout = 0.3
    masks = model.draw_dropout_masks(np.random.default_rng(5), *x.shape[:2])
    assert [m.shape for m in masks] == [x.shape[:2] + (2 * model.hidden_size,)]
    logits, _ = model.forward(x, lengths, training=True, dropout_masks=masks)
    P, pb = model.params, model.pack(x, lengths)
    rev = packing.reversal(pb)
    h = pb.x
    for k in range(2):
        layer = (
            P[f"lstm.{k}.W"],
            P[f"lstm.{k}.b"],
            P[f"lstm.{k}.reverse.W"],
            P[f"lstm.{k}.reverse.b"],
        )
        h, _ = bi_layer_forward(h, layer, model.forget_bias, pb.batch_sizes, rev)
        if k == 0:
            h = h * masks[0][pb.index]
    logits_ref = model.forward(x, lengths)[0]  # differs: dropout is on in training
    assert np.abs(logits - logits_ref).max() > 1e-6
    from lstm_cli.nn import heads

    if head == "last":
        want = heads.last_step_forward(
            h, pb.last_rows, P["head.W"], P["head.b"], packing.first_rows(pb)
        )[0]
    elif head == "mean":
        want = heads.mean_forward(
            h, pb.offsets, pb.order, pb.lengths, pb.seq, P["head.W"], P["head.b"]
        )[0]
    else:
        want = heads.max_forward(h, pb.offsets, pb.order, P["head.W"], P["head.b"])[0]
    np.testing.assert_allclose(logits, want, rtol=1e-12, atol=1e-14)

    report = check_model(model, x, lengths, y, dropout_masks=masks)
    assert report.passed, [(r.name, r.max_rel_error) for r in report.rows]


def test_parameter_names_shapes_and_spec_round_trip():
    model = LSTMClassifier(3, 4, 5, num_layers=2, bidirectional=True, seed=0)
    want = {
        "lstm.0.W": (7, 16), "lstm.0.b": (16,), "lstm.0.reverse.W": (7, 16),
        "lstm.0.reverse.b": (16,), "lstm.1.W": (12, 16), "lstm.1.b": (16,),
        "lstm.1.reverse.W": (12, 16), "lstm.1.reverse.b": (16,), "head.W": (8, 5),
        "head.b": (5,),
    }  # fmt: skip
    assert {k: v.shape for k, v in model.params.items()} == want
    assert list(model.params) == list(want) == list(param_shapes(3, 4, 5, 2, True))
    assert param_shapes(3, 4, 5, 2, True) == want
    for bi in (False, True):
        for layers in (1, 3):
            m = LSTMClassifier(3, 4, 5, num_layers=layers, bidirectional=bi)
            assert parameter_count(3, 4, 5, layers, bi) == m.num_parameters()
    spec = model.spec()
    assert spec["bidirectional"] is True
    twin = LSTMClassifier.from_spec(spec, model.params)
    x = np.random.default_rng(0).normal(size=(2, 4, 3))
    np.testing.assert_array_equal(twin.predict_proba(x, [4, 2]), model.predict_proba(x, [4, 2]))
    assert LSTMClassifier(3, 4, 5, num_layers=2).spec()["bidirectional"] is False
    with pytest.raises(Exception, match="bidirectional"):
        LSTMClassifier(3, 4, 5, bidirectional="yes")


@pytest.mark.parametrize("head", ["last", "mean", "all", "max"])
def test_float32_bidirectional_agrees_with_float64(head):
    model64, x, lengths, y = random_problem(num_layers=2, head=head, seed=1, bidirectional=True)
    model32 = LSTMClassifier.from_spec({**model64.spec(), "dtype": "float32"}, model64.params)
    l64, g64 = model64.loss_and_grads(x, lengths, y)
    l32, g32 = model32.loss_and_grads(x.astype(np.float32), lengths, y)
    assert l32 == pytest.approx(l64, rel=1e-4)
    for k in g64:
        assert g32[k].dtype == np.float32
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-4, err_msg=k)

"""Tests for lstm_cli.nn.optim: clipping, SGD/Adam/AdamW updates, state, LR schedules."""

import json
import math

import numpy as np
import pytest

from lstm_cli.errors import CheckpointError, LstmCliError
from lstm_cli.nn.optim import (
    SGD,
    Adam,
    LRSchedule,
    clip_by_global_norm,
    global_norm,
    make_optimizer,
)


def make_params(rng, dtype=np.float64, I=3, H=4, K=2, layers=2):
    """A params dict with the model's public names and shapes, every entry random."""
    params = {}
    for k in range(layers):
        inp = I if k == 0 else H
        params[f"lstm.{k}.W"] = rng.standard_normal((inp + H, 4 * H)).astype(dtype)
        params[f"lstm.{k}.b"] = rng.standard_normal(4 * H).astype(dtype)
    params["head.W"] = rng.standard_normal((H, K)).astype(dtype)
    params["head.b"] = rng.standard_normal(K).astype(dtype)
    return params


def copy_dict(d):
    return {k: v.copy() for k, v in d.items()}


def grad_fn(params, targets):
    """Gradient of sum_k 0.25*||p - t||^4-ish: nonlinear in p, so trajectories depend on p."""
    return {k: (p - targets[k]) ** 3 + 0.5 * (p - targets[k]) for k, p in params.items()}


OPTIMIZER_CASES = {
    "sgd": dict(name="sgd", momentum=0.0, weight_decay=0.0),
    "sgd-momentum-wd": dict(name="sgd", momentum=0.9, weight_decay=0.01),
    "sgd-nesterov-wd": dict(name="sgd", momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": dict(name="adam"),
    "adam-wd": dict(name="adam", weight_decay=0.01),
    "adamw": dict(name="adamw", weight_decay=0.01),
}


def build(case, params, lr=0.01):
    kw = dict(OPTIMIZER_CASES[case])
    return make_optimizer(kw.pop("name"), params, lr, **kw)


# ------------------------------------------------------------------------- clipping


def test_global_norm_matches_numpy_and_uses_float64():
    rng = np.random.default_rng(0)
    grads = make_params(rng)
    expected = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert global_norm(grads) == pytest.approx(expected, rel=1e-14)
    # 1e20 squared overflows float32 but not the float64 accumulator.
    big = {"a": np.full(4, 1e20, dtype=np.float32)}
    assert global_norm(big) == pytest.approx(2e20, rel=1e-6)
    assert global_norm({}) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_scales_to_max_norm_and_does_not_mutate(dtype):
    rng = np.random.default_rng(1)
    grads = make_params(rng, dtype)
    before = copy_dict(grads)
    norm = global_norm(grads)
    clipped, norm_before = clip_by_global_norm(grads, 0.5)
    assert norm_before == norm and norm > 0.5
    assert global_norm(clipped) == pytest.approx(0.5, rel=1e-6 if dtype == np.float32 else 1e-12)
    for k in grads:
        assert clipped[k] is not grads[k]
        assert clipped[k].dtype == dtype
        np.testing.assert_array_equal(grads[k], before[k])  # caller's arrays untouched
        np.testing.assert_allclose(clipped[k], before[k] * (0.5 / norm), rtol=1e-6)


@pytest.mark.parametrize("max_norm", [None, 0, 0.0, 1e9])
def test_clip_leaves_grads_unchanged_when_disabled_or_below(max_norm):
    grads = make_params(np.random.default_rng(2))
    clipped, norm = clip_by_global_norm(grads, max_norm)
    assert norm == global_norm(grads)
    assert clipped is not grads
    assert all(clipped[k] is grads[k] for k in grads)


def test_clip_non_finite_norm_is_reported_not_scaled():
    grads = {"a": np.array([1.0, np.inf]), "b": np.array([np.nan])}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert not math.isfinite(norm)
    assert clipped["a"] is grads["a"]


def test_clip_rejects_negative_max_norm():
    with pytest.raises(LstmCliError, match="max_norm"):
        clip_by_global_norm({"a": np.ones(2)}, -1.0)


# ----------------------------------------------------------------------- SGD / Adam


def test_adam_first_step_is_lr_times_sign():
    rng = np.random.default_rng(3)
    params = make_params(rng)
    grads = {
        k: rng.choice([-1.0, 1.0], size=p.shape) * rng.uniform(1e-3, 10, size=p.shape)
        for k, p in params.items()
    }
    before = copy_dict(params)
    opt = Adam(params, lr=0.01)
    opt.step(params, grads)
    for k in params:
        # |m_hat| / (sqrt(v_hat) + eps) = |g| / (|g| + eps) = 1 up to eps/|g| <= 1e-5
        np.testing.assert_allclose(params[k] - before[k], -0.01 * np.sign(grads[k]), rtol=1e-4)


@pytest.mark.parametrize("case", ["sgd", "sgd-momentum-wd", "sgd-nesterov-wd", "adam", "adamw"])
def test_converges_on_a_quadratic(case):
    rng = np.random.default_rng(4)
    params = make_params(rng)
    target = make_params(rng)
    scale = {k: rng.uniform(0.5, 2.0, size=p.shape) for k, p in params.items()}
    kw = dict(OPTIMIZER_CASES[case])
    kw["weight_decay"] = 0.0  # decay moves the minimum away from the target
    opt = make_optimizer(kw.pop("name"), params, 0.1 if kw.get("momentum", 1) else 0.3, **kw)
    for _ in range(500):
        opt.step(params, {k: scale[k] * (p - target[k]) for k, p in params.items()})
    for k in params:
        np.testing.assert_allclose(params[k], target[k], atol=1e-4)


def test_sgd_plain_with_weight_decay_hand_computed():
    p = {"w": np.array([1.0, -2.0])}
    opt = SGD(p, lr=0.1, weight_decay=0.5)
    opt.step(p, {"w": np.array([0.2, 0.4])})
    # p - lr * (g + wd * p)
    np.testing.assert_allclose(
        p["w"], [1.0 - 0.1 * (0.2 + 0.5), -2.0 - 0.1 * (0.4 - 1.0)], rtol=1e-15
    )


@pytest.mark.parametrize(
    "nesterov, expected",
    [
        # b1=.5 p=.95 | b2=.9*.5-.25=.2 p=.93 | b3=.18+1=1.18 p=.812
        (False, [0.95, 0.93, 0.812]),
        # d = g + .9 b: d1=.95 p=.905 | d2=-.25+.18=-.07 p=.912 | d3=1+1.062=2.062 p=.7058
        (True, [0.905, 0.912, 0.7058]),
    ],
)
def test_sgd_momentum_and_nesterov_hand_computed(nesterov, expected):
    p = {"w": np.array([1.0])}
    opt = SGD(["w"], lr=0.1, momentum=0.9, nesterov=nesterov)
    for g, want in zip([0.5, -0.25, 1.0], expected):
        opt.step(p, {"w": np.array([g])})
        np.testing.assert_allclose(p["w"], [want], rtol=0, atol=1e-15)
    assert opt.steps == 3


def test_adamw_decoupled_decay_differs_from_adam_l2():
    # With a zero loss gradient, AdamW only decays: p <- p * (1 - lr*wd), proportional
    # to p; Adam + L2 feeds wd*p through the normalised update: a step of ~lr whatever |p|.
    lr, wd = 0.01, 0.1
    p0 = np.array([100.0, 1.0, -0.5])
    zero = {"w": np.zeros(3)}
    pw, pl = {"w": p0.copy()}, {"w": p0.copy()}
    adamw = Adam(pw, lr, weight_decay=wd, decoupled=True)
    adam = Adam(pl, lr, weight_decay=wd)
    adamw.step(pw, zero)
    adam.step(pl, zero)
    np.testing.assert_allclose(pw["w"], p0 * (1 - lr * wd), rtol=1e-15)
    np.testing.assert_allclose(pl["w"], p0 - lr * np.sign(p0), rtol=1e-6)
    assert adamw.state_dict()[1]["name"] == "adamw" and adam.state_dict()[1]["name"] == "adam"


def test_adamw_without_decay_equals_adam_bitwise():
    rng = np.random.default_rng(5)
    pa, target = make_params(rng), make_params(rng)
    pw = copy_dict(pa)
    a, w = Adam(pa, 0.01), Adam(pw, 0.01, decoupled=True)
    for _ in range(4):
        a.step(pa, grad_fn(pa, target))
        w.step(pw, grad_fn(pw, target))
    for k in pa:
        assert np.array_equal(pa[k], pw[k])


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_step_is_in_place_keeps_float32_and_leaves_grads_alone(case, grad_dtype):
    rng = np.random.default_rng(6)
    params = make_params(rng, np.float32)
    ids = {k: id(v) for k, v in params.items()}
    target = make_params(rng, np.float32)
    opt = build(case, params)
    for _ in range(3):
        grads = {k: g.astype(grad_dtype) for k, g in grad_fn(params, target).items()}
        saved = copy_dict(grads)
        before = copy_dict(params)
        opt.step(params, grads)
        for k in params:
            assert id(params[k]) == ids[k]
            assert params[k].dtype == np.float32
            assert not np.array_equal(params[k], before[k])
            np.testing.assert_array_equal(grads[k], saved[k])
    arrays, _ = opt.state_dict()
    assert all(a.dtype == np.float32 for a in arrays.values())


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_state_dict_round_trip_continues_bit_identically(case):
    rng = np.random.default_rng(7)
    params = make_params(rng, np.float32)
    target = make_params(rng, np.float32)
    a = build(case, params)
    for _ in range(3):
        a.step(params, grad_fn(params, target))
    arrays, meta = a.state_dict()
    meta = json.loads(json.dumps(meta))  # meta must survive JSON
    arrays_before = copy_dict(arrays)
    resumed = copy_dict(params)
    b = build(case, resumed, lr=123.0)  # lr comes back from the state
    b.load_state_dict(arrays, meta)
    assert b.lr == a.lr and b.steps == a.steps == 3
    for _ in range(5):
        a.step(params, grad_fn(params, target))
        b.step(resumed, grad_fn(resumed, target))
    for k in params:
        assert params[k].tobytes() == resumed[k].tobytes()
    # b copied the arrays it was given: stepping it (or a) did not write into them.
    for name in arrays:
        assert arrays[name].tobytes() == arrays_before[name].tobytes()


def test_state_dict_arrays_are_named_by_slot_and_key():
    rng = np.random.default_rng(8)
    params = make_params(rng, layers=1)
    adam = Adam(params, 0.01)
    adam.step(params, grad_fn(params, params))
    arrays, meta = adam.state_dict()
    assert set(arrays) == {f"{s}.{k}" for s in ("m", "v") for k in params}
    assert meta["name"] == "adam" and meta["step"] == 1 and meta["betas"] == [0.9, 0.999]
    sgd = SGD(params, 0.01, momentum=0.5)
    sgd.step(params, grad_fn(params, params))
    assert set(sgd.state_dict()[0]) == {f"momentum.{k}" for k in params}
    assert SGD(params, 0.01).state_dict()[0] == {}


def test_load_state_dict_errors():
    rng = np.random.default_rng(9)
    params = make_params(rng, layers=1)
    adam = Adam(params, 0.01)
    adam.step(params, grad_fn(params, params))
    arrays, meta = adam.state_dict()
    with pytest.raises(CheckpointError, match="written by 'adam'.*'sgd'"):
        SGD(params, 0.01, momentum=0.9).load_state_dict(arrays, meta)
    with pytest.raises(CheckpointError, match="written by 'adam'.*'adamw'"):
        Adam(params, 0.01, decoupled=True).load_state_dict(arrays, meta)
    missing = dict(arrays)
    del missing["v.head.b"]
    with pytest.raises(CheckpointError, match=r"missing arrays \['v.head.b'\]"):
        Adam(params, 0.01).load_state_dict(missing, meta)
    bad_shape = dict(arrays, **{"m.head.W": np.zeros((1, 1))})
    fresh = Adam(params, 0.01)
    with pytest.raises(CheckpointError, match="'m.head.W' has shape"):
        fresh.load_state_dict(bad_shape, meta)
    assert fresh.steps == 0 and fresh.state_dict()[0] == {}  # unchanged after a failure
    extra = dict(arrays, **{"m.bogus": np.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected arrays"):
        Adam(params, 0.01).load_state_dict(extra, meta)


def test_keys_only_optimizer_checks_loaded_state_at_first_step():
    sgd = SGD(["w"], 0.1, momentum=0.9)
    sgd.load_state_dict({"momentum.w": np.zeros(2)}, {"name": "sgd", "step": 4, "lr": 0.1})
    with pytest.raises(CheckpointError, match="'momentum.w' has shape"):
        sgd.step({"w": np.zeros(3)}, {"w": np.zeros(3)})


def test_step_rejects_mismatched_grads():
    params = {"a": np.zeros(3), "b": np.zeros(2)}
    opt = SGD(params, 0.1)
    with pytest.raises(LstmCliError, match=r"grads lack \['b'\]"):
        opt.step(params, {"a": np.zeros(3)})
    with pytest.raises(LstmCliError, match="shape"):
        opt.step(params, {"a": np.zeros(3), "b": np.zeros(3)})
    opt.lr = float("nan")
    with pytest.raises(LstmCliError, match="'lr'"):
        opt.step(params, {"a": np.zeros(3), "b": np.zeros(2)})


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: SGD(p, -0.1), "'lr'"),
        (lambda p: SGD(p, 0.1, momentum=1.0), "'momentum'"),
        (lambda p: SGD(p, 0.1, nesterov=True), "nesterov=True needs momentum"),
        (lambda p: Adam(p, 0.1, betas=(0.9, 1.0)), r"'betas\[1\]'"),
        (lambda p: Adam(p, 0.1, betas=0.9), "'betas'"),
        (lambda p: Adam(p, 0.1, eps=0.0), "'eps'"),
        (lambda p: Adam(p, 0.1, weight_decay=-1), "'weight_decay'"),
        (lambda p: make_optimizer("rmsprop", p, 0.1), "'name' parameter of make_optimizer"),
        (lambda p: SGD({"i": np.zeros(2, dtype=int)}, 0.1), "float arrays"),
    ],
)
def test_constructor_validation(call, match):
    with pytest.raises(LstmCliError, match=match):
        call({"w": np.zeros(2)})


def test_make_optimizer_kinds():
    p = {"w": np.zeros(2)}
    assert isinstance(make_optimizer("sgd", p, 0.1), SGD)
    assert make_optimizer("adam", p, 0.1).decoupled is False
    assert make_optimizer("adamw", p, 0.1, weight_decay=0.1).decoupled is True


# ----------------------------------------------------------------- torch as an oracle


def _torch_optimizer(torch, case, tparams, lr):
    kw = dict(OPTIMIZER_CASES[case])
    name = kw.pop("name")
    if name == "sgd":
        return torch.optim.SGD(tparams, lr=lr, **kw)
    if name == "adam":
        return torch.optim.Adam(tparams, lr=lr, **kw)
    return torch.optim.AdamW(tparams, lr=lr, **kw)


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_matches_torch_optim_for_five_steps(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    params = make_params(rng)
    target = make_params(rng)
    tparams = {
        k: torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True)
        for k, v in params.items()
    }
    lr = 0.05
    ours = build(case, params, lr=lr)
    theirs = _torch_optimizer(torch, case, list(tparams.values()), lr)
    for _ in range(5):
        ours.step(params, grad_fn(params, target))
        tgrads = grad_fn({k: t.detach().numpy() for k, t in tparams.items()}, target)
        for k, t in tparams.items():
            t.grad = torch.from_numpy(tgrads[k])
        theirs.step()
        for k in params:
            np.testing.assert_allclose(
                params[k],
                tparams[k].detach().numpy(),
                rtol=0,
                atol=1e-12,
                err_msg=f"{case}: {k} mine vs torch",
            )


# ------------------------------------------------------------------------ schedules


def test_step_schedule():
    s = LRSchedule("step", 0.1, epochs=30, step_size=10, gamma=0.5)
    assert [s.lr_for_epoch(e) for e in (0, 9, 10, 19, 20, 29)] == [
        0.1,
        0.1,
        0.05,
        0.05,
        0.025,
        0.025,
    ]


def test_cosine_schedule_endpoints():
    s = LRSchedule("cosine", 0.1, epochs=10, min_lr=0.001)
    assert s.lr_for_epoch(0) == pytest.approx(0.1, abs=1e-15)
    assert s.lr_for_epoch(5) == pytest.approx((0.1 + 0.001) / 2, abs=1e-15)
    assert s.lr_for_epoch(10) == pytest.approx(0.001, abs=1e-15)
    assert s.lr_for_epoch(25) == pytest.approx(0.001, abs=1e-15)  # clamped, does not rise again
    lrs = [s.lr_for_epoch(e) for e in range(11)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_constant_schedule_ignores_metrics():
    s = LRSchedule("constant", 0.02, epochs=5)
    for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        s.observe(v)
    assert s.lr_for_epoch(4) == 0.02


def test_plateau_reduces_after_patience_and_respects_min_lr():
    s = LRSchedule("plateau", 1.0, epochs=100, patience=2, factor=0.5, min_lr=0.3)
    s.observe(1.0)  # first value: best
    s.observe(0.9)  # improvement
    s.observe(0.95)  # bad 1
    assert s.lr_for_epoch(3) == 1.0
    s.observe(0.9)  # bad 2 (equal is not better) -> reduce
    assert s.lr_for_epoch(4) == 0.5 and s.num_bad_epochs == 0
    s.observe(0.8)  # improvement resets the count
    s.observe(0.85)
    assert s.lr_for_epoch(6) == 0.5
    s.observe(float("nan"))  # NaN counts as no improvement -> reduce, floored
    assert s.lr_for_epoch(7) == 0.3
    s.observe(0.9)
    s.observe(0.9)
    assert s.lr_for_epoch(9) == 0.3  # never below min_lr


def test_plateau_max_mode_and_mode_change():
    s = LRSchedule("plateau", 1.0, epochs=10, patience=1, factor=0.1)
    s.observe(0.5, mode="max")
    s.observe(0.6, mode="max")
    assert s.lr == 1.0
    s.observe(0.6, mode="max")
    assert s.lr == pytest.approx(0.1)
    with pytest.raises(LstmCliError, match="mode changed"):
        s.observe(0.1, mode="min")
    with pytest.raises(LstmCliError, match="'mode'"):
        s.observe(0.1, mode="up")


def test_schedule_state_round_trip():
    s = LRSchedule("plateau", 1.0, epochs=20, patience=3, factor=0.5)
    for v in (1.0, 1.1, 1.2, 1.3, 0.9, 1.0):
        s.observe(v)
    state = json.loads(json.dumps(s.state_dict()))
    t = LRSchedule("plateau", 1.0, epochs=20, patience=3, factor=0.5)
    t.load_state_dict(state)
    for v in (1.0, 1.0, 0.95, 1.0, 1.0, 1.0):
        s.observe(v)
        t.observe(v)
        assert s.lr_for_epoch(0) == t.lr_for_epoch(0)
    assert t.state_dict() == s.state_dict()
    with pytest.raises(CheckpointError, match="'plateau'.*'cosine'"):
        LRSchedule("cosine", 1.0, epochs=20).load_state_dict(state)
    with pytest.raises(CheckpointError, match="num_bad_epochs"):
        t.load_state_dict(dict(state, num_bad_epochs=-1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="linear"), "'name'"),
        (dict(epochs=0), "'epochs'"),
        (dict(step_size=0), "'step_size'"),
        (dict(factor=1.0), "'factor'"),
        (dict(name="cosine", min_lr=1.0), "min_lr"),
        (dict(base_lr=float("inf")), "'base_lr'"),
    ],
)
def test_schedule_validation(kwargs, match):
    args = dict(name="step", base_lr=0.1, epochs=10)
    args.update(kwargs)
    with pytest.raises(LstmCliError, match=match):
        LRSchedule(**args)
    with pytest.raises(LstmCliError, match="'epoch'"):
        LRSchedule("step", 0.1, 10).lr_for_epoch(-1)

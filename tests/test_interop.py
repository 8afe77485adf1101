"""Weight layout conversions round-trip (the torch parity test checks the maths)."""

import numpy as np

from lstm_cli.nn.interop import from_keras, from_pytorch, to_keras, to_pytorch
from lstm_cli.nn.model import LSTMClassifier, init_params


def test_pytorch_round_trip_and_layout():
    p = init_params(3, 4, 2, 2, dtype="float64", rng=0)
    state = to_pytorch(p, forget_bias=0.7)
    assert state["weight_ih_l0"].shape == (16, 3) and state["weight_hh_l1"].shape == (16, 4)
    assert state["head.weight"].shape == (2, 4)
    # torch's forget block (second) = TF's f block (third) + forget_bias
    np.testing.assert_allclose(state["bias_ih_l0"][4:8], p["lstm.0.b"][8:12] + 0.7)
    np.testing.assert_array_equal(state["weight_ih_l0"][8:12], p["lstm.0.W"][:3, 4:8].T)  # g <- j
    q = from_pytorch(state, forget_bias=0.7)
    for k in p:
        np.testing.assert_allclose(q[k], p[k], rtol=0, atol=1e-15)


def test_keras_round_trip():
    p = init_params(3, 4, 2, 2, dtype="float64", rng=1)
    layers, head = to_keras(p, forget_bias=1.0)
    assert layers[0][0].shape == (3, 16) and layers[0][1].shape == (4, 16)
    q = from_keras(layers, head, forget_bias=1.0)
    for k in p:
        np.testing.assert_allclose(q[k], p[k], rtol=0, atol=1e-15)


def test_from_pytorch_refuses_keys_it_would_ignore():
    import pytest

    from lstm_cli.errors import LstmCliError

    rng = np.random.default_rng(0)
    params = LSTMClassifier(3, 4, 2, seed=0).params
    state = to_pytorch(params)
    for extra in ("weight_hr_l0", "lstm.weight_ih_l0", "weight_ih_l1_reverse"):
        with pytest.raises(LstmCliError, match="unexpected keys"):
            from_pytorch({**state, extra: rng.normal(size=(2, 2))})
    # a reverse direction needs all four of its arrays in every layer
    with pytest.raises(LstmCliError, match=r"missing keys: \['bias_hh_l0_reverse'"):
        from_pytorch({**state, "weight_ih_l0_reverse": rng.normal(size=(2, 2))})
    with pytest.raises(LstmCliError, match="no weight_ih_l0"):
        from_pytorch({"head.weight": state["head.weight"], "head.bias": state["head.bias"]})


def test_from_pytorch_takes_parameters_that_require_grad():
    import pytest

    torch = pytest.importorskip("torch")
    params = LSTMClassifier(3, 4, 2, seed=0).params
    state = {
        k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in to_pytorch(params).items()
    }
    back = from_pytorch(state)
    for k in params:
        np.testing.assert_allclose(back[k], params[k], rtol=0, atol=1e-6)


def test_bidirectional_pytorch_round_trip_and_layout():
    p = init_params(3, 4, 2, 2, dtype="float64", rng=2, bidirectional=True)
    state = to_pytorch(p, forget_bias=0.7)
    suffixes = ("", "_reverse")
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    want = {f"{w}_l{k}{s}" for k in range(2) for s in suffixes for w in names}
    assert set(state) == want | {"head.weight", "head.bias"}
    assert state["weight_ih_l1_reverse"].shape == (16, 8)  # layer 1 reads [h->, h<-]
    assert state["head.weight"].shape == (2, 8)
    np.testing.assert_allclose(state["bias_ih_l0_reverse"][4:8], p["lstm.0.reverse.b"][8:12] + 0.7)
    np.testing.assert_array_equal(
        state["weight_hh_l1_reverse"][8:12], p["lstm.1.reverse.W"][8:, 4:8].T
    )
    q = from_pytorch(state, forget_bias=0.7)
    assert list(q) == list(p)
    for k in p:
        np.testing.assert_allclose(q[k], p[k], rtol=0, atol=1e-15)


def test_bidirectional_keras_round_trip():
    import pytest

    from lstm_cli.errors import LstmCliError

    p = init_params(3, 4, 2, 2, dtype="float64", rng=3, bidirectional=True)
    layers, head = to_keras(p, forget_bias=1.0)
    assert [len(layer) for layer in layers] == [6, 6]  # Bidirectional: forward, backward
    assert layers[1][3].shape == (8, 16) and layers[1][4].shape == (4, 16)
    np.testing.assert_allclose(layers[0][5][4:8], p["lstm.0.reverse.b"][8:12] + 1.0)
    q = from_keras(layers, head, forget_bias=1.0)
    assert list(q) == list(p)
    for k in p:
        np.testing.assert_allclose(q[k], p[k], rtol=0, atol=1e-15)
    with pytest.raises(LstmCliError, match="layer 0 has 4 arrays"):
        from_keras([layers[0][:4]], head)

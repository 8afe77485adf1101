"""Weight layout conversions round-trip (the torch parity test checks the maths)."""

import numpy as np

from lstm_cli.interop import from_keras, from_pytorch, to_keras, to_pytorch
from lstm_cli.model import init_params


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

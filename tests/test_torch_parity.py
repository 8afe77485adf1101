"""Parity with PyTorch nn.LSTM + nn.Linear (skipped cleanly when torch is not importable).

The weights are converted with lstm_cli.nn.interop (TF i,j,f,o -> torch i,f,g,o, forget_bias
folded into bias_ih); then logits, loss, every parameter gradient and dL/dx must agree.
Bidirectional models run torch on pack_padded_sequence (its reverse direction then starts at
each sequence's own last step, as lstm_cli's does); torch's last state of the reverse
direction is its output at step 0.
"""

import numpy as np
import pytest

from lstm_cli.nn.interop import from_pytorch, to_pytorch
from lstm_cli.nn.model import LSTMClassifier

torch = pytest.importorskip("torch")

B, T, I, H, K, LAYERS, FORGET_BIAS = 5, 7, 3, 6, 4, 2, 0.7


def _max_rel(a, b):
    """Largest entry-wise difference relative to the largest entry of the reference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _torch_loss_and_grads(state, x, lengths, y, head, dtype, bidirectional=False):
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    D = 2 if bidirectional else 1
    lstm = torch.nn.LSTM(I, H, num_layers=LAYERS, batch_first=True, bidirectional=bidirectional).to(
        tdtype
    )
    linear = torch.nn.Linear(D * H, K).to(tdtype)
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            p.copy_(torch.from_numpy(state[name]))
        linear.weight.copy_(torch.from_numpy(state["head.weight"]))
        linear.bias.copy_(torch.from_numpy(state["head.bias"]))
    xt = torch.tensor(x, dtype=tdtype, requires_grad=True)
    lengths_t = torch.from_numpy(lengths)
    y_t = torch.from_numpy(y)
    mask = (torch.arange(T)[None, :] < lengths_t[:, None]).to(tdtype)  # (B, T)
    if bidirectional:
        rnn = torch.nn.utils.rnn
        packed = rnn.pack_padded_sequence(xt, lengths_t, batch_first=True, enforce_sorted=False)
        out, _ = rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=T)
    else:
        out, _ = lstm(xt)  # (B, T, H) on the padded tensor; padding comes after the valid steps
    if head == "last":
        top = out[torch.arange(B), lengths_t - 1]
        if bidirectional:  # the reverse direction's final state is its output at step 0
            top = torch.cat([top[:, :H], out[:, 0, H:]], dim=1)
        logits = linear(top)
        loss = torch.nn.functional.cross_entropy(logits, y_t)
    elif head == "mean":
        mean = (out * mask[..., None]).sum(1) / lengths_t[:, None].to(tdtype)
        logits = linear(mean)
        loss = torch.nn.functional.cross_entropy(logits, y_t)
    elif head == "max":  # amax's gradient goes to the step holding each unit's max
        top = out.masked_fill(mask[..., None] == 0, float("-inf")).amax(1)
        logits = linear(top)
        loss = torch.nn.functional.cross_entropy(logits, y_t)
    else:
        logits = linear(out)  # (B, T, K)
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(B * T, K), y_t.repeat_interleave(T), reduction="none"
        ).reshape(B, T)
        loss = ((ce * mask).sum(1) / lengths_t.to(tdtype)).mean()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in lstm.named_parameters()}
    for k in grads:
        if k.startswith("bias_hh"):
            grads[k] = np.zeros_like(grads[k])  # equal to bias_ih's
    grads["head.weight"] = linear.weight.grad.numpy()
    grads["head.bias"] = linear.bias.grad.numpy()
    return (
        logits.detach().numpy(),
        float(loss.detach()),
        from_pytorch(grads, forget_bias=0.0),
        xt.grad.numpy(),
    )


@pytest.mark.parametrize(
    "head,bidirectional",
    [
        ("last", False),
        ("all", False),
        ("mean", False),
        ("last", True),
        ("all", True),
        ("mean", True),
        ("max", False),
        ("max", True),
    ],
)
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_matches_pytorch(head, bidirectional, dtype, tol):
    rng = np.random.default_rng(21)
    model = LSTMClassifier(
        I, H, K, num_layers=LAYERS, head=head, forget_bias=FORGET_BIAS, dtype=dtype, seed=0,
        bidirectional=bidirectional,
    )  # fmt: skip
    for p in model.params.values():  # non-zero biases everywhere
        p[...] = rng.normal(0, 0.4, size=p.shape)
    lengths = np.array([7, 1, 4, 6, 2])
    x = rng.normal(size=(B, T, I)).astype(dtype)
    pad = np.arange(T)[None, :] >= lengths[:, None]
    x[pad] = 3.0  # finite junk in the padding: must not matter to either side
    y = rng.integers(0, K, size=B)

    loss, grads, dx = model.loss_and_grads(x, lengths, y, return_dx=True)
    t_logits, t_loss, t_grads, t_dx = _torch_loss_and_grads(
        to_pytorch(model.params, FORGET_BIAS), x, lengths, y, head, dtype, bidirectional
    )

    logits = model.logits(x, lengths)
    if head == "all":  # compare valid steps only
        logits, t_logits = logits[~pad], t_logits[~pad]
    assert _max_rel(logits, t_logits) <= tol
    assert abs(loss - t_loss) / abs(t_loss) <= tol
    for k in model.params:
        assert _max_rel(grads[k], t_grads[k]) <= tol, k
    assert _max_rel(dx[~pad], t_dx[~pad]) <= tol
    assert np.all(dx[pad] == 0.0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("head", ["last", "all", "mean", "max"])
def test_gradient_flow_matches_torch_autograd(head, bidirectional):
    """model.backward's flow (the norms of each sequence's total dL/dh_t and dL/dc_t, per
    layer and direction) against torch autograd of the same cell unrolled step by step
    (docs/design.md §1, TF gate order and forget_bias), whose h_t.grad and c_t.grad sum
    every path: the head, step t+1 and the layer above."""
    rng = np.random.default_rng(11)
    model = LSTMClassifier(I, H, K, num_layers=LAYERS, head=head, dtype="float64", seed=3,
                           forget_bias=FORGET_BIAS, bidirectional=bidirectional)  # fmt: skip
    model.set_params({k: rng.normal(0, 0.8, v.shape) for k, v in model.params.items()})
    lengths = np.array([7, 3, 1, 5, 6])
    x = rng.normal(size=(B, T, I))
    y = rng.integers(0, K, B)
    flow = []
    model.loss_and_grads(x, lengths, y, flow=flow)
    D = model.directions
    p = {k: torch.from_numpy(v).requires_grad_() for k, v in model.params.items()}
    for b, L in enumerate(lengths):
        inp = torch.from_numpy(x[b, :L])
        states = []  # (layer, direction) -> (hs, cs): the step tensors autograd keeps
        for k in range(LAYERS):
            outs = []
            for d, suffix in enumerate(("", ".reverse")[:D]):
                W, bias = p[f"lstm.{k}{suffix}.W"], p[f"lstm.{k}{suffix}.b"]
                h = c = torch.zeros(H, dtype=torch.float64)
                hs, cs = [None] * L, [None] * L
                for t in range(L) if d == 0 else range(L - 1, -1, -1):
                    z = torch.cat([inp[t], h]) @ W + bias
                    i, j = torch.sigmoid(z[:H]), torch.tanh(z[H : 2 * H])
                    f, o = torch.sigmoid(z[2 * H : 3 * H] + FORGET_BIAS), torch.sigmoid(z[3 * H :])
                    c = f * c + i * j
                    c.retain_grad()
                    h = o * torch.tanh(c)
                    h.retain_grad()
                    hs[t], cs[t] = h, c
                states.append((hs, cs))
                outs.append(torch.stack(hs))
            inp = torch.cat(outs, dim=1)  # (L, D*H)
        if head == "all":
            feats = inp
        elif head == "last":  # the forward direction's last state, the reverse one's at step 0
            feats = torch.cat([inp[-1, :H], inp[0, H:]])[None]
        else:
            feats = (inp.mean(0) if head == "mean" else inp.max(0).values)[None]
        logp = torch.log_softmax(feats @ p["head.W"] + p["head.b"], dim=1)
        (-logp[:, int(y[b])].mean()).backward()
        for track, (hs, cs) in enumerate(states):
            dh, dc = flow[track]  # the batch mean's: times B is sequence b's own loss
            want_h = [float(v.grad.norm()) for v in hs]
            want_c = [float(v.grad.norm()) for v in cs]
            np.testing.assert_allclose(B * dh[b, :L], want_h, rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(B * dc[b, :L], want_c, rtol=1e-10, atol=1e-14)

"""lstm_cli.diagnostics: by-step accuracy, gate statistics, gradflow records, and their readers.

Every number is checked against an independent computation on a tiny model: by-step
against the model run on explicitly truncated sequences, gates against a plain numpy loop
over the equations of DESIGN.md §1, gradflow means against python loops.
"""

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from lstm_cli.data import SequenceDataset, pad_batch
from lstm_cli.diagnostics import (
    PERCENTS,
    GradFlowAccumulator,
    batch_gradient_flow,
    checkpoint_gradient_flow,
    diagnose,
    fraction_bins,
    prefix_lengths,
)
from lstm_cli.errors import DataError
from lstm_cli.inference import TrainedModel, evaluate_dataset
from lstm_cli.nn.model import LSTMClassifier
from lstm_cli.plot.runfiles import check_gradflow_record, read_gradflow, read_metrics, read_report


def _tiny(head, num_layers=2, seed=0, dtype="float64", n=23, F=3, K=3, H=5, bi=False):
    rng = np.random.default_rng(seed)
    model = LSTMClassifier(
        F, H, K, num_layers=num_layers, head=head, dtype=dtype, seed=seed, bidirectional=bi
    )
    model.forget_bias = 0.7
    # large random weights, so gates saturate and by-step accuracy varies with the prefix
    model.set_params({k: rng.normal(0, 1.2, v.shape) for k, v in model.params.items()})
    lengths = rng.integers(1, 14, n)
    lengths[:3] = (1, 10, 13)
    seqs = [rng.normal(0.5, 2.0, (L, F)) for L in lengths]
    labels = [f"c{int(v)}" for v in rng.integers(0, K, n)]
    ds = SequenceDataset.from_sequences(seqs, labels, source="tiny.jsonl")
    classes = [f"c{k}" for k in range(K)]
    mean, std = np.full(F, 0.5), np.full(F, 2.0)
    return TrainedModel(model, classes, mean, std, {}), ds, seqs, labels


def test_prefix_lengths_are_exact_ceilings():
    lengths = np.arange(1, 60)
    cut = prefix_lengths(lengths)
    for p, row in zip(PERCENTS, cut):
        want = [max(1, math.ceil(Fraction(p * L, 100))) for L in lengths]
        assert row.tolist() == want
    assert prefix_lengths([10])[:, 0].tolist() == list(range(1, 11))  # 10 %, ..., 100 % of 10 steps
    assert (cut[-1] == lengths).all()


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("head", ["last", "all", "mean", "max"])
def test_by_step_equals_the_model_on_truncated_sequences(head, bi):
    tm, ds, seqs, labels = _tiny(head, seed=2, bi=bi)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    got = diagnose(tm, ds, y, gates=False, batch_size=7)["by_step"]
    assert got["head"] == head and got["percent"] == list(PERCENTS) and got["n"] == len(seqs)
    for n, p in enumerate(PERCENTS):
        losses, correct, steps = [], [], []
        for seq, label in zip(seqs, y):
            L = max(1, math.ceil(Fraction(p * len(seq), 100)))
            x = ((seq[:L] - tm.mean) / tm.std)[None]  # the prefix alone, as its own sequence
            loss, probs = tm.model.evaluate_batch(x, np.array([L]), np.array([label]))
            losses.append(loss[0])
            correct.append(probs[0].argmax() == label)
            steps.append(L)
        assert got["accuracy"][n] == pytest.approx(np.mean(correct), abs=1e-12)
        assert got["loss"][n] == pytest.approx(np.mean(losses), rel=1e-9)
        assert got["mean_steps"][n] == pytest.approx(np.mean(steps))
    assert len(set(got["accuracy"])) > 1 and len(set(got["loss"])) > 5  # prefixes differ


def test_by_step_at_100_percent_is_the_eval_report_float32():
    tm, ds, _, labels = _tiny("all", dtype="float32", seed=3)
    report, _, y = evaluate_dataset(tm, ds)
    bs = diagnose(tm, ds, y, gates=False)["by_step"]
    assert bs["accuracy"][-1] == pytest.approx(report["accuracy"])
    assert bs["loss"][-1] == pytest.approx(report["loss"], rel=1e-5)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _gates_by_loop(tm, seqs):
    """Every valid step's i, f, o values per layer and direction (entry k*D + d), one
    sequence and one step at a time; the reverse direction reads the sequence backwards."""
    m, p = tm.model, tm.model.params
    H, D = m.hidden_size, m.directions
    out = [{"input": [], "forget": [], "output": []} for _ in range(m.num_layers * D)]
    for seq in seqs:
        inp = (seq - tm.mean) / tm.std
        for k in range(m.num_layers):
            outs = []
            for d, name in enumerate(("", ".reverse")[:D]):
                W, b = p[f"lstm.{k}{name}.W"], p[f"lstm.{k}{name}.b"]
                h, c, hs = np.zeros(H), np.zeros(H), []
                for x_t in inp if d == 0 else inp[::-1]:
                    z = np.concatenate([x_t, h]) @ W + b
                    i = _sigmoid(z[:H])
                    j = np.tanh(z[H : 2 * H])
                    f = _sigmoid(z[2 * H : 3 * H] + m.forget_bias)
                    o = _sigmoid(z[3 * H :])
                    c = f * c + i * j
                    h = o * np.tanh(c)
                    hs.append(h)
                    for gate, v in (("input", i), ("forget", f), ("output", o)):
                        out[k * D + d][gate].extend(v)
                outs.append(np.array(hs) if d == 0 else np.array(hs)[::-1])
            inp = np.concatenate(outs, axis=1)
    return out


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_gate_statistics_match_a_plain_loop(bi):
    tm, ds, seqs, _ = _tiny("last", num_layers=2, seed=1, bi=bi)
    gates = diagnose(tm, ds, by_step=False, batch_size=5)["gates"]
    want = _gates_by_loop(tm, seqs)
    assert gates["high"] == 0.95 and gates["low"] == 0.05
    assert len(gates["layers"]) == 2 * (1 + bi)
    for k, layer in enumerate(gates["layers"]):
        assert layer["layer"] == k // (1 + bi)
        assert layer.get("direction") == (("forward", "reverse")[k % 2] if bi else None)
        assert layer["values"] == sum(len(s) for s in seqs) * tm.model.hidden_size
        for name in ("input", "forget", "output"):
            v = np.array(want[k][name])
            g = layer[name]
            assert g["mean"] == pytest.approx(v.mean(), rel=1e-9)
            assert g["std"] == pytest.approx(v.std(), rel=1e-6)
            assert g["above_0.95"] == pytest.approx((v > 0.95).mean())
            assert g["below_0.05"] == pytest.approx((v < 0.05).mean())
            assert g["histogram"] == np.histogram(v, bins=20, range=(0, 1))[0].tolist()
    sat = [
        layer[n]["above_0.95"] + layer[n]["below_0.05"]
        for layer in gates["layers"]
        for n in ("input", "forget", "output")
    ]
    assert max(sat) > 0.05  # the large weights saturate some gates: the counts are exercised


def test_fraction_bins():
    bins = fraction_bins([10, 3, 1], 10)
    assert bins[0].tolist() == list(range(10))
    assert bins[1].tolist() == [3, 6, 9] + [-1] * 7  # 1/3 -> (0.3, 0.4], 2/3, 3/3
    assert bins[2].tolist() == [9] + [-1] * 9


def test_gradflow_sums_over_ranks_give_one_process_s_records():
    """Two ranks' sums, padded to the longest training sequence (12) to be summed, gave
    records 12 steps long where one process seeing the same batches (9 steps at most, an
    epoch resumed mid-way) gave 9, and a record of a track no row reached. A batch whose
    longest rows are left out (class weight 0: FlowRecorder.add) still spans its width
    in one process, with count 0 there."""
    rng = np.random.default_rng(1)
    one, ranks = GradFlowAccumulator(), [GradFlowAccumulator(), GradFlowAccumulator()]
    for r, T in ((0, 4), (1, 9), (0, 6), (1, 10)):
        lengths = rng.integers(1, T + 1, 3)
        lengths[0] = T
        dh, dc = rng.random((3, T)), rng.random((3, T))
        if T == 10:  # its longest row left out: the batch spans 10 steps, rows reach 9
            lengths, dh, dc = np.minimum(lengths[1:], 9), dh[1:], dc[1:]
        for acc in (one, ranks[r]):
            acc.add(0, dh, dc, lengths)
    summed = ranks[0].flat_sums(2, 12) + ranks[1].flat_sums(2, 12)  # 2 tracks, 1 reached
    ranks[0].load_flat_sums(summed, 2, 12)
    got, want = ranks[0].records(5), one.records(5)
    assert len(got) == len(want) == 1 and got[0].keys() == want[0].keys()
    for key, value in want[0].items():
        if key.startswith(("dh_norm", "dc_norm")):  # sums in another order
            as_float = [np.array(r[key], dtype=float) for r in (got[0], want[0])]
            np.testing.assert_allclose(*as_float, rtol=1e-12, err_msg=key)
        else:
            assert got[0][key] == value, key


def test_gradflow_accumulator_means_and_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    acc = GradFlowAccumulator()
    batches = []
    for T in (4, 9, 6):
        lengths = rng.integers(1, T + 1, 5)
        lengths[0] = T
        dh, dc = rng.random((5, T)), rng.random((5, T))
        dh[np.arange(T)[None] >= lengths[:, None]] = 1e9  # past each end: must be ignored
        batches.append((lengths, dh, dc))
        acc.add(0, dh, dc, lengths)
        acc.add(1, 2 * dh, dc, lengths)
    records = acc.records(epoch=3)
    assert [r["layer"] for r in records] == [0, 1]
    rec = records[0]
    assert rec["epoch"] == 3 and rec["step"] == list(range(1, 10))
    by_step = {t: [] for t in range(9)}
    by_bin = {b: [] for b in range(10)}
    for lengths, dh, _ in batches:
        for b, L in enumerate(lengths):
            for t in range(L):
                by_step[t].append(dh[b, t])
                by_bin[math.ceil(Fraction(10 * (t + 1), int(L))) - 1].append(dh[b, t])
    assert rec["dh_norm"] == pytest.approx([np.mean(by_step[t]) for t in range(9)])
    assert rec["count"] == [len(by_step[t]) for t in range(9)]
    want_bins = [np.mean(v) if v else None for v in by_bin.values()]
    assert rec["dh_norm_by_fraction"] == pytest.approx(want_bins)
    assert records[1]["dh_norm"] == pytest.approx([2 * v for v in rec["dh_norm"]])
    assert rec["fraction"] == pytest.approx([0.1 * k for k in range(1, 11)])
    assert acc.records(epoch=4) == []  # records() resets
    path = tmp_path / "gradflow.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_gradflow(path) == json.loads(json.dumps(records))


def _record():
    return {
        "epoch": 1,
        "layer": 0,
        "step": [1, 2],
        "dh_norm": [0.5, 0.25],
        "dc_norm": [0.4, None],
        "fraction": [0.5, 1.0],
        "dh_norm_by_fraction": [0.5, 0.25],
        "dc_norm_by_fraction": [0.4, 0.1],
    }


@pytest.mark.parametrize(
    "change, words",
    [
        ({"epoch": 0}, "'epoch'"),
        ({"layer": "0"}, "'layer'"),
        ({"step": []}, "'step'"),
        ({"dh_norm": [0.5]}, "'dh_norm' has 1 values but 'step' has 2"),
        ({"dc_norm_by_fraction": [0.1, -1.0]}, "'dc_norm_by_fraction'"),
        ({"fraction": [0.5, 1.5]}, "'fraction'"),
    ],
)
def test_gradflow_record_checks(change, words):
    check_gradflow_record(_record(), "f:1")
    with pytest.raises(DataError, match="^f:1: ") as err:
        check_gradflow_record({**_record(), **change}, "f:1")
    assert words in str(err.value)


def test_readers_name_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with pytest.raises(DataError, match="metrics.jsonl: no such file"):
        read_metrics(path)
    path.write_text('{"epoch": 1, "train_loss": 0.5}\n\n{"epoch": 2, "train_loss": \n')
    with pytest.raises(DataError, match=r"metrics.jsonl:3: not valid JSON"):
        read_metrics(path)
    path.write_text('{"epoch": 1, "train_loss": "x"}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:1: 'train_loss' is 'x'"):
        read_metrics(path)
    path.write_text('{"epoch": 2, "val_loss": null}\n{"epoch": 1}\n{"epoch": 2, "lr": 1}\n')
    assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2, "lr": 1}]  # resumed: last row wins
    flow = tmp_path / "gradflow.jsonl"
    flow.write_text(json.dumps(_record()) + "\n" + json.dumps({**_record(), "layer": -1}) + "\n")
    with pytest.raises(DataError, match=r"gradflow.jsonl:2: 'layer'"):
        read_gradflow(flow)
    report = tmp_path / "report.json"
    report.write_text('{"labels": ["a", "b"], "confusion_matrix": [[1, 0], [0]]}')
    with pytest.raises(DataError, match="report.json: 'confusion_matrix' must be 2 rows of 2"):
        read_report(report)


@pytest.mark.parametrize("head", ["last", "all"])
def test_batch_gradient_flow_is_the_models_gradient(head):
    """The step-by-step BPTT behind the norms gives the kernel's parameter gradients, so its
    per-step dL/dh_t and dL/dc_t (which determine them) are the model's."""
    from lstm_cli.data import pad_batch
    from lstm_cli.diagnostics import batch_gradient_flow

    tm, ds, seqs, labels = _tiny(head, seed=4)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    x, lengths = pad_batch(ds, np.arange(len(seqs)), np.float64, tm.mean, tm.std)
    dh, dc, grads = batch_gradient_flow(tm.model, x, lengths, y)
    _, want = tm.model.loss_and_grads(x, lengths, y)
    for name, g in want.items():
        np.testing.assert_allclose(grads[name] / len(seqs), g, rtol=1e-8, atol=1e-12)
    B, T = len(seqs), x.shape[1]
    valid = np.arange(T)[None] < lengths[:, None]
    for k in range(2):
        assert dh[k].shape == dc[k].shape == (B, T)
        assert (dh[k][~valid] == 0).all() and (dh[k][valid] > 0).all()
    if head == "last":  # the top layer's last valid step has only the head's part
        V = tm.model.params["head.W"]
        logits = tm.model.logits(x, lengths)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(B), y] -= 1
        want_last = np.linalg.norm(p @ V.T, axis=1)
        np.testing.assert_allclose(dh[1][np.arange(B), lengths - 1], want_last, rtol=1e-10)


def test_checkpoint_gradient_flow_records():
    from lstm_cli.diagnostics import checkpoint_gradient_flow

    tm, ds, seqs, labels = _tiny("all", seed=5)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    records = checkpoint_gradient_flow(tm, ds, y, epoch=7, batch_size=4)
    assert [(r["epoch"], r["layer"]) for r in records] == [(7, 0), (7, 1)]
    for r in records:
        check_gradflow_record(json.loads(json.dumps(r)), "rec")
        assert len(r["step"]) == max(len(s) for s in seqs)
        assert r["count"][0] == len(seqs) and sum(r["count_by_fraction"]) == sum(map(len, seqs))


def _loss_perturbed(tm, seq, label, where, k, t, delta, direction=0):
    """Plain-loop loss of one sequence with ``delta`` added to h_t or c_t of layer k's
    direction (0 forward, 1 reverse: the reverse LSTM runs from the last step down to 0,
    its t the sequence's own step), for every head."""
    m, p = tm.model, tm.model.params
    H, L = m.hidden_size, len(seq)
    inp = (seq - tm.mean) / tm.std
    for layer in range(m.num_layers):
        outs = []
        for d, suffix in enumerate(("", ".reverse")[: m.directions]):
            W, b = p[f"lstm.{layer}{suffix}.W"], p[f"lstm.{layer}{suffix}.b"]
            h, c, hs = np.zeros(H), np.zeros(H), np.zeros((L, H))
            for s in range(L) if d == 0 else range(L - 1, -1, -1):
                z = np.concatenate([inp[s], h]) @ W + b
                i, j = _sigmoid(z[:H]), np.tanh(z[H : 2 * H])
                f, o = _sigmoid(z[2 * H : 3 * H] + m.forget_bias), _sigmoid(z[3 * H :])
                c = f * c + i * j
                if (layer, d, s, where) == (k, direction, t, "c"):
                    c = c + delta
                h = o * np.tanh(c)
                if (layer, d, s, where) == (k, direction, t, "h"):
                    h = h + delta
                hs[s] = h
            outs.append(hs)
        inp = np.concatenate(outs, axis=1)  # (L, D*H)
    if m.head == "all":
        feats = inp
    elif m.head == "last":  # forward's last state, the reverse direction's at step 0
        feats = np.concatenate([inp[-1, :H], inp[0, H:]])[None]
    else:
        feats = (inp.mean(0) if m.head == "mean" else inp.max(0))[None]
    logits = feats @ p["head.W"] + p["head.b"]
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return -logp[:, label].mean()


def _fd_norm(tm, seq, label, where, k, t, direction=0, eps=1e-6):
    """|dL/dh_t| or |dL/dc_t| of layer k's direction at step t, by central differences."""
    H = tm.model.hidden_size
    g = np.zeros(H)
    for u in range(H):
        e = np.zeros(H)
        e[u] = eps
        plus = _loss_perturbed(tm, seq, label, where, k, t, e, direction)
        minus = _loss_perturbed(tm, seq, label, where, k, t, -e, direction)
        g[u] = (plus - minus) / (2 * eps)
    return np.linalg.norm(g)


@pytest.mark.parametrize("head", ["last", "all"])
def test_gradient_flow_norms_match_finite_differences(head):
    from lstm_cli.data import pad_batch
    from lstm_cli.diagnostics import batch_gradient_flow

    tm, ds, seqs, labels = _tiny(head, seed=6, n=4)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    x, lengths = pad_batch(ds, np.arange(4), np.float64, tm.mean, tm.std)
    dh, dc, _ = batch_gradient_flow(tm.model, x, lengths, y)
    n = 1  # sequence 1 has 10 steps
    for k in range(2):
        for t in (0, 4, 9):
            for where, norms in (("h", dh), ("c", dc)):
                want = _fd_norm(tm, seqs[n], y[n], where, k, t)
                assert norms[k][n, t] == pytest.approx(want, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("head", ["last", "all", "mean", "max"])
def test_the_models_flow_matches_finite_differences(head, bi):
    """model.backward's own flow, for every head and both directions of every layer: the
    norm of each sequence's dL/dh_t and dL/dc_t against central differences of a plain
    loop (the reverse direction's entries at the sequence's own steps)."""
    tm, ds, seqs, labels = _tiny(head, seed=6, n=4, bi=bi)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    x, lengths = pad_batch(ds, np.arange(4), np.float64, tm.mean, tm.std)
    flow = []
    tm.model.loss_and_grads(x, lengths, y, flow=flow)
    D, B = tm.model.directions, 4
    assert len(flow) == 2 * D
    n = 1  # sequence 1 has 10 steps
    for k in range(2):
        for d in range(D):
            dh, dc = flow[D * k + d]
            assert dh.shape == dc.shape == x.shape[:2] and (dh[n, 10:] == 0).all()
            for t in (0, 4, 9):
                for where, norms in (("h", dh), ("c", dc)):
                    want = _fd_norm(tm, seqs[n], y[n], where, k, t, direction=d)
                    assert B * norms[n, t] == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_a_bidirectional_models_records_name_their_direction():
    tm, ds, seqs, labels = _tiny("last", bi=True)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    records = checkpoint_gradient_flow(tm, ds, y, epoch=1, batch_size=5)
    got = [(r["layer"], r["direction"]) for r in records]
    assert got == [(0, "forward"), (0, "reverse"), (1, "forward"), (1, "reverse")]
    for r in records:
        check_gradflow_record(json.loads(json.dumps(r)), "rec")
    # the last head reads the reverse direction at step 0 and the forward one at the end:
    # the top layer's reverse gradient is largest at step 1, the forward one's is not
    top_fwd, top_rev = records[2]["dh_norm_by_fraction"], records[3]["dh_norm_by_fraction"]
    assert top_rev[0] == max(top_rev) and top_fwd[-1] == max(top_fwd)
    bad = dict(records[0], direction="backward")
    with pytest.raises(DataError, match="'direction' is 'backward'; expected one of"):
        check_gradflow_record(bad, "rec")


@pytest.mark.parametrize("head", ["last", "all", "mean", "max"])
def test_checkpoint_gradient_flow_is_the_reference_bptt(head):
    """checkpoint_gradient_flow reads the model's own backward; batch_gradient_flow (a
    plain step-by-step BPTT of each sequence's own loss) is the oracle for last/all."""
    tm, ds, seqs, labels = _tiny(head, seed=4)
    y = np.array([tm.classes.index(lbl) for lbl in labels])
    records = checkpoint_gradient_flow(tm, ds, y, epoch=3, batch_size=len(seqs))
    assert [r["layer"] for r in records] == [0, 1] and records[0]["epoch"] == 3
    if head in ("mean", "max"):
        assert all(v is None or v > 0 for v in records[0]["dh_norm"])
        return
    x, lengths = pad_batch(ds, np.arange(len(seqs)), tm.model.dtype, tm.mean, tm.std)
    dh, dc, _ = batch_gradient_flow(tm.model, x, lengths, y)
    T = x.shape[1]
    valid = np.arange(T)[None, :] < lengths[:, None]
    for k, rec in enumerate(records):
        want = np.where(valid, dh[k], 0).sum(0) / valid.sum(0)
        np.testing.assert_allclose(rec["dh_norm"], want, rtol=1e-10)


def test_row_norms_keep_float32s_whole_range():
    """Squares of 1e-30 underflow and of 1e30 overflow in float32; the scaled norm keeps
    both, and inf and 0 stay what they are."""
    from lstm_cli.nn.lstm import row_norms

    a = np.zeros((6, 16), np.float32)
    a[0], a[1], a[2, :2], a[4, 3], a[5] = 1e-30, 1e30, (3, 4), np.inf, 1e-45
    got = row_norms(a)
    assert got.dtype == np.float64
    want = np.linalg.norm(a.astype(np.float64), axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[3] == 0 and got[4] == np.inf and got[0] > 0 and np.isfinite(got[1])


def test_a_float32_models_flow_reaches_as_far_back_as_its_gradient():
    """On 600 steps the float32 gradient decays below 1e-30 long before it is exactly 0;
    the recorded norms follow it there (an unscaled norm read 0 from about 1e-22 on), and
    agree with the step-by-step BPTT whose norms are taken in float64."""
    rng = np.random.default_rng(0)
    model = LSTMClassifier(1, 16, 3, seed=0)  # float32
    B, T = 4, 600
    x = rng.standard_normal((B, T, 1)).astype(np.float32)
    lengths, y = np.array([600, 500, 450, 600]), np.array([0, 1, 2, 0])
    flow = []
    model.loss_and_grads(x, lengths, y, flow=flow)
    want_dh, want_dc, _ = batch_gradient_flow(model, x, lengths, y)
    for k, (dh, dc) in enumerate(flow):
        for got, want in ((dh * B, want_dh[k]), (dc * B, want_dc[k])):
            tiny = (want > 0) & (want < 1e-30)
            assert tiny.sum() > 100  # the regime the test is about
            assert (got[want > 1e-40] > 0).all()
            np.testing.assert_allclose(got[want > 1e-40], want[want > 1e-40], rtol=1e-2)

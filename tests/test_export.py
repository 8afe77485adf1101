"""lstm-export / lstm-import, verified against the real runtimes (onnxruntime, torch).

Models are random-weight LSTMClassifiers saved with a trainer-like meta (model spec,
classes, normalisation), so every case is fast. Padding holds garbage (NaN, huge values)
so a graph that read it would fail the comparison.
"""

import json
import os
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli.cli import evaluate, export, import_, predict
from lstm_cli.data.framing import TRANSFORMS_OFF
from lstm_cli.errors import MissingExtraError
from lstm_cli.export.torch_state import PYTORCH_MODULE, torch_state_dict
from lstm_cli.inference import load_trained
from lstm_cli.nn.model import LSTMClassifier
from lstm_cli.nn.spec import HEADS
from lstm_cli.store.checkpoint import load_checkpoint, save_checkpoint

F, H, K = 3, 5, 4
CLASSES = ["cat", "dog", "eel", "fox"]
LENGTHS = np.array([1, 7, 3, 7, 2, 5])  # includes 1 and the maximum


def make_checkpoint(
    tmp_path,
    head="last",
    layers=1,
    forget_bias=0.7,
    norm=True,
    name="m.npz",
    dtype="float32",
    bidirectional=False,
    data=None,
    seed=3,
    classes=CLASSES,
):
    """data: the training config's ``data`` section (input transforms), or None; seed:
    the model's weights."""
    features = F * (data or {}).get("frame", 1)
    model = LSTMClassifier(
        features,
        H,
        K,
        num_layers=layers,
        head=head,
        forget_bias=forget_bias,
        seed=seed,
        dtype=dtype,
        bidirectional=bidirectional,
    )
    rng = np.random.default_rng(seed - 2)
    for k, v in model.params.items():  # larger than the init so the gates saturate unevenly
        model.params[k] = (v * 2.5 + rng.normal(scale=0.1, size=v.shape)).astype(dtype)
    normalization = None
    if norm:
        normalization = {
            "mean": rng.normal(size=features).tolist(),
            "std": rng.uniform(0.5, 2.0, size=features).tolist(),
        }
    meta = {"model": model.spec(), "classes": list(classes), "normalization": normalization}
    if data is not None:
        meta["config"] = {"data": data}
    path = tmp_path / name
    save_checkpoint(path, model.params, meta)
    return path


def batch(garbage=np.nan):
    """x (B, T, F) raw features with ``garbage`` past each length, and lengths (B,) int64."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(len(LENGTHS), LENGTHS.max(), F)).astype(np.float32) * 2
    for b, n in enumerate(LENGTHS):
        x[b, n:] = garbage
    return x, LENGTHS.astype(np.int64)


def reference_probs(ckpt, x, lengths):
    """What lstm-predict computes: pad_batch's float64 normalisation, then predict_proba."""
    tm = load_trained(ckpt)
    xn = x.astype(np.float64)
    if tm.mean is not None:
        xn = (xn - tm.mean) / tm.std
    for b, n in enumerate(lengths):
        xn[b, n:] = 0.0
    return tm.model.predict_proba(xn.astype(tm.model.dtype), lengths), tm


def run(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    return result


def one_error_line(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------ ONNX


ARCHS = [
    (head, layers, bi, "float32") for head in HEADS for layers in (1, 2) for bi in (False, True)
] + [("all", 2, False, "float64")]  # the graph is float32 whatever the model's dtype


@pytest.mark.parametrize("head, layers, bi, dtype", ARCHS)
def test_onnx_matches_predict_proba(tmp_path, head, layers, bi, dtype):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ckpt = make_checkpoint(tmp_path, head, layers, dtype=dtype, bidirectional=bi)
    out = tmp_path / "m.onnx"
    result = run(export, [ckpt, "--to", "onnx", out])
    assert result.exit_code == 0, result.output
    assert "opset 17" in result.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [o.op_type for o in model.graph.node].count("LSTM") == layers
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == CLASSES and props["head"] == head
    assert json.loads(props["bidirectional"]) is bi
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    for garbage in (np.nan, 1e30, 0.0):
        x, lengths = batch(garbage)
        probs, label = sess.run(None, {"x": x, "lengths": lengths})
        ref, _ = reference_probs(ckpt, x, lengths)
        assert probs.dtype == np.float32 and probs.shape == (len(LENGTHS), K)
        np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(label, ref.argmax(1))
    # dynamic batch and time: one short sequence alone
    x1, l1 = batch()
    probs1, _ = sess.run(None, {"x": x1[:1, :1], "lengths": l1[:1]})
    np.testing.assert_allclose(probs1, probs[:1], rtol=0, atol=1e-5)


def transformed_reference(ckpt, x, lengths):
    """What lstm-predict computes on raw padded x: TrainedModel.prepare (the checkpoint's
    input transforms), then pad_batch's normalisation and predict_proba."""
    from lstm_cli.data import SequenceDataset
    from lstm_cli.inference import predict_dataset

    tm = load_trained(ckpt)
    stacked = np.concatenate([x[b, :n] for b, n in enumerate(lengths)]).astype(np.float64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ds = tm.prepare(SequenceDataset(stacked, offsets, None))
    return predict_dataset(tm.model, ds, tm.mean, tm.std)


TRANSFORMS = [
    ("last", False, {"normalize_per_sequence": True}),
    ("all", True, {"pool": 3}),
    ("mean", False, {"frame": 2}),
    ("last", True, {"normalize_per_sequence": True, "pool": 2, "frame": 3}),
    ("all", False, {"normalize_per_sequence": True, "pool": 4, "frame": 2}),
    ("mean", True, {"pool": 2, "frame": 2}),
]


@pytest.mark.parametrize("head, bi, data", TRANSFORMS)
def test_onnx_applies_the_input_transforms(tmp_path, head, bi, data):
    """Per-sequence z-score, pooling and framing happen inside the graph on raw input,
    variable lengths (1 and the maximum, partial last windows and frames)."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ckpt = make_checkpoint(tmp_path, head, 2, bidirectional=bi, data=data)
    out = tmp_path / "m.onnx"
    result = run(export, [ckpt, "--to", "onnx", out])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_value == F  # raw features
    props = {p.key: p.value for p in model.metadata_props}
    t = json.loads(props["transforms"])
    assert t["pool"] == data.get("pool", 1) and t["frame"] == data.get("frame", 1)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for garbage in (np.nan, 1e30):
        x, lengths = batch(garbage)
        x[2, :, 1] = 4.25  # a feature constant within a sequence: only centred
        x[1, :, 0] *= 1e-9  # one in small units: z-scored like any other (it was centred)
        probs, label = sess.run(None, {"x": x, "lengths": lengths})
        ref = transformed_reference(ckpt, x, lengths)
        np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(label, ref.argmax(1))
        # a time axis longer than every sequence: more padded windows / frames, same result
        wide = np.concatenate([x, np.full((len(x), 4, F), garbage, np.float32)], axis=1)
        wide_probs, _ = sess.run(None, {"x": wide, "lengths": lengths})
        np.testing.assert_allclose(wide_probs, ref, rtol=0, atol=1e-5)


def predict_csv_probs(tmp_path, checkpoint, x, lengths):
    """The probabilities lstm-predict CHECKPOINT writes (6 digits) for the batch x, lengths."""
    data = tmp_path / "d.jsonl"
    with open(data, "w") as fh:
        for b, n in enumerate(lengths):
            fh.write(json.dumps({"x": x[b, :n].tolist(), "y": CLASSES[b % K]}) + "\n")
    csv_out = tmp_path / "p.csv"
    args = [checkpoint, "--data", data, "--output", csv_out, "--quiet"]
    assert run(predict, args).exit_code == 0
    rows = [line.split(",") for line in csv_out.read_text().splitlines()[1:]]
    return np.array([[float(v) for v in r[2:]] for r in rows])


@pytest.mark.parametrize(
    "head, bi, data",
    [("all", False, None), ("mean", True, {"normalize_per_sequence": True, "pool": 2, "frame": 2})],
)
def test_onnx_matches_lstm_predict_csv(tmp_path, head, bi, data):
    """End to end: the ONNX probabilities equal those lstm-predict writes."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ckpt = make_checkpoint(tmp_path, head, 2, bidirectional=bi, data=data)
    x, lengths = batch()
    predicted = predict_csv_probs(tmp_path, ckpt, x, lengths)
    assert run(export, [ckpt, "--to", "onnx", tmp_path / "m.onnx"]).exit_code == 0
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    probs, _ = sess.run(None, {"x": x, "lengths": lengths})
    np.testing.assert_allclose(probs, predicted, rtol=0, atol=1e-5)  # CSV keeps 6 digits


ENSEMBLE = [  # members unlike each other: heads, directions, transforms, normalisation
    dict(head="last", layers=1, seed=3),
    dict(head="mean", layers=2, bidirectional=True, seed=4, norm=False, data={"frame": 2}),
    dict(head="all", layers=1, seed=5, data={"normalize_per_sequence": True, "pool": 3}),
]


def _ensemble(tmp_path):
    return [make_checkpoint(tmp_path, name=f"e{i}.npz", **kw) for i, kw in enumerate(ENSEMBLE)]


def _export_ensemble(tmp_path, target):
    """The ENSEMBLE checkpoints, the file lstm-export wrote of them to ``target``, its result."""
    ckpts = _ensemble(tmp_path)
    out = tmp_path / ("e.onnx" if target == "onnx" else "e.safetensors")
    result = run(export, [*ckpts, "--to", target, out])
    assert result.exit_code == 0, result.output
    return ckpts, out, result


def test_onnx_of_several_checkpoints_is_their_mean_probability(tmp_path):
    """One graph, each member with its own transforms and normalisation inside, computes
    lstm_cli.ensemble's mean of the members' probabilities on raw padded input."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ckpts, out, result = _export_ensemble(tmp_path, "onnx")
    assert "the mean of 3 members' probabilities" in result.stderr
    model = onnx.load(str(out))
    assert [o.op_type for o in model.graph.node].count("LSTM") == 4
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == CLASSES
    members = json.loads(props["members"])
    assert [m["head"] for m in members] == ["last", "mean", "all"]
    assert json.loads(members[1]["transforms"])["frame"] == 2
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for garbage in (np.nan, 1e30):
        x, lengths = batch(garbage)
        probs, label = sess.run(None, {"x": x, "lengths": lengths})
        each = [transformed_reference(c, x, lengths) for c in ckpts]
        ref = np.mean(each, axis=0)
        assert np.abs(each[0] - each[1]).max() > 0.05  # the members do differ
        np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(label, ref.argmax(1))


def test_onnx_of_an_ensemble_folder_matches_lstm_predict(tmp_path):
    """A train.folds folder (members listed in its summary.json) exports as one graph whose
    probabilities are those lstm-predict writes for the folder."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    run_dir = tmp_path / "run"
    members = []
    for i, ckpt in enumerate(_ensemble(tmp_path)):
        (run_dir / f"fold-{i}").mkdir(parents=True)
        os.replace(ckpt, run_dir / f"fold-{i}" / "best.npz")
        members.append(f"fold-{i}/best.npz")
    (run_dir / "summary.json").write_text(json.dumps({"members": members}))
    x, lengths = batch()
    predicted = predict_csv_probs(tmp_path, run_dir, x, lengths)
    result = run(export, [run_dir, "--to", "onnx", tmp_path / "e.onnx", "--quiet"])
    assert result.exit_code == 0, result.output
    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    probs, _ = sess.run(None, {"x": x, "lengths": lengths})
    np.testing.assert_allclose(probs, predicted, rtol=0, atol=1e-5)  # CSV keeps 6 digits


@pytest.mark.parametrize(
    "second, target, fragments",
    [
        (dict(seed=4, classes=["a", "b", "c", "d"]), "onnx", ["labels", "differ"]),
        (dict(seed=4, data={"pool": 2}, norm=False), None, None),  # same raw features: fine
    ],
)
def test_export_of_several_checkpoints_that_cannot_be_one_file(tmp_path, second, target, fragments):
    pytest.importorskip("onnx")
    first = make_checkpoint(tmp_path, name="a.npz")
    other = make_checkpoint(tmp_path, name="b.npz", **second)
    out = tmp_path / "out.onnx"
    result = run(export, [first, other, "--to", target or "onnx", out])
    if fragments is None:
        assert result.exit_code == 0, result.output
        return
    one_error_line(result, 5, *fragments)
    assert not out.exists()


@pytest.mark.parametrize("target", ["onnx", "pytorch"])
def test_an_ensemble_of_members_reading_different_features_is_exit_5(tmp_path, target):
    pytest.importorskip("onnx" if target == "onnx" else "safetensors")
    wide = LSTMClassifier(F + 1, H, K, seed=0)
    other = tmp_path / "wide.npz"
    save_checkpoint(other, wide.params, {"model": wide.spec(), "classes": CLASSES})
    out = tmp_path / "out.bin"
    result = run(export, [make_checkpoint(tmp_path), other, "--to", target, out])
    one_error_line(result, 5, "different numbers of features per step ([3, 4])")
    assert not out.exists()


def test_onnx_ensemble_refuses_members_reading_different_features(tmp_path):
    pytest.importorskip("onnx")
    from lstm_cli.errors import CheckpointError
    from lstm_cli.export.onnx_graph import build_onnx_ensemble

    wide = LSTMClassifier(F + 1, H, K, seed=0)
    framed = LSTMClassifier(2 * F, H, K, seed=0)
    assert build_onnx_ensemble(
        [(framed, None, None, {"frame": 2}), (LSTMClassifier(F, H, K), None, None, None)], CLASSES
    )
    with pytest.raises(
        CheckpointError, match=r"different numbers of features per step \(\[3, 4\]\)"
    ):
        build_onnx_ensemble([(framed, None, None, {"frame": 2}), (wide, None, None, None)], CLASSES)


def _lstm_session(onnx, ort, w, r, bias, **attributes):
    """An onnxruntime session of one ONNX LSTM node: inputs X (T, B, F) and sequence_lens
    L (B,), outputs Y and Y_h, weights w, r, bias in ONNX's layout."""
    h = onnx.helper
    node = h.make_node("LSTM", ["X", "W", "R", "B", "L"], ["Y", "Y_h"], hidden_size=H, **attributes)
    graph = h.make_graph(
        [node],
        "lstm",
        [
            h.make_tensor_value_info("X", onnx.TensorProto.FLOAT, ["T", "B", F]),
            h.make_tensor_value_info("L", onnx.TensorProto.INT32, ["B"]),
        ],
        [
            h.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None),
            h.make_tensor_value_info("Y_h", onnx.TensorProto.FLOAT, None),
        ],
        [onnx.numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (bias, "B"))],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_onnx_lstm_operator_ignores_padding_and_yh_is_each_last_step():
    """The runtime's own promise the graph relies on: with sequence_lens, padded steps
    change nothing and Y_h is the state at each sequence's own last step."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from lstm_cli.export.onnx_graph import onnx_gates

    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(F + H, 4 * H)), rng.normal(size=4 * H)
    sess = _lstm_session(onnx, ort, *onnx_gates(W, b, 0.5))
    x, lengths = batch(garbage=1e6)  # finite garbage: the GEMM over padding stays finite
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    y, y_h = sess.run(None, {"X": xt, "L": lengths.astype(np.int32)})
    for bi, n in enumerate(lengths):  # each sequence alone, exactly its valid steps
        alone_y, alone_h = sess.run(None, {"X": xt[:n, bi : bi + 1], "L": np.array([n], np.int32)})
        np.testing.assert_allclose(y[:n, 0, bi], alone_y[:, 0, 0], atol=1e-6)
        np.testing.assert_allclose(y_h[0, bi], alone_y[n - 1, 0, 0], atol=1e-6)
        np.testing.assert_allclose(y_h[0, bi], alone_h[0, 0], atol=1e-6)
        assert not y[n:, 0, bi].any()  # padded outputs are 0


def test_onnx_reverse_direction_starts_at_each_sequences_own_last_step():
    """A bidirectional LSTM node with sequence_lens: the reverse direction reads each
    sequence's valid steps from its own last one down to 0 (never the padding), and its
    Y_h is the reverse state at step 0, as lstm_cli's bidirectional layer does."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from lstm_cli.export.onnx_graph import onnx_gates

    rng = np.random.default_rng(0)
    gates = [onnx_gates(rng.normal(size=(F + H, 4 * H)), rng.normal(size=4 * H), 0.5)]
    gates.append(onnx_gates(rng.normal(size=(F + H, 4 * H)), rng.normal(size=4 * H), 0.5))
    w, r, bias = (np.concatenate([g[i] for g in gates]) for i in range(3))
    sess = _lstm_session(onnx, ort, w, r, bias, direction="bidirectional")
    x, lengths = batch(garbage=1e6)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    y, y_h = sess.run(None, {"X": xt, "L": lengths.astype(np.int32)})
    for bi, n in enumerate(lengths):
        alone = np.ascontiguousarray(xt[:n, bi : bi + 1])
        alone_y, alone_h = sess.run(None, {"X": alone, "L": np.array([n], np.int32)})
        np.testing.assert_allclose(y[:n, :, bi], alone_y[:, :, 0], atol=1e-6)
        np.testing.assert_allclose(y_h[1, bi], alone_y[0, 1, 0], atol=1e-6)  # h<- at step 0
        np.testing.assert_allclose(y_h[0, bi], alone_y[n - 1, 0, 0], atol=1e-6)
        assert not y[n:, :, bi].any()  # padded outputs are 0


# --------------------------------------------------------------------------- PyTorch


def _exported_torch(tmp_path, head, layers, norm=True, bidirectional=False, data=None):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    ckpt = make_checkpoint(
        tmp_path, head, layers, norm=norm, bidirectional=bidirectional, data=data
    )
    out = tmp_path / "m.safetensors"
    result = run(export, [ckpt, "--to", "pytorch", out])
    assert result.exit_code == 0, result.output
    namespace = {}
    exec(result.stdout, namespace)  # the printed module definition is what loads the file
    torch.set_num_threads(1)
    model, classes = namespace["load_classifier"](str(out))
    return ckpt, out, model, classes, torch


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bi", [False, True])
def test_pytorch_export_gives_the_same_logits(tmp_path, head, layers, bi):
    ckpt, out, model, classes, torch = _exported_torch(tmp_path, head, layers, bidirectional=bi)
    assert classes == CLASSES
    assert model.lstm.bidirectional is bi and model.fc.in_features == H * (1 + bi)
    x, lengths = batch(0.0)
    ref, tm = reference_probs(ckpt, x, lengths)
    xn = ((x.astype(np.float64) - tm.mean) / tm.std).astype(np.float32)
    xn[np.arange(x.shape[1]) >= lengths[:, None]] = 0.0
    want = tm.model.logits(xn, lengths)
    with torch.no_grad():
        lens = torch.from_numpy(lengths)
        pack = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(xn), lens, True, enforce_sorted=False
        )
        y, (h_n, _) = model.lstm(pack)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, True)  # 0 past each end
        valid = np.arange(x.shape[1]) < lengths[:, None]
        if head == "last":  # [h-> at the last step, h<- at step 0] of the top layer
            got = model.fc(torch.cat(list(h_n[-2:] if bi else h_n[-1:]), -1)).numpy()
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        elif head == "mean":
            got = model.fc(y.sum(1) / lens[:, None]).numpy()
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        elif head == "max":  # padding is 0 after pad_packed_sequence: mask it out first
            got = model.fc(y.masked_fill(~torch.from_numpy(valid)[..., None], -1e30).amax(1))
            np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5)
        else:
            got = model.fc(y).numpy()
            np.testing.assert_allclose(got[valid], want[valid], rtol=0, atol=1e-5)
        x_raw, _ = batch(np.nan)
        probs = model(torch.from_numpy(x_raw), lens).numpy()
    np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("head, bi, data", TRANSFORMS)
def test_pytorch_module_applies_the_input_transforms(tmp_path, head, bi, data):
    """The printed module z-scores, pools and frames raw input as lstm_cli does."""
    _, out, model, _, torch = _exported_torch(tmp_path, head, 2, bidirectional=bi, data=data)
    ckpt = tmp_path / "m.npz"
    for garbage in (np.nan, 1e30):
        x, lengths = batch(garbage)
        x[2, :, 1] = 4.25  # a feature constant within a sequence: only centred
        x[1, :, 0] *= 1e-9  # one in small units: z-scored like any other (it was centred)
        wide = np.concatenate([x, np.full((len(x), 4, F), garbage, np.float32)], axis=1)
        ref = transformed_reference(ckpt, x, lengths)
        for xb in (x, wide):  # a time axis longer than every sequence changes nothing
            with torch.no_grad():
                probs = model(torch.from_numpy(xb), torch.from_numpy(lengths)).numpy()
            np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)


def test_pytorch_module_normalises_with_float64_statistics(tmp_path):
    """Data far from 0 with a small spread: the training mean rounded to float32 (an error
    of about 4e-4 here) would move each normalised input by about 0.4."""
    _, out, model, _, torch = _exported_torch(tmp_path, "last", 1)
    ckpt = tmp_path / "m.npz"
    c = load_checkpoint(ckpt)
    c.meta["normalization"] = {"mean": [12345.678, -9876.543, 3.0], "std": [1e-3, 2e-3, 1.0]}
    save_checkpoint(ckpt, c.params, c.meta)
    assert run(export, [ckpt, "--to", "pytorch", out, "--quiet"]).exit_code == 0
    x, lengths = batch(0.0)
    x = np.asarray(c.meta["normalization"]["mean"]) + 1e-3 * x  # float64 raw input
    ns = {}
    exec(PYTORCH_MODULE, ns)
    model, _ = ns["load_classifier"](str(out))
    ref, _ = reference_probs(ckpt, x, lengths)
    with torch.no_grad():
        probs = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)


def test_pytorch_module_runs_a_float64_model_in_float64(tmp_path):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    data = {"normalize_per_sequence": True, "pool": 2, "frame": 2}
    ckpt = make_checkpoint(tmp_path, "max", 2, dtype="float64", bidirectional=True, data=data)
    out = tmp_path / "m.safetensors"
    assert run(export, [ckpt, "--to", "pytorch", out, "--quiet"]).exit_code == 0
    ns = {}
    exec(PYTORCH_MODULE, ns)
    torch.set_num_threads(1)
    model, _ = ns["load_classifier"](str(out))
    assert model.fc.weight.dtype == torch.float64
    x, lengths = batch(np.nan)
    x = x.astype(np.float64)
    with torch.no_grad():
        probs = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    assert probs.dtype == np.float64
    np.testing.assert_allclose(probs, transformed_reference(ckpt, x, lengths), rtol=1e-10, atol=0)


def test_pytorch_ensemble_runs_each_member_in_its_own_dtype(tmp_path):
    """All members ran in member 0's dtype: a float64 member in float32."""
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    ckpts = [
        make_checkpoint(tmp_path, name="f32.npz"),
        make_checkpoint(tmp_path, "mean", name="f64.npz", dtype="float64", seed=4),
    ]
    out = tmp_path / "e.safetensors"
    assert run(export, [*ckpts, "--to", "pytorch", out, "--quiet"]).exit_code == 0
    ns = {}
    exec(PYTORCH_MODULE, ns)
    model, _ = ns["load_classifier"](str(out))
    assert [m.fc.weight.dtype for m in model.members] == [torch.float32, torch.float64]
    x, lengths = batch(np.nan)
    ref = np.mean([transformed_reference(c, x, lengths) for c in ckpts], axis=0)
    with torch.no_grad():
        probs = model(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(lengths))
    np.testing.assert_allclose(probs.numpy(), ref, rtol=0, atol=1e-5)


def test_pytorch_ensemble_is_the_mean_of_its_members(tmp_path):
    """Several checkpoints export to one safetensors file that the printed module loads as
    an Ensemble of Classifiers (members.{i}.* keys), each with its own transforms and
    normalisation; lstm-import refuses the file (one model only)."""
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    ckpts, out, result = _export_ensemble(tmp_path, "pytorch")
    assert "Ensemble of 3" in result.stderr
    namespace = {}
    exec(result.stdout, namespace)
    torch.set_num_threads(1)
    model, classes = namespace["load_classifier"](str(out))
    assert classes == CLASSES and len(model.members) == 3
    assert [m.head for m in model.members] == ["last", "mean", "all"]
    with safe_open(str(out), "np") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert {k.split(".")[1] for k in keys} == {"0", "1", "2"}
    assert [m["head"] for m in json.loads(meta["members"])] == ["last", "mean", "all"]
    for garbage in (np.nan, 1e30):
        x, lengths = batch(garbage)
        ref = np.mean([transformed_reference(c, x, lengths) for c in ckpts], axis=0)
        with torch.no_grad():
            probs = model(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
        np.testing.assert_allclose(probs, ref, rtol=0, atol=1e-5)
    one_error_line(run(import_, [out, tmp_path / "back.npz"]), 5, "holds an ensemble")
    assert not (tmp_path / "back.npz").exists()


def test_pytorch_state_dict_names_and_safetensors_metadata(tmp_path):
    st = pytest.importorskip("safetensors")
    ckpt = make_checkpoint(tmp_path, "last", 2)
    out = tmp_path / "m.safetensors"
    assert run(export, [ckpt, "--to", "pytorch", out, "--quiet"]).exit_code == 0
    with st.safe_open(str(out), "numpy") as f:
        keys, meta = set(f.keys()), f.metadata()
    want = {f"lstm.{n}_l{k}" for k in (0, 1) for n in ("weight_ih", "weight_hh", "bias_ih")}
    want |= {"lstm.bias_hh_l0", "lstm.bias_hh_l1", "fc.weight", "fc.bias"}
    assert keys == want
    assert json.loads(meta["classes"]) == CLASSES and meta["head"] == "last"
    assert float(meta["forget_bias"]) == pytest.approx(0.7)
    assert json.loads(meta["normalization"])["mean"] == load_trained(ckpt).mean.tolist()


def test_one_model_always_exports_to_the_same_pytorch_bytes(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    ckpt = make_checkpoint(tmp_path, "last", 2)
    outs = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for out in outs:
        assert run(export, [ckpt, "--to", "pytorch", out, "--quiet"]).exit_code == 0
    assert len({out.read_bytes() for out in outs}) == 1
    header = int.from_bytes(outs[0].read_bytes()[:8], "little")
    assert header % 8 == 0  # the tensors stay 8-byte aligned
    want = torch_state_dict(load_trained(ckpt).model)
    got = st.load_file(outs[0])
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(
    "head, dtype, bi",
    [
        ("last", "float32", False),
        ("all", "float32", False),
        ("last", "float64", False),
        ("last", "float32", True),
        ("mean", "float32", True),
        ("mean", "float64", False),
        ("all", "float32", "pool+frame"),  # the transforms come back as config.data
    ],
)
def test_import_round_trips_to_identical_arrays_and_lstm_eval_runs(tmp_path, head, dtype, bi):
    pytest.importorskip("safetensors")
    data = None
    if bi == "pool+frame":
        bi, data = True, {"normalize_per_sequence": True, "pool": 2, "frame": 2}
    ckpt = make_checkpoint(tmp_path, head, 2, dtype=dtype, bidirectional=bi, data=data)
    st_file, back = tmp_path / "m.safetensors", tmp_path / "back.npz"
    assert run(export, [ckpt, "--to", "pytorch", st_file, "--quiet"]).exit_code == 0
    result = run(import_, [st_file, back])  # labels etc. from the file's own metadata
    assert result.exit_code == 0, result.output
    a, b = load_checkpoint(ckpt), load_checkpoint(back)
    assert a.params.keys() == b.params.keys()
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype
        np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=k)
    for key in ("classes", "normalization"):
        assert b.meta[key] == a.meta[key]
    assert b.meta["model"]["forget_bias"] == a.meta["model"]["forget_bias"]
    assert b.meta["model"]["head"] == head
    assert b.meta["model"].get("bidirectional", False) is bi
    assert load_trained(back).transforms == load_trained(ckpt).transforms
    x, lengths = batch()
    data = tmp_path / "d.jsonl"
    with open(data, "w") as fh:
        for i, n in enumerate(lengths):
            fh.write(json.dumps({"x": x[i, :n].tolist(), "y": CLASSES[i % K]}) + "\n")
    reports = []
    for path in (ckpt, back):
        rep = tmp_path / f"{path.stem}.json"
        assert run(evaluate, [path, "--data", data, "--json", rep, "--quiet"]).exit_code == 0
        reports.append(json.loads(rep.read_text()))
    assert reports[0]["loss"] == reports[1]["loss"]


CSV_READING = {"id_column": "seq", "feature_columns": ["c", "b", "a"]}


def _write_csv(path, x, lengths):
    """x, lengths as a long-form CSV of columns seq, label, a, b, c, extra (not a feature)."""
    with open(path, "w") as fh:
        fh.write("seq,label,a,b,c,extra\n")
        for i, n in enumerate(lengths):
            for row in x[i, :n]:
                fh.write(f"s{i},{CLASSES[i % K]},{','.join(map(repr, row.tolist()))},9\n")


@pytest.mark.parametrize("target", ["onnx", "pytorch"])
def test_export_carries_the_csv_options_and_import_restores_them(tmp_path, target):
    """A model trained on CSV columns c, b, a (data.csv) says so in the exported file, and
    the imported checkpoint reads the same columns: without them lstm-predict read a, b, c
    and gave other probabilities, or refused the 'extra' column."""
    pytest.importorskip("onnx" if target == "onnx" else "safetensors")
    ckpt = make_checkpoint(tmp_path, "mean", 2, data={"pool": 2, "csv": CSV_READING})
    out = tmp_path / ("m.onnx" if target == "onnx" else "m.safetensors")
    assert run(export, [ckpt, "--to", target, out, "--quiet"]).exit_code == 0
    if target == "onnx":
        onnx = pytest.importorskip("onnx")
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        # with the schema's defaults for the options the config left alone
        assert json.loads(meta["csv"]) == {"label_column": "label", "label_type": "auto"} | (
            CSV_READING
        )
        return
    back = tmp_path / "back.npz"
    assert run(import_, [out, back]).exit_code == 0
    assert load_trained(back).csv_options == {"label_column": "label", "label_type": "auto"} | (
        CSV_READING
    )
    x, lengths = batch()
    _write_csv(tmp_path / "d.csv", x, lengths)
    written = []
    for path in (ckpt, back):
        pred = tmp_path / f"{path.stem}.csv"
        args = [path, "--data", tmp_path / "d.csv", "--output", pred, "--quiet"]
        assert run(predict, args).exit_code == 0
        written.append(pred.read_text())
    assert written[0] == written[1]


def test_a_state_dict_without_lstm_export_s_metadata_takes_it_from_meta_yaml(tmp_path):
    """Saved again from load_classifier's module (save_file(model.state_dict())), the file
    loses lstm-export's metadata; --meta took no transforms or csv, so the model imported
    without them and predicted otherwise (exit 0)."""
    st = pytest.importorskip("safetensors.numpy")
    ckpt = make_checkpoint(tmp_path, "mean", 2, data={"pool": 2, "csv": CSV_READING})
    out = tmp_path / "m.safetensors"
    assert run(export, [ckpt, "--to", "pytorch", out, "--quiet"]).exit_code == 0
    st.save_file(st.load_file(str(out)), str(out))  # the weights alone
    tm = load_trained(ckpt)
    norm = {"mean": tm.mean.tolist(), "std": tm.std.tolist()}
    meta = tmp_path / "meta.yaml"
    base = {"classes": CLASSES, "head": "mean", "forget_bias": 0.7, "normalization": norm}
    meta.write_text(json.dumps(base | {"transforms": {"pool": 2}, "csv": CSV_READING}))
    assert run(import_, [out, tmp_path / "back.npz", "--meta", meta]).exit_code == 0
    x, lengths = batch()
    _write_csv(tmp_path / "d.csv", x, lengths)
    written = []
    for path in (ckpt, tmp_path / "back.npz"):
        pred = tmp_path / f"{path.stem}.csv"
        args = [path, "--data", tmp_path / "d.csv", "--output", pred, "--quiet"]
        assert run(predict, args).exit_code == 0
        written.append(pred.read_text())
    assert written[0] == written[1]
    # null: off (lstm-eval crashed on the null it copied: a TypeError traceback)
    meta.write_text(json.dumps(base | {"transforms": {"pool": None, "frame": None}}))
    assert run(import_, [out, tmp_path / "off.npz", "--meta", meta]).exit_code == 0
    assert load_trained(tmp_path / "off.npz").transforms == TRANSFORMS_OFF
    x_file = tmp_path / "d.jsonl"
    x_file.write_text("".join(json.dumps({"x": r[:n].tolist()}) + "\n" for r, n in zip(x, lengths)))
    args = [tmp_path / "off.npz", "--data", x_file, "--output", tmp_path / "p.csv", "--quiet"]
    assert run(predict, args).exit_code == 0
    meta.write_text(json.dumps(base | {"transforms": {"pool": 2.5}}))
    r = run(import_, [out, tmp_path / "o.npz", "--meta", meta])
    one_error_line(r, 3, f"{meta}: cannot import: 'config.data.pool' is 2.5")  # not the state's
    meta.write_text(json.dumps(base | {"csv": {"label_type": "float"}}))
    r = run(import_, [out, tmp_path / "o.npz", "--meta", meta])
    one_error_line(r, 3, f"{meta}: cannot import: 'config.data.csv.label_type'")
    meta.write_text(json.dumps(base | {"csv": {"columns": ["a"]}}))
    one_error_line(run(import_, [out, tmp_path / "o.npz", "--meta", meta]), 3, f"{meta}: 'csv'")
    big = [2**63, *range(1, len(CLASSES))]  # passes import's own label check, not lstm-eval's
    meta.write_text(json.dumps(base | {"classes": big}))
    r = run(import_, [out, tmp_path / "o.npz", "--meta", meta])
    one_error_line(r, 3, f"{meta}: cannot import: 'classes'[0] = {2**63}")


def test_meta_yaml_s_null_normalisation_wins_over_the_file_s(tmp_path):
    """--meta's `normalization: null` was dropped as not given: the file's statistics won."""
    pytest.importorskip("safetensors")
    out = tmp_path / "m.safetensors"
    assert (
        run(export, [make_checkpoint(tmp_path), "--to", "pytorch", out, "--quiet"]).exit_code == 0
    )
    meta = tmp_path / "meta.yaml"
    meta.write_text("normalization: null\n")
    assert run(import_, [out, tmp_path / "o.npz", "--meta", meta]).exit_code == 0
    assert load_trained(tmp_path / "o.npz").mean is None
    assert load_trained(make_checkpoint(tmp_path)).mean is not None


def test_import_of_an_lstm_cli_checkpoint_says_it_is_one(tmp_path):
    """It said "this is a pickle (torch.save) file": an .npz is a zip, like torch.save's."""
    pytest.importorskip("safetensors")
    ckpt = make_checkpoint(tmp_path)
    r = run(import_, [ckpt, tmp_path / "o.npz", "--classes", ",".join(CLASSES)])
    one_error_line(r, 5, str(ckpt), "an lstm_cli checkpoint already")
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("target", ["onnx", "pytorch"])
def test_an_ensemble_of_members_reading_other_csv_columns_is_exit_5(tmp_path, target):
    pytest.importorskip("onnx" if target == "onnx" else "safetensors")
    a = make_checkpoint(tmp_path, name="a.npz", data={"csv": CSV_READING})
    other = {"id_column": "seq", "feature_columns": ["a", "b", "c"]}
    b = make_checkpoint(tmp_path, name="b.npz", data={"csv": other})
    out = tmp_path / "out.bin"
    result = run(export, [a, b, "--to", target, out])
    one_error_line(
        result, 5, 'different data.csv.feature_columns (["c", "b", "a"], ["a", "b", "c"])'
    )
    assert not out.exists()


def test_an_ensemble_of_members_whose_csv_options_agree_exports(tmp_path):
    """A checkpoint without CSV options (imported from an older export) and one of a JSONL
    run (the defaults) read the same input (exit 5 before). A member naming its columns
    beside them is refused: which columns the others read is not known, and taking its
    list for theirs fed them other columns, silently."""
    onnx = pytest.importorskip("onnx")
    ckpts = [
        make_checkpoint(tmp_path, name="none.npz"),
        make_checkpoint(tmp_path, name="defaults.npz", data={"csv": {"id_column": "id"}}),
    ]
    out = tmp_path / "e.onnx"
    assert run(export, [*ckpts, "--to", "onnx", out, "--quiet"]).exit_code == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["csv"]) == {
        "id_column": "id",
        "label_column": "label",
        "feature_columns": None,
        "label_type": "auto",
    }
    named = make_checkpoint(tmp_path, name="n.npz", data={"csv": {"feature_columns": list("abc")}})
    result = run(export, [*ckpts, named, "--to", "onnx", tmp_path / "f.onnx"])
    one_error_line(result, 5, 'different data.csv.feature_columns (null, ["a", "b", "c"])')


def test_import_of_a_plain_pytorch_state_dict_with_meta_yaml(tmp_path):
    """A state_dict trained in PyTorch (both biases non-zero, no metadata): labels and
    normalisation from --meta, forget_bias 0; the imported model computes what torch does."""
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    lstm, fc = torch.nn.LSTM(F, H, 2, batch_first=True), torch.nn.Linear(H, 3)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    state |= {f"fc.{k}": v for k, v in fc.state_dict().items()}
    path = tmp_path / "plain.safetensors"
    save_file(state, str(path))
    meta = tmp_path / "meta.yaml"
    # YAML reads 1e0 as a string, as the config loader's numbers: a number all the same
    meta.write_text("classes: [1, 2, 3]\nnormalization: {mean: [0, 1, 2], std: [1e0, 2, 4]}\n")
    out = tmp_path / "imported.npz"
    result = run(import_, [path, out, "--meta", meta])
    assert result.exit_code == 0, result.output
    tm = load_trained(out)
    assert tm.classes == [1, 2, 3] and tm.model.forget_bias == 0.0
    x, lengths = batch(0.0)
    xn = ((x - np.array([0, 1, 2])) / np.array([1, 2, 4])).astype(np.float32)
    with torch.no_grad():
        _, (h_n, _) = lstm(
            torch.nn.utils.rnn.pack_padded_sequence(
                torch.from_numpy(xn), torch.from_numpy(lengths), True, enforce_sorted=False
            )
        )
        want = fc(h_n[-1]).numpy()
    np.testing.assert_allclose(tm.model.logits(xn, lengths), want, rtol=0, atol=1e-5)
    # the command line wins over --meta
    result = run(import_, [path, tmp_path / "o2.npz", "--meta", meta, "--classes", "a,b,c"])
    assert result.exit_code == 0 and load_trained(tmp_path / "o2.npz").classes == ["a", "b", "c"]


# -------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("data", [None, {"pool": None, "frame": None, "csv": None}])
def test_a_checkpoint_with_null_data_settings_predicts(tmp_path, data):
    """config.data null crashed lstm-predict in csv_options (AttributeError traceback), and
    a null pool or frame in check_raw (TypeError): null is "not set", as on load."""
    ckpt = make_checkpoint(tmp_path)
    c = load_checkpoint(ckpt)
    c.meta["config"] = {"data": data}
    save_checkpoint(ckpt, c.params, c.meta)
    x, lengths = batch()
    data_file = tmp_path / "d.jsonl"
    data_file.write_text(
        "".join(json.dumps({"x": r[:n].tolist()}) + "\n" for r, n in zip(x, lengths))
    )
    r = run(predict, [ckpt, "--data", data_file, "--output", tmp_path / "p.csv", "--quiet"])
    assert r.exit_code == 0, r.output


def test_export_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.npz"
    bad.write_text("hello")
    result = run(export, [bad, "--to", "onnx", tmp_path / "m.onnx"])
    one_error_line(result, 5, str(bad), "not an .npz checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_export_unknown_target_is_a_usage_error(tmp_path):
    ckpt = make_checkpoint(tmp_path)
    result = run(export, [ckpt, "--to", "tflite", tmp_path / "m.x"])
    assert result.exit_code == 2 and "'tflite' is not one of" in result.stderr


@pytest.mark.parametrize(
    "target,name,said",
    [
        ("pytorch", "m.pt", "a pickle"),
        ("pytorch", "m.onnx", "ONNX"),
        ("onnx", "m.safetensors", "safetensors"),
        ("onnx", "out.npz", "an lstm_cli checkpoint"),
    ],
)
def test_export_to_a_name_of_another_format_is_a_usage_error(tmp_path, target, name, said):
    """An OUT whose ending names another format than --to writes: exit 2 before anything
    is written (the bad-input audit wrote ONNX under a .safetensors name, exit 0)."""
    ckpt = make_checkpoint(tmp_path)
    result = run(export, [ckpt, "--to", target, tmp_path / name])
    assert result.exit_code == 2 and f"(the name says {said})" in result.stderr, result.output
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("target", ["onnx", "pytorch"])
def test_export_to_a_folder_that_is_not_there_is_a_usage_error(tmp_path, target):
    """Refused before the export is built (it was exit 1 once the file was written)."""
    pytest.importorskip("onnx" if target == "onnx" else "safetensors")
    ckpt = make_checkpoint(tmp_path)
    (tmp_path / "file").write_text("in the way")
    for out, what in (
        (tmp_path / "file" / "m.out", f"its folder {tmp_path / 'file'} is not a folder"),
        (tmp_path / "nosuch" / "m.out", f"its folder {tmp_path / 'nosuch'} does not exist"),
        (
            tmp_path / "file" / "sub" / "m.out",
            f"its folder {tmp_path / 'file' / 'sub'} cannot be: {tmp_path / 'file'} is a file",
        ),
    ):
        result = run(export, [ckpt, "--to", target, out])
        assert result.exit_code == 2 and f"OUT {out}: {what}" in result.stderr, result.output


@pytest.mark.parametrize("target", ["onnx", "pytorch"])
def test_a_failed_export_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, target):
    pytest.importorskip("onnx" if target == "onnx" else "safetensors")
    ckpt = make_checkpoint(tmp_path)
    out = tmp_path / "m.out"
    out.write_bytes(b"old")

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    result = run(export, [ckpt, "--to", target, out])
    one_error_line(result, 1, f"cannot write {out}", "No space left")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.out"]


@pytest.mark.parametrize("target, extra", [("onnx", "onnx"), ("pytorch", "safetensors")])
def test_export_missing_extra(tmp_path, monkeypatch, target, extra):
    import lstm_cli.extras as extras

    real = extras.importlib.import_module

    def fake(name, *a):
        if name.split(".")[0] == extra:
            raise ImportError(f"No module named {extra!r}")
        return real(name, *a)

    monkeypatch.setattr(extras.importlib, "import_module", fake)
    ckpt = make_checkpoint(tmp_path)
    result = run(export, [ckpt, "--to", target, tmp_path / "m.out"])
    one_error_line(result, 7, f"optional extra {extra!r}", f"pip install 'lstm_cli[{extra}]'")
    assert not (tmp_path / "m.out").exists()
    with pytest.raises(MissingExtraError):
        extras.require(extra, extra)


def test_import_refuses_a_pickle(tmp_path):
    torch = pytest.importorskip("torch")
    for name in ("model.pt", "model.safetensors"):  # by name, and by content when renamed
        path = tmp_path / name
        torch.save({"fc.weight": torch.zeros(2, 2)}, str(path))
        result = run(import_, [path, tmp_path / "o.npz", "--classes", "a,b"])
        one_error_line(result, 5, str(path), "pickle", "save the state_dict with safetensors")
    assert not (tmp_path / "o.npz").exists()


def test_import_a_safetensors_header_length_starting_with_0x80(tmp_path):
    """A safetensors file whose 8-byte header length starts with the byte 0x80 (pickle's
    protocol marker) is still safetensors: its header starts with '{'."""
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "s.safetensors"
    for pad in range(256):
        st.save_file(_state(), str(path), metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    result = run(import_, [path, tmp_path / "o.npz", "--classes", "a,b"])
    assert result.exit_code == 0, result.output


def _state(layers=1):
    rng = np.random.default_rng(0)
    state = {}
    for k in range(layers):
        state[f"lstm.weight_ih_l{k}"] = rng.normal(size=(4 * H, F if k == 0 else H))
        state[f"lstm.weight_hh_l{k}"] = rng.normal(size=(4 * H, H))
        state[f"lstm.bias_ih_l{k}"] = rng.normal(size=4 * H)
        state[f"lstm.bias_hh_l{k}"] = rng.normal(size=4 * H)
    state["fc.weight"], state["fc.bias"] = rng.normal(size=(2, H)), rng.normal(size=2)
    return {k: v.astype(np.float32) for k, v in state.items()}


def test_import_of_a_plain_bidirectional_pytorch_state_dict(tmp_path):
    """nn.LSTM(bidirectional=True) + nn.Linear(2H, K) trained in PyTorch: the '*_reverse'
    keys become lstm.{k}.reverse.W/b and the imported model computes what torch does; the
    same file with --unidirectional, or with one reverse key missing, is refused."""
    st = pytest.importorskip("safetensors.numpy")
    torch = pytest.importorskip("torch")

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(F, H, 2, batch_first=True, bidirectional=True)
    fc = torch.nn.Linear(2 * H, 3)
    state = {f"lstm.{k}": v.detach().numpy() for k, v in lstm.state_dict().items()}
    state |= {f"fc.{k}": v.detach().numpy() for k, v in fc.state_dict().items()}
    path = tmp_path / "bi.safetensors"
    st.save_file(state, str(path))
    out = tmp_path / "imported.npz"
    result = run(import_, [path, out, "--classes", "a,b,c", "--head", "mean"])
    assert result.exit_code == 0, result.output
    assert "bidirectional" in result.stderr
    tm = load_trained(out)
    assert tm.model.bidirectional and tm.model.head == "mean"
    assert "lstm.1.reverse.W" in tm.model.params
    x, lengths = batch(0.0)
    with torch.no_grad():
        lens = torch.from_numpy(lengths)
        pack = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), lens, True, enforce_sorted=False
        )
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(pack)[0], True)
        want = fc(y.sum(1) / lens[:, None]).numpy()
    np.testing.assert_allclose(tm.model.logits(x, lengths), want, rtol=0, atol=1e-5)
    result = run(import_, [path, tmp_path / "o.npz", "--classes", "a,b,c", "--unidirectional"])
    one_error_line(result, 5, str(path), "unexpected ['lstm.bias_hh_l0_reverse'")
    del state["lstm.weight_hh_l1_reverse"]
    st.save_file(state, str(path))
    result = run(import_, [path, tmp_path / "o.npz", "--classes", "a,b,c"])
    one_error_line(result, 5, "bidirectional nn.LSTM", "missing ['lstm.weight_hh_l1_reverse']")
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda s: s.pop("fc.bias"), ["missing ['fc.bias']"]),
        (lambda s: s.pop("lstm.bias_hh_l0"), ["missing ['lstm.bias_hh_l0']"]),
        (lambda s: s.update({"fc.extra": np.zeros(2, np.float32)}), ["unexpected ['fc.extra']"]),
        (lambda s: s.update({"lstm.weight_ih_l0": np.zeros((4 * H, 9), np.float32)}), None),
        (
            lambda s: s.update({"lstm.weight_hh_l1": np.zeros((4 * H, H), np.float32)}),
            ["missing ['lstm.weight_ih_l1', 'lstm.bias_ih_l1', 'lstm.bias_hh_l1']"],
        ),
        (
            lambda s: s.update({"fc.weight": np.zeros((2, H + 1), np.float32)}),
            ["'fc.weight' has shape (2, 6); expected (2, 5)"],
        ),
        (
            lambda s: s.update({"lstm.weight_ih_l0_reverse": np.zeros((4 * H, F), np.float32)}),
            ["bidirectional"],
        ),
        (lambda s: s.update({"fc.bias": np.array([1, 2], np.int64)}), ["dtype int64"]),
        (lambda s: s.update({"fc.bias": np.array([1, np.nan], np.float32)}), ["NaN"]),
    ],
)
def test_import_refuses_a_bad_state_dict(tmp_path, edit, fragments):
    st = pytest.importorskip("safetensors.numpy")
    state = _state()
    edit(state)
    path = tmp_path / "bad.safetensors"
    st.save_file(state, str(path))
    result = run(import_, [path, tmp_path / "o.npz", "--classes", "a,b"])
    if fragments is None:  # a different input size is fine: it is read from weight_ih_l0
        assert result.exit_code == 0, result.output
        assert load_trained(tmp_path / "o.npz").num_features == 9
        return
    one_error_line(result, 5, str(path), *fragments)
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        ([], 3, ["does not name its classes"]),
        (["--classes", "a,b,c"], 3, ["--classes lists 3 labels", "2 rows"]),
        (["--classes", "a,a"], 3, ["--classes lists a label twice"]),
        (["--classes", "a,b", "--mean", "0,0,0"], 2, ["--mean and --std go together"]),
        (["--classes", "a,b", "--mean", "0,0", "--std", "1,1"], 3, ["3 finite numbers"]),
        (["--classes", "a,b", "--mean", "0,0,0", "--std", "1,0,1"], 3, ["each > 0"]),
        (["--classes", "a,b", "--mean", "0,x,0", "--std", "1,1,1"], 2, ["not a list of numbers"]),
        (["--classes", "a,b", "--forget-bias", "inf"], 2, ["'inf' is not a finite number"]),
    ],
)
def test_import_bad_settings(tmp_path, args, code, fragments):
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "s.safetensors"
    st.save_file(_state(), str(path))
    result = run(import_, [path, tmp_path / "o.npz", *args])
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.stderr
    assert not (tmp_path / "o.npz").exists()


def test_import_bad_meta_yaml(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "s.safetensors"
    st.save_file(_state(), str(path))
    for text, fragment in (
        ("classes: [a, b]\nlabels: [c]\n", "unknown key(s) ['labels']"),
        ("classes: [a, b]\nclasses: [c, d]\n", "duplicate key"),
        ("!!python/object:os.system {}\n", "python/object"),
        ("classes: [a]\n", "'classes' lists 1 labels"),
        ("classes: [a, b]\nbidirectional: 2\n", "'bidirectional' must be true or false"),
    ):
        meta = tmp_path / "meta.yaml"
        meta.write_text(text)
        result = run(import_, [path, tmp_path / "o.npz", "--meta", meta])
        one_error_line(result, 3, fragment)
    assert not (tmp_path / "o.npz").exists()


def _exported_with(tmp_path, **metadata):
    """An lstm-export safetensors file of make_checkpoint, its metadata keys replaced."""
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    assert (
        run(export, [make_checkpoint(tmp_path), "--to", "pytorch", path, "--quiet"]).exit_code == 0
    )
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() | metadata
    st.save_file(st.load_file(str(path)), str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    "metadata, args, fragments",
    [
        (
            {"transforms": "5"},
            [],
            ["m.safetensors metadata: 'transforms' is 5; expected a mapping"],
        ),
        (  # eval refuses a pool of 2.5: import no longer writes it as 2
            {"transforms": '{"per_sequence": false, "pool": 2.5, "frame": 1}'},
            [],
            ["cannot import: 'config.data.pool' is 2.5", "lstm-eval would refuse it"],
        ),
        ({}, ["--forget-bias", "1e308"], ["--forget-bias = 1e+308 overflows the model's float"]),
        (
            {},
            ["--meta", "forget_bias: 1.0e308\n"],
            ["'forget_bias' = 1e+308 overflows", "not be finite"],
        ),
        ({}, ["--classes", "a,\udcff,c,d"], ["'classes'[1]", "U+DCFF, a lone surrogate"]),
        ({}, ["--meta", 'classes: [a, "\\ud800", c, d]\n'], ["'classes'[1]", "U+D800"]),
        (  # skipping a value that does not parse dropped all of the file's settings
            {"transforms": "not json {"},
            ["--classes", "a,b,c,d"],
            ["m.safetensors metadata: 'transforms' is 'not json {', which does not parse"],
        ),
        (
            {"forget_bias": "one"},
            [],
            ["m.safetensors metadata: 'forget_bias' is 'one'", "metadata is damaged"],
        ),
        (  # a head it does not know was imported as "last"
            {"head": "Mean"},
            ["--classes", "a,b,c,d"],
            ["m.safetensors metadata: 'head' is 'Mean'; expected one of"],
        ),
        (  # a misspelt key was ignored: per-sequence normalisation silently off
            {"transforms": '{"normalize_per_sequence": true, "pool": 1, "frame": 1}'},
            [],
            [
                "'normalize_per_sequence': True",
                "expected a mapping of per_sequence, pool, frame",
            ],
        ),
        (  # a misspelt CSV option would read other columns
            {"csv": '{"feature_column": ["a"]}'},
            [],
            ["'csv' is {'feature_column': ['a']}; expected a mapping of id_column"],
        ),
        (  # lstm-eval checks the options as it checks a config's data.csv
            {"csv": '{"label_type": "float"}'},
            [],
            ["cannot import: 'config.data.csv.label_type'", "lstm-eval would refuse it"],
        ),
        (  # ... the columns together too: it read 5 features, not the model's 4
            {"csv": '{"label_column": "id"}'},
            [],
            ["cannot import: 'config.data.csv.id_column' and", "both 'id'"],
        ),
        (
            {"csv": '{"feature_columns": ["id", "a", "b"]}'},
            [],
            ["'config.data.csv.feature_columns' lists 'id', which is the id or label"],
        ),
    ],
)
def test_import_writes_only_checkpoints_lstm_eval_accepts(tmp_path, metadata, args, fragments):
    """What lstm-import writes passes lstm-eval's own checks on load (inference.trained_model);
    anything else is one line, exit 3, no warning and nothing written."""
    path = _exported_with(tmp_path, **metadata)
    if args[:1] == ["--meta"]:
        (tmp_path / "meta.yaml").write_text(args[1])
        args = ["--meta", tmp_path / "meta.yaml"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(import_, [path, tmp_path / "o.npz", *args])
    one_error_line(result, 3, *fragments)
    assert not caught, [str(w.message) for w in caught]
    assert not (tmp_path / "o.npz").exists()


def test_docs_show_the_module_definition_the_command_prints():
    from lstm_cli.export.torch_state import PYTORCH_MODULE

    docs = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "export.md")
    with open(docs, encoding="utf-8") as fh:
        assert PYTORCH_MODULE in fh.read()


def test_bench_deploy_runs(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "bench_deploy.py")]
        + ["--workloads", "jv", "--rounds", "1", "--calls", "1", "--head", "all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if "e-" in line or "e+" in line]
    assert [row[-5] for row in rows] == ["lstm_cli", "onnxruntime", "pytorch"]
    assert all(float(row[-1]) <= 1e-5 for row in rows)

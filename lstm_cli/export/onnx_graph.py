"""A trained model as an ONNX graph: normalisation, standard LSTM operators, the head.

Graph (opset ``ONNX_OPSET``, all float32; docs/export.md draws it):

* inputs ``x`` (batch, time, features) float32 and ``lengths`` (batch,) int64, every
  length in [1, time]; padded steps of ``x`` may hold anything (NaN included): they are
  replaced by 0 before the first LSTM and masked again in the head;
* ``(x - mean) / std`` with the training statistics, when the model has them;
* one ``LSTM`` node per layer (time-major, ``sequence_lens`` = lengths), layer k's ``Y``
  feeding layer k+1. ONNX's gate order is i, o, f, c; lstm_cli's is i, j, f, o (c = j),
  and ``forget_bias`` is folded into the forget gate's input bias ``Wb_f``. A
  bidirectional layer is one node with ``direction="bidirectional"`` (W, R, B stacked
  [forward, reverse]); its Y (T, 2, B, H) becomes (T, B, 2H) = [h->, h<-] per step;
* the head: ``last`` reads ``Y_h`` (each sequence's state at its own last step;
  bidirectional: [h-> at the last step, h<- at step 0]), ``all`` averages the per-step
  softmax over each sequence's valid steps, ``mean`` (``max``) applies the softmax layer
  to the mean (per-unit max) of h over each sequence's valid steps;
* outputs ``probabilities`` (batch, classes) float32 and ``label`` (batch,) int64, the
  class index; the labels themselves are in ``metadata_props["classes"]`` (JSON).

An ensemble (build_onnx_ensemble) is one graph with the same inputs and outputs: every
member's nodes as above, its constants named ``member{i}.``..., then ``probabilities`` =
the ``Mean`` of the members' probabilities.

A new layer kind or head is one more entry in ``_LAYERS`` / ``_HEADS``: each function
takes the builder and the names of its inputs and returns the names of its outputs.
"""

from __future__ import annotations

import numpy as np

from .. import __version__
from ..errors import LstmCliError
from ..extras import require
from ..store.atomic import atomic_write
from .meta import (
    ensemble_metadata,
    export_metadata,
    members_raw_features,
    normalization_of,
    raw_features,
    shared_csv,
)
from .onnx_transforms import add_transforms, transforms_on

ONNX_OPSET = 17  # LSTM-14, Softmax-13, ReduceSum-13 (axes as an input), ReduceMax-13
ONNX_IR_VERSION = 8  # the lowest IR that carries opset 17: older runtimes can load it
_FEATURE = "lstm-export --to onnx"

# where each ONNX gate block (i, o, f, c) sits in lstm_cli's (i, j, f, o)
_ONNX_BLOCKS = (0, 3, 2, 1)


def _onnx():
    onnx = require("onnx", "onnx", _FEATURE)
    require("onnx.checker", "onnx", _FEATURE)
    return onnx


def onnx_gates(W, b, forget_bias):
    """lstm_cli layer (W (I+H, 4H), b (4H,)) -> ONNX (W (1, 4H, I), R (1, 4H, H), B (1, 8H))
    float32 in gate order i, o, f, c; forget_bias is added to Wb's f block, Rb is zero."""
    H = W.shape[1] // 4
    I = W.shape[0] - H
    cols = np.concatenate([np.arange(k * H, (k + 1) * H) for k in _ONNX_BLOCKS])
    W = np.asarray(W, np.float64)[:, cols]  # (I+H, 4H), order i, o, f, c
    wb = np.asarray(b, np.float64)[cols].copy()
    wb[2 * H : 3 * H] += forget_bias  # f is the third ONNX block
    bias = np.concatenate([wb, np.zeros(4 * H)])  # [Wb | Rb]
    f32 = np.float32
    return W[:I].T[None].astype(f32), W[I:].T[None].astype(f32), bias[None].astype(f32)


class _Graph:
    """Nodes and initializers under unique names (a thin layer over onnx.helper). Names
    of constants start with ``prefix``, so the members of an ensemble share one graph."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.inits, self._n, self.prefix = [], [], 0, ""

    def const(self, name, array):
        name = self.prefix + name
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}_{k}" for k in range(n_out)]
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), outs, name=f"{op_type}_{self._n}", **attrs)
        )
        return outs[0] if n_out == 1 else outs

    def rename(self, name, new):
        """Make node output ``name`` a graph output called ``new``."""
        self.nodes.append(self.helper.make_node("Identity", [name], [new], name=f"out_{new}"))
        return new


def _lstm_node(g, k, xs, lens32, directions, forget_bias):
    """One LSTM node over xs (T, B, I); directions: [(W, b)] forward, [forward, reverse]
    bidirectional, stacked along ONNX's num_directions axis -> (Y (T, D, B, H), Y_h (D, B, H))."""
    gates = [onnx_gates(W, b, forget_bias) for W, b in directions]
    w, r, bias = (np.concatenate([gt[i] for gt in gates]) for i in range(3))
    return g.op(
        "LSTM",
        [
            xs,
            g.const(f"lstm.{k}.onnx_W", w),
            g.const(f"lstm.{k}.onnx_R", r),
            g.const(f"lstm.{k}.onnx_B", bias),
            lens32,
        ],
        n_out=2,
        hidden_size=r.shape[2],
        direction="forward" if len(directions) == 1 else "bidirectional",
    )


def _unidirectional_layer(g, k, xs, lens32, p, forget_bias):
    """LSTM node over xs (T, B, I) -> (Y (T, B, H), Y_h (B, H))."""
    y, y_h = _lstm_node(g, k, xs, lens32, [(p[f"lstm.{k}.W"], p[f"lstm.{k}.b"])], forget_bias)
    one = g.const(f"lstm.{k}.axis", np.array([1], np.int64))
    zero = g.const(f"lstm.{k}.axis0", np.array([0], np.int64))
    return g.op("Squeeze", [y, one]), g.op("Squeeze", [y_h, zero])  # drop num_directions


def _bidirectional_layer(g, k, xs, lens32, p, forget_bias):
    """LSTM node (direction "bidirectional") over xs (T, B, I) -> (Y (T, B, 2H) with
    [h->_t, h<-_t] at each step, Y_h (B, 2H) = [h-> at the last valid step, h<- at step 0]).
    With sequence_lens the reverse direction starts at each sequence's own last valid step."""
    pairs = [(p[f"lstm.{k}{s}.W"], p[f"lstm.{k}{s}.b"]) for s in ("", ".reverse")]
    y, y_h = _lstm_node(g, k, xs, lens32, pairs, forget_bias)
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3])  # (T, B, 2, H)
    y = g.op("Reshape", [y, g.const(f"lstm.{k}.seq_shape", np.array([0, 0, -1], np.int64))])
    y_h = g.op("Transpose", [y_h], perm=[1, 0, 2])  # (B, 2, H)
    y_h = g.op("Reshape", [y_h, g.const(f"lstm.{k}.last_shape", np.array([0, -1], np.int64))])
    return y, y_h


_LAYERS = {"unidirectional": _unidirectional_layer, "bidirectional": _bidirectional_layer}


def _softmax_layer(g, h, V, a):
    """softmax(h @ V + a) over the last axis: the one softmax layer every head ends in."""
    logits = g.op("Add", [g.op("MatMul", [h, g.const("head.W", V)]), g.const("head.b", a)])
    return g.op("Softmax", [logits], axis=-1)


def _head_last(g, seq, last, valid, lens_f, V, a):
    """Softmax of each sequence's last valid state: (B, H) -> (B, K)."""
    return _softmax_layer(g, last, V, a)


def _head_all(g, seq, last, valid, lens_f, V, a):
    """Mean over valid steps of the per-step softmax: (T, B, H) -> (B, K)."""
    probs = _softmax_layer(g, seq, V, a)  # (T, B, K)
    zero = g.const("head.zero", np.zeros((), np.float32))
    masked = g.op("Where", [valid, probs, zero])  # padded steps contribute exactly 0
    axis = g.const("head.time_axis", np.array([0], np.int64))
    total = g.op("ReduceSum", [masked, axis], keepdims=0)  # (B, K)
    return g.op("Div", [total, lens_f])


def _head_mean(g, seq, last, valid, lens_f, V, a):
    """Softmax of the mean of h over each sequence's valid steps: (T, B, H) -> (B, K)."""
    zero = g.const("head.zero", np.zeros((), np.float32))
    masked = g.op("Where", [valid, seq, zero])  # padded steps contribute exactly 0
    axis = g.const("head.time_axis", np.array([0], np.int64))
    m = g.op("Div", [g.op("ReduceSum", [masked, axis], keepdims=0), lens_f])  # (B, H)
    return _softmax_layer(g, m, V, a)


def _head_max(g, seq, last, valid, lens_f, V, a):
    """Softmax of the per-unit max of h over each sequence's valid steps: (T, B, H) -> (B, K)."""
    low = g.const("head.lowest", np.array(np.finfo(np.float32).min, np.float32))
    masked = g.op("Where", [valid, seq, low])  # a padded step never holds the max
    m = g.op("ReduceMax", [masked], axes=[0], keepdims=0)  # (B, H); axes an attribute in 13
    return _softmax_layer(g, m, V, a)


_HEADS = {"last": _head_last, "all": _head_all, "mean": _head_mean, "max": _head_max}


def _check_head(model) -> None:
    if model.head not in _HEADS:
        raise LstmCliError(
            f"ONNX export supports the heads {', '.join(map(repr, _HEADS))}; "
            f"this model's head is {model.head!r}"
        )


def _member_probs(g, TP, model, mean, std, transforms):
    """Nodes from the graph inputs x, lengths to one model's probabilities (B, K)."""
    p, lengths = model.params, "lengths"
    transforms = dict(transforms or {}) if transforms_on(transforms) else {}
    if transforms:  # float64 like lstm_cli, then the normalisation, then float32
        xb, lengths = add_transforms(
            g, TP, "x", lengths, transforms, raw_features(model, transforms)
        )
        if mean is not None:
            xb = g.op("Sub", [xb, g.const("norm.mean", np.asarray(mean, np.float64))])
            xb = g.op("Div", [xb, g.const("norm.std", np.asarray(std, np.float64))])
        xs = g.op("Transpose", [g.op("Cast", [xb], to=TP.FLOAT)], perm=[1, 0, 2])
    else:  # x (B, T, F) -> time-major (T, B, F)
        xs = g.op("Transpose", ["x"], perm=[1, 0, 2])
        if mean is not None:
            xs = g.op("Sub", [xs, g.const("norm.mean", np.asarray(mean, np.float32))])
            xs = g.op("Div", [xs, g.const("norm.std", np.asarray(std, np.float32))])
    # the mask (T, B, 1) of valid steps
    T = g.op("Gather", [g.op("Shape", [xs]), g.const("time_index", np.array(0, np.int64))])
    steps = g.op(
        "Range", [g.const("t0", np.array(0, np.int64)), T, g.const("t1", np.array(1, np.int64))]
    )  # (T,)
    col = g.const("unsq_1", np.array([1], np.int64))
    valid = g.op("Less", [g.op("Unsqueeze", [steps, col]), lengths])  # (T, B)
    valid = g.op("Unsqueeze", [valid, g.const("unsq_2", np.array([2], np.int64))])  # (T, B, 1)
    # padded steps -> 0: onnxruntime ignores them anyway, but a runtime that applies
    # sequence_lens by multiplying with a mask would turn NaN padding into NaN outputs
    xs = g.op("Where", [valid, xs, g.const("x_pad", np.zeros((), np.float32))])
    lens32 = g.op("Cast", [lengths], to=TP.INT32)
    lens_f = g.op("Unsqueeze", [g.op("Cast", [lengths], to=TP.FLOAT), col])  # (B, 1)
    seq = last = xs
    layer = _LAYERS["bidirectional" if model.bidirectional else "unidirectional"]
    for k in range(model.num_layers):
        seq, last = layer(g, k, seq, lens32, p, model.forget_bias)
    V, a = (np.asarray(p[n], np.float32) for n in ("head.W", "head.b"))
    return _HEADS[model.head](g, seq, last, valid, lens_f, V, a)


def _metadata(member, classes, csv) -> dict:
    """export_metadata of one (model, mean, std, transforms) member."""
    model, mean, std, transforms = member
    return export_metadata(model, classes, normalization_of(mean, std), transforms, csv)


def build_onnx_model(model, classes, mean=None, std=None, transforms=None, csv=None):
    """An ``onnx.ModelProto`` computing ``model.predict_proba`` on raw (unnormalised,
    untransformed) input.

    model: an LSTMClassifier; classes: its labels (class index order); mean, std: (F,) or
    None; transforms: the training config's input transforms ({per_sequence, pool, frame},
    inference.TrainedModel.transforms) or None, applied first (onnx_transforms); csv: the
    CSV options it was trained with (TrainedModel.csv_options), for the metadata.
    """
    member = (model, mean, std, transforms)
    return _build([member], classes, _metadata(member, classes, csv))


def build_onnx_ensemble(members, classes, csv=None):
    """An ``onnx.ModelProto`` computing the ensemble's probabilities (lstm_cli.ensemble:
    the mean of the members' probabilities) on raw input.

    members: (model, mean, std, transforms) tuples as build_onnx_model takes them, every
    model with the labels ``classes`` and the same raw features per step. Each member
    keeps its own transforms and normalisation inside the graph. metadata_props holds
    ``classes`` and ``members``: a JSON list of each member's metadata as
    build_onnx_model writes it (without format, version, classes and csv, the members'
    shared CSV options).
    """
    metas = [_metadata(m, classes, csv) for m in members]
    return _build(members, classes, ensemble_metadata(metas))


def _build(members, classes, metadata):
    """The graph of ``members`` (their probabilities averaged when more than one)."""
    F = members_raw_features([(m, t) for m, _, _, t in members])
    for model, *_ in members:
        _check_head(model)
    onnx = _onnx()
    helper, TP = onnx.helper, onnx.TensorProto
    g = _Graph(onnx)
    probs = []
    for i, (model, mean, std, transforms) in enumerate(members):
        g.prefix = f"member{i}." if len(members) > 1 else ""
        probs.append(_member_probs(g, TP, model, mean, std, transforms))
    g.prefix = ""
    mean_probs = probs[0] if len(probs) == 1 else g.op("Mean", probs)
    g.rename(mean_probs, "probabilities")
    g.rename(g.op("ArgMax", [mean_probs], axis=1, keepdims=0), "label")

    K = len(classes)
    graph = helper.make_graph(
        g.nodes,
        "lstm_cli",
        [
            helper.make_tensor_value_info("x", TP.FLOAT, ["batch", "time", F]),
            helper.make_tensor_value_info("lengths", TP.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("probabilities", TP.FLOAT, ["batch", K]),
            helper.make_tensor_value_info("label", TP.INT64, ["batch"]),
        ],
        g.inits,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="lstm_cli",
        producer_version=__version__,
        doc_string="x (batch, time, features) float32 raw features, right-padded; lengths "
        "(batch,) int64 in [1, time] -> probabilities (batch, classes), label (batch,) "
        "class index into metadata_props['classes']",
    )
    onnx_model.ir_version = ONNX_IR_VERSION
    helper.set_model_props(onnx_model, metadata)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def export_onnx(trained, path) -> None:
    """Write ``trained`` (an inference.TrainedModel, or a list of them: an ensemble) to
    ``path`` as ONNX, atomically."""
    members = trained if isinstance(trained, list) else [trained]
    parts = [(tm.model, tm.mean, tm.std, tm.transforms) for tm in members]
    classes, csv = members[0].classes, shared_csv(members)
    if len(parts) == 1:
        model, mean, std, transforms = parts[0]
        onnx_model = build_onnx_model(model, classes, mean, std, transforms, csv)
    else:
        onnx_model = build_onnx_ensemble(parts, classes, csv)
    data = onnx_model.SerializeToString()
    try:
        atomic_write(path, lambda fh: fh.write(data))
    except OSError as err:
        raise LstmCliError(f"cannot write {path}: {err.strerror or err}") from None

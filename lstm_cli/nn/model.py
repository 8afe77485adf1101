"""LSTMClassifier: stacked (optionally bidirectional) LSTM layers + a softmax head.

The public, batch-first API::

    model = LSTMClassifier(input_size=12, hidden_size=64, num_classes=9, head="last")
    probs = model.predict_proba(x, lengths)            # x (B, T, I), lengths (B,)
    loss, grads = model.loss_and_grads(x, lengths, y)  # grads has the keys of model.params

Parameter names are the public contract, shared with checkpoints:
``lstm.{k}.W`` (I_k+H, 4H), ``lstm.{k}.b`` (4H,) for layer k (0-based; I_0 is the input
size, I_k = H above), ``head.W`` (H, K), ``head.b`` (K,); bidirectional adds
``lstm.{k}.reverse.W`` / ``.b`` and doubles I_k (k > 0) and head.W's rows to 2H (params.py).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import NamedTuple

import numpy as np

from ..errors import LstmCliError
from .bidirectional import bi_layer_backward, bi_layer_forward
from .heads import (
    all_steps_backward,
    all_steps_forward,
    last_step_backward,
    last_step_forward,
    max_backward,
    max_forward,
    mean_backward,
    mean_forward,
)
from .losses import log_softmax, row_weights, softmax, softmax_cross_entropy
from .lstm import Workspace, lstm_layer_backward, lstm_layer_forward
from .packing import PackedBatch, first_rows, pack_batch, reversal, unpack_rows
from .params import check_fits_in_memory, init_params, param_shapes, parameter_count
from .spec import DTYPES, HEADS, INITS, ModelConfig, check_architecture

__all__ = [
    "DTYPES",
    "HEADS",
    "INITS",
    "ForwardCache",
    "LSTMClassifier",
    "PackedBatch",
    "init_params",
    "param_shapes",
    "parameter_count",
]


class ForwardCache(NamedTuple):
    layers: list  # one lstm.LayerCache (bidirectional.BiLayerCache) per layer
    dropout_masks: list  # (N, D*H) scaled keep-masks between layers, or None
    head: tuple  # heads.LastStepCache, AllStepsCache or MeanCache
    batch: PackedBatch


def _dtype_name(dtype):
    """'float32' for float32 however it is spelled (np.float32, np.dtype, 'f4'); else dtype."""
    try:
        return str(np.dtype(dtype))
    except TypeError:
        return dtype


class LSTMClassifier:
    """A stack of LSTM layers (TF BasicLSTMCell) with a softmax head, in pure NumPy.

    Parameters
    ----------
    input_size, hidden_size, num_classes, num_layers : int (>= 1)
    head : "last" | "all" | "mean" | "max"
        "last" classifies each sequence from the state at its own last step; "all" puts
        the softmax at every valid step (loss averaged per sequence, prediction from the
        mean of the per-step probabilities); "mean" classifies the mean of h over the
        sequence's valid steps, "max" its per-unit maximum over them.
    forget_bias : float, added inside the forget gate's sigmoid (TF convention).
    dropout : float in [0, 1), inverted dropout between stacked layers, training only.
    dtype : "float32" (default) or "float64".
    init : "uniform" | "glorot_orthogonal" (see ``init_params``).
    bidirectional : bool, a reverse LSTM beside each layer over each sequence's own valid
        steps; the layer's output is [h->, h<-] (2H).
    seed : int or numpy Generator for the initialisation.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_classes,
        num_layers=1,
        head="last",
        forget_bias=1.0,
        dropout=0.0,
        dtype="float32",
        init="uniform",
        seed=0,
        bidirectional=False,
    ):
        arch = check_architecture(
            {
                "input_size": input_size,
                "hidden_size": hidden_size,
                "num_classes": num_classes,
                "num_layers": num_layers,
                "head": head,
                "forget_bias": forget_bias,
                "dropout": dropout,
                "dtype": _dtype_name(dtype),
                "init": init,
                "bidirectional": bidirectional,
            },
            "LSTMClassifier",
        )
        self.input_size, self.hidden_size = arch["input_size"], arch["hidden_size"]
        self.num_classes, self.num_layers = arch["num_classes"], arch["num_layers"]
        self.head, self.forget_bias, self.dropout = (
            arch["head"],
            arch["forget_bias"],
            arch["dropout"],
        )
        self.dtype, self.init = np.dtype(arch["dtype"]), arch["init"]
        self.bidirectional = arch["bidirectional"]
        self.directions = 2 if self.bidirectional else 1
        check_fits_in_memory(self)
        self.params = init_params(
            self.input_size,
            self.hidden_size,
            self.num_classes,
            self.num_layers,
            dtype=self.dtype,
            init=init,
            rng=seed,
            bidirectional=self.bidirectional,
        )

    # ------------------------------------------------------------------ description
    def config(self) -> ModelConfig:
        """The architecture's knobs (the config file's ``model:`` section)."""
        return ModelConfig(
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            head=self.head,
            forget_bias=self.forget_bias,
            dropout=self.dropout,
            dtype=str(self.dtype),
            init=self.init,
            bidirectional=self.bidirectional,
        )

    def spec(self) -> dict:
        """The architecture as a JSON-serialisable dict (what a checkpoint needs to rebuild it)."""
        return {
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            **dataclasses.asdict(self.config()),
        }

    @classmethod
    def from_config(cls, input_size, num_classes, config: ModelConfig, seed=0) -> LSTMClassifier:
        """A fresh model of the architecture ``config`` describes for this data's sizes."""
        return cls(input_size, num_classes=num_classes, seed=seed, **dataclasses.asdict(config))

    @classmethod
    def from_spec(cls, spec: dict, params: dict | None = None) -> LSTMClassifier:
        """Rebuild a model from ``spec()``; ``params`` (if given) replaces the fresh weights."""
        model = cls(**spec)
        if params is not None:
            model.set_params(params)
        return model

    def set_params(self, params: dict) -> None:
        """Replace the parameters, checking names and shapes (cast to the model dtype)."""
        self.params = self.conform_params(params)

    def conform_params(self, params: dict) -> dict:
        """New arrays of ``params`` in this model's dtype and parameter order, after checking that
        the names and shapes are this model's (LstmCliError otherwise); the model is unchanged."""
        expected = {k: v.shape for k, v in self.params.items()}
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        if missing or extra:
            raise LstmCliError(
                f"parameter names do not match the model: missing {missing}, unexpected {extra}"
            )
        for k, shape in expected.items():
            if tuple(params[k].shape) != shape:
                raise LstmCliError(
                    f"parameter {k!r} has shape {tuple(params[k].shape)}, expected {shape}"
                )
        return {k: np.array(params[k], dtype=self.dtype) for k in expected}

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    # ------------------------------------------------------------------ inputs
    def pack(self, x, lengths) -> PackedBatch:
        """Validate a right-padded batch x (B, T, I), lengths (B,) and pack its valid steps
        (packing.pack_batch). Padding values are never read, so they cannot matter (NaN
        included)."""
        return pack_batch(x, lengths, self.input_size, self.dtype)

    def _labels(self, y, B):
        y = np.asarray(y)
        if y.shape != (B,) or not np.issubdtype(y.dtype, np.integer):
            raise LstmCliError(f"y must be an int array of shape ({B},); got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise LstmCliError(
                f"labels must be class indices in [0, {self.num_classes}); got {y.min()}..{y.max()}"
            )
        return y.astype(np.int64)

    # ------------------------------------------------------------------ forward/backward
    def draw_dropout_masks(self, rng, batch, steps) -> list:
        """Inverted-dropout masks between layers in the caller's padded layout: one array
        (batch, steps, D*H) of 0 or 1/(1-p) per pair of stacked layers (D = 2 directions
        with bidirectional, else 1).

        Drawn per (sequence, step, unit) before any packing, so a sequence's mask does not
        depend on which other sequences share its batch: a batch split across processes
        slices the masks of the whole batch and computes what one process computes."""
        if rng is None:
            raise LstmCliError("dropout in training mode needs an rng (numpy Generator)")
        scale = np.asarray(1.0 / (1.0 - self.dropout), self.dtype)
        shape = (batch, steps, self.directions * self.hidden_size)
        return [
            (rng.random(shape) >= self.dropout).astype(self.dtype) * scale
            for _ in range(self.num_layers - 1)
        ]

    def forward(
        self,
        x,
        lengths,
        *,
        training=False,
        rng=None,
        dropout_masks=None,
        need_cache=True,
        workspaces=None,
    ):
        """x (B, T, I) right-padded, lengths (B,) -> logits and a ForwardCache.

        logits: (B, K) for head="last", "mean" or "max" (caller's order); for head="all" one row per
        valid step, (N, K) in the packed order of ``cache.batch`` (``logits()`` gives
        (B, T, K)). training=True enables dropout: with the masks ``dropout_masks`` (as
        ``draw_dropout_masks`` returns, at least (B, T, D*H) each) or masks drawn from
        ``rng``. need_cache=False (inference) keeps only what the output needs. workspaces:
        one lstm.Workspace per layer and direction (layer k's direction d at k*D + d) to
        reuse arrays from (the cache then lives in them).
        """
        pb = self.pack(x, lengths)
        p = self.params
        inp = pb.x
        layer_caches, masks = [], []
        dropping = training and self.dropout > 0.0 and self.num_layers > 1
        if dropping and dropout_masks is None:
            dropout_masks = self.draw_dropout_masks(rng, len(pb.lengths), pb.padded_T)
        D = self.directions
        rev = reversal(pb) if self.bidirectional else None
        for k in range(self.num_layers):
            ws = (None,) * D if workspaces is None else workspaces[k * D : (k + 1) * D]
            if self.bidirectional:
                h, lc = bi_layer_forward(
                    inp,
                    self._layer_params(k),
                    self.forget_bias,
                    pb.batch_sizes,
                    rev,
                    need_cache=need_cache,
                    workspaces=ws,
                )
            else:
                h, lc = lstm_layer_forward(
                    inp,
                    p[f"lstm.{k}.W"],
                    p[f"lstm.{k}.b"],
                    self.forget_bias,
                    batch_sizes=pb.batch_sizes,
                    need_cache=need_cache,
                    workspace=ws[0],
                )
            layer_caches.append(lc)
            keep = None
            if dropping and k < self.num_layers - 1:
                keep = dropout_masks[k][pb.index]  # (N, H) the packed rows' masks
                h = h * keep
            masks.append(keep)
            inp = h
        V, a = p["head.W"], p["head.b"]
        if self.head == "last":
            rows_0 = first_rows(pb) if self.bidirectional else None
            logits, hc = last_step_forward(inp, pb.last_rows, V, a, rows_0)
        elif self.head == "mean":
            logits, hc = mean_forward(inp, pb.offsets, pb.order, pb.lengths, pb.seq, V, a)
        elif self.head == "max":
            logits, hc = max_forward(inp, pb.offsets, pb.order, V, a)
        else:
            logits, hc = all_steps_forward(inp, V, a)
        return logits, ForwardCache(layer_caches, masks, hc, pb)

    def _layer_params(self, k):
        p = self.params
        return (
            p[f"lstm.{k}.W"],
            p[f"lstm.{k}.b"],
            p[f"lstm.{k}.reverse.W"],
            p[f"lstm.{k}.reverse.b"],
        )

    def backward(self, dlogits, cache: ForwardCache, workspaces=None, need_dx=True, flow=None):
        """Gradients of the loss given dL/dlogits (shaped as forward's logits).

        Returns (grads, dx): grads has exactly the keys of ``params``; dx (B, T, I) is the
        gradient w.r.t. the input batch (zero at padded steps), or None with need_dx=False
        (which saves the first layer's input-gradient GEMM).
        flow: an empty list to receive, per layer (bottom first) and, in a bidirectional
        model, per direction (forward, then reverse: entry D * layer + direction), the norms
        of the batch loss's dL/dh_t and dL/dc_t as two (B, T) arrays (zero past each
        length) from this same backward pass. The reverse direction's step t is the
        sequence's own step t, which that direction reaches last.
        """
        p = self.params
        grads = {}
        dh = dh_last = None
        if self.head == "last":  # only each sequence's final h gets a gradient
            dh_last, grads["head.W"], grads["head.b"] = last_step_backward(
                dlogits, cache.head, p["head.W"], dense=False
            )
            dh_last = dh_last[cache.batch.order]  # (B, D*H), in packed-batch order
        elif self.head == "mean":
            dh, grads["head.W"], grads["head.b"] = mean_backward(dlogits, cache.head, p["head.W"])
        elif self.head == "max":
            dh, grads["head.W"], grads["head.b"] = max_backward(dlogits, cache.head, p["head.W"])
        else:
            dh, grads["head.W"], grads["head.b"] = all_steps_backward(
                dlogits, cache.head, p["head.W"]
            )
        D = self.directions
        for k in range(self.num_layers - 1, -1, -1):
            ws = (None,) * D if workspaces is None else workspaces[k * D : (k + 1) * D]
            top_dh_last = dh_last if k == self.num_layers - 1 else None
            rows = None
            if flow is not None:  # (N,) arrays of packed rows: dh, dc norms per direction
                n = len(cache.batch.seq)
                rows = tuple((np.zeros(n), np.zeros(n)) for _ in range(D))
            if self.bidirectional:
                dinp, fwd, bwd = bi_layer_backward(
                    dh,
                    cache.layers[k],
                    p[f"lstm.{k}.W"],
                    p[f"lstm.{k}.reverse.W"],
                    workspaces=ws,
                    need_dx=need_dx or k > 0,
                    dh_last=top_dh_last,
                    flow=rows,
                )
                grads[f"lstm.{k}.W"], grads[f"lstm.{k}.b"] = fwd
                grads[f"lstm.{k}.reverse.W"], grads[f"lstm.{k}.reverse.b"] = bwd
            else:
                dinp, grads[f"lstm.{k}.W"], grads[f"lstm.{k}.b"], _, _ = lstm_layer_backward(
                    dh,
                    cache.layers[k],
                    p[f"lstm.{k}.W"],
                    workspace=ws[0],
                    need_dx=need_dx or k > 0,
                    dh_last=top_dh_last,
                    flow=None if rows is None else rows[0],
                )
            if rows is not None:  # this layer's entries before the layers above it
                flow[:0] = [tuple(unpack_rows(r, cache.batch) for r in pair) for pair in rows]
            if k > 0 and cache.dropout_masks[k - 1] is not None:
                dinp *= cache.dropout_masks[k - 1]
            dh = dinp
        grads = {k: grads[k] for k in p}
        if not need_dx:
            return grads, None
        pb = cache.batch
        dx = np.zeros(
            (len(pb.lengths), pb.padded_T, self.input_size), dh.dtype
        )  # (B, T, I), x's shape
        dx[pb.index] = dh
        return grads, dx

    def loss_from_logits(self, logits, cache, y, class_weights=None):
        """Loss (float) and dL/dlogits for forward's logits."""
        pb = cache.batch
        y = self._labels(y, len(pb.lengths))
        weights = row_weights(self.head, y, pb, class_weights, self.num_classes)
        if self.head != "all":
            return softmax_cross_entropy(logits, y, weights)
        return softmax_cross_entropy(logits, y[pb.seq], weights)

    def _own_workspaces(self):
        """The model's reusable buffers, for methods that return only new arrays (the
        caches they fill never escape, so reusing them between calls is safe). One set
        per thread: numpy releases the GIL inside its loops, so two threads calling the
        same model must not share buffers."""
        local = self.__dict__.get("_thread_buffers")
        if local is None:
            local = self._thread_buffers = threading.local()
        workspaces = getattr(local, "workspaces", None)
        count = self.num_layers * self.directions
        if workspaces is None or len(workspaces) != count:
            workspaces = local.workspaces = [Workspace() for _ in range(count)]
        return workspaces

    def release_buffers(self) -> None:
        """Free the work arrays kept between calls (up to a few hundred MB for long, wide
        batches; every thread's). The next call allocates them again."""
        self.__dict__.pop("_thread_buffers", None)

    def __getstate__(self):  # pickle / copy.deepcopy: parameters and settings, no buffers
        state = self.__dict__.copy()
        state.pop("_thread_buffers", None)
        return state

    def loss_and_grads(
        self,
        x,
        lengths,
        y,
        class_weights=None,
        *,
        training=False,
        rng=None,
        dropout_masks=None,
        return_dx=False,
        return_probs=False,
        flow=None,
    ):
        """Mean cross-entropy of the batch and the gradient of every parameter.

        y (B,) int class indices; class_weights (K,) optional per-class weights (the loss is
        then the weighted mean, sum_b w_{y_b} CE_b / sum_b w_{y_b}). Returns (loss, grads),
        plus dx (B, T, I) with return_dx=True and the class probabilities (B, K) with
        return_probs=True. Large intermediate arrays are reused from call to call (the
        returned arrays are always new). flow: see ``backward``.
        """
        logits, cache = self.forward(
            x,
            lengths,
            training=training,
            rng=rng,
            dropout_masks=dropout_masks,
            workspaces=self._own_workspaces(),
        )
        loss, dlogits = self.loss_from_logits(logits, cache, y, class_weights)
        probs = self.probabilities(logits, cache) if return_probs else None
        grads, dx = self.backward(
            dlogits, cache, workspaces=self._own_workspaces(), need_dx=return_dx, flow=flow
        )
        out = (loss, grads)
        if return_dx:
            out += (dx,)
        if return_probs:
            out += (probs,)
        return out

    def loss(self, x, lengths, y, class_weights=None):
        """Mean cross-entropy of the batch (forward only, no dropout)."""
        logits, cache = self.forward(x, lengths)
        return self.loss_from_logits(logits, cache, y, class_weights)[0]

    # ------------------------------------------------------------------ inference
    def probabilities(self, logits, cache):
        """Class probabilities (B, K) from forward's logits and cache."""
        if self.head != "all":
            return softmax(logits)  # (B, K)
        pb = cache.batch
        per_step = np.zeros((len(pb.lengths), pb.T, self.num_classes), logits.dtype)
        per_step[pb.index] = softmax(logits)  # (B, T, K), zero past each end
        return per_step.sum(axis=1) / pb.lengths[:, None]

    def predict_proba(self, x, lengths):
        """Class probabilities (B, K) (head="all": mean over valid steps of per-step softmax)."""
        logits, cache = self.forward(
            x, lengths, need_cache=False, workspaces=self._own_workspaces()
        )
        return self.probabilities(logits, cache)

    def predict(self, x, lengths):
        """Predicted class indices (B,)."""
        return self.predict_proba(x, lengths).argmax(axis=1)

    def logits(self, x, lengths):
        """Batch-first logits: (B, K) for head="last" or "mean"; (B, T, K) for head="all" (0 at
        padding)."""
        logits, cache = self.forward(x, lengths, need_cache=False)
        if self.head != "all":
            return logits
        pb = cache.batch
        out = np.zeros((len(pb.lengths), pb.padded_T, self.num_classes), logits.dtype)  # x's T
        out[pb.index] = logits
        return out

    def evaluate_batch(self, x, lengths, y):
        """One forward: per-sequence cross-entropy (B,) (all head: mean over valid steps) and
        probabilities (B, K)."""
        logits, cache = self.forward(
            x, lengths, need_cache=False, workspaces=self._own_workspaces()
        )
        pb = cache.batch
        B = len(pb.lengths)
        y = self._labels(y, B)
        probs = self.probabilities(logits, cache)
        if self.head != "all":
            ce = -log_softmax(logits)[np.arange(B), y]
        else:
            ce_rows = -log_softmax(logits)[np.arange(len(pb.seq)), y[pb.seq]]  # (N,)
            ce = np.bincount(pb.seq, weights=ce_rows, minlength=B) / pb.lengths
        return ce.astype(np.float64), probs

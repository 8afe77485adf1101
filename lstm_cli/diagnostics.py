"""What a trained model does along the sequence: accuracy as it unfolds, gate statistics.

Both come from one forward pass over the dataset, written here with the public step
function ``nn.lstm.lstm_step_forward`` (DESIGN.md §1), so every gate value and every
top-layer state h_t is at hand:

* **by step** (early classification): each sequence is cut at p % of its own length,
  ``L_p = max(1, ceil(p * L / 100))`` for p = 10, 20, ..., 100, and classified from the
  prefix alone. Because the LSTM runs forward in time, the prefix's states are the full
  run's first L_p states: the ``last`` head reads h at step L_p - 1, the ``all`` head
  averages its per-step probabilities (and per-step losses) over steps 0 .. L_p - 1.
  That is the result of running the model on the truncated sequence (tested). A
  bidirectional model's reverse direction starts at the prefix's own last step, so it
  is run on each truncated batch instead (one forward of the model per percent); a
  model that z-scores each sequence (data.normalize_per_sequence) on each prefix of the
  data as read, transformed on its own (the whole sequence's mean would leak into it). An
  ensemble (``ensemble_by_step``) cuts the data file's own sequences and averages its
  members' probabilities on each prefix, every member transforming it as trained.
* **gates**: per layer (and direction), the distribution over valid steps (and units) of
  the input (i), forget (f) and output (o) gate values: mean, fraction above 0.95 and
  below 0.05, and a histogram over [0, 1].

The gradient-flow file ``gradflow.jsonl`` is defined in docs/diagnostics.md; its
per-epoch records are built by ``GradFlowAccumulator`` (fed by the training loop, or by
``checkpoint_gradient_flow`` for one checkpoint on one dataset, with a step-by-step BPTT of
``lstm_step_backward``) and read by ``lstm_cli.plot.runfiles.read_gradflow``.
"""

from __future__ import annotations

import numpy as np

from .data import SequenceDataset, make_batches, pad_batch
from .ensemble import ensemble_probs, prepare_members, report_of_probs
from .errors import DataError, LstmCliError
from .nn.lstm import lstm_step_backward, lstm_step_forward
from .nn.reference import reverse_steps
from .store.jsontext import finite_or_null

PERCENTS = tuple(range(10, 101, 10))  # prefix lengths, in % of each sequence's own length
GATES = ("input", "forget", "output")  # reported gates; their slices in TF order i, j, f, o
_GATE_SLICE = {"input": 0, "forget": 2, "output": 3}
HIGH, LOW = 0.95, 0.05  # saturation thresholds
HIST_BINS = 20  # equal-width histogram bins over [0, 1]
FRACTION_BINS = 10  # gradflow: fraction-of-length bins ((k-1)/10, k/10], k = 1..10
DIRECTIONS = ("forward", "reverse")  # "direction" of a bidirectional model's entries, by index


def by_step_subject(by_step) -> str:
    """What a ``by_step`` report describes, for a title: "last head" or, from
    ensemble_by_step, "ensemble of M"."""
    head = str(by_step.get("head", "?"))
    return head if head.startswith("ensemble") else f"{head} head"


def by_step_unit(by_step) -> str:
    """The steps a ``by_step`` report's mean_steps count: the model's input steps (after
    data.pool / data.frame), or, for an ensemble, the data file's own."""
    return "file steps" if by_step_subject(by_step).startswith("ensemble") else "model steps"


def prefix_lengths(lengths, percents=PERCENTS) -> np.ndarray:
    """(P, N) int64: ``max(1, ceil(p * L / 100))`` for each percent p and length L.

    Integer arithmetic, so 30 % of 10 steps is exactly 3 (0.3 * 10 in floats is not).
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(1, -1)
    pct = np.asarray(percents, dtype=np.int64).reshape(-1, 1)
    if pct.size == 0 or pct.min() < 1 or pct.max() > 100:
        raise LstmCliError(f"percents must lie in [1, 100]; got {list(percents)}")
    return np.maximum(1, (pct * lengths + 99) // 100)


def layer_forward(model, x, lengths):
    """Run every layer step by step over a right-padded batch (inference, no dropout).

    x (B, T, I) in the model's dtype, lengths (B,). Returns (gates, h_top): gates is a
    list over layers and directions (layer k's direction d at k*D + d) of (B, T, 4H)
    post-activation gate values [i|j|f|o], each in its own direction's time order (the
    reverse direction's step 0 is the sequence's last valid step); h_top the top layer's
    states (B, T, D*H), [h->_t, h<-_t] at step t. Steps past a sequence's length are
    computed on the padding and must be masked by the caller (right padding cannot
    reach a valid step, in either direction's order).
    """
    B, T, _ = x.shape
    H = model.hidden_size
    p = model.params
    inp = x
    gates = []
    for k in range(model.num_layers):
        outs = []
        for d, name in enumerate(("", ".reverse")[: model.directions]):
            W, b = p[f"lstm.{k}{name}.W"], p[f"lstm.{k}{name}.b"]
            seq = inp if d == 0 else reverse_steps(inp, lengths)
            h = np.zeros((B, H), model.dtype)
            c = np.zeros((B, H), model.dtype)
            hs = np.empty((B, T, H), model.dtype)
            gs = np.empty((B, T, 4 * H), model.dtype)
            for t in range(T):
                h, c, cache = lstm_step_forward(seq[:, t], h, c, W, b, model.forget_bias)
                hs[:, t] = h
                gs[:, t] = cache.gates
            gates.append(gs)
            outs.append(hs if d == 0 else reverse_steps(hs, lengths))
        inp = np.concatenate(outs, axis=2) if len(outs) > 1 else outs[0]
    return gates, inp


def layer_label(entry) -> str:
    """'layer 2' or 'layer 2 reverse': how tables and figures name a gates.layers entry or
    a gradflow.jsonl record (both: "layer" from 0, "direction" in a bidirectional model's)."""
    reverse = " reverse" if entry.get("direction") == "reverse" else ""
    return f"layer {entry.get('layer', 0) + 1}{reverse}"


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class _ByStep:
    """Correct counts and loss sums per prefix percent, over batches."""

    def __init__(self, model, percents):
        self.model, self.percents = model, tuple(percents)
        self.correct = np.zeros(len(self.percents))
        self.loss = np.zeros(len(self.percents))
        self.steps = np.zeros(len(self.percents))
        self.n = 0

    def add_truncated(self, x, lengths, y):
        """x (B, T, I), the batch itself: the model run on each truncated batch (what a
        bidirectional model needs: its reverse direction starts at the prefix's end)."""
        cut = prefix_lengths(lengths, self.percents)  # (P, B)
        ce, pred = np.empty(cut.shape), np.empty(cut.shape, np.int64)
        for n, prefix in enumerate(cut):
            ce[n], probs = self.model.evaluate_batch(x, prefix, y)
            pred[n] = probs.argmax(-1)
        self.count(pred, ce, cut, y)

    def add(self, h_top, lengths, y):
        """h_top (B, T, H), layer_forward's top states of the whole batch (unidirectional
        model): every prefix's result read off the one full run."""
        B, T, _ = h_top.shape
        V, a = self.model.params["head.W"], self.model.params["head.b"]
        cut = prefix_lengths(lengths, self.percents)  # (P, B)
        rows = np.arange(B)
        head, at_cut = self.model.head, (rows[None, :], cut - 1)  # (P, B) index of L_p - 1
        if head in ("last", "all"):  # per-step log-probabilities
            logp = _log_softmax((h_top @ V + a).astype(np.float64))  # (B, T, K)
        if head == "all":  # mean over the prefix of per-step probabilities and losses
            probs = np.cumsum(np.exp(logp), axis=1)  # (B, T, K) running sums
            ce_steps = np.cumsum(-logp[rows, :, y], axis=1)  # (B, T)
            pred = probs[at_cut].argmax(-1)  # dividing by L_p keeps argmax
            ce = ce_steps[at_cut] / cut
        else:  # one softmax per prefix: of its last state, or of h pooled over the prefix
            if head == "last":
                lp = logp[at_cut]  # (P, B, K)
            elif head == "mean":
                h_sum = np.cumsum(h_top.astype(np.float64), axis=1)  # (B, T, H) running sums
                lp = _log_softmax(h_sum[at_cut] / cut[..., None] @ V + a)  # (P, B, K)
            else:  # max
                h_max = np.maximum.accumulate(h_top.astype(np.float64), axis=1)  # (B, T, H)
                lp = _log_softmax(h_max[at_cut] @ V + a)  # (P, B, K)
            pred = lp.argmax(-1)
            ce = -lp[:, rows, y]  # (P, B)
        self.count(pred, ce, cut, y)

    def count(self, pred, ce, cut, y):
        """pred, ce, cut (P, B): predictions, losses and prefix lengths per percent."""
        B = cut.shape[1]
        self.correct += (pred == y[None, :]).sum(1)
        self.loss += ce.sum(1)
        self.steps += cut.sum(1)
        self.n += B

    def result(self) -> dict:
        return {
            "head": self.model.head,
            "percent": list(self.percents),
            "accuracy": (self.correct / self.n).tolist(),
            "loss": (self.loss / self.n).tolist(),
            "mean_steps": (self.steps / self.n).tolist(),
            "n": self.n,
        }


class _GateStats:
    """Sums, saturation counts and histograms of gate values over valid steps, per layer."""

    def __init__(self, num_layers, directions=1):
        self.directions = directions
        entries = num_layers * directions  # layer k's direction d at k*D + d
        self.count = np.zeros(entries, np.int64)
        shape = (entries, len(GATES))
        self.sum, self.sq = np.zeros(shape), np.zeros(shape)
        self.high, self.low = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        self.hist = np.zeros(shape + (HIST_BINS,), np.int64)

    def add(self, gates, lengths):
        """gates: layer_forward's list (entry k*D + d); every direction's valid steps are
        its first `length` steps."""
        T = gates[0].shape[1]
        valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]  # (B, T)
        for k, g in enumerate(gates):
            H = g.shape[-1] // 4
            rows = g[valid].astype(np.float64)  # (S, 4H) valid steps only
            self.count[k] += rows.size // 4
            for n, name in enumerate(GATES):
                s = _GATE_SLICE[name]
                v = rows[:, s * H : (s + 1) * H]
                self.sum[k, n] += v.sum()
                self.sq[k, n] += (v * v).sum()
                self.high[k, n] += int((v > HIGH).sum())
                self.low[k, n] += int((v < LOW).sum())
                self.hist[k, n] += np.histogram(v, bins=HIST_BINS, range=(0.0, 1.0))[0]

    def result(self) -> dict:
        layers = []
        for e, count in enumerate(self.count):
            k, d = divmod(e, self.directions)
            entry = {"layer": k, "values": int(count)}
            if self.directions > 1:
                entry["direction"] = DIRECTIONS[d]
            for n, name in enumerate(GATES):
                mean = self.sum[e, n] / count
                var = max(self.sq[e, n] / count - mean * mean, 0.0)
                entry[name] = {
                    "mean": float(mean),
                    "std": float(np.sqrt(var)),
                    "above_0.95": float(self.high[e, n] / count),
                    "below_0.05": float(self.low[e, n] / count),
                    "histogram": self.hist[e, n].tolist(),
                }
            layers.append(entry)
        return {"high": HIGH, "low": LOW, "bins": HIST_BINS, "layers": layers}


def _class_indices(y, n, num_classes, unknown_ok=False):
    """y as (n,) int class indices of the model's classes, -1 (an unknown label) allowed
    only when ``unknown_ok``; an LstmCliError otherwise."""
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise LstmCliError(
            f"y must be {n} int class indices, one per sequence; got shape {y.shape} of {y.dtype}"
        )
    bad = y[(y < (-1 if unknown_ok else 0)) | (y >= num_classes)]
    if bad.size:
        hint = (
            "; for unknown labels (-1) pass the known sequences, ds.view(known) and y[known], "
            "as lstm-eval --allow-unknown does"
            if bad[0] == -1
            else ""
        )
        raise LstmCliError(f"y holds {bad[0]}, not a class index 0..{num_classes - 1}{hint}")
    return y


def diagnose(
    tm, ds: SequenceDataset, y=None, *, by_step=True, gates=True, batch_size=256, percents=PERCENTS
) -> dict:
    """``{"by_step": ..., "gates": ...}`` of TrainedModel ``tm`` on ``ds`` (see the module doc).

    y (N,) class indices; required for by_step (accuracy needs labels). Batches are formed
    by length as in inference, so little padding is computed. ``ds``: the data as read, or
    as ``tm.prepare`` returns it (not for the by_step of a model that z-scores each
    sequence, which transforms each prefix of the data as read).
    """
    raw, ds = ds, tm.as_trained(ds)
    model = tm.model
    if by_step and y is None:
        raise LstmCliError("by-step accuracy needs labels (y)")
    if by_step:
        y = _class_indices(y, len(ds), model.num_classes)
    out = {}
    if by_step and tm.transforms["per_sequence"]:
        if raw.transforms is not None:
            raise LstmCliError(
                f"{raw.source}: the by-step accuracy of a model that z-scores each sequence "
                f"needs the data as read (each prefix is z-scored on its own)"
            )
        out["by_step"] = _by_step_of_raw_prefixes(tm, raw, ds.lengths, y, batch_size, percents)
        by_step = False
    acc = _ByStep(model, percents) if by_step else None
    gst = _GateStats(model.num_layers, model.directions) if gates else None
    # the step-by-step run gives the gates, and a unidirectional model's by-step results
    stepwise = gst is not None or (acc is not None and not model.bidirectional)
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, model.dtype, tm.mean, tm.std)
        g, h_top = layer_forward(model, x, lengths) if stepwise else (None, None)
        if acc is not None and model.bidirectional:
            acc.add_truncated(x, lengths, y[idx])
        elif acc is not None:
            acc.add(h_top, lengths, y[idx])
        if gst is not None:
            gst.add(g, lengths)
    if acc is not None:
        out["by_step"] = acc.result()
    if gst is not None:
        out["gates"] = gst.result()
    return out


def _by_step_of_raw_prefixes(tm, raw, lengths, y, batch_size, percents) -> dict:
    """diagnose's by_step for a model that z-scores each sequence: each prefix of L_p of
    the model's steps (``lengths``: each sequence's) is the data as read cut to the raw
    steps they hold (pool x frame each, the last ones partial) and transformed on its
    own, then classified as evaluation would (model.evaluate_batch)."""
    cut = prefix_lengths(lengths, percents)  # (P, N) in the model's steps
    per_step = tm.transforms["pool"] * tm.transforms["frame"]  # raw steps per model step
    pred, ce = np.empty(cut.shape, np.int64), np.empty(cut.shape)
    for n, prefix in enumerate(cut):
        part = tm.prepare(
            _prefixes(raw, range(len(raw)), np.minimum(raw.lengths, prefix * per_step))
        )
        for idx in make_batches(part.lengths, batch_size, shuffle=False, bucket=True):
            x, lens = pad_batch(part, idx, tm.model.dtype, tm.mean, tm.std)
            ce[n, idx], probs = tm.model.evaluate_batch(x, lens, y[idx])
            pred[n, idx] = probs.argmax(-1)
    acc = _ByStep(tm.model, percents)
    acc.count(pred, ce, cut, y)
    return acc.result()


def _prefixes(raw: SequenceDataset, rows, prefix) -> SequenceDataset:
    """Sequences ``rows`` of ``raw``, each cut to its first ``prefix`` (len(rows),) steps."""
    seqs = [raw.sequence(int(r))[:n] for r, n in zip(rows, prefix)]
    return SequenceDataset.from_sequences(seqs, None, raw.source, raw.x.dtype)


def ensemble_by_step(members, y, batch_size=256, percents=PERCENTS) -> dict:
    """The report's ``by_step`` of an ensemble: accuracy and loss of the averaged
    probabilities when each sequence is cut to its first max(1, ceil(p L / 100)) steps.

    members: (TrainedModel, the data file as that member reads it, *before* its input
    transforms) pairs; each member transforms every prefix as it was trained, so L and
    ``mean_steps`` count the file's own steps. y (N,): class indices, -1 for an unknown
    label (left out, as lstm-eval --allow-unknown leaves it out)."""
    for _, raw in members:  # _prefixes keeps no transforms mark: it would transform twice
        if raw.transforms is not None:
            raise DataError(
                f"{raw.source}: the by-step accuracy of an ensemble needs the data as read "
                f"(each member transforms every prefix as it was trained), not data that "
                f"has been through input transforms ({raw.transforms})"
            )
    tm0, raw0 = members[0]
    y = _class_indices(y, len(raw0), len(tm0.classes), unknown_ok=True)
    known = np.flatnonzero(y >= 0)
    yk = y[known]
    cut = prefix_lengths(raw0.lengths[known], percents)  # (P, n)
    accuracy, loss = [], []
    for prefix in cut:
        cuts: dict = {}  # id of a member's data -> its prefixes (shared by one run's members)
        for _, raw in members:
            cuts.setdefault(id(raw), _prefixes(raw, known, prefix))
        cut_members = prepare_members([(tm, cuts[id(raw)]) for tm, raw in members])
        P = ensemble_probs(cut_members, batch_size)  # (n, K)
        report = report_of_probs(P, yk, tm0.classes, raw0.source)
        accuracy.append(report["accuracy"])
        loss.append(report["loss"])
    return {
        "head": f"ensemble of {len(members)}",
        "percent": list(percents),
        "accuracy": accuracy,
        "loss": loss,
        "mean_steps": cut.mean(axis=1).tolist(),
        "n": int(yk.size),
    }


# ------------------------------------------------------------------ gradient flow records


def fraction_bins(lengths, T) -> np.ndarray:
    """(B, T) int: the fraction-of-length bin 0..FRACTION_BINS-1 of step t (0-based) in a
    sequence of length L, bin k holding (t + 1) / L in (k / 10, (k + 1) / 10]; -1 past L."""
    lengths = np.asarray(lengths, dtype=np.int64)[:, None]
    t1 = np.arange(1, T + 1, dtype=np.int64)[None, :]
    k = (t1 * FRACTION_BINS + lengths - 1) // lengths - 1  # ceil(10 (t+1) / L) - 1, exact
    return np.where(t1 <= lengths, k, -1)


class GradFlowAccumulator:
    """Builds one gradflow.jsonl record per layer and direction from per-step gradient norms.

    ``add(track, dh_norm, dc_norm, lengths)`` takes, for one batch, the L2 norms over the
    hidden units of dL/dh_t and dL/dc_t as (B, T) arrays (batch-first, right-padded; the
    values past each length are ignored); ``track`` is model.backward's flow index, the
    layer for ``directions`` 1 and D * layer + direction for 2. ``records(epoch)``
    returns the means per absolute step and per fraction bin (docs/diagnostics.md,
    "gradflow.jsonl"), with a "direction" in a bidirectional model's, and resets.
    """

    def __init__(self, directions=1):
        self._acc = {}
        self.directions = directions

    def add(self, track, dh_norm, dc_norm, lengths):
        dh_norm, dc_norm = np.asarray(dh_norm, np.float64), np.asarray(dc_norm, np.float64)
        B, T = dh_norm.shape
        lengths = np.asarray(lengths, np.int64)
        valid = np.arange(T)[None, :] < lengths[:, None]
        bins = fraction_bins(lengths, T)
        a = self._acc.setdefault(int(track), _empty_sums())
        if T > a["T"]:  # grow the per-step sums to the longest sequence seen
            for key in ("n", "dh", "dc"):
                a[key] = np.concatenate([a[key], np.zeros(T - a["T"])])
            a["T"] = T
        a["n"][:T] += valid.sum(0)
        a["dh"][:T] += np.where(valid, dh_norm, 0.0).sum(0)
        a["dc"][:T] += np.where(valid, dc_norm, 0.0).sum(0)
        for row, values in ((1, dh_norm), (2, dc_norm)):
            a["frac"][row] += np.bincount(bins[valid], values[valid], FRACTION_BINS)
        a["frac"][0] += np.bincount(bins[valid], minlength=FRACTION_BINS)

    def flat_sums(self, tracks, T) -> np.ndarray:
        """Every track's sums as one float64 vector, padded to T steps (to sum over ranks),
        with a 1 for each step its batches spanned; ``tracks``: their number, layers x
        directions."""
        parts = []
        for track in range(tracks):
            a = self._acc.get(track, _empty_sums())
            for key in ("n", "dh", "dc"):
                parts.append(np.pad(a[key], (0, T - a["T"])))
            parts.append((np.arange(T) < a["T"]).astype(np.float64))
            parts.append(a["frac"].ravel())
        return np.concatenate(parts)

    def load_flat_sums(self, vec, tracks, T) -> None:
        """Replace the sums with a vector from ``flat_sums`` (summed over ranks), as one
        process holding every rank's batches would: each track as long as the longest
        batch any rank added to it, and no track no rank added to."""
        size = 4 * T + 3 * FRACTION_BINS
        self._acc = {}
        for track in range(tracks):
            v = vec[track * size : (track + 1) * size]
            spanned = np.flatnonzero(v[3 * T : 4 * T])
            if not spanned.size:
                continue
            t = int(spanned[-1]) + 1
            self._acc[track] = {
                "T": t,
                "n": v[:t].copy(),
                "dh": v[T : T + t].copy(),
                "dc": v[2 * T : 2 * T + t].copy(),
                "frac": v[4 * T :].reshape(3, FRACTION_BINS).copy(),
            }

    def records(self, epoch) -> list:
        out = []
        D = self.directions
        for track in sorted(self._acc):
            a = self._acc[track]
            n, fn = a["n"], a["frac"][0]
            where = {"layer": track // D} | ({"direction": DIRECTIONS[track % D]} if D > 1 else {})
            out.append(
                {
                    "epoch": int(epoch),
                    **where,
                    "step": list(range(1, a["T"] + 1)),
                    "count": n.astype(np.int64).tolist(),
                    "dh_norm": _means(a["dh"], n),
                    "dc_norm": _means(a["dc"], n),
                    "fraction": [(k + 1) / FRACTION_BINS for k in range(FRACTION_BINS)],
                    "count_by_fraction": fn.astype(np.int64).tolist(),
                    "dh_norm_by_fraction": _means(a["frac"][1], fn),
                    "dc_norm_by_fraction": _means(a["frac"][2], fn),
                }
            )
        self._acc = {}
        return out


def _empty_sums() -> dict:
    """Per-step sums (count, dh, dc; grown as needed) and per-bin sums (3, FRACTION_BINS)."""
    z = np.zeros(0)
    return {"T": 0, "n": z, "dh": z, "dc": z, "frac": np.zeros((3, FRACTION_BINS))}


def _means(sums, counts) -> list:
    """sums / counts as floats; None where nothing was counted or the mean is not finite
    (a gradient that overflowed: JSON has no Infinity, docs/diagnostics.md)."""
    return finite_or_null([float(s / c) if c > 0 else None for s, c in zip(sums, counts)])


def batch_gradient_flow(model, x, lengths, y):
    """Per-step gradient norms of each sequence's own loss, by BPTT one step at a time.

    x (B, T, I), lengths (B,), y (B,) class indices. Returns (dh_norm, dc_norm, grads):
    dh_norm and dc_norm lists over layers of (B, T) L2 norms of the total dL_b/dh_t and
    dL_b/dc_t (both paths of DESIGN.md §4: the head at t and step t+1), L_b the b-th
    sequence's cross-entropy; grads the parameter gradients of sum_b L_b (its mean over
    the batch is the model's loss gradient, which the tests compare).
    """
    B, T, _ = x.shape
    p, L = model.params, model.num_layers
    lengths = np.asarray(lengths, np.int64)
    caches, inp = [], x
    for k in range(L):
        W, b = p[f"lstm.{k}.W"], p[f"lstm.{k}.b"]
        h = np.zeros((B, model.hidden_size), model.dtype)
        c, hs, layer = h.copy(), [], []
        for t in range(T):
            h, c, cache = lstm_step_forward(inp[:, t], h, c, W, b, model.forget_bias)
            hs.append(h)
            layer.append(cache)
        caches.append(layer)
        inp = np.stack(hs, axis=1)  # (B, T, H)
    V, a = p["head.W"], p["head.b"]
    dlogits = np.exp(_log_softmax(inp @ V + a))  # (B, T, K) softmax
    dlogits[np.arange(B), :, y] -= 1.0
    valid = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
    if model.head == "last":
        weight = (np.arange(T)[None, :] == lengths[:, None] - 1).astype(model.dtype)
    else:  # the all head's loss is the mean over the sequence's valid steps
        weight = valid / lengths[:, None]
    dlogits *= weight[:, :, None]
    grads = {"head.W": np.einsum("bth,btk->hk", inp, dlogits), "head.b": dlogits.sum((0, 1))}
    dh_in = dlogits @ V.T  # (B, T, H): the head's part of dL/dh_t of the top layer
    dh_norms, dc_norms = [None] * L, [None] * L
    for k in reversed(range(L)):
        W = p[f"lstm.{k}.W"]
        dh_next = np.zeros((B, model.hidden_size), model.dtype)
        dc_next = dh_next.copy()
        dW, db = np.zeros_like(W), np.zeros(W.shape[1], W.dtype)
        dx = np.zeros(caches[k][0].x.shape[:1] + (T, caches[k][0].x.shape[1]), model.dtype)
        dh_norm, dc_norm = np.zeros((B, T)), np.zeros((B, T))
        for t in reversed(range(T)):
            cache = caches[k][t]
            dh = dh_in[:, t] + dh_next  # zero past each end: padding gets no head gradient
            o = cache.gates[:, 3 * model.hidden_size :]
            dc = dh * o * (1.0 - cache.tanh_c**2) + dc_next  # total dL/dc_t
            dh_norm[:, t] = np.linalg.norm(dh.astype(np.float64), axis=1)  # float32's range
            dc_norm[:, t] = np.linalg.norm(dc.astype(np.float64), axis=1)
            dx[:, t], dh_next, dc_next, dW_t, db_t = lstm_step_backward(dh, dc_next, cache, W)
            dW += dW_t
            db += db_t
        grads[f"lstm.{k}.W"], grads[f"lstm.{k}.b"] = dW, db
        dh_norms[k], dc_norms[k] = np.where(valid, dh_norm, 0.0), np.where(valid, dc_norm, 0.0)
        dh_in = dx
    return dh_norms, dc_norms, grads


def checkpoint_gradient_flow(tm, ds: SequenceDataset, y, epoch, batch_size=64) -> list:
    """gradflow.jsonl records (one per layer and direction) of TrainedModel ``tm`` on
    labelled ``ds`` (as read, or as ``tm.prepare`` returns it)."""
    ds = tm.as_trained(ds)
    y = _class_indices(y, len(ds), tm.model.num_classes)
    acc = GradFlowAccumulator(tm.model.directions)
    for idx in make_batches(ds.lengths, batch_size, shuffle=False, bucket=True):
        x, lengths = pad_batch(ds, idx, tm.model.dtype, tm.mean, tm.std)
        flow = []  # from the model's own backward; batch_gradient_flow is its test oracle
        tm.model.loss_and_grads(x, lengths, y[idx], flow=flow)
        for k, (dh, dc) in enumerate(flow):  # the batch mean's rows, times B: each own loss
            acc.add(k, dh * len(idx), dc * len(idx), lengths)
    return acc.records(epoch)

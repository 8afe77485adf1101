#!/usr/bin/env python
"""Reference baselines on the official train/test split of the shipped datasets (issue #13).

Run ``python benchmarks/baselines.py --help``. Per dataset (GunPoint, ArrowHead, OSULeaf,
ACSF1 from ``data/ucr/`` and JapaneseVowels from ``data/japanese_vowels/``):

* **1-NN Euclidean** and **1-NN DTW** (full window), written here in numpy. Every series is
  z-normalised on its own (each feature over its own steps), as the UCR archive does for
  its published 1-NN figures (``--raw`` skips it). The local cost is the squared
  Euclidean distance between steps (dependent DTW, DTW_D, for multivariate data);
  equal-length series only for Euclidean. Optionally (``--window``) DTW with a
  Sakoe-Chiba band whose width is chosen by leave-one-out 1-NN accuracy on the TRAIN
  split only (ties go to the narrower band), for fixed-length sets.
* **1-NN Euclidean under any start** (``--methods rot``, fixed-length sets): the
  distance to each training series is the smallest over every circular shift of it
  (the series read from another starting point, wrapping round), and with ``mirror``
  also over its reversal: the invariance that ``train.augment.roll`` / ``reverse``
  teach the LSTM, for outlines of shapes whose contour starts at an arbitrary point.
  Also by leave-one-out on TRAIN, against plain ED: the figure a recipe choice may read
  (``roll`` / ``reverse: auto`` read the same counts, on the recipe's own input steps).
* **A plain PyTorch LSTM**: one layer, 64 units, linear head on h at each sequence's last
  valid step (pack_padded_sequence), Adam lr 1e-3, batch 32, inputs z-scored with the
  training set's per-feature mean and standard deviation. A stratified 20 % validation
  split is carved from TRAIN; training runs a fixed number of epochs (``--epochs``) and
  the test figure is that of the epoch with the best validation accuracy (then lowest
  validation loss). Seeds 0, 1, 2 (``--seeds``); one torch thread. The test split is
  used for nothing but the final figures.

torch is imported only inside the LSTM baseline; it is a benchmark-only dependency.
``--datasets`` also takes a path stem S of your own data (files S_TRAIN.ts and S_TEST.ts),
e.g. ``--datasets /data/MyLeaves/MyLeaves --methods rot`` before choosing augmentation.
``--merge A.json B.json ... --out X.json --md X.md`` joins result files of separate runs
(e.g. DTW and LSTM run in two processes) and writes the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lstm_cli.data import class_list, encode_labels, load_dataset, stratified_split  # noqa: E402
from lstm_cli.data.invariance import shift_distances  # noqa: E402

DATASETS = {
    "GunPoint": "data/ucr/GunPoint/GunPoint",
    "ArrowHead": "data/ucr/ArrowHead/ArrowHead",
    "OSULeaf": "data/ucr/OSULeaf/OSULeaf",
    "ACSF1": "data/ucr/ACSF1/ACSF1",
    "JapaneseVowels": "data/japanese_vowels/JapaneseVowels",
}
# Sakoe-Chiba half-widths searched, as percentages of the series length.
WINDOW_GRID = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20)


def _is_stem(name):
    return all(os.path.isfile(f"{name}_{part}.ts") for part in ("TRAIN", "TEST"))


def load_split(name):
    """-> (train list of (T, F) arrays, train int labels, test list, test labels, classes)."""
    stem = os.path.join(ROOT, DATASETS[name]) if name in DATASETS else name
    tr, te = load_dataset(stem + "_TRAIN.ts"), load_dataset(stem + "_TEST.ts")
    classes = class_list(tr.labels)

    def seqs(d):
        return [np.asarray(d.x[a:b], dtype=np.float64) for a, b in zip(d.offsets, d.offsets[1:])]

    return (
        seqs(tr),
        encode_labels(tr.labels, classes),
        seqs(te),
        encode_labels(te.labels, classes),
        classes,
    )


def znorm(seq):
    """Each feature of one series to mean 0, std 1 over its own steps (constant -> 0)."""
    sd = seq.std(axis=0)
    return (seq - seq.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def pad(seqs):
    """-> (N, Tmax, F) array padded with zeros, (N,) lengths."""
    lengths = np.array([len(s) for s in seqs])
    out = np.zeros((len(seqs), lengths.max(), seqs[0].shape[1]))
    for k, s in enumerate(seqs):
        out[k, : len(s)] = s
    return out, lengths


def dtw_one_to_many(q, X, lengths, window=None):
    """Squared-cost DTW distance from q (m, F) to every X[k, :lengths[k]] -> (K,).

    D[i, j] = c(i, j) + min(D[i, j-1], D[i-1, j], D[i-1, j-1]), c the squared Euclidean
    distance between steps, computed one anti-diagonal d = i + j at a time for all K
    series at once (only elementwise array operations, no scan). Each diagonal buffer
    is indexed by row i + 1 (index 0 is an inf sentinel) and holds inf outside the rows
    valid on its diagonal. Columns j >= lengths[k] never feed a cell with a smaller j,
    so padding does not change D at (m - 1, lengths[k] - 1).
    ``window`` (steps) limits |i - j| <= window (Sakoe-Chiba band); None = full.
    """
    m, K, n, F = len(q), X.shape[0], X.shape[1], X.shape[2]
    w = m + n if window is None else int(window)
    # Step-major layouts, so that a diagonal is one contiguous block of rows.
    Xr = np.ascontiguousarray(X[:, ::-1, :].transpose(1, 0, 2))  # X[k, j] = Xr[n - 1 - j, k]
    if F == 1:
        Xr, q = Xr[:, :, 0], q[:, 0, None]
    else:
        q = q[:, None, :]
    bufs = [np.full((m + 1, K), np.inf) for _ in range(3)]
    spans = [(0, -1)] * 3  # valid rows [lo, hi] written in each buffer
    final_d = m - 1 + np.asarray(lengths) - 1
    out = np.full(K, np.inf)
    for d in range(m + n - 1):
        lo = max(0, d - n + 1, (d - w + 1) // 2)
        hi = min(m - 1, d, (d + w) // 2)
        cur, m1, m2 = bufs[d % 3], bufs[(d - 1) % 3], bufs[(d - 2) % 3]
        olo, ohi = spans[d % 3]
        if window is not None:  # a band can leave a stale row at its lower edge
            cur[olo + 1 : ohi + 2] = np.inf
        spans[d % 3] = (lo, hi)
        if hi >= lo:
            cols = slice(n - 1 - d + lo, n - d + hi)
            if F == 1:
                c = Xr[cols] - q[lo : hi + 1]
                c *= c
            else:
                diff = Xr[cols] - q[lo : hi + 1]
                c = np.einsum("ikf,ikf->ik", diff, diff)
            if d == 0:
                cur[1] = c[0]
            else:
                t = np.minimum(m1[lo + 1 : hi + 2], m1[lo : hi + 1])
                np.minimum(t, m2[lo : hi + 1], out=t)
                np.add(c, t, out=cur[lo + 1 : hi + 2])
        done = final_d == d
        if done.any():
            out[done] = cur[m, done]
    return out


def distance_matrix(queries, refs, window=None, skip_upper=False):
    """DTW distances (len(queries), len(refs)); ``skip_upper`` computes only j > i
    (queries is refs) and mirrors it."""
    X, lengths = pad(refs)
    D = np.zeros((len(queries), len(refs)))
    for i, q in enumerate(queries):
        if skip_upper:
            if i + 1 < len(refs):
                D[i, i + 1 :] = dtw_one_to_many(q, X[i + 1 :], lengths[i + 1 :], window)
        else:
            D[i] = dtw_one_to_many(q, X, lengths, window)
    if skip_upper:
        D = D + D.T
        np.fill_diagonal(D, np.inf)
    return D


def nn_accuracy(D, ref_labels, query_labels):
    """1-NN accuracy from a distance matrix (ties: the first reference)."""
    return float(np.mean(ref_labels[np.argmin(D, axis=1)] == query_labels))


def euclid_matrix(queries, refs, any_start=False, mirror=False):
    """(Q, R) squared Euclidean distances between equal-length series (T, F), at the best
    circular shift / reversal with ``any_start`` / ``mirror``: the library's kernel
    (lstm_cli.data.invariance.shift_distances, which roll / reverse "auto" read)."""
    return shift_distances(np.stack(queries), np.stack(refs), any_start, mirror)


def _split_for_nn(name, normalise):
    """load_split's train and test series (z-normalised each unless ``normalise`` is
    False) and labels, and whether every series has one length."""
    xtr, ytr, xte, yte, _ = load_split(name)
    if normalise:
        xtr, xte = [znorm(s) for s in xtr], [znorm(s) for s in xte]
    return xtr, ytr, xte, yte, len({len(s) for s in xtr + xte}) == 1


def run_rotation(name, log, normalise=True):
    xtr, ytr, xte, yte, fixed = _split_for_nn(name, normalise)
    if not fixed:
        log(f"{name}: variable lengths, no rotation baseline")
        return {}
    res, loo = {}, {}
    plain = euclid_matrix(xtr, xtr)
    np.fill_diagonal(plain, np.inf)
    loo["ed"] = nn_accuracy(plain, ytr, ytr)
    for key, mirror in (("ed_rotation", False), ("ed_rotation_mirror", True)):
        res[key] = nn_accuracy(euclid_matrix(xte, xtr, True, mirror), ytr, yte)
        own = euclid_matrix(xtr, xtr, True, mirror)
        np.fill_diagonal(own, np.inf)  # leave-one-out on TRAIN: what a choice may read
        loo[key] = nn_accuracy(own, ytr, ytr)
        log(
            f"{name}: 1-NN ED, any start{' or mirror' if mirror else ''} {res[key]:.4f}"
            f" (leave-one-out on TRAIN {loo[key]:.4f}, plain ED {loo['ed']:.4f})"
        )
    res["loo_train"] = loo
    return res


def run_nn(name, use_window, log, normalise=True):
    xtr, ytr, xte, yte, fixed = _split_for_nn(name, normalise)
    res = {}
    if fixed:
        res["ed"] = nn_accuracy(euclid_matrix(xte, xtr), ytr, yte)
        log(f"{name}: 1-NN ED {res['ed']:.4f}")
    t0 = time.perf_counter()
    res["dtw"] = nn_accuracy(distance_matrix(xte, xtr), ytr, yte)
    res["dtw_seconds"] = round(time.perf_counter() - t0, 2)
    log(f"{name}: 1-NN DTW (full window) {res['dtw']:.4f} in {res['dtw_seconds']} s")
    if use_window and fixed:
        T = len(xtr[0])
        t0 = time.perf_counter()
        loo = {}
        for pct in WINDOW_GRID:
            w = int(np.ceil(pct / 100 * T))
            loo[pct] = nn_accuracy(distance_matrix(xtr, xtr, w, skip_upper=True), ytr, ytr)
            log(f"{name}:   LOO on TRAIN, window {pct}% ({w} steps): {loo[pct]:.4f}")
        best = max(WINDOW_GRID, key=lambda p: (loo[p], -p))
        w = int(np.ceil(best / 100 * T))
        res["dtw_window"] = nn_accuracy(distance_matrix(xte, xtr, w), ytr, yte)
        res["window_pct"], res["window_steps"] = best, w
        res["window_loo_train"] = {str(p): a for p, a in loo.items()}
        res["window_seconds"] = round(time.perf_counter() - t0, 2)
        log(
            f"{name}: 1-NN DTW (window {best}% = {w} steps, LOO on TRAIN) "
            f"{res['dtw_window']:.4f} in {res['window_seconds']} s"
        )
    return res


def run_lstm(name, seeds, epochs, hidden, batch, log):
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

    torch.set_num_threads(1)
    xtr, ytr, xte, yte, classes = load_split(name)
    steps = np.concatenate(xtr)
    mu, sd = steps.mean(0), steps.std(0)
    sd = np.where(sd > 0, sd, 1.0)

    def tensors(seqs, labels, idx):
        xs = [torch.tensor((seqs[k] - mu) / sd, dtype=torch.float32) for k in idx]
        lengths = torch.tensor([len(seqs[k]) for k in idx])
        return pad_sequence(xs, batch_first=True), lengths, torch.tensor(labels[idx])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(xtr[0].shape[1], hidden, batch_first=True)
            self.head = nn.Linear(hidden, len(classes))

        def forward(self, x, lengths):
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return self.head(h[-1])

    def evaluate(model, data):
        x, lengths, y = data
        with torch.no_grad():
            logits = model(x, lengths)
        loss = nn.functional.cross_entropy(logits, y).item()
        return float((logits.argmax(1) == y).float().mean()), loss

    warm = tensors(xtr, ytr, np.arange(min(2, len(xtr))))  # one-time torch set-up, untimed
    nn.functional.cross_entropy(Net()(warm[0], warm[1]), warm[2]).backward()
    runs = []
    for seed in seeds:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        fit_idx, val_idx = stratified_split(ytr, 0.2, rng)
        fit = tensors(xtr, ytr, fit_idx)
        val = tensors(xtr, ytr, val_idx)
        test = tensors(xte, yte, np.arange(len(xte)))
        torch.manual_seed(seed)
        model = Net()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        best_key, best_state, best_epoch = None, None, 0
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(len(fit_idx))
            for s in range(0, len(perm), batch):
                b = perm[s : s + batch]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(fit[0][b], fit[1][b]), fit[2][b])
                loss.backward()
                opt.step()
            model.eval()
            vacc, vloss = evaluate(model, val)
            if best_key is None or (vacc, -vloss) > best_key:
                best_key, best_epoch = (vacc, -vloss), epoch
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        train_acc, _ = evaluate(model, fit)
        test_acc, _ = evaluate(model, test)
        seconds = time.perf_counter() - t0
        runs.append(
            dict(
                seed=seed,
                test_acc=test_acc,
                fit_acc=train_acc,
                val_acc=best_key[0],
                best_epoch=best_epoch,
                seconds=round(seconds, 2),
            )
        )
        log(
            f"{name}: LSTM seed {seed}: test {test_acc:.4f} (fit {train_acc:.3f}, "
            f"val {best_key[0]:.3f} at epoch {best_epoch}/{epochs}) {seconds:.1f} s"
        )
    accs = [r["test_acc"] for r in runs]
    secs = [r["seconds"] for r in runs]
    return dict(
        runs=runs,
        median=float(np.median(accs)),
        min=min(accs),
        max=max(accs),
        seconds_median=float(np.median(secs)),
        epochs=epochs,
        hidden=hidden,
        batch=batch,
        torch=torch.__version__,
    )


def fmt(v):
    return "–" if v is None else f"{v:.3f}"


def markdown(doc):
    rot = any("rot" in r for r in doc["results"].values())
    rows = [
        "| dataset | 1-NN ED | 1-NN DTW full | 1-NN DTW window (LOO on TRAIN) "
        "| plain LSTM median [range] | LSTM s per run |"
        + (" 1-NN ED any start / or mirror |" if rot else ""),
        "|---|---|---|---|---|---|" + ("---|" if rot else ""),
    ]
    for name in list(DATASETS) + [n for n in doc["results"] if n not in DATASETS]:
        r = doc["results"].get(name)
        if r is None:
            continue
        nn_ = r.get("nn", {})
        win = "–"
        if "dtw_window" in nn_:
            win = f"{nn_['dtw_window']:.3f} (w = {nn_['window_pct']}%)"
        lstm = r.get("lstm")
        lstm_s = (
            "–" if lstm is None else f"{lstm['median']:.3f} [{lstm['min']:.3f}, {lstm['max']:.3f}]"
        )
        secs = "–" if lstm is None else f"{lstm['seconds_median']:.0f}"
        ed, dtw = fmt(nn_.get("ed")), fmt(nn_.get("dtw"))
        row = f"| {name} | {ed} | {dtw} | {win} | {lstm_s} | {secs} |"
        if rot:
            r_ = r.get("rot", {})
            row += f" {fmt(r_.get('ed_rotation'))} / {fmt(r_.get('ed_rotation_mirror'))} |"
        rows.append(row)
    return "\n".join(rows) + "\n"


def merge(paths):
    doc = {"results": {}, "commands": [], "machine": None}
    for p in paths:
        with open(p) as f:
            part = json.load(f)
        doc["commands"] += part.get("commands", [])
        doc["machine"] = doc["machine"] or part.get("machine")
        for name, r in part["results"].items():
            doc["results"].setdefault(name, {}).update(r)
    return doc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated names")
    ap.add_argument(
        "--methods", default="nn,lstm", help="nn (ED + DTW), lstm and/or rot (ED, any start)"
    )
    ap.add_argument("--window", action="store_true", help="also DTW with a LOO-chosen band")
    ap.add_argument("--raw", action="store_true", help="1-NN on the values as read, no z-norm")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=100, help="LSTM epochs per run")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", help="write results as JSON here")
    ap.add_argument("--md", help="write the Markdown table here")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="join result files, no run")
    args = ap.parse_args(argv)

    if args.merge:
        doc = merge(args.merge)
    else:
        names = [n for n in args.datasets.split(",") if n]
        unknown = [n for n in names if n not in DATASETS and not _is_stem(n)]
        if unknown:
            ap.error(
                f"unknown dataset(s) {', '.join(unknown)}; expected {', '.join(DATASETS)}"
                " or a path stem S with files S_TRAIN.ts and S_TEST.ts"
            )
        methods = set(args.methods.split(","))
        seeds = [int(s) for s in args.seeds.split(",")]
        command = "python benchmarks/baselines.py " + " ".join(argv or sys.argv[1:])
        doc = {
            "results": {},
            "commands": [command],
            "machine": f"{platform.machine()} {platform.python_version()} numpy {np.__version__}",
        }
        t_all = time.perf_counter()
        for name in names:
            r = doc["results"].setdefault(name, {})
            if "nn" in methods:
                r["nn"] = run_nn(name, args.window, print, not args.raw)
                r["nn"]["znorm"] = not args.raw
            if "rot" in methods:
                r["rot"] = run_rotation(name, print, not args.raw)
            if "lstm" in methods:
                r["lstm"] = run_lstm(name, seeds, args.epochs, args.hidden, args.batch, print)
        doc["total_seconds"] = round(time.perf_counter() - t_all, 1)
        print(f"total {doc['total_seconds']} s")
    print(markdown(doc), end="")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if args.md:
        with open(args.md, "w") as f:
            f.write(markdown(doc))


if __name__ == "__main__":
    main()

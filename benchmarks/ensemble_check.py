"""One model against a train.folds ensemble of one recipe, on validation held out of TRAIN.

    python benchmarks/ensemble_check.py configs/acsf1.yaml --seeds 0 1 2 3 4 5 6 7 \\
        --folds 5 --jobs 2 --json /tmp/acsf1_folds.jsonl

For each seed a stratified 20 % of the config's data.train (data.labels.stratified_split,
generator seeded 1000 + seed) is written aside as the *outer validation* file; the rest is
the *outer training* file. On it are trained the recipe as one model (train.folds 0: its
own data.valid_fraction split) and as an ensemble (train.folds K), both with data.test =
the outer validation file, which neither sees during training. ``--arms`` picks the arms
beside the single model: ``folds`` (the default) and/or ``refit``, one model on all of the
outer training file (data.valid_fraction 0, no early stopping) for as many epochs as the
single model's best epoch. The config's data.test
(the real test split) is never read. Prints, per arm, the median outer-validation loss and
accuracy, and each arm's gain over the single model (and refit against folds) paired by
seed: mean difference of loss with its standard error, and on how many seeds it is lower.
A JSON line holds each arm's [loss, accuracy], ``refit_epochs`` and ``n_folds``. Lines
of .ts files and JSONL files are copied as they are; other formats are not supported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from lstm_cli.config import load_config  # noqa: E402
from lstm_cli.data import load_dataset, stratified_split  # noqa: E402


def split_file(path, seed, work):
    """Write the outer training and validation files of ``seed``; return their paths."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines(keepends=True)
    if path.endswith(".ts"):
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
    elif path.endswith(".jsonl"):
        start = 0
    else:
        raise SystemExit(f"{path}: only .ts and .jsonl training files are supported")
    head, body = lines[:start], [line for line in lines[start:] if line.strip()]
    labels = load_dataset(path).labels
    assert len(body) == len(labels), (len(body), len(labels))
    tr, va = stratified_split(labels, 0.2, np.random.default_rng(1000 + seed))
    ext = os.path.splitext(path)[1]
    out = []
    for name, idx in (("outer_train", tr), ("outer_valid", va)):
        target = os.path.join(work, f"{name}-{seed}{ext}")
        with open(target, "w", encoding="utf-8") as fh:
            fh.writelines(head + [body[i] for i in idx])
        out.append(target)
    return out


def train(config, sets, out, with_best=False):
    cmd = [sys.executable, "-c", "from lstm_cli.cli import train; train()", "--config", config]
    for kv in sets:
        cmd += ["--set", kv]
    cmd += ["--output", out, "--overwrite", "--quiet"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{out} failed ({proc.returncode}):\n{proc.stderr}")
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    figures = (summary["test"]["loss"], summary["test"]["accuracy"])
    return (figures, summary["best_epoch"]) if with_best else figures


def one_seed(config, seed, folds, arms, work):
    train_file = load_config(config).data.train
    otr, ova = split_file(train_file, seed, work)
    common = [f"data.train={otr}", f"data.test={ova}", f"train.seed={seed}"]
    row = {"seed": seed}
    one = os.path.join(work, f"one-{seed}")
    row["single"], best_epoch = train(config, [*common, "train.folds=0"], one, with_best=True)
    if "folds" in arms:
        cv = os.path.join(work, f"cv-{seed}")
        row["folds"] = train(config, [*common, f"train.folds={folds}"], cv)
    if "refit" in arms:
        # All of the outer training file, no validation, for the single arm's best epoch count.
        refit = [
            *common,
            "train.folds=0",
            "data.valid_fraction=0",
            "train.early_stopping.patience=null",
            f"train.epochs={best_epoch}",
        ]
        row["refit"] = train(config, refit, os.path.join(work, f"refit-{seed}"))
        row["refit_epochs"] = best_epoch
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default="/tmp/ensemble_check")
    ap.add_argument(
        "--arms",
        nargs="+",
        default=["folds"],
        choices=["folds", "refit"],
        help="arms beside the single model (refit: one model on all of the outer training"
        " file for the single model's best epoch count)",
    )
    ap.add_argument("--json", help="append every seed's figures to this JSON-lines file")
    args = ap.parse_args(argv)
    work = os.path.join(args.work, os.path.splitext(os.path.basename(args.config))[0])
    os.makedirs(work, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(
            pool.map(lambda s: one_seed(args.config, s, args.folds, args.arms, work), args.seeds)
        )
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"config": args.config, "n_folds": args.folds, **r}) + "\n")
    arms = ["single", *args.arms]
    for arm in arms:
        loss = statistics.median(r[arm][0] for r in rows)
        acc = statistics.median(r[arm][1] for r in rows)
        print(f"{arm:6s}  outer validation: median loss {loss:.4f}  median accuracy {acc:.3f}")
    pairs = [(a, "single") for a in args.arms]
    if {"folds", "refit"} <= set(args.arms):
        pairs.append(("refit", "folds"))
    for arm, ref in pairs:
        diffs = [r[arm][0] - r[ref][0] for r in rows]
        gains = [r[arm][1] - r[ref][1] for r in rows]
        if len(diffs) >= 2:
            se = statistics.stdev(diffs) / len(diffs) ** 0.5
            print(
                f"{arm} - {ref}, paired by seed: loss {statistics.mean(diffs):+.4f} ± {se:.4f} "
                f"({sum(d < 0 for d in diffs)}/{len(diffs)} lower), accuracy "
                f"{statistics.mean(gains):+.4f}"
            )


if __name__ == "__main__":
    main()

"""Rank candidate recipes of one config on its validation split, over several seeds.

    python benchmarks/recipe_search.py configs/acsf1.yaml \\
        --candidate base= --candidate shift=train.augment.shift=true \\
        --candidate "shift+noise=train.augment.shift=true train.augment.noise=0.1" \\
        --seeds 0 1 2 --jobs 2 --json /tmp/acsf1.json

Each candidate is NAME=OVERRIDES (space-separated ``key=value`` pairs, given to
``lstm-train --set``). Every run trains in its own folder under ``--work``; the figures
are read from its summary.json and metrics.jsonl. The selection rule, stated once here:
the highest median validation accuracy over the seeds, ties broken by the lowest median
validation loss, both at each run's kept (best) epoch. Prints one markdown table row per
candidate. Test accuracy takes no part in the rule, so the table leaves it out unless
``--show-test`` is given (the JSON lines always record it): make the choice on the table,
then print it again with the test column from the record, without training:

    python benchmarks/recipe_search.py configs/acsf1.yaml --table /tmp/acsf1.json --show-test

The last column compares each candidate with the first one given, seed by seed (a seed
fixes the validation split, so the two runs of one seed see the same validation series):
the mean difference in validation loss with its standard error, and on how many seeds the
candidate's loss is the lower. On 6-45 validation series the medians of a few seeds move
with the draw; a difference within about two standard errors is not evidence.

A candidate that is a train.folds ensemble reports its out-of-fold loss and accuracy
(over all of TRAIN), its members' median kept epoch and mean training accuracy there;
its paired column then compares figures over different validation series (all of TRAIN
against the reference's split), so read it as indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_one(config, name, overrides, seed, work):
    out = os.path.join(work, f"{name}-{seed}")
    cmd = [sys.executable, "-c", "from lstm_cli.cli import train; train()", "--config", config]
    for kv in [f"train.seed={seed}", *overrides]:
        cmd += ["--set", kv]
    cmd += ["--output", out, "--overwrite", "--quiet"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed ({proc.returncode}):\n{proc.stderr}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    if "out_of_fold" in summary:  # a train.folds ensemble: its members' figures
        members = [_kept_epoch(os.path.join(out, os.path.dirname(m))) for m in summary["members"]]
        oof = summary["out_of_fold"]
        val_loss, val_accuracy = oof["loss"], oof["accuracy"]
        best_epoch = statistics.median(m["epoch"] for m in members)
        train_accuracy = statistics.mean(m["train_accuracy"] for m in members)
    else:
        best = _kept_epoch(out)
        val_loss, val_accuracy = best["val_loss"], best["val_accuracy"]
        best_epoch, train_accuracy = best["epoch"], best["train_accuracy"]
    return {
        "candidate": name,
        "overrides": overrides,
        "seed": seed,
        "best_epoch": best_epoch,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "train_accuracy": train_accuracy,
        "test_accuracy": summary["test"]["accuracy"] if summary.get("test") else None,
        "seconds": round(seconds, 1),
    }


def _kept_epoch(run):
    """The metrics.jsonl row of the run folder's best (kept) epoch."""
    with open(os.path.join(run, "summary.json")) as f:
        epoch = json.load(f)["best_epoch"]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return next(r for r in rows if r.get("epoch") == epoch)


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def mean_se(diffs) -> tuple[float, float]:
    """Mean and standard error of paired differences (two or more)."""
    return statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


def paired(rows, ref_rows):
    """'mean ± SE, k/n lower' of val_loss(candidate) - val_loss(reference) over the seeds
    both ran; '-' for the reference itself or with fewer than two common seeds."""
    ref = {r["seed"]: r["val_loss"] for r in ref_rows}
    diffs = [r["val_loss"] - ref[r["seed"]] for r in rows if r["seed"] in ref]
    if rows is ref_rows or len(diffs) < 2:
        return "-"
    mean, se = mean_se(diffs)
    lower = sum(d < 0 for d in diffs)
    return f"{mean:+.4f} ± {se:.4f}, {lower}/{len(diffs)} lower"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=OVERRIDES")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default="/tmp/recipe_search")
    ap.add_argument("--json", help="append every run's figures to this JSON-lines file")
    ap.add_argument("--show-test", action="store_true", help="add the test accuracy column")
    ap.add_argument(
        "--table",
        metavar="JSONL",
        help="train nothing: the table of this config's runs in a --json file",
    )
    args = ap.parse_args(argv)
    candidates = []
    for text in args.candidate:
        name, _, overrides = text.partition("=")
        candidates.append((name, overrides.split()))
    if args.table:
        runs = _recorded(args.table, args.config, [name for name, _ in candidates])
        if not candidates:  # every candidate of the file, in its order
            for r in runs:
                if r["candidate"] not in [name for name, _ in candidates]:
                    candidates.append((r["candidate"], r["overrides"]))
    elif not candidates:
        ap.error("give at least one --candidate (or --table)")
    else:
        jobs = [(c, o, s) for c, o in candidates for s in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda j: run_one(args.config, j[0], j[1], j[2], args.work), jobs))
        if args.json:
            with open(args.json, "a") as f:
                for r in runs:
                    f.write(json.dumps({"config": args.config, **r}) + "\n")
    print_table(runs, candidates, args.show_test)


def _recorded(path, config, names):
    """The runs of ``config`` in a --json file (only the candidates ``names``, if any)."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    runs = [r for r in rows if r["config"] == config and (not names or r["candidate"] in names)]
    missing = [n for n in names if n not in {r["candidate"] for r in runs}]
    if not runs or missing:
        raise SystemExit(f"{path}: no runs of {config}" + (f" for {missing}" if missing else ""))
    return runs


def print_table(runs, candidates, show_test):
    """The markdown table, ranked by the rule; the test column only with ``show_test``."""
    table = []
    by_name = {name: [r for r in runs if r["candidate"] == name] for name, _ in candidates}
    first = by_name[candidates[0][0]]
    for name, overrides in candidates:
        rows = by_name[name]
        tests = [r["test_accuracy"] for r in rows if r["test_accuracy"] is not None]
        test = (
            f"{statistics.median(tests):.3f} [{min(tests):.3f}, {max(tests):.3f}]" if tests else "-"
        )
        table.append(
            (
                -median(rows, "val_accuracy"),
                median(rows, "val_loss"),
                f"| {name} | `{' '.join(overrides) or '(none)'}` | {median(rows, 'val_loss'):.4f}"
                f" | {median(rows, 'val_accuracy'):.3f} | {median(rows, 'train_accuracy'):.3f}"
                + (f" | {test}" if show_test else "")
                + f" | {median(rows, 'seconds'):.0f} | {paired(rows, first)} |",
            )
        )
    print(
        "| candidate | `--set` overrides | median val loss | median val acc |"
        " median train acc at best |"
        + (" test median [range] |" if show_test else "")
        + f" s/run | val loss vs {candidates[0][0]}, paired |"
    )
    print("|---|---|---|---|---|" + ("---|" if show_test else "") + "---|---|")
    for _, _, line in sorted(table, key=lambda t: (t[0], t[1])):
        print(line)
    if not show_test:
        print("(test accuracy left out: it takes no part in the rule; --show-test adds it)")


if __name__ == "__main__":
    main()

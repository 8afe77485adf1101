"""Does validation predict TEST? Every candidate recipe_search has measured, per dataset.

    python benchmarks/val_vs_test.py benchmarks/results/*.jsonl

Reads recipe_search JSON lines (config, candidate, seed, val_loss, test_accuracy). In each
file, each candidate of a config is paired seed by seed with that file's ``base`` runs of
the same config (the recipe of the day; same seed, same validation series; a ``shipped``
candidate is the round's choice run again, so it is not counted twice). Per dataset it
prints every candidate's mean paired change in validation loss (out-of-fold loss for a
train.folds recipe) and in test accuracy, then two summaries over the candidates:

- the rank correlation of the two changes (Spearman; -1: a lower validation loss always
  came with a higher test accuracy, 0: validation says nothing about TEST);
- of the candidates that validation calls better or worse by at least 2 standard errors,
  how many moved TEST the same way.

Reporting only: this reads TEST figures that were recorded after each round's decision,
to ask how well the rules' evidence could have chosen; it chooses nothing. Files of other
scripts (no ``candidate``/``base``) are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict

import numpy as np
from recipe_search import mean_se  # benchmarks/, this script's folder, is on sys.path

KEYS = ("config", "candidate", "seed", "val_loss", "test_accuracy")


def read_runs(paths):
    """{(file, dataset, candidate): {seed: (val_loss, test_accuracy)}} of recipe_search runs."""
    runs = defaultdict(dict)
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line) if line.strip() else {}
                if not all(row.get(k) is not None for k in KEYS):
                    continue
                dataset = os.path.basename(row["config"]).removesuffix(".yaml")
                key = (os.path.basename(path), dataset, row["candidate"])
                runs[key][row["seed"]] = (row["val_loss"], row["test_accuracy"])
    return runs


def paired_changes(runs):
    """{dataset: [(file, candidate, seeds, dval, se, dtest)]}: means over the common seeds."""
    out = defaultdict(list)
    for (file, dataset, candidate), by_seed in sorted(runs.items()):
        base = runs.get((file, dataset, "base"))
        if candidate in ("base", "shipped") or base is None:  # shipped: the choice, re-run
            continue
        seeds = sorted(set(base) & set(by_seed))
        if len(seeds) < 2:
            continue
        dval = [by_seed[s][0] - base[s][0] for s in seeds]
        dtest = [by_seed[s][1] - base[s][1] for s in seeds]
        mean, se = mean_se(dval)  # recipe_search's paired column
        out[dataset].append((file, candidate, len(seeds), mean, se, statistics.mean(dtest)))
    return out


def spearman(a, b) -> float:
    """Rank correlation of two equal-length sequences (average ranks for ties)."""

    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def summary(changes, bar=2.0):
    """(Spearman of dval against dtest, candidates past the bar, of those how many moved
    TEST the way validation said: lower loss with higher accuracy, or the reverse)."""
    rho = spearman([c[3] for c in changes], [c[5] for c in changes])
    clear = [c for c in changes if c[4] > 0 and abs(c[3]) >= bar * c[4]]
    agree = sum(1 for c in clear if c[5] != 0 and (c[3] < 0) == (c[5] > 0))
    return rho, len(clear), agree


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--bar", type=float, default=2.0, help="standard errors that count as clear")
    args = ap.parse_args(argv)
    by_dataset = paired_changes(read_runs(args.files))
    print(
        "| dataset | candidates | Spearman (val loss change, test change) | clear on "
        f"validation (>= {args.bar:g} SE) | of those, TEST moved the same way |"
    )
    print("|---|---|---|---|---|")
    for dataset, changes in sorted(by_dataset.items()):
        rho, clear, agree = summary(changes, args.bar)
        print(f"| {dataset} | {len(changes)} | {rho:+.2f} | {clear} | {agree} |")
    for dataset, changes in sorted(by_dataset.items()):
        print(f"\n{dataset}: file, candidate, seeds, val loss change ± SE, test change")
        for file, cand, n, dval, se, dtest in sorted(changes, key=lambda c: c[3]):
            print(f"  {file:28s} {cand:16s} {n:2d}  {dval:+.4f} ± {se:.4f}  {dtest:+.4f}")


if __name__ == "__main__":
    main()

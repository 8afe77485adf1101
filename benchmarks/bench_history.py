"""Before/after: the engine at earlier commits against the working tree, side by side.

For each git revision given, the package as it was at that commit is extracted into a
temporary folder (`git archive`) and imported under its own name; the same workloads
(bench_step.py's table, lengths uniform in [T/2, T], 10 classes, float32) are then
timed for every version, alternating the versions call by call in one process, and
medians are printed with the ratio to the working tree. Training step = forward +
backward (`loss_and_grads`); inference = `predict_proba`.

Usage (one BLAS thread, as the issue's targets are stated):
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_history.py 5135ea5 2d31d8e
"""

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {  # name: (B, T, I, H, layers)
    "tiny": (32, 20, 8, 32, 1),
    "small": (64, 50, 16, 64, 1),
    "medium": (64, 100, 32, 128, 1),
    "large": (128, 200, 64, 256, 1),
    "stacked": (64, 100, 32, 128, 2),
}


def load_version(rev, scratch):
    """Import lstm_cli as it was at `rev` as module `lstm_cli_<rev>`; 'HEAD~0'-like names ok."""
    if rev == "worktree":
        sys.path.insert(0, ROOT)
        return importlib.import_module("lstm_cli.nn.model")
    folder = os.path.join(scratch, rev)
    os.makedirs(folder)
    tar_path = os.path.join(scratch, rev + ".tar")
    done = subprocess.run(
        ["git", "-C", ROOT, "archive", "-o", tar_path, rev, "lstm_cli"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # not a git checkout, or no such revision
        sys.exit(
            f"bench_history.py: cannot extract {rev} with git archive in {ROOT} (it needs a "
            f"git checkout holding that revision): {done.stderr.strip()}"
        )
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder)
    name = f"lstm_cli_{rev}"
    os.rename(os.path.join(folder, "lstm_cli"), os.path.join(folder, name))
    for fn in os.listdir(os.path.join(folder, name)):  # absolute self-imports, if any
        p = os.path.join(folder, name, fn)
        if fn.endswith(".py"):
            with open(p) as fh:
                src = fh.read()
            with open(p, "w") as fh:
                fh.write(
                    src.replace("from lstm_cli.", f"from {name}.").replace(
                        "import lstm_cli.", f"import {name}."
                    )
                )
    sys.path.insert(0, folder)
    # The model module moved into the nn/ package at 2ab784c; older revisions have it on top.
    nested = os.path.exists(os.path.join(folder, name, "nn", "model.py"))
    return importlib.import_module(f"{name}.nn.model" if nested else f"{name}.model")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="+", help="git revisions to compare with the working tree")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per version and workload")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="lstm_bench_history_")
    try:
        versions = {rev: load_version(rev, scratch) for rev in args.revs}
        versions["worktree"] = load_version("worktree", scratch)
        print(
            f"# numpy {np.__version__}; "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
            f"medians of {args.rounds} rounds, versions alternated call by call"
        )
        names = list(versions)
        header = f"{'workload':9}" + "".join(f"{n + ' train':>18}{n + ' infer':>18}" for n in names)
        print(header)
        for w in args.workloads.split(","):
            B, T, I, H, L = WORKLOADS[w]
            rng = np.random.default_rng(args.seed)
            x = rng.standard_normal((B, T, I)).astype(np.float32)
            lengths = rng.integers(T // 2, T + 1, size=B)
            y = rng.integers(0, 10, size=B)
            models = {
                n: v.LSTMClassifier(I, H, 10, num_layers=L, seed=args.seed)
                for n, v in versions.items()
            }
            reps = max(1, int(0.2 / max(1e-4, _once(models[names[-1]], x, lengths, y))))
            times = {n: ([], []) for n in names}
            for r in range(args.rounds + 1):
                for n in names:
                    m = models[n]
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        m.loss_and_grads(x, lengths, y)
                    t1 = time.perf_counter()
                    for _ in range(reps):
                        m.predict_proba(x, lengths)
                    t2 = time.perf_counter()
                    if r:  # the first round warms up
                        times[n][0].append((t1 - t0) / reps * 1e3)
                        times[n][1].append((t2 - t1) / reps * 1e3)
            base = [statistics.median(v) for v in times["worktree"]]
            row = f"{w:9}"
            for n in names:
                tr, inf = (statistics.median(v) for v in times[n])
                row += f"{tr:>10.2f} ms x{tr / base[0]:4.2f}{inf:>10.2f} ms x{inf / base[1]:4.2f}"
            print(row, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _once(model, x, lengths, y):
    t0 = time.perf_counter()
    model.loss_and_grads(x, lengths, y)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()

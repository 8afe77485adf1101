"""Epoch throughput of lstm-train in one process and under `mpiexec -n N` (issue #12).

Writes a synthetic dataset as an .npy folder, trains it for a few epochs with each process
count (1 BLAS thread per process), and prints sequences/s of the training steps (from
metrics.jsonl), the wall time, the CPU each process got (children's CPU time / processes /
wall) and the ratio against one process. Also prints the Allreduce volume per step (all
gradients in float64) beside the step's compute time, which is what multi-host scaling
depends on.

    python benchmarks/bench_distributed.py                     # medium and tiny, -n 1 and 2
    python benchmarks/bench_distributed.py --workloads medium --procs 1,2 --sequences 4000

Figures, not assertions: the machine is shared; run it on a quiet one and read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lstm_cli.data import write_npy_dir  # noqa: E402
from lstm_cli.data.synthetic import make_random_dataset  # noqa: E402
from lstm_cli.nn.params import parameter_count  # noqa: E402

# name: (sequences, min length, max length, features, hidden units, classes, batch size)
WORKLOADS = {
    "medium": (20000, 50, 200, 32, 128, 5, 64),
    "small": (4000, 20, 100, 8, 32, 3, 64),  # at the auto threshold for 2 processes
    "tiny": (2000, 5, 30, 4, 8, 3, 32),
}
TRAIN = "import sys; from lstm_cli.cli import train; sys.argv[0] = 'lstm-train'; train()"


def _run(n, cfg, out, env):
    cmd = [sys.executable, "-c", TRAIN, "--config", cfg, "--output", out, "--quiet"]
    if n > 1:
        cmd = [shutil.which("mpiexec"), "-n", str(n), *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    seconds = sum(r["seconds"] for r in rows[1:]) or rows[0]["seconds"]  # epoch 1 warms up
    seen = sum(r["seconds"] * r["sequences_per_second"] for r in rows[1:]) or (
        rows[0]["seconds"] * rows[0]["sequences_per_second"]
    )
    return {"seq_s": seen / seconds, "wall": wall, "cpu_per_proc": cpu / n / wall}


def bench(name, procs, sequences, epochs, scratch, distributed="auto"):
    n_seq, lo, hi, feats, hidden, classes, batch = WORKLOADS[name]
    n_seq = sequences or n_seq
    rng = np.random.default_rng(0)
    ds = make_random_dataset(n_seq, lo, hi, feats, classes, rng)
    folder = os.path.join(scratch, f"{name}-data")
    write_npy_dir(ds, folder)
    cfg = os.path.join(scratch, f"{name}.yaml")
    with open(cfg, "w") as fh:
        yaml.safe_dump(
            {
                "data": {"train": folder, "format": "npy"},
                "model": {"hidden_size": hidden},
                "train": {
                    "epochs": epochs,
                    "batch_size": batch,
                    "seed": 0,
                    "distributed": distributed,
                },
            },
            fh,
        )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT
    results = {}
    for n in procs:
        results[n] = _run(n, cfg, os.path.join(scratch, f"{name}-run{n}"), env)
    params = parameter_count(feats, hidden, classes, 1)
    steps = -(-n_seq // batch)
    step_ms = 1000.0 * batch / results[procs[0]]["seq_s"]
    print(
        f"\n{name}: {n_seq} sequences, T {lo}-{hi}, I {feats}, H {hidden}, batch {batch}, "
        f"{epochs} epochs ({steps} steps each), train.distributed {distributed}"
    )
    print(f"  {'procs':>5} {'seq/s':>9} {'ratio':>6} {'wall s':>7} {'CPU/proc':>8}")
    base = results[procs[0]]["seq_s"]
    for n, r in results.items():
        print(
            f"  {n:>5} {r['seq_s']:>9.0f} {r['seq_s'] / base:>6.2f} {r['wall']:>7.1f} "
            f"{r['cpu_per_proc']:>8.2f}"
        )
    print(
        f"  Allreduce per step: {params} gradients + 4 scalars in float64 = "
        f"{(params + 4) * 8 / 1024:.0f} KiB, against a {step_ms:.1f} ms step in one process"
    )
    return {"workload": name, "sequences": n_seq, "params": params, "results": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="medium,tiny")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--sequences", type=int, default=None, help="override the workload's count")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--distributed", default="auto", choices=["auto", "always"])
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if shutil.which("mpiexec") is None:
        sys.exit("no mpiexec on PATH: pip install -e '.[mpi]'")
    procs = [int(p) for p in args.procs.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        out = [
            bench(w, procs, args.sequences, args.epochs, scratch, args.distributed)
            for w in args.workloads.split(",")
        ]
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()

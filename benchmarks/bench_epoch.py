"""Epoch throughput, padding and peak memory of real training runs.

1. JapaneseVowels (data/japanese_vowels): sequences/s of a training epoch with the shipped
   config, with and without length bucketing.
2. A synthetic set of N sequences with lengths uniform in 10-500, written as a folder of
   .npy arrays (the memory-mapped format) in a temporary folder: sequences/s, padded-step
   fraction with and without bucketing, and peak RSS for two dataset sizes, to show that
   peak memory does not grow with the dataset (rows are read from the memory map batch by
   batch and released).

Each run is a fresh `lstm-train` process (1 epoch); the figures come from its
metrics.jsonl and its peak RSS (ru_maxrss of the child). Usage:
    python benchmarks/bench_epoch.py [--sizes 25000,100000] [--hidden 32] [--threads 1]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_synthetic(folder, n, features, seed=0, chunk=5000):
    """x.npy, lengths.npy, y.npy with lengths uniform in [10, 500]; written in chunks."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 501, size=n).astype(np.int64)
    os.makedirs(folder, exist_ok=True)
    x = np.lib.format.open_memmap(
        os.path.join(folder, "x.npy"),
        mode="w+",
        dtype=np.float32,
        shape=(int(lengths.sum()), features),
    )
    row = 0
    for start in range(0, n, chunk):
        rows = int(lengths[start : start + chunk].sum())
        x[row : row + rows] = rng.standard_normal((rows, features), dtype=np.float32)
        row += rows
    x.flush()
    del x
    np.save(os.path.join(folder, "lengths.npy"), lengths)
    np.save(os.path.join(folder, "y.npy"), rng.integers(0, 10, size=n).astype(np.int64))
    return int(lengths.sum())


def run_epoch(train, run_dir, threads, *sets):
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS=str(threads),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
    )
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent across exec
    code = (
        "import sys\nfrom lstm_cli.cli import train\nsys.argv[0] = 'lstm-train'\n"
        "try:\n    train()\nfinally:\n"
        "    hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "    print('PEAK_RSS_KB', hwm, file=sys.stderr)"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        "--config",
        train,
        "--output",
        run_dir,
        "--overwrite",
        "--quiet",
        "--set",
        "train.epochs=1",
        *[a for s in sets for a in ("--set", s)],
    ]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, cwd=ROOT
    )  # `-c` imports this checkout's lstm_cli first
    if out.returncode != 0:
        raise SystemExit(f"training failed: {out.stderr.strip()}")
    row = json.loads(open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()[-1])
    peak = [ln.split()[1] for ln in out.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")]
    row["peak_rss_mb"] = int(peak[-1]) / 1024.0
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="25000,100000")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lstm_bench_epoch_")
    print(f"# numpy {np.__version__}, threads {args.threads}, scratch {tmp}")
    try:
        _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp):
    print("\nJapaneseVowels, configs/japanese_vowels.yaml, 1 epoch")
    jv = os.path.join(ROOT, "configs", "japanese_vowels.yaml")
    for bucket in ("true", "false"):
        r = run_epoch(
            jv, os.path.join(tmp, "jv"), args.threads, f"data.bucket={bucket}", "data.test=null"
        )
        print(
            f"  bucket={bucket:5}  {r['sequences_per_second']:9.1f} "
            f"seq/s  padded {r['padded_fraction']:.3f}"
            f"  epoch {r['seconds']:.2f} s"
        )

    print(
        f"\nSynthetic, lengths 10-500, {args.features} features, hidden {args.hidden}, "
        f"batch {args.batch}, .npy folder (memory-mapped), 1 epoch"
    )
    print(
        f"  {'sequences':>10} {'steps':>12} {'data MB':>8} "
        f"{'bucket':>6} {'seq/s':>8} {'padded':>7} "
        f"{'epoch s':>8} {'peak RSS MB':>11}"
    )
    for n in [int(v) for v in args.sizes.split(",")]:
        folder = os.path.join(tmp, f"syn{n}")
        steps = write_synthetic(folder, n, args.features)
        cfg = os.path.join(tmp, f"syn{n}.yaml")
        with open(cfg, "w") as fh:
            fh.write(
                f"data:\n  train: {folder}\n  valid_fraction: 0.02\n  normalize: true\n"
                f"model:\n  hidden_size: {args.hidden}\ntrain:\n  batch_size: {args.batch}\n"
                f"  optimizer:\n    lr: 1.0e-3\n"
            )
        for bucket in ("true", "false"):
            r = run_epoch(cfg, os.path.join(tmp, f"run{n}"), args.threads, f"data.bucket={bucket}")
            rss = f"{r['peak_rss_mb']:.0f}"
            print(
                f"  {n:>10,} {steps:>12,} {steps * args.features * 4 / 2**20:>8.0f} {bucket:>6} "
                f"{r['sequences_per_second']:>8.1f} "
                f"{r['padded_fraction']:>7.3f} {r['seconds']:>8.1f} "
                f"{rss:>11}",
                flush=True,
            )


if __name__ == "__main__":
    main()

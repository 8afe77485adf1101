"""Inference batch, lstm_cli `predict_proba` vs torch's `no_grad()` padded forward, in
blocks of back-to-back calls (one BLAS/OpenMP thread).

bench_step.py interleaves every contender call by call, and a short call right after a
GEMM-heavy one runs 2-3x slower on the shared test machine; for the thin inference margins
(tiny, last head) this script times each side alone in blocks, alternating which goes
first, and prints the ratio of the medians and the range of the per-block ratios.

    python benchmarks/bench_infer_standalone.py [--workloads tiny,stacked] [--head last]
"""

import argparse
import functools
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout benchmarked


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="tiny,stacked")
    ap.add_argument("--head", choices=("last", "all"), default="last")
    ap.add_argument("--blocks", type=int, default=12, help="timed blocks per side (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # before numpy and torch load their thread pools
    sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
    import bench_step as bs
    import numpy as np
    import torch

    from lstm_cli.nn.model import LSTMClassifier

    torch.set_num_threads(1)
    for wname in args.workloads.split(","):
        B, T, I, H, L = bs.WORKLOADS[wname]
        x, lengths, y = bs.make_batch(np, wname, args.seed)
        model = LSTMClassifier(
            I, H, bs.NUM_CLASSES, num_layers=L, head=args.head, dtype="float32", seed=args.seed
        )
        tc = bs.build_torch(torch, np, model, wname, args.head, x, lengths, y)
        fns = {"cli": functools.partial(model.predict_proba, x, lengths), "torch": tc["infer"]}
        t0 = time.perf_counter()
        fns["cli"]()
        calls = max(10, min(2000, int(0.3 / max(time.perf_counter() - t0, 1e-6))))  # ~0.3 s a block
        times = {k: [] for k in fns}
        for r in range(args.blocks):
            for k in ("cli", "torch") if r % 2 == 0 else ("torch", "cli"):
                f = fns[k]
                for _ in range(max(1, calls // 10)):  # warm up after the other side
                    f()
                start = time.perf_counter()
                for _ in range(calls):
                    f()
                times[k].append((time.perf_counter() - start) / calls * 1e3)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        ratios = sorted(a / b for a, b in zip(times["cli"], times["torch"]))
        print(
            f"{wname}/{args.head}: lstm_cli {med['cli']:.3f} ms  torch {med['torch']:.3f} ms  "
            f"ratio of medians {med['cli'] / med['torch']:.3f}  per-block ratios "
            f"{ratios[0]:.2f}-{ratios[-1]:.2f}  ({args.blocks} blocks of {calls} calls per side)"
        )


if __name__ == "__main__":
    main()

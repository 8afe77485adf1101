"""Peak memory of one training step (forward + BPTT) as batch x length x hidden grows.

Each configuration runs in a fresh Python process; the figure is the growth of the
process's peak RSS (ru_maxrss) caused by one `loss_and_grads` call, after the model
and the batch exist. Lengths are uniform in [T/2, T], so about 3/4 of the B*T steps are
valid. The engine stores only valid steps (packed), so memory follows N = sum(lengths),
not B*T. Model-based estimate, per layer and valid step: the forward cache keeps the
gates (4H), tanh(c), c_{t-1}, h (3H) and [1, x, h_{t-1}] (1+I+H); backward adds dz
(4H) and dx (I); the per-chunk gate factors are a fixed ~0.5 MB. That is about
(12H + 2I + 1) floats per valid step, ~48 H bytes in float32 when H >> I.

Usage: python benchmarks/bench_memory.py [--layers 1] [--dtype float32]
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout measured

CHILD = r"""
import json, resource, sys
import numpy as np
from lstm_cli.nn.model import LSTMClassifier
B, T, H, I, L, dtype = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
model = LSTMClassifier(I, H, 10, num_layers=L, dtype=dtype, seed=0)
x = rng.normal(size=(B, T, I)).astype(dtype)
lengths = rng.integers(max(T // 2, 1), T + 1, size=B)
lengths[0] = T
y = rng.integers(0, 10, size=B)
model.loss_and_grads(x[:, :2], np.minimum(lengths, 2), y)  # warm up allocator and BLAS
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss, grads = model.loss_and_grads(x, lengths, y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
print(json.dumps({"peak_growth_mb": (after - before) / 1024.0, "peak_mb": after / 1024.0}))
"""

CONFIGS = [  # (B, T, H): double each factor in turn
    (32, 500, 64),
    (64, 500, 64),
    (32, 1000, 64),
    (32, 500, 128),
    (32, 2000, 128),
    (8, 5000, 64),
    (1, 5000, 32),
    (64, 1, 64),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--input-size", type=int, default=16)
    args = ap.parse_args()
    itemsize = 4 if args.dtype == "float32" else 8
    print(f"one training step, {args.layers} layer(s), {args.dtype}, input size {args.input_size}")
    print(
        f"{'B':>4} {'T':>6} {'H':>5} {'B*T*H':>11} {'peak growth MB':>15} {'estimate MB':>12} "
        f"{'bytes/(B*T*H*layers)':>21}"
    )
    for B, T, H in CONFIGS:
        spec = json.dumps([B, T, H, args.input_size, args.layers, args.dtype])
        out = subprocess.run(
            [sys.executable, "-c", CHILD, spec], capture_output=True, text=True, cwd=ROOT
        )  # `-c` imports from the working directory first
        if out.returncode != 0:
            print(f"{B:>4} {T:>6} {H:>5}  failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout)
        n = B * T * H
        n_valid = B * (T + T // 2 + 1) / 2 if T > 1 else B  # expected sum of lengths
        est = n_valid * (12 * H + 2 * args.input_size + 1) * itemsize * args.layers / 2**20
        print(
            f"{B:>4} {T:>6} {H:>5} {n:>11,} {r['peak_growth_mb']:>15.1f} {est:>12.1f} "
            f"{r['peak_growth_mb'] * 2**20 / (n * args.layers):>21.1f}"
        )


if __name__ == "__main__":
    main()

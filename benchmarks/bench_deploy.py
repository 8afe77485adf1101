"""Where to deploy: inference throughput of one model in lstm_cli, onnxruntime and PyTorch.

The same random-weight model and the same padded batch go to lstm_cli's ``predict_proba``,
the ONNX graph of ``lstm-export --to onnx`` in onnxruntime, and the ``PYTORCH_MODULE`` of
``lstm-export --to pytorch`` under ``torch.no_grad()``; every side runs on one thread
(BLAS, OpenMP, onnxruntime intra/inter-op, torch). Normalisation is part of all three.
Each side is timed in blocks of back-to-back calls, the order rotating between rounds;
the table gives the median per batch, sequences per second, the ratio to lstm_cli and the
largest probability difference from lstm_cli.

    python benchmarks/bench_deploy.py [--workloads jv,medium] [--head last|all|mean]
        [--bidirectional] [--rounds 5]
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (sequences, (min T, max T), features, hidden, classes, layers)
WORKLOADS = {
    "jv": (370, (7, 29), 12, 64, 9, 1),  # JapaneseVowels' test set
    "medium": (256, (100, 100), 32, 128, 10, 1),
    "medium2": (256, (100, 100), 32, 128, 10, 2),
}


def _setup(np, name, head, seed, bidirectional=False):
    from lstm_cli.nn.model import LSTMClassifier

    N, (t_lo, t_hi), F, H, K, L = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(t_lo, t_hi + 1, size=N).astype(np.int64)
    x = rng.normal(loc=1.0, scale=2.0, size=(N, t_hi, F)).astype(np.float32)
    x[np.arange(t_hi) >= lengths[:, None]] = 0.0
    model = LSTMClassifier(
        F, H, K, num_layers=L, head=head, forget_bias=1.0, seed=seed, bidirectional=bidirectional
    )
    mean, std = x[x != 0].mean() * np.ones(F), x[x != 0].std() * np.ones(F)
    return model, x, lengths, mean, std


def _contenders(np, model, x, lengths, mean, std):
    """name -> zero-argument function returning probabilities (N, K) as numpy."""
    import onnxruntime as ort
    import torch

    from lstm_cli.export.onnx_graph import build_onnx_model
    from lstm_cli.export.torch_state import PYTORCH_MODULE, torch_metadata, torch_state_dict

    classes = list(range(model.num_classes))

    def numpy_side():
        xn = ((x.astype(np.float64) - mean) / std).astype(np.float32)  # what pad_batch does
        return model.predict_proba(xn, lengths)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    onnx_model = build_onnx_model(model, classes, mean, std)
    sess = ort.InferenceSession(
        onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    feeds = {"x": x, "lengths": lengths}

    namespace = {}
    exec(PYTORCH_MODULE, namespace)
    import json

    args = json.loads(torch_metadata(model, classes, mean, std)["module_args"])
    tmod = namespace["Classifier"](**args)
    tmod.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state_dict(model).items()})
    tmod.eval()
    tx, tl = torch.from_numpy(x), torch.from_numpy(lengths)

    def torch_side():
        with torch.no_grad():
            return tmod(tx, tl).numpy()

    return {
        "lstm_cli": numpy_side,
        "onnxruntime": lambda: sess.run(["probabilities"], feeds)[0],
        "pytorch": torch_side,
    }


def _time(fns, rounds, calls):
    """name -> list of per-call seconds (median of each block), order rotating per round."""
    names = list(fns)
    out = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            fn = fns[n]
            fn()  # warm: caches, buffers, thread pools
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out[n].append((time.perf_counter() - t0) / calls)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="jv,medium")
    ap.add_argument("--head", choices=("last", "all", "mean"), default="last")
    ap.add_argument("--bidirectional", action="store_true", help="bidirectional layers")
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per side (default 5)")
    ap.add_argument("--calls", type=int, default=3, help="calls per block (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # before numpy, torch and onnxruntime load their pools
    sys.path.insert(0, ROOT)
    import numpy as np
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    print(
        f"numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, torch "
        f"{torch.__version__}; one thread each; head {args.head!r}"
        f"{', bidirectional' if args.bidirectional else ''}; median of "
        f"{args.rounds} blocks of {args.calls} calls"
    )
    header = f"{'workload':<34} {'runtime':<12} {'ms/batch':>9} {'seqs/s':>9} {'speed vs cli':>12}"
    print(header + f" {'max |dp|':>9}")
    print("-" * (len(header) + 10))
    for name in args.workloads.split(","):
        model, x, lengths, mean, std = _setup(np, name, args.head, args.seed, args.bidirectional)
        fns = _contenders(np, model, x, lengths, mean, std)
        ref = fns["lstm_cli"]()
        diffs = {n: float(np.abs(fn() - ref).max()) for n, fn in fns.items()}
        times = {n: statistics.median(v) for n, v in _time(fns, args.rounds, args.calls).items()}
        N, (t_lo, t_hi), F, H, K, L = WORKLOADS[name]
        label = f"{name} {N}x T{t_lo}-{t_hi} F{F} H{H} L{L}"
        for n, t in times.items():
            ratio = times["lstm_cli"] / t
            print(
                f"{label:<34} {n:<12} {t * 1e3:>9.2f} {N / t:>9.0f} {ratio:>11.2f}x "
                f"{diffs[n]:>9.1e}"
            )
            label = ""


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Benchmark lstm_cli's training step (forward + full BPTT) and inference batch against
PyTorch CPU (nn.LSTM, padded and packed) and against a pure-GEMM "floor".

Run ``python benchmarks/bench_step.py --help``; benchmarks/README.md explains the output.

How it works
------------
* The script re-executes itself once in a child process whose environment has
  OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS = --threads set *before* numpy
  or torch are imported (the only reliable way to pin BLAS thread pools), and with
  OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed together (unless --keep-openblas-env):
  on this workplace they may be set to work around old OpenBLAS bugs and they slow down
  a current numpy. This changes the benchmark's own process only. The child also applies
  threadpoolctl limits (if threadpoolctl is installed) and torch.set_num_threads(N), and
  reports which BLAS kernel actually runs.
* Per (workload, head) cell: build an LSTMClassifier and an equivalent torch model with
  the same weights (lstm_cli.nn.interop.to_pytorch), check once that losses (and inference
  probabilities and gradients) agree, warm up, then time the contenders round-robin
  (one call of each per round, each round starting one contender later, so that every
  contender follows every other equally often) with time.perf_counter and report medians.
* Contenders: lstm_cli training step (loss_and_grads) and inference (predict_proba);
  torch nn.LSTM + nn.Linear + cross-entropy + backward over the padded tensor (oneDNN's
  fused LSTM) and over pack_padded_sequence; torch inference (no_grad, padded); and two
  GEMM floors: "floor" = the GEMMs of a training step in the issue's shapes (input
  projection, every step's recurrent GEMMs over all B rows, weight and input gradients
  over all T*B rows), "floor_cli" = exactly the GEMMs lstm_cli's engine issues (only
  the valid rows, its per-step [1, x, h] GEMM, no first-layer input gradient): what is
  left above it is lstm_cli's own overhead. Neither floor allocates anything.
* Nothing here is a runtime dependency of lstm_cli: torch and threadpoolctl are optional.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

CHILD_FLAG = "_LSTM_CLI_BENCH_CHILD"
UNSET_NOTE = "_LSTM_CLI_BENCH_UNSET"
OPENBLAS_WORKAROUND_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# --glibc-keep-memory: glibc malloc tunables (read at process start) that stop it from
# returning freed memory to the OS, so that a framework allocating fresh tensors every
# step does not pay page faults for them again and again.
GLIBC_KEEP_MEMORY = {
    "MALLOC_MMAP_THRESHOLD_": "2000000000",
    "MALLOC_TRIM_THRESHOLD_": "4000000000",
    "MALLOC_TOP_PAD_": "536870912",
}

NUM_CLASSES = 10
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout benchmarked
# name: (B, T, I, H, layers)
WORKLOADS = {
    "tiny": (32, 20, 8, 32, 1),
    "small": (64, 50, 16, 64, 1),
    "medium": (64, 100, 32, 128, 1),
    "large": (128, 200, 64, 256, 1),
    "stacked": (64, 100, 32, 128, 2),
    "medium_bi": (64, 100, 32, 128, 1),  # bidirectional (below)
}
# Bidirectional workloads: lstm_cli with model.bidirectional, torch nn.LSTM(bidirectional=True).
# torch's reverse direction must start at each sequence's own last step, so its "padded"
# contenders run on pack_padded_sequence too (the same as "packed").
BIDIRECTIONAL = frozenset({"medium_bi"})
HEADS = ("last", "all")

# contender keys, in round-robin order
MIN_ROUNDS = 3  # a cell stopped early for time still has this many rounds
SLOW_S = 1.0  # seconds per call above which a contender is "slow" (see run_cell)
ORDER = (
    "lstm_cli_train",
    "torch_padded_train",
    "torch_packed_train",
    "gemm_floor",
    "gemm_floor_cli",
    "lstm_cli_infer",
    "torch_infer",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="lstm_cli training-step / inference benchmark vs PyTorch CPU and a GEMM floor."
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads for BOTH numpy and torch (default 1)",
    )
    p.add_argument(
        "--workloads",
        default=None,
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all; "
        "with --quick all but large)",
    )
    p.add_argument(
        "--head",
        choices=("last", "all", "both"),
        default="both",
        help="which head(s) to benchmark (default both)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per (workload, head) cell (default: adapted, see --cell-seconds)",
    )
    p.add_argument(
        "--cell-seconds",
        type=float,
        default=None,
        help="target wall time of each cell's timed rounds when --repeats is not given; "
        "repeats = this / (one round), clamped to [5, 300] (to 3 when 5 rounds "
        "would exceed twice the target). Default 6 (1 with --quick); the default "
        "full run then takes ~3 minutes",
    )
    p.add_argument(
        "--slow-repeats",
        type=int,
        default=3,
        help=f"rounds in which a contender slower than {SLOW_S:g} s per call is timed "
        "(default 3; 1 with --quick)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="warm-up rounds per cell (default 2; 1 with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fast smoke run: few repeats, and `large` only if named in --workloads",
    )
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it is importable")
    p.add_argument(
        "--json", metavar="FILE", help="also write every number (raw samples included) to FILE"
    )
    p.add_argument(
        "--keep-openblas-env",
        action="store_true",
        help="do not unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the benchmark process",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--glibc-keep-memory",
        action="store_true",
        help="run the benchmark process with glibc malloc tunables that keep freed memory "
        "(no mmap for large blocks, no trimming): torch allocates its activations afresh "
        "every step and by default pays page faults for them (see the 'F' column); "
        "lstm_cli reuses its buffers and is unaffected. Shows torch at its best",
    )
    p.add_argument(
        "--optimizer",
        action="store_true",
        help="include an Adam update (lr 1e-3) in every training step, on both sides "
        "(lstm_cli.nn.optim.Adam / torch.optim.Adam); the GEMM floor is unchanged",
    )
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.workloads is None:
        args.workloads = ",".join(w for w in WORKLOADS if not (args.quick and w == "large"))
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in names if w not in WORKLOADS]
    if bad or not names:
        p.error(f"unknown workload(s) {bad}; choose from {list(WORKLOADS)}")
    args.workload_list = names
    args.head_list = list(HEADS) if args.head == "both" else [args.head]
    if args.cell_seconds is None:
        args.cell_seconds = 1.0 if args.quick else 6.0
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup < 1 or args.slow_repeats < 1:
        p.error("--warmup and --slow-repeats must be >= 1")
    return args


# ============================================================================ parent
def reexec(argv):
    """Run this script again in a child with the thread/BLAS environment fixed before import."""
    args = parse_args(argv)
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(args.threads)
    unset = []
    if not args.keep_openblas_env:
        for var in OPENBLAS_WORKAROUND_VARS:  # both together, never just one
            if var in env:
                unset.append(f"{var}={env.pop(var)}")
    env[UNSET_NOTE] = ";".join(unset)
    if args.glibc_keep_memory:
        env.update(GLIBC_KEEP_MEMORY)
    env[CHILD_FLAG] = "1"
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    return subprocess.call(cmd, env=env)


# ============================================================================ child
def child_main(argv):
    args = parse_args(argv)
    import numpy as np

    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            torch = None
    sys.path.insert(0, ROOT)  # this checkout's lstm_cli, installed or not
    import lstm_cli
    from lstm_cli.nn.model import LSTMClassifier

    N = args.threads
    limiter = None
    if threadpoolctl is not None:
        limiter = threadpoolctl.threadpool_limits(limits=N)  # belt and braces; env already set
    if torch is not None:
        torch.set_num_threads(N)

    meta = collect_meta(args, np, torch, threadpoolctl, lstm_cli)
    print_meta(meta)

    cells = [(w, h) for w in args.workload_list for h in args.head_list]
    results = []
    t_run0 = time.perf_counter()
    cpu_run0 = time.process_time()
    load_start = os.getloadavg()
    timed_wall = 0.0
    timed_cpu = 0.0
    for wname, head in cells:
        r = run_cell(args, wname, head, np, torch, LSTMClassifier)
        timed_wall += r["timed_wall_s"]
        timed_cpu += r["timed_cpu_s"]
        results.append(r)
        print_progress(r)
    load_end = os.getloadavg()
    meta["loadavg_start"] = load_start
    meta["loadavg_end"] = load_end
    meta["total_wall_s"] = time.perf_counter() - t_run0
    meta["total_cpu_s"] = time.process_time() - cpu_run0
    meta["timed_wall_s"] = timed_wall
    meta["timed_cpu_s"] = timed_cpu
    meta["timed_cpu_per_wall"] = timed_cpu / timed_wall if timed_wall > 0 else None
    if threadpoolctl is not None:
        meta["threadpool_info_end"] = threadpoolctl.threadpool_info()
    print()
    print_tables(results, meta, torch is not None)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1, default=_json_default)
        print(f"\nwrote {args.json}")
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


# ---------------------------------------------------------------------------- meta
def collect_meta(args, np, torch, threadpoolctl, lstm_cli):
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_step.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "numpy": np.__version__,
        "lstm_cli": getattr(lstm_cli, "__version__", "?"),
        "lstm_cli_source": _source_info(lstm_cli),
        "torch": torch.__version__ if torch is not None else None,
        "threads": args.threads,
        "optimizer": bool(args.optimizer),
        "glibc_malloc_env": {v: os.environ.get(v) for v in GLIBC_KEEP_MEMORY},
        "env_thread_vars": {v: os.environ.get(v) for v in THREAD_VARS},
        "openblas_env_unset": [s for s in os.environ.get(UNSET_NOTE, "").split(";") if s],
        "openblas_env_now": {v: os.environ.get(v) for v in OPENBLAS_WORKAROUND_VARS},
        "threadpoolctl": threadpoolctl.__version__ if threadpoolctl is not None else None,
        "threadpool_info": threadpoolctl.threadpool_info() if threadpoolctl is not None else None,
        "numpy_blas": _numpy_blas(np),
        "cell_seconds": args.cell_seconds,
        "slow_repeats": 1 if args.quick else args.slow_repeats,
        "repeats_arg": args.repeats,
        "warmup": args.warmup,
        "quick": args.quick,
    }
    if torch is not None:
        cfg = torch.__config__.show()
        blas = [
            tok.split("=", 1)[1].rstrip(",") for tok in cfg.split() if tok.startswith("BLAS_INFO=")
        ]
        meta["torch_blas"] = blas[0] if blas else "?"
        meta["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        meta["torch_num_threads"] = torch.get_num_threads()
        meta["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return meta


def _source_info(pkg):
    """Which lstm_cli code ran: git commit of its checkout, whether lstm_cli/ had uncommitted
    changes, and a hash of the package's .py files as they were read at import time."""
    import hashlib

    pkg_dir = os.path.dirname(os.path.abspath(pkg.__file__))
    h = hashlib.sha1()
    for name in sorted(os.listdir(pkg_dir)):
        if name.endswith(".py"):
            with open(os.path.join(pkg_dir, name), "rb") as fh:
                h.update(name.encode() + b"\0" + fh.read())
    info = {"path": pkg_dir, "py_sha1": h.hexdigest()[:12], "git_commit": None, "dirty": None}
    try:
        root = os.path.dirname(pkg_dir)
        info["git_commit"] = (
            subprocess.run(
                ["git", "-C", root, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
        st = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", pkg_dir],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if st.returncode == 0:
            info["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _numpy_blas(np):
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas}
    except Exception:  # older numpy
        return {}


def print_meta(meta):
    print(f"# lstm_cli step benchmark  {meta['date']}")
    print(f"# command : {meta['command']}")
    print(
        f"# python {meta['python']}  numpy {meta['numpy']}  "
        f"torch {meta['torch']}  lstm_cli {meta['lstm_cli']}"
    )
    src = meta["lstm_cli_source"]
    print(
        f"# lstm_cli code: git {src['git_commit']}"
        f"{' + uncommitted changes in lstm_cli/' if src['dirty'] else ''} "
        f" (py sha1 {src['py_sha1']})"
    )
    print(
        f"# cpu     : {meta['cpu_model']}  ({meta['cpu_count']} logical CPUs)  {meta['platform']}"
    )
    print(
        f"# threads : {meta['threads']}  (env {meta['env_thread_vars']}; torch.get_num_threads()="
        f"{meta.get('torch_num_threads')})"
    )
    malloc_env = {k: v for k, v in meta["glibc_malloc_env"].items() if v is not None}
    print(f"# glibc malloc tunables: {malloc_env if malloc_env else 'default (not set)'}")
    if meta["openblas_env_unset"]:
        print(f"# unset in this benchmark process: {', '.join(meta['openblas_env_unset'])}")
    else:
        now = {k: v for k, v in meta["openblas_env_now"].items() if v is not None}
        print(f"# OPENBLAS_CORETYPE/L2_SIZE: {'still set ' + str(now) if now else 'not set'}")
    info = meta["threadpool_info"]
    if info is None:
        print(f"# numpy BLAS: {meta['numpy_blas']} (threadpoolctl not installed: kernel unknown)")
    else:
        for lib in info:
            if lib.get("user_api") == "blas":
                print(
                    f"# numpy BLAS: {lib.get('internal_api')} {lib.get('version')}  kernel="
                    f"{lib.get('architecture')}  num_threads={lib.get('num_threads')}  "
                    f"({os.path.basename(lib.get('filepath', ''))})"
                )
            else:
                print(
                    f"# also loaded: {lib.get('internal_api')} "
                    f"num_threads={lib.get('num_threads')} "
                    f"({os.path.basename(lib.get('filepath', ''))})"
                )
    if meta.get("torch"):
        print(
            f"# torch   : BLAS={meta['torch_blas']}  mkldnn={meta['torch_mkldnn']}  "
            f"cpu_capability={meta['torch_cpu_capability']}"
        )
    print(f"# loadavg at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()


# ---------------------------------------------------------------------------- workloads
def make_batch(np, wname, seed):
    B, T, I, H, L = WORKLOADS[wname]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B).astype(np.int64)  # uniform in [T/2, T]
    y = rng.integers(0, NUM_CLASSES, size=B).astype(np.int64)
    return x, lengths, y


def make_floor(np, wname, seed):
    """The GEMMs of a training step in the issue's shapes, and nothing else: per layer the
    input projection of all T*B rows, every step's recurrent GEMM over all B rows forward
    and backward, and the three weight/input-gradient GEMMs over all T*B rows.
    Returns (floor_callable, flop count)."""
    B, T, I0, H, L = WORKLOADS[wname]
    D = 2 if wname in BIDIRECTIONAL else 1
    rng = np.random.default_rng(seed + 1)
    f32 = np.float32
    layers = []
    for k in [k for k in range(L) for _ in range(D)]:  # every direction of every layer
        I = I0 if k == 0 else D * H
        W = rng.standard_normal((I + H, 4 * H)).astype(f32) * 0.1
        layers.append(
            dict(
                I=I,
                W=W,
                X2=rng.standard_normal((T * B, I)).astype(f32),
                G=np.empty((T * B, 4 * H), f32),
                Hs=rng.standard_normal((T, B, H)).astype(f32),
                hW=np.empty((B, 4 * H), f32),
                DZ=rng.standard_normal((T, B, 4 * H)).astype(f32),
                WhT=np.ascontiguousarray(W[I:].T),
                dh=np.empty((B, H), f32),
                Hprev=rng.standard_normal((T * B, H)).astype(f32),
                dW=np.empty_like(W),
                dx=np.empty((T * B, I), f32),
            )
        )
    matmul = np.matmul

    def floor():
        for d in layers:
            I, W = d["I"], d["W"]
            Wx, Wh = W[:I], W[I:]
            matmul(d["X2"], Wx, out=d["G"])  # (T*B, I) @ (I, 4H)
            Hs, hW = d["Hs"], d["hW"]
            for t in range(T):  # T x (B, H) @ (H, 4H)
                matmul(Hs[t], Wh, out=hW)
            DZ, WhT, dh = d["DZ"], d["WhT"], d["dh"]
            for t in range(T - 1, -1, -1):  # T x (B, 4H) @ (4H, H)
                matmul(DZ[t], WhT, out=dh)
            DZ2 = DZ.reshape(T * B, 4 * H)
            matmul(d["X2"].T, DZ2, out=d["dW"][:I])  # (I, T*B) @ (T*B, 4H)
            matmul(d["Hprev"].T, DZ2, out=d["dW"][I:])  # (H, T*B) @ (T*B, 4H)
            matmul(DZ2, Wx.T, out=d["dx"])  # (T*B, 4H) @ (4H, I)
        return None

    flops = 0
    for d in layers:
        I = d["I"]
        flops += 2 * T * B * I * 4 * H  # input projection
        flops += 2 * T * B * H * 4 * H * 2  # recurrent forward + backward
        flops += 2 * T * B * 4 * H * (I + H + I)  # dWx, dWh, dx
    return floor, flops


def make_engine_floor(np, wname, seed, sizes):
    """The GEMMs lstm_cli's engine issues for one training step, in its shapes and memory
    layouts, and nothing else (sizes (T,): sequences still running at each step).

    Per layer, over the N = sum(sizes) valid rows: each step's [1, x_t, h_{t-1}] (n, 1+I+H)
    @ (4, 1+I+H, H) forward GEMM into a gate-major (4, n, H) block; each step's backward
    (n, 4H) @ (4H, H); the bias/weight gradient (1+I+H, N) @ (N, 4H); and, above the first
    layer only, the input gradient (N, 4H) @ (4H, I). Returns (floor_callable, flop count).
    """
    B, T, I0, H, L = WORKLOADS[wname]
    D = 2 if wname in BIDIRECTIONAL else 1
    sizes = [int(n) for n in sizes]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    N = offsets[-1]
    rng = np.random.default_rng(seed + 2)
    f32 = np.float32
    layers = []
    for k in [k for k in range(L) for _ in range(D)]:  # every direction of every layer
        I = I0 if k == 0 else D * H
        K = 1 + I + H
        layers.append(
            dict(
                layer=k,
                I=I,
                Wg=rng.standard_normal((4, K, H)).astype(f32) * 0.1,
                xh=rng.standard_normal((N, K)).astype(f32),
                gates=np.empty((4, N, H), f32),
                dz=rng.standard_normal((N, 4 * H)).astype(f32),
                WhT=rng.standard_normal((4 * H, H)).astype(f32),
                WxT=rng.standard_normal((4 * H, I)).astype(f32),
                dh=np.empty((B, H), f32),
                dWb=np.empty((K, 4 * H), f32),
                dx=np.empty((N, I), f32),
            )
        )
    matmul = np.matmul
    steps = list(zip(offsets[:-1], offsets[1:]))

    def floor():
        for d in layers:
            xh, Wg, gates = d["xh"], d["Wg"], d["gates"]
            for lo, hi in steps:  # T x (n, K) @ (4, K, H)
                matmul(xh[lo:hi], Wg, out=gates[:, lo:hi])
            dz, WhT, dh = d["dz"], d["WhT"], d["dh"]
            for lo, hi in reversed(steps):  # T x (n, 4H) @ (4H, H)
                matmul(dz[lo:hi], WhT, out=dh[: hi - lo])
            matmul(xh.T, dz, out=d["dWb"])  # (K, N) @ (N, 4H)
            if d["layer"] > 0:
                matmul(dz, d["WxT"], out=d["dx"])  # (N, 4H) @ (4H, I)
        return None

    flops = 0
    for d in layers:
        I = d["I"]
        K = 1 + I + H
        flops += 2 * N * K * 4 * H * 2  # forward steps + weight gradient
        flops += 2 * N * 4 * H * H  # backward steps
        if d["layer"] > 0:
            flops += 2 * N * 4 * H * I  # input gradient
    return floor, flops


def build_torch(torch, np, model, wname, head, x, lengths, y, with_optimizer=False):
    """An nn.LSTM + nn.Linear with the lstm_cli model's weights; returns the three step closures."""
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from lstm_cli.nn.interop import to_pytorch

    B, T, I, H, L = WORKLOADS[wname]
    bidirectional = wname in BIDIRECTIONAL
    state = to_pytorch(model.params, model.forget_bias)
    lstm = nn.LSTM(I, H, num_layers=L, batch_first=True, bidirectional=bidirectional)
    lin = nn.Linear((2 if bidirectional else 1) * H, NUM_CLASSES)
    with torch.no_grad():
        lstm.load_state_dict(
            {
                k: torch.from_numpy(np.ascontiguousarray(v))
                for k, v in state.items()
                if not k.startswith("head.")
            }
        )
        lin.weight.copy_(torch.from_numpy(state["head.weight"]))
        lin.bias.copy_(torch.from_numpy(state["head.bias"]))
    params = list(lstm.parameters()) + list(lin.parameters())
    xt = torch.from_numpy(x)
    lt = torch.from_numpy(lengths)
    yt = torch.from_numpy(y)
    ar = torch.arange(B)
    steps = torch.arange(T)

    def masked_mean_loss(logits):  # logits (B, T, K): mean over valid steps, then over the batch
        mask = (steps[None, :] < lt[:, None]).to(logits.dtype)  # (B, T)
        ce = F.cross_entropy(
            logits.reshape(B * T, NUM_CLASSES), yt.repeat_interleave(T), reduction="none"
        ).view(B, T)
        return ((ce * mask).sum(1) / lt.to(logits.dtype)).mean()

    def loss_padded():
        out, _ = lstm(xt)  # (B, T, H), the fused path over the padded tensor
        if head == "last":
            return F.cross_entropy(lin(out[ar, lt - 1]), yt)
        return masked_mean_loss(lin(out))

    def loss_packed():
        packed = pack_padded_sequence(xt, lt, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = lstm(packed)
        if head == "last":
            # h_n: the state at each sequence's own last step (original order), out at lengths-1;
            # bidirectional: the top layer's forward and reverse final states
            top = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
            return F.cross_entropy(lin(top), yt)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return masked_mean_loss(lin(out))

    if bidirectional:  # over the padding, the reverse direction would start at the padded end
        loss_padded = loss_packed

    opt = torch.optim.Adam(params, lr=1e-3) if with_optimizer else None

    def zero():
        for p in params:
            p.grad = None

    def training_step(loss_fn):
        def step():
            zero()
            loss = loss_fn()
            loss.backward()
            if opt is not None:
                opt.step()
            return loss

        return step

    train_padded, train_packed = training_step(loss_padded), training_step(loss_packed)

    def infer():
        with torch.no_grad():
            if bidirectional:
                packed = pack_padded_sequence(xt, lt, batch_first=True, enforce_sorted=False)
                out, (h_n, _) = lstm(packed)
                if head == "last":
                    return torch.softmax(lin(torch.cat([h_n[-2], h_n[-1]], dim=1)), dim=-1)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            else:
                out, _ = lstm(xt)
            if head == "last":
                return torch.softmax(lin(out[ar, lt - 1]), dim=-1)
            mask = (steps[None, :] < lt[:, None]).to(out.dtype)
            probs = torch.softmax(lin(out), dim=-1) * mask[:, :, None]
            return probs.sum(1) / lt.to(out.dtype)[:, None]

    def grads_as_lstm_cli():
        """Gradients of the padded loss in lstm_cli names (bias_hh grad == bias_ih grad)."""
        zero()
        loss_padded().backward()
        g = {}
        for name, p in lstm.named_parameters():  # bias_hh's gradient is bias_ih's
            g[name] = np.zeros_like(p.grad.numpy()) if "bias_hh" in name else p.grad.numpy()
        g["head.weight"] = lin.weight.grad.numpy()
        g["head.bias"] = lin.bias.grad.numpy()
        return from_pytorch_grads(g)

    return dict(
        train_padded=train_padded,
        train_packed=train_packed,
        infer=infer,
        loss_padded=loss_padded,
        loss_packed=loss_packed,
        grads=grads_as_lstm_cli,
    )


def from_pytorch_grads(g):
    from lstm_cli.nn.interop import from_pytorch

    return from_pytorch(g, forget_bias=0.0)


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def verify(np, torch, model, tc, x, lengths, y):
    loss_ref, grads_ref = model.loss_and_grads(x, lengths, y)
    probs_ref = model.predict_proba(x, lengths)
    out = {"lstm_cli_loss": float(loss_ref)}
    if tc is None:
        return out, []
    with torch.no_grad():
        lp = float(tc["loss_padded"]())
        lk = float(tc["loss_packed"]())
    probs_t = tc["infer"]().numpy()
    g_t = tc["grads"]()
    grad_rel = max(
        float(np.abs(grads_ref[k] - g_t[k]).max() / max(np.abs(grads_ref[k]).max(), 1e-30))
        for k in grads_ref
    )
    out.update(
        torch_padded_loss=lp,
        torch_packed_loss=lk,
        loss_rel_err_padded=_rel(loss_ref, lp),
        loss_rel_err_packed=_rel(loss_ref, lk),
        probs_max_abs_err=float(np.abs(probs_ref - probs_t).max()),
        grad_max_rel_err=grad_rel,
    )
    warnings = []
    if out["loss_rel_err_padded"] > 1e-4 or out["loss_rel_err_packed"] > 1e-4:
        warnings.append(
            f"losses disagree: lstm_cli {loss_ref:.7g}, torch padded {lp:.7g}, packed {lk:.7g}"
        )
    if out["probs_max_abs_err"] > 1e-4:
        warnings.append(f"inference probabilities differ by up to {out['probs_max_abs_err']:.2e}")
    if grad_rel > 1e-3:
        warnings.append(f"gradients differ: max |dg|/max|g| over params = {grad_rel:.2e}")
    return out, warnings


def run_cell(args, wname, head, np, torch, LSTMClassifier):
    import gc
    import statistics

    B, T, I, H, L = WORKLOADS[wname]
    x, lengths, y = make_batch(np, wname, args.seed)
    model = LSTMClassifier(
        input_size=I,
        hidden_size=H,
        num_classes=NUM_CLASSES,
        num_layers=L,
        head=head,
        forget_bias=1.0,
        dtype="float32",
        seed=args.seed,
        bidirectional=wname in BIDIRECTIONAL,
    )
    tc = (
        build_torch(torch, np, model, wname, head, x, lengths, y, with_optimizer=args.optimizer)
        if torch is not None
        else None
    )
    check, warnings = verify(np, torch, model, tc, x, lengths, y)
    for w in warnings:
        print(f"WARNING [{wname}/{head}]: {w}", flush=True)
    floor, floor_flops = make_floor(np, wname, args.seed)
    running = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)  # (T,) sequences still running
    floor_cli, floor_cli_flops = make_engine_floor(np, wname, args.seed, running)

    if args.optimizer:
        from lstm_cli.nn.optim import Adam

        opt = Adam(model.params, lr=1e-3)

        def cli_train():
            opt.step(model.params, model.loss_and_grads(x, lengths, y)[1])
    else:

        def cli_train():
            model.loss_and_grads(x, lengths, y)

    fns = {
        "lstm_cli_train": cli_train,
        "gemm_floor": floor,
        "gemm_floor_cli": floor_cli,
        "lstm_cli_infer": lambda: model.predict_proba(x, lengths),
    }
    if tc is not None:
        fns["torch_padded_train"] = tc["train_padded"]
        fns["torch_packed_train"] = tc["train_packed"]
        fns["torch_infer"] = tc["infer"]
    order = [k for k in ORDER if k in fns]

    samples = {k: [] for k in order}
    usage = {k: {"cpu_s": 0.0, "user_s": 0.0, "sys_s": 0.0, "minor_faults": 0} for k in order}

    def call(k, record):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0 = time.process_time()
        t0 = time.perf_counter()
        fns[k]()
        t1 = time.perf_counter()
        c1 = time.process_time()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if record:
            samples[k].append(t1 - t0)
            u = usage[k]
            u["cpu_s"] += c1 - c0
            u["user_s"] += r1.ru_utime - r0.ru_utime
            u["sys_s"] += r1.ru_stime - r0.ru_stime
            u["minor_faults"] += r1.ru_minflt - r0.ru_minflt
        return t1 - t0

    # Warm-up. A contender slower than SLOW_S per call (torch's packed path on `large`
    # takes ~10 s) is called once here *as its first sample* (one-time costs are < 1 % of
    # such a call) and then timed in only the first --slow-repeats rounds, so that it does
    # not dominate the run. Everything else: --warmup unrecorded rounds (one is enough when
    # a round takes over a second).
    slow = set()
    round_s = 0.0
    for w in range(args.warmup):
        round_s = 0.0
        for k in order:
            if k in slow:
                continue
            if w == 0:
                dt = call(k, record=False)
                if dt > SLOW_S:
                    slow.add(k)
                    samples[k].append(dt)  # a real call in round-robin order: keep it
                    continue
            else:
                dt = call(k, record=False)
            round_s += dt
        if round_s > 1.0:
            break
    slow_repeats = 1 if args.quick else args.slow_repeats

    if args.repeats is not None:
        repeats = args.repeats
    else:
        target = args.cell_seconds
        lo, hi = (2, 30) if args.quick else (5, 300)
        if lo * round_s > 2 * target:
            lo = min(lo, 3)
        repeats = int(min(max(target / max(round_s, 1e-9), lo), hi))

    gc.collect()
    load0 = os.getloadavg()
    # If the machine gets busy mid-cell (a shared box), rounds can get much slower than the
    # warm-up predicted; stop after 3x the planned time once MIN_ROUNDS rounds are in.
    w0 = time.perf_counter()
    planned = repeats * round_s + sum(
        max(slow_repeats - len(samples[k]), 0) * samples[k][0] for k in slow
    )
    deadline = w0 + 3 * max(planned, args.cell_seconds)
    done = 0
    for rnd in range(repeats):
        # Each round starts one contender later: every contender follows every other one
        # equally often. A short call right after a GEMM-heavy one runs up to 2-3x slower
        # on this machine (tiny inference: lstm_cli 0.28 -> 0.59 ms, torch 0.27 -> 0.88 ms),
        # so a fixed order would give each contender its own, different handicap.
        shift = rnd % len(order)
        for k in order[shift:] + order[:shift]:
            if k in slow and len(samples[k]) >= slow_repeats:
                continue
            call(k, record=True)
        done += 1
        if args.repeats is None and done >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
    cell_wall = time.perf_counter() - w0
    stopped_early = done < repeats
    repeats = done

    def q(v, p):
        s = sorted(v)
        return s[min(int(round(p * (len(s) - 1))), len(s) - 1)]

    ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    stats = {}
    for k, v in samples.items():
        tot = sum(v)
        u = usage[k]
        stats[k] = {
            "median_ms": ms[k],
            "min_ms": 1e3 * min(v),
            "p25_ms": 1e3 * q(v, 0.25),
            "p75_ms": 1e3 * q(v, 0.75),
            "n": len(v),
            "cpu_per_wall": u["cpu_s"] / tot if tot > 0 else None,
            "sys_fraction_of_cpu": u["sys_s"] / u["cpu_s"] if u["cpu_s"] > 0 else None,
            "minor_faults_per_call": u["minor_faults"] / len(v),
            **u,
            "samples_ms": [1e3 * t for t in v],
        }
    ratios = {
        "train_lstm_cli_over_floor": ms["lstm_cli_train"] / ms["gemm_floor"],
        "train_lstm_cli_over_floor_cli": ms["lstm_cli_train"] / ms["gemm_floor_cli"],
        "train_lstm_cli_over_floor_min": stats["lstm_cli_train"]["min_ms"]
        / stats["gemm_floor"]["min_ms"],
    }
    if tc is not None:
        ratios.update(
            train_lstm_cli_over_torch_padded=ms["lstm_cli_train"] / ms["torch_padded_train"],
            train_lstm_cli_over_torch_packed=ms["lstm_cli_train"] / ms["torch_packed_train"],
            infer_lstm_cli_over_torch=ms["lstm_cli_infer"] / ms["torch_infer"],
            train_lstm_cli_over_torch_padded_min=(
                stats["lstm_cli_train"]["min_ms"] / stats["torch_padded_train"]["min_ms"]
            ),
        )
    timed_wall = sum(sum(v) for v in samples.values())
    timed_cpu = sum(u["cpu_s"] for u in usage.values())
    return {
        "workload": wname,
        "head": head,
        "B": B,
        "T": T,
        "I": I,
        "H": H,
        "layers": L,
        "num_classes": NUM_CLASSES,
        "mean_length": float(lengths.mean()),
        "repeats": repeats,
        "stopped_early": stopped_early,
        "slow_contenders": sorted(slow),
        "est_round_s": round_s,
        "cell_wall_s": cell_wall,
        "timed_wall_s": timed_wall,
        "timed_cpu_s": timed_cpu,
        "cpu_per_wall": timed_cpu / timed_wall if timed_wall > 0 else None,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "floor_gflop": floor_flops / 1e9,
        "floor_gflops_per_s": floor_flops / 1e9 / (ms["gemm_floor"] / 1e3),
        "floor_cli_gflop": floor_cli_flops / 1e9,
        "check": check,
        "warnings": warnings,
        "stats": stats,
        "ratios": ratios,
    }


def print_progress(r):
    s = r["stats"]
    extra = ""
    if "torch_padded_train" in s:
        extra = f"  torch padded {s['torch_padded_train']['median_ms']:.2f} ms"
    print(
        f"  done {r['workload']:>7}/{r['head']:<4}  repeats={r['repeats']:<4}"
        f"{'(cut)' if r['stopped_early'] else '     '} "
        f"lstm_cli train {s['lstm_cli_train']['median_ms']:.2f} ms{extra}  "
        f"({r['timed_wall_s']:.1f} s, cpu/wall {r['cpu_per_wall']:.2f})",
        flush=True,
    )


def _fmt(v, nd=2):
    if v is None:
        return "n/a"
    if v >= 1000:
        return f"{v:.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.{nd}f}"


def _table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [
        "  ".join(
            str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_tables(results, meta, have_torch):
    g = lambda r, k: r["stats"].get(k, {}).get("median_ms")  # noqa: E731
    ra = lambda r, k: r["ratios"].get(k)  # noqa: E731
    what = "forward + backward + Adam update" if meta.get("optimizer") else "forward + backward"
    print(f"Training step, {what}, ms per batch (median), threads={meta['threads']}, float32")
    header = [
        "workload",
        "head",
        "lstm_cli",
        "torch_pad",
        "torch_pack",
        "floor",
        "floor_cli",
        "cli/pad",
        "cli/pack",
        "cli/floor",
        "cli/floor_cli",
        "cli/pad_min",
        "floorGF/s",
        "reps",
        "cpu/wall",
        "loss_relerr",
    ]
    rows = []
    for r in results:
        c = r["check"]
        relerr = (
            max(c["loss_rel_err_padded"], c["loss_rel_err_packed"])
            if "loss_rel_err_padded" in c
            else None
        )
        rows.append(
            [
                r["workload"],
                r["head"],
                _fmt(g(r, "lstm_cli_train")),
                _fmt(g(r, "torch_padded_train")),
                _fmt(g(r, "torch_packed_train")),
                _fmt(g(r, "gemm_floor")),
                _fmt(g(r, "gemm_floor_cli")),
                _fmt(ra(r, "train_lstm_cli_over_torch_padded")),
                _fmt(ra(r, "train_lstm_cli_over_torch_packed")),
                _fmt(ra(r, "train_lstm_cli_over_floor")),
                _fmt(ra(r, "train_lstm_cli_over_floor_cli")),
                _fmt(ra(r, "train_lstm_cli_over_torch_padded_min")),
                f"{r['floor_gflops_per_s']:.1f}",
                str(r["repeats"]) + ("*" if r["stopped_early"] else ""),
                f"{r['cpu_per_wall']:.2f}",
                "n/a" if relerr is None else f"{relerr:.1e}" + (" !" if r["warnings"] else ""),
            ]
        )
    print(_table(header, rows))
    print(
        "cli/pad_min = the same ratio from each side's fastest sample; "
        "reps* = cell cut short because the machine got slower than planned"
    )
    bidirectional = sorted(w for w in BIDIRECTIONAL if any(r["workload"] == w for r in results))
    if bidirectional:
        print(
            f"{', '.join(bidirectional)}: torch_pad is torch's packed run (its padded "
            "path would start the reverse direction at the padding), so cli/pad there "
            "compares with pack_padded_sequence, not with oneDNN's fused kernel"
        )
    print()
    print("Inference batch (predict_proba / torch.no_grad on the padded tensor), ms (median)")
    header = [
        "workload",
        "head",
        "lstm_cli",
        "torch",
        "cli/torch",
        "cli_cpu/wall",
        "torch_cpu/wall",
    ]
    rows = []
    for r in results:
        s = r["stats"]
        rows.append(
            [
                r["workload"],
                r["head"],
                _fmt(g(r, "lstm_cli_infer")),
                _fmt(g(r, "torch_infer")),
                _fmt(ra(r, "infer_lstm_cli_over_torch")),
                f"{s['lstm_cli_infer']['cpu_per_wall']:.2f}",
                f"{s['torch_infer']['cpu_per_wall']:.2f}" if "torch_infer" in s else "n/a",
            ]
        )
    print(_table(header, rows))
    if bidirectional:
        print(f"{', '.join(bidirectional)}: torch runs on pack_padded_sequence here too")
    print()
    print(
        "CPU accounting per contender, each cell 'C S F': "
        "C = CPUs used while it ran (process CPU / wall),"
        " S = share of that CPU spent in the kernel, F = minor page faults per call"
    )
    keys = [k for k in ORDER if any(k in r["stats"] for r in results)]
    short = {
        "lstm_cli_train": "cli_train",
        "torch_padded_train": "pad_train",
        "torch_packed_train": "pack_train",
        "gemm_floor": "floor",
        "gemm_floor_cli": "floor_cli",
        "lstm_cli_infer": "cli_infer",
        "torch_infer": "torch_infer",
    }
    header = ["workload", "head"] + [short[k] for k in keys]
    rows = []
    for r in results:
        row = [r["workload"], r["head"]]
        for k in keys:
            st = r["stats"].get(k)
            if st is None:
                row.append("n/a")
                continue
            sf = st["sys_fraction_of_cpu"]
            row.append(
                f"{st['cpu_per_wall']:.2f} {'-' if sf is None else f'{100 * sf:.0f}%'} "
                f"{st['minor_faults_per_call']:.0f}"
            )
        rows.append(row)
    print(_table(header, rows))
    print()
    la0, la1 = meta["loadavg_start"], meta["loadavg_end"]
    print(
        f"timed sections: {meta['timed_wall_s']:.1f} s "
        f"wall, {meta['timed_cpu_s']:.1f} s process CPU "
        f"=> the process got {meta['timed_cpu_per_wall']:.2f} "
        f"CPUs on average (threads={meta['threads']}); "
        f"whole run {meta['total_wall_s']:.1f} s"
    )
    print(
        f"loadavg start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f} "
        f" end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}"
    )
    if not have_torch:
        print("torch not importable (or --no-torch): torch columns are n/a")
    warned = [r for r in results if r["warnings"]]
    for r in warned:
        for w in r["warnings"]:
            print(f"WARNING [{r['workload']}/{r['head']}]: {w}")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(CHILD_FLAG) == "1":
        return child_main(argv)
    return reexec(argv)


if __name__ == "__main__":
    sys.exit(main())

"""Synthetic sequence-classification data: a long-memory task and random benchmark data.

``make_pattern_task``: every sequence is Gaussian noise; its class decides which of K
fixed signature patterns is added to the *first* ``pattern_len`` steps. Everything
after that is pure noise, so a classifier that reads the last hidden state must carry
what it saw at the start across the whole sequence.

Command line (writes ``train.jsonl`` and ``test.jsonl``, deterministic for a seed)::

    python -m lstm_cli.data.synthetic --out data/synthetic --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..errors import LstmCliError
from ..validate import Interval, check
from .dataset import SequenceDataset, offsets_of
from .jsonl import write_jsonl

__all__ = ["make_pattern_task", "make_random_dataset", "pattern_signatures", "main"]


def _check_sizes(n, min_len, max_len, num_features, num_classes, min_len_low=1):
    for name, value, low in (
        ("n", n, 1),
        ("min_len", min_len, min_len_low),
        ("max_len", max_len, 1),
        ("num_features", num_features, 1),
        ("num_classes", num_classes, 1),
    ):
        check(name, value, Interval(int, low))
    if max_len < min_len:
        raise LstmCliError(f"max_len ({max_len}) must be >= min_len ({min_len})")


def _assemble(lengths, x, labels, source):
    return SequenceDataset(x, offsets_of(lengths), labels, source)


def pattern_signatures(num_classes, pattern_len, num_features, signature_seed=0, amplitude=1.5):
    """The K fixed patterns, (K, pattern_len, F): random signs times ``amplitude``.

    They depend only on the arguments (not on the data rng), so train and test sets
    drawn with different generators describe the same task.
    """
    sig_rng = np.random.default_rng(signature_seed)
    signs = sig_rng.choice(np.array([-1.0, 1.0]), size=(num_classes, pattern_len, num_features))
    return amplitude * signs  # (K, P, F)


def make_pattern_task(
    n,
    min_len,
    max_len,
    num_features,
    num_classes,
    rng,
    *,
    pattern_len=3,
    noise=1.0,
    amplitude=1.5,
    signature_seed=0,
    dtype=np.float64,
):
    """Sequences of N(0, noise^2) steps; class k adds signature k to the first pattern_len steps.

    Lengths are uniform in [min_len, max_len] (min_len >= pattern_len); classes are
    balanced (each of 0..K-1 appears n // K or n // K + 1 times, shuffled); labels
    are int64. Deterministic given ``rng``'s state and the keyword arguments.
    """
    check("pattern_len", pattern_len, Interval(int, 1))
    _check_sizes(n, min_len, max_len, num_features, num_classes, min_len_low=pattern_len)
    signatures = pattern_signatures(
        num_classes, pattern_len, num_features, signature_seed, amplitude
    )
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)  # (N,)
    lengths = rng.integers(min_len, max_len, endpoint=True, size=n).astype(np.int64)  # (N,)
    x = noise * rng.standard_normal(size=(int(lengths.sum()), num_features))  # (total, F)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (N,)
    rows = starts[:, None] + np.arange(pattern_len)  # (N, P) rows holding the pattern
    x[rows] += signatures[labels]  # (N, P, F)
    return _assemble(lengths, x.astype(dtype, copy=False), labels, "<synthetic pattern task>")


def make_random_dataset(n, min_len, max_len, num_features, num_classes, rng, dtype=np.float32):
    """Random benchmark data: N(0, 1) features, uniform lengths, uniform int labels 0..K-1.

    Fully vectorised; ``x`` is ``dtype`` (float32 by default, to keep big sets small).
    """
    _check_sizes(n, min_len, max_len, num_features, num_classes)
    lengths = rng.integers(min_len, max_len, endpoint=True, size=n).astype(np.int64)  # (N,)
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)  # (N,)
    draw_dtype = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    x = rng.standard_normal(size=(int(lengths.sum()), num_features), dtype=draw_dtype)  # (total, F)
    return _assemble(lengths, x.astype(dtype, copy=False), labels, "<random dataset>")


def _round(ds, decimals):
    return SequenceDataset(np.round(ds.x, decimals), ds.offsets, ds.labels, ds.source)


def main(argv=None):
    """Write train.jsonl and test.jsonl of the pattern task (python -m lstm_cli.data.synthetic)."""
    p = argparse.ArgumentParser(prog="python -m lstm_cli.data.synthetic", description=main.__doc__)
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data generator (default 0)")
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--min-len", type=int, default=10)
    p.add_argument("--max-len", type=int, default=40)
    p.add_argument("--features", type=int, default=4)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--pattern-len", type=int, default=3)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--amplitude", type=float, default=1.5)
    p.add_argument(
        "--signature-seed", type=int, default=0, help="seed of the K class patterns (default 0)"
    )
    p.add_argument(
        "--decimals", type=int, default=4, help="round values to this many decimals (default 4)"
    )
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    common = dict(
        pattern_len=args.pattern_len,
        noise=args.noise,
        amplitude=args.amplitude,
        signature_seed=args.signature_seed,
    )
    try:
        sets = {
            name: make_pattern_task(
                n, args.min_len, args.max_len, args.features, args.classes, rng, **common
            )
            for name, n in (("train", args.n_train), ("test", args.n_test))
        }
    except LstmCliError as exc:
        p.error(str(exc))
    os.makedirs(args.out, exist_ok=True)
    for name, ds in sets.items():
        path = os.path.join(args.out, f"{name}.jsonl")
        write_jsonl(_round(ds, args.decimals), path)
        print(f"wrote {path}: {len(ds)} sequences, lengths {ds.lengths.min()}-{ds.lengths.max()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

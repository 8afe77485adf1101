"""Tests of lstm_cli.data.synthetic: the long-memory pattern task, random data, the CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_cli import data as D
from lstm_cli.data import synthetic as S
from lstm_cli.errors import LstmCliError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "synthetic"


def test_pattern_task_shapes_and_balance():
    ds = S.make_pattern_task(203, 5, 12, 3, 4, np.random.default_rng(0))
    assert len(ds) == 203 and ds.num_features == 3
    assert ds.lengths.min() >= 5 and ds.lengths.max() <= 12
    assert set(np.unique(ds.lengths)) == set(range(5, 13))  # both ends reachable
    assert ds.labels.dtype == np.int64
    counts = np.bincount(ds.labels, minlength=4)
    assert counts.max() - counts.min() <= 1
    assert np.isfinite(ds.x).all() and ds.x.dtype == np.float64


def test_pattern_task_signal_sits_in_the_first_steps():
    rng = np.random.default_rng(1)
    ds = S.make_pattern_task(2000, 10, 20, 4, 3, rng, pattern_len=3, noise=1.0, amplitude=1.5)
    sig = S.pattern_signatures(3, 3, 4, amplitude=1.5)
    starts = ds.offsets[:-1]
    head = ds.x[starts[:, None] + np.arange(3)]  # (N, 3, F)
    for k in range(3):
        np.testing.assert_allclose(head[ds.labels == k].mean(axis=0), sig[k], atol=0.15)
    # after the pattern, every class looks like the same pure noise
    tail_rows = np.concatenate(
        [np.arange(s + 3, e) for s, e in zip(ds.offsets[:-1], ds.offsets[1:])]
    )
    assert abs(ds.x[tail_rows].mean()) < 0.05 and abs(ds.x[tail_rows].std() - 1.0) < 0.05


def test_pattern_task_deterministic_and_same_task_across_rngs():
    a = S.make_pattern_task(50, 4, 9, 2, 2, np.random.default_rng(7))
    b = S.make_pattern_task(50, 4, 9, 2, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(S.pattern_signatures(4, 3, 2), S.pattern_signatures(4, 3, 2))
    assert not np.array_equal(
        S.pattern_signatures(4, 3, 2, signature_seed=1), S.pattern_signatures(4, 3, 2)
    )


def test_pattern_task_is_separable_only_with_memory():
    """Nearest centroid on the first steps is near perfect; on the last step it is near chance."""
    train = S.make_pattern_task(400, 10, 30, 4, 4, np.random.default_rng(0))
    test = S.make_pattern_task(200, 10, 30, 4, 4, np.random.default_rng(1))

    def accuracy(feature):
        ftr = np.stack([feature(train.sequence(i)) for i in range(len(train))])
        fte = np.stack([feature(test.sequence(i)) for i in range(len(test))])
        centroids = np.stack([ftr[train.labels == k].mean(axis=0) for k in range(4)])
        pred = ((fte[:, None] - centroids) ** 2).sum(axis=-1).argmin(axis=1)
        return (pred == test.labels).mean()

    assert accuracy(lambda s: s[:3].ravel()) > 0.95
    assert accuracy(lambda s: s[-1]) < 0.45


@pytest.mark.parametrize(
    "args",
    [
        (0, 3, 5, 2, 2),
        (10, 2, 5, 2, 2),  # min_len below the pattern length
        (10, 6, 5, 2, 2),
        (10, 3, 5, 0, 2),
        (10, 3, 5, 2, 0),
        (10, 3.5, 5, 2, 2),
    ],
)
def test_pattern_task_validation(args):
    with pytest.raises(LstmCliError):
        S.make_pattern_task(*args, np.random.default_rng(0))


def test_random_dataset():
    rng = np.random.default_rng(0)
    ds = S.make_random_dataset(1000, 1, 50, 6, 5, rng)
    assert len(ds) == 1000 and ds.num_features == 6 and ds.x.dtype == np.float32
    assert ds.lengths.min() >= 1 and ds.lengths.max() <= 50
    assert set(ds.labels.tolist()) == set(range(5)) and ds.labels.dtype == np.int64
    again = S.make_random_dataset(1000, 1, 50, 6, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(ds.x, again.x)
    assert S.make_random_dataset(3, 2, 2, 1, 1, rng, dtype=np.float64).x.dtype == np.float64
    with pytest.raises(LstmCliError):
        S.make_random_dataset(3, 5, 2, 1, 1, rng)


def test_random_dataset_is_fast():
    import time

    start = time.perf_counter()
    ds = S.make_random_dataset(20_000, 10, 100, 16, 10, np.random.default_rng(0))
    assert time.perf_counter() - start < 2.0
    assert len(ds) == 20_000


def test_cli_writes_deterministic_files(tmp_path):
    args = ["--seed", "3", "--n-train", "20", "--n-test", "10", "--min-len", "4", "--max-len", "6"]
    assert S.main(["--out", str(tmp_path / "a")] + args) == 0
    assert S.main(["--out", str(tmp_path / "b")] + args) == 0
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train = D.load_dataset(tmp_path / "a" / "train.jsonl")
    assert len(train) == 20 and train.labels.dtype == np.int64
    assert np.all(np.round(train.x, 4) == train.x)
    assert len(D.load_dataset(tmp_path / "a" / "test.jsonl")) == 10


def test_cli_rejects_bad_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        S.main(["--out", str(tmp_path), "--min-len", "2"])
    assert info.value.code == 2
    assert "min_len" in capsys.readouterr().err


def test_module_runs_as_script(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lstm_cli.data.synthetic",
            "--out",
            str(tmp_path),
            "--n-train",
            "8",
            "--n-test",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "train.jsonl" in out.stdout and (tmp_path / "test.jsonl").exists()


def test_shipped_files_match_documented_command(tmp_path):
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "python -m lstm_cli.data.synthetic --out data/synthetic --seed 0" in readme
    S.main(
        [
            "--out",
            str(tmp_path),
            "--seed",
            "0",
            "--n-train",
            "600",
            "--n-test",
            "300",
            "--min-len",
            "10",
            "--max-len",
            "40",
            "--features",
            "4",
            "--classes",
            "4",
            "--pattern-len",
            "3",
            "--noise",
            "1.0",
            "--amplitude",
            "1.5",
            "--signature-seed",
            "0",
            "--decimals",
            "4",
        ]
    )
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_shipped_files_shape_and_size():
    total = sum((SHIPPED / n).stat().st_size for n in ("train.jsonl", "test.jsonl"))
    assert total < 1_000_000
    train = D.load_dataset(SHIPPED / "train.jsonl")
    test = D.load_dataset(SHIPPED / "test.jsonl")
    assert (len(train), len(test)) == (600, 300)
    for ds in (train, test):
        assert ds.num_features == 4 and ds.lengths.min() >= 10 and ds.lengths.max() <= 40
        assert D.class_list(ds.labels) == [0, 1, 2, 3]

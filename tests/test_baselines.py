"""benchmarks/baselines.py: its vectorised 1-NN DTW against a plain double loop, and the
shipped UCR files it reads. No timing and no torch here."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


@pytest.fixture(scope="module")
def bl():
    """benchmarks/baselines.py as a module (benchmarks/ is not a package)."""
    sys.path.insert(0, BENCH)
    try:
        import baselines
    finally:
        sys.path.remove(BENCH)
    return baselines


def naive_dtw(a, b, window=None):
    """Textbook O(m n) DTW with squared Euclidean step cost and a Sakoe-Chiba band."""
    m, n = len(a), len(b)
    w = max(m, n) if window is None else window
    D = np.full((m + 1, n + 1), np.inf)
    D[0, 0] = 0.0
    for i in range(1, m + 1):
        for j in range(max(1, i - w), min(n, i + w) + 1):
            cost = float(np.sum((a[i - 1] - b[j - 1]) ** 2))
            D[i, j] = cost + min(D[i - 1, j], D[i, j - 1], D[i - 1, j - 1])
    return D[m, n]


def test_rotation_baseline_on_a_users_files(bl, tmp_path, capsys):
    """--datasets takes a path stem: rolled copies of two shapes are told apart only by
    the any-start distance, on TEST and by leave-one-out on TRAIN."""
    rng = np.random.default_rng(1)
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    shapes = {"a": np.sin(t) + 0.5 * np.sin(3 * t), "b": np.sin(t) + 0.5 * np.sin(2 * t)}
    for part, n in (("TRAIN", 6), ("TEST", 10)):
        lines = ["@problemName toy", "@univariate true", "@classLabel true a b", "@data"]
        for i in range(n):
            label = "ab"[i % 2]
            series = np.roll(shapes[label], rng.integers(40)) + 0.01 * rng.normal(size=40)
            lines.append(",".join(f"{v:.5f}" for v in series) + f":{label}")
        (tmp_path / f"toy_{part}.ts").write_text("\n".join(lines) + "\n")
    out = tmp_path / "rot.json"
    bl.main(["--datasets", str(tmp_path / "toy"), "--methods", "rot", "--out", str(out)])
    res = json.loads(out.read_text())["results"][str(tmp_path / "toy")]["rot"]
    assert res["ed_rotation"] == 1.0 and res["loo_train"]["ed_rotation"] == 1.0
    assert res["loo_train"]["ed"] < 1.0  # plain ED is misled by the starts
    assert "1.000 / 1.000" in capsys.readouterr().out


@pytest.mark.parametrize("features", [1, 3])
@pytest.mark.parametrize("window", [None, 0, 1, 3])
def test_dtw_matches_double_loop_fixed_length(bl, features, window):
    rng = np.random.default_rng(features * 10 + (window or 7))
    q = rng.normal(size=(11, features))
    refs = [rng.normal(size=(11, features)) for _ in range(6)]
    X, lengths = bl.pad(refs)
    got = bl.dtw_one_to_many(q, X, lengths, window)
    want = [naive_dtw(q, r, window) for r in refs]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("features", [1, 2])
def test_dtw_variable_lengths_ignore_padding(bl, features):
    rng = np.random.default_rng(features)
    q = rng.normal(size=(9, features))
    refs = [rng.normal(size=(int(t), features)) for t in (3, 14, 9, 1, 6)]
    X, lengths = bl.pad(refs)
    got = bl.dtw_one_to_many(q, X, lengths)
    want = [naive_dtw(q, r) for r in refs]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    X[np.arange(X.shape[1])[None, :] >= lengths[:, None]] = 1e3  # garbage in the padding
    np.testing.assert_allclose(bl.dtw_one_to_many(q, X, lengths), want, rtol=1e-12)


def test_dtw_window_zero_is_squared_euclidean(bl):
    rng = np.random.default_rng(5)
    q, refs = rng.normal(size=(20, 1)), [rng.normal(size=(20, 1)) for _ in range(4)]
    X, lengths = bl.pad(refs)
    want = bl.euclid_matrix([q], refs)[0]
    np.testing.assert_allclose(bl.dtw_one_to_many(q, X, lengths, 0), want, rtol=1e-10)


def test_leave_one_out_matrix_is_symmetric_full_matrix(bl):
    rng = np.random.default_rng(6)
    seqs = [rng.normal(size=(12, 1)) for _ in range(5)]
    half = bl.distance_matrix(seqs, seqs, 2, skip_upper=True)
    full = bl.distance_matrix(seqs, seqs, 2)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(half, full, rtol=1e-12)


def test_znorm_per_series_and_feature(bl):
    s = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    z = bl.znorm(s)
    np.testing.assert_allclose(z[:, 0], [-1.224744871391589, 0.0, 1.224744871391589])
    np.testing.assert_array_equal(z[:, 1], 0.0)  # a constant feature maps to 0


def test_shipped_ucr_files_match_meta(bl):
    with open(os.path.join(ROOT, "data", "ucr", "meta.json")) as f:
        meta = json.load(f)
    assert sorted(meta) == ["ACSF1", "ArrowHead", "GunPoint", "OSULeaf"]
    for name, splits in meta.items():
        for split, info in splits.items():
            path = os.path.join(ROOT, "data", "ucr", name, f"{name}_{split}.ts")
            with open(path, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == info["sha256"], path
    xtr, ytr, xte, yte, classes = bl.load_split("GunPoint")
    assert (len(xtr), len(xte), len(classes)) == (50, 150, 2)
    assert {len(s) for s in xtr + xte} == {150}

"""data.invariance: the FFT any-start / mirror distance against a loop over np.roll, the
leave-one-out counts, the resampling, and the auto rule of train.augment.roll / reverse."""

import numpy as np
import pytest

from lstm_cli.data import invariance as inv


def oracle_distances(Q, R, any_start, mirror):
    """The minimum over every np.roll (any_start) of every reference (and its reversal)."""
    T = Q.shape[1]
    D = np.empty((len(Q), len(R)))
    for i, q in enumerate(Q):
        for j, r in enumerate(R):
            cands = [r, r[::-1]] if mirror else [r]
            shifts = range(T) if any_start else [0]
            D[i, j] = min(((q - np.roll(c, s, axis=0)) ** 2).sum() for c in cands for s in shifts)
    return D


@pytest.mark.parametrize("T", [10, 11])
@pytest.mark.parametrize("any_start", [False, True])
@pytest.mark.parametrize("mirror", [False, True])
def test_shift_distances_equal_the_loop_over_every_shift(T, any_start, mirror):
    rng = np.random.default_rng(T)
    Q = rng.normal(size=(3, T, 2))
    R = np.concatenate([rng.normal(size=(4, T, 2)), np.roll(Q[:1], 4, axis=1)[:, ::-1]])
    D = inv.shift_distances(Q, R, any_start, mirror)
    np.testing.assert_allclose(D, oracle_distances(Q, R, any_start, mirror), atol=1e-9)
    # R[4] is Q[0] from step 4, reversed: distance 0 only when both are allowed
    assert (D[0, 4] < 1e-9) == (any_start and mirror)


def outlines(n, rolled, rng, T=40):
    """Two closed shapes, each sequence started at a random step when ``rolled``."""
    t = np.linspace(0, 2 * np.pi, T, endpoint=False)
    shapes = [np.sin(t) + 0.6 * np.sin(3 * t), np.sin(t) + 0.6 * np.cos(2 * t)]
    X = np.empty((n, T, 1))
    y = np.arange(n) % 2
    for i in range(n):
        s = shapes[y[i]] + 0.05 * rng.normal(size=T)
        X[i, :, 0] = np.roll(s, rng.integers(T)) if rolled else s
    return X, y


def test_roll_auto_is_on_for_outlines_that_start_anywhere():
    X, y = outlines(40, rolled=True, rng=np.random.default_rng(0))
    ev = inv.reorder_evidence(X, y)
    assert ev.any_start == 40 and ev.fixed < 40 - inv.margin(40)
    assert ev.roll


def test_roll_auto_is_off_where_the_position_is_the_class():
    """A bump early against a bump late: any start makes the classes one shape."""
    rng = np.random.default_rng(1)
    T, n = 30, 40
    y = np.arange(n) % 2
    X = 0.1 * rng.normal(size=(n, T, 1))
    X[y == 0, 5:10, 0] += 2.0
    X[y == 1, 18:23, 0] += 2.0
    ev = inv.reorder_evidence(X, y)
    assert ev.fixed == n and ev.any_start < n
    assert not ev.roll and not ev.reverse  # reversing keeps them apart too: no gain


@pytest.mark.parametrize(
    "counts, roll, reverse, want",
    [
        # counts: correct as recorded, at any start, mirror at a fixed start, mirror at any
        ((80, 84, 80, 88), "auto", "auto", (True, True)),  # margin(100) = 2: both on
        ((80, 81, 80, 88), "auto", "auto", (False, False)),  # +1: roll off; mirror read fixed
        ((80, 81, 82, 80), "auto", "auto", (False, True)),  # mirror at a fixed start: +2
        ((80, 90, 90, 91), "auto", "auto", (True, False)),  # +1 over roll's 90
        ((80, 81, 80, 83), True, "auto", (True, True)),  # a given roll: mirror vs any start
        ((80, 95, 99, 80), "auto", False, (True, False)),  # a given reverse stays
    ],
)
def test_auto_rule_needs_the_margin_over_rolls_choice(monkeypatch, counts, roll, reverse, want):
    table = {
        (False, False): counts[0],
        (True, False): counts[1],
        (False, True): counts[2],
        (True, True): counts[3],
    }
    monkeypatch.setattr(
        inv, "loo_correct", lambda X, y, any_start=False, mirror=False: table[(any_start, mirror)]
    )
    ev = inv.reorder_evidence(None, np.zeros(100), roll, reverse)
    assert (ev.roll, ev.reverse) == want
    assert ev.n == 100 and ev.fixed == 80


def test_margin_is_two_percent_and_at_least_two():
    assert [inv.margin(n) for n in (10, 100, 150, 200, 1000)] == [2, 2, 3, 4, 20]


def test_loo_never_counts_a_sequence_as_its_own_neighbour():
    X = np.zeros((2, 5, 1))
    X[1] += 1.0
    assert inv.loo_correct(X, np.array([0, 1])) == 0  # each one's only other is the other class


def test_common_length_resamples_to_the_median_and_standardises(monkeypatch):
    rng = np.random.default_rng(3)
    lengths = np.array([8, 10, 10, 13])
    x = rng.normal(size=(lengths.sum(), 2)) * [1.0, 50.0]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = np.array(["a", "b", "a", "b"])
    X, y = inv.common_length(x, offsets, labels)
    assert X.shape == (4, 10, 2) and list(y) == list(labels)
    np.testing.assert_allclose(X.mean((0, 1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(X.std((0, 1)), 1.0)
    # one affine map per feature takes the values back: read it off sequence 1, which
    # already has the common length 10 and is kept as it is
    seq1 = x[offsets[1] : offsets[2]]
    slope = seq1.std(0) / X[1].std(0)
    shift = seq1.mean(0) - slope * X[1].mean(0)
    np.testing.assert_allclose(X[1] * slope + shift, seq1)
    back = X * slope + shift
    np.testing.assert_allclose(back[0, [0, -1]], x[[0, 7]])  # the ends survive resampling
    at = np.linspace(0, 12, 10)  # sequence 3 (13 steps) read at 10 evenly spaced points
    np.testing.assert_allclose(back[3, :, 1], np.interp(at, np.arange(13), x[28:, 1]))
    monkeypatch.setattr(inv, "MAX_SERIES", 2)
    monkeypatch.setattr(inv, "MAX_LENGTH", 6)
    X, y = inv.common_length(x, offsets, labels)
    assert X.shape == (2, 6, 2)


def test_common_length_keeps_within_the_cell_budget(monkeypatch):
    """Many features: fewer series first, down to MIN_SERIES, then fewer steps."""
    x = np.random.default_rng(4).normal(size=(60, 2))
    offsets = np.arange(0, 61, 10)
    labels = np.arange(6) % 2
    monkeypatch.setattr(inv, "MIN_SERIES", 3)
    for cells, shape in (
        (10_000, (6, 10, 2)),
        (100, (5, 10, 2)),
        (60, (3, 10, 2)),
        (30, (3, 5, 2)),
    ):
        monkeypatch.setattr(inv, "MAX_CELLS", cells)
        X, y = inv.common_length(x, offsets, labels)
        assert X.shape == shape and X.size <= cells and len(y) == shape[0]

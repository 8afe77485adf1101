"""Input transforms (data.normalize_per_sequence, data.pool, data.frame): the array
functions against a plain per-sequence loop, and the stored transform applied again by
lstm-eval / lstm-predict."""

import csv
import io
import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from lstm_cli.cli import evaluate, predict
from lstm_cli.cli import train as train_cli
from lstm_cli.config import load_config
from lstm_cli.data import SequenceDataset, load_dataset, write_jsonl
from lstm_cli.data.framing import (
    frame_for_length,
    frame_steps,
    pool_steps,
    sequence_zscore,
    transform_dataset,
)
from lstm_cli.errors import CheckpointError, DataError
from lstm_cli.inference import evaluate_dataset, load_trained, loss_and_probs
from lstm_cli.store.checkpoint import load_checkpoint, save_checkpoint
from lstm_cli.training import config_for_resume, fit, fit_folds

LENGTHS = [1, 2, 5, 7, 10, 3]  # includes 1 and lengths not divisible by k


def _ragged(lengths=LENGTHS, F=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(T, F)) for T in lengths]


def _stacked(seqs):
    ds = SequenceDataset.from_sequences(seqs, labels=list(range(len(seqs))))
    return ds.x, ds.offsets


def _pool_loop(s, k):
    return np.stack([s[i : i + k].mean(axis=0) for i in range(0, len(s), k)])


def _frame_loop(s, k):
    rows = []
    for i in range(0, len(s), k):
        chunk = s[i : i + k]
        pad = np.zeros((k - len(chunk), s.shape[1]))
        rows.append(np.concatenate([chunk, pad]).reshape(-1))  # step-major: t0 f0, t0 f1, ...
    return np.stack(rows)


def _split(x, offsets):
    return [x[offsets[n] : offsets[n + 1]] for n in range(len(offsets) - 1)]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 11])
def test_pool_matches_a_per_sequence_loop(k):
    seqs = _ragged()
    x, off = pool_steps(*_stacked(seqs), k)
    got = _split(x, off)
    assert [len(g) for g in got] == [-(-T // k) for T in LENGTHS]  # ceil(T/k), >= 1
    for g, s in zip(got, seqs):
        np.testing.assert_allclose(g, _pool_loop(s, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 11])
def test_frame_matches_a_per_sequence_loop(k):
    seqs = _ragged(F=3)
    x, off = frame_steps(*_stacked(seqs), k)
    assert x.shape[1] == 3 * k
    got = _split(x, off)
    for g, s in zip(got, seqs):
        np.testing.assert_array_equal(g, _frame_loop(s, k))


def test_frame_pads_the_last_partial_frame_with_zeros_and_never_mixes_sequences():
    seqs = [np.full((3, 1), 1.0), np.full((2, 1), 2.0)]
    x, off = frame_steps(*_stacked(seqs), 2)
    np.testing.assert_array_equal(x, [[1, 1], [1, 0], [2, 2]])
    np.testing.assert_array_equal(off, [0, 2, 3])


def test_pool_last_window_is_the_mean_of_the_steps_it_has():
    x, off = pool_steps(*_stacked([np.array([[1.0], [3.0], [8.0]])]), 2)
    np.testing.assert_array_equal(x, [[2.0], [8.0]])


@pytest.mark.parametrize("pool,frame", [(2, 3), (3, 2), (1, 4), (4, 1)])
def test_transform_is_zscore_then_pool_then_frame(pool, frame):
    seqs = [s * 5 + 3 for s in _ragged(F=2)]
    ds = SequenceDataset.from_sequences(seqs, labels=list(range(len(seqs))), source="f")
    out = transform_dataset(ds, per_sequence=True, pool=pool, frame=frame)
    assert out.num_features == 2 * frame and out.source == "f"
    np.testing.assert_array_equal(out.labels, ds.labels)
    for n, s in enumerate(seqs):
        sd = s.std(axis=0)  # 0 only for a one-step sequence, which gives 0
        z = np.divide(s - s.mean(axis=0), sd, out=np.zeros_like(s), where=sd > 0)
        want = _frame_loop(_pool_loop(z, pool), frame)
        np.testing.assert_allclose(out.sequence(n), want, rtol=1e-12, atol=1e-12)


def test_transform_off_returns_the_dataset_itself():
    ds = SequenceDataset.from_sequences(_ragged())
    assert transform_dataset(ds) is ds


def test_per_sequence_zscore_scales_small_units_and_zeroes_constants_of_any_size():
    """The rule was std <= 1e-7 max(|mean|, 1): data with a std below 1e-7 was never
    scaled (a 1e-9 signal stayed at 1e-9), and a constant 3e38 came out as 7e22."""
    rng = np.random.default_rng(0)
    tiny = rng.normal(size=(50, 2)) * 1e-9 + 5e-9
    big = np.full((7, 2), 3.3e38)
    near = 1e6 + rng.normal(size=(40, 2)) * 0.07  # not constant: 0.07 is far above rounding
    z = sequence_zscore(*_stacked([tiny, big, near]))
    for got, s in ((z[:50], tiny), (z[57:], near)):
        np.testing.assert_allclose(got, (s - s.mean(0)) / s.std(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(z[50:57], 0.0)


def test_dataset_statistics_scale_small_units_and_centre_constants_exactly():
    from lstm_cli.data import feature_summary

    rng = np.random.default_rng(1)
    seqs = [np.c_[rng.normal(size=(30, 1)) * 1e-9, np.full((30, 1), 1e20)] for _ in range(9)]
    mean, std, lo, hi = feature_summary(SequenceDataset.from_sequences(seqs), chunk_rows=7)
    x = np.concatenate(seqs)
    np.testing.assert_allclose(std[0], x[:, 0].std(), rtol=1e-9)  # was 1: never scaled
    assert mean[1] == 1e20 and std[1] == 1.0  # so (x - mean) / std is exactly 0


def test_sequence_zscore_by_hand_and_constant_sequences_become_zeros():
    seqs = [np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[7.0, -2.0]])]
    z = sequence_zscore(*_stacked(seqs))
    # sequence 0: feature 0 mean 2, std 1 -> -1, 1; feature 1 constant -> centred: 0, 0
    # sequence 1: one step: every feature constant -> 0
    np.testing.assert_array_equal(z, [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    assert np.isfinite(z).all()


def test_sequence_zscore_uses_each_sequence_s_own_statistics():
    a = np.array([[0.0], [2.0]])
    z = sequence_zscore(*_stacked([a, a * 10 + 100]))
    np.testing.assert_allclose(z, [[-1.0], [1.0], [-1.0], [1.0]])


# ---- train -> checkpoint -> eval/predict on the raw file ---------------------------------


@pytest.fixture
def long_files(tmp_path):
    """A 2-class task of 1-feature sequences of 9 to 23 steps (not multiples of 4)."""
    rng = np.random.default_rng(0)

    def make(n):
        seqs, labels = [], []
        for i in range(n):
            T = int(rng.integers(9, 24))
            label = i % 2
            t = np.arange(T)
            base = np.sin(t * (0.3 if label else 1.1)) * 2 + rng.normal(0, 0.3, T) + 50
            seqs.append(base[:, None])
            labels.append(label)
        return SequenceDataset.from_sequences(seqs, labels)

    paths = {k: str(tmp_path / f"{k}.jsonl") for k in ("train", "test")}
    write_jsonl(make(80), paths["train"])
    write_jsonl(make(40), paths["test"])
    return paths


def _config(tmp_path, long_files, **data):
    cfg = {
        "data": {**long_files, "valid_fraction": 0.2, **data},
        "model": {"hidden_size": 8},
        "train": {"epochs": 3, "batch_size": 16, "optimizer": {"lr": 0.01}},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_checkpoint_round_trip_applies_the_stored_transforms(tmp_path, long_files):
    path = _config(tmp_path, long_files, frame=4, pool=2, normalize_per_sequence=True)
    result = fit(load_config(path), progress=False, log=lambda *a: None)
    ckpt = str(tmp_path / "run" / "best.npz")
    tm = load_trained(ckpt)
    assert tm.model.input_size == 4  # frame 4 * 1 feature; pooling keeps F
    assert tm.transforms == {"per_sequence": True, "pool": 2, "frame": 4}

    r = CliRunner().invoke(evaluate, [ckpt, "--data", long_files["test"], "--json", "-"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["accuracy"] == result.test_report["accuracy"]
    assert report["loss"] == pytest.approx(result.test_report["loss"], rel=1e-12)

    # the model on explicitly transformed data gives the same losses and probabilities
    raw = load_dataset(long_files["test"])
    framed = transform_dataset(raw, per_sequence=True, pool=2, frame=4)
    y = np.asarray(raw.labels)
    losses, probs = loss_and_probs(tm.model, framed, y, tm.mean, tm.std)
    assert float(losses.mean()) == pytest.approx(report["loss"], rel=1e-12)

    r = CliRunner().invoke(predict, [ckpt, "--data", long_files["test"]])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    np.testing.assert_allclose([float(row["prob_1"]) for row in rows], probs[:, 1], atol=1e-6)

    rep2, _, _ = evaluate_dataset(tm, tm.prepare(raw))
    assert rep2["accuracy"] == report["accuracy"]


def test_the_training_statistics_are_of_the_framed_features(tmp_path, long_files):
    path = _config(tmp_path, long_files, frame=3)
    fit(load_config(path), progress=False, log=lambda *a: None)
    meta = load_checkpoint(str(tmp_path / "run" / "best.npz")).meta
    assert len(meta["normalization"]["mean"]) == 3
    assert meta["model"]["input_size"] == 3


def test_eval_counts_the_file_s_own_features(tmp_path, long_files):
    fit(load_config(_config(tmp_path, long_files, frame=4)), progress=False, log=lambda *a: None)
    tm = load_trained(str(tmp_path / "run" / "best.npz"))
    two = SequenceDataset.from_sequences([np.zeros((5, 2))], [0], source="two.jsonl")
    with pytest.raises(
        DataError, match="the data has 2 features per step, but the model was trained on 1"
    ):
        tm.prepare(two)


def test_a_checkpoint_without_the_keys_loads_with_the_transforms_off(tmp_path, long_files):
    fit(load_config(_config(tmp_path, long_files)), progress=False, log=lambda *a: None)
    ckpt = load_checkpoint(str(tmp_path / "run" / "best.npz"))
    for key in ("frame", "pool", "normalize_per_sequence"):
        del ckpt.meta["config"]["data"][key]
    old = str(tmp_path / "old.npz")
    save_checkpoint(old, ckpt.params, ckpt.meta)
    assert load_trained(old).transforms == {"per_sequence": False, "pool": 1, "frame": 1}


def test_a_stored_frame_that_does_not_divide_the_input_size_is_refused(tmp_path, long_files):
    fit(load_config(_config(tmp_path, long_files, frame=4)), progress=False, log=lambda *a: None)
    ckpt = load_checkpoint(str(tmp_path / "run" / "best.npz"))
    ckpt.meta["config"]["data"]["frame"] = 3
    bad = str(tmp_path / "bad.npz")
    save_checkpoint(bad, ckpt.params, ckpt.meta)
    with pytest.raises(CheckpointError, match="config.data.frame"):
        load_trained(bad)


@pytest.mark.parametrize(
    "lengths, pool, steps, k",
    [
        ([150] * 5, 1, 25, 6),  # the shipped recipes' frames: GunPoint
        ([251] * 3, 1, 3, 84),  # ArrowHead (3 coarse frames)
        ([427] * 4, 2, 27, 8),  # OSULeaf (pooled 214 steps)
        ([1460] * 2, 1, 37, 40),  # ACSF1
        ([10, 20, 30], 1, 4, 5),  # variable lengths: the median, 20
        ([10, 20, 30, 41], 1, 5, 5),  # an even count: median 25
        ([7, 9], 1, 100, 1),  # shorter than the target: no framing
    ],
)
def test_frame_for_length_is_the_smallest_frame_that_fits_the_median(lengths, pool, steps, k):
    got, median = frame_for_length(lengths, pool, steps)
    assert got == k
    assert math.ceil(median / k) <= steps
    assert k == 1 or math.ceil(median / (k - 1)) > steps  # one less would not fit


def test_frame_to_chooses_the_frame_and_the_run_records_it(tmp_path, long_files):
    """data.frame_to trains exactly as data.frame k would, and the run folder and its
    checkpoints record k (frame_to null), so eval, predict and resume apply k."""
    lengths = np.diff(load_dataset(long_files["train"]).offsets)
    k = math.ceil(np.median(-(-lengths // 2)) / 3)  # pool 2, at most 3 frames
    assert k >= 2
    path = _config(tmp_path, long_files, frame_to=3, pool=2)
    logs = []
    chosen = fit(load_config(path), progress=False, log=logs.append)
    assert any(f"data.frame_to 3: frame {k} (median training length" in m for m in logs), logs
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (saved["frame"], saved["frame_to"]) == (k, None)
    tm = load_trained(str(run / "best.npz"))
    assert tm.transforms["frame"] == k and tm.model.input_size == k

    given = fit(
        load_config(
            _config(tmp_path, long_files, frame=k, pool=2), [f"output.dir={tmp_path / 'k'}"]
        ),
        progress=False,
        log=lambda *a: None,
    )
    assert [h["val_loss"] for h in chosen.history] == [h["val_loss"] for h in given.history]
    assert chosen.test_report == given.test_report

    r = CliRunner().invoke(evaluate, [str(run), "--data", long_files["test"], "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["loss"] == pytest.approx(chosen.test_report["loss"], rel=1e-12)
    more = fit(
        config_for_resume(str(run), ["train.epochs=4"]), resume=True, progress=False, log=print
    )
    assert len(more.history) == 4 and more.trained.model.input_size == k


def test_an_ensemble_resolves_frame_to_once_and_says_so_once(tmp_path, long_files):
    """Every member trains with the frame chosen on the whole training file (recorded as
    data.frame k), and the choice is logged once, not once per member; the ensemble's
    own config.yaml keeps frame_to as given, so a resume compares like with like."""
    path = _config(tmp_path, long_files, frame_to=3, pool=2)
    cfg = load_config(path, ["train.folds=3", "train.epochs=1"])
    logs = []
    fit_folds(cfg, progress=False, log=logs.append)
    notes = [m for m in logs if m.startswith("data.frame_to 3: frame")]
    assert len(notes) == 1, logs
    k = int(notes[0].split(": frame ")[1].split(" ")[0])
    for i in range(3):
        saved = yaml.safe_load((tmp_path / "run" / f"fold-{i}" / "config.yaml").read_text())
        assert (saved["data"]["frame"], saved["data"]["frame_to"]) == (k, None)
    top = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert (top["frame"], top["frame_to"]) == (1, 3)
    again = load_config(path, ["train.folds=3", "train.epochs=2"])
    fit_folds(again, resume=True, progress=False, log=logs.append)
    assert len([m for m in logs if m.startswith("data.frame_to 3: frame")]) == 2


def test_frame_to_with_a_frame_or_too_short_for_shift_is_a_config_error(tmp_path, long_files):
    path = _config(tmp_path, long_files, frame_to=3)
    for sets, fragments in (
        (["data.frame=2"], ["'data.frame_to' (3)", "'data.frame' must stay 1 (it is 2)"]),
        (
            ["data.frame_to=1000", "train.augment.shift=true"],
            ["'data.frame_to' 1000 gives frame 1", "train.augment.shift"],
        ),
    ):
        args = ["--config", path, "--quiet"] + [a for kv in sets for a in ("--set", kv)]
        result = CliRunner().invoke(train_cli, args)
        assert result.exit_code == 3, result.output
        assert all(f in result.output for f in fragments), result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / "run").exists()


def test_the_log_suggests_framing_once_when_the_model_steps_are_many(tmp_path):
    """Over LONG_STEPS model steps (after pool and frame) the log names data.frame_to,
    once for one model and once for an ensemble (not per member); framed, it says nothing."""
    from lstm_cli.training.prepare import LONG_STEPS

    rng = np.random.default_rng(0)
    lengths = [LONG_STEPS + 1 + int(rng.integers(0, 30)) for _ in range(12)]
    seqs = [rng.normal(size=(T, 1)) + (i % 2) for i, T in enumerate(lengths)]
    data = SequenceDataset.from_sequences(seqs, [i % 2 for i in range(12)])
    write_jsonl(data, str(tmp_path / "long.jsonl"))
    cfg = {
        "data": {"train": str(tmp_path / "long.jsonl"), "valid_fraction": 0.0},
        "model": {"hidden_size": 4},
        "train": {"epochs": 1, "batch_size": 12},
        "output": {"dir": str(tmp_path / "run")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    median = float(np.median(lengths))

    def notes(*overrides, folds=False):
        logs = []
        c = load_config(str(path), list(overrides))
        (fit_folds if folds else fit)(c, progress=False, log=logs.append, overwrite=True)
        return [m for m in logs if m.startswith("the median training sequence is")]

    (note,) = notes()
    assert f"is {median:g} model steps long" in note and "data.frame_to (e.g. 40)" in note
    assert notes("data.frame=2") == []
    assert len(notes("train.folds=2", "data.valid_fraction=0", folds=True)) == 1


def test_transforms_in_two_steps_compose_and_never_repeat():
    """The trainer applies per-sequence z-score and pool, then frame (for the reorders in
    between): the result and its mark equal one call's; a transform already applied, or one
    that comes before an applied one in the fixed order, is a DataError."""
    from lstm_cli.data import SequenceDataset
    from lstm_cli.data.framing import transform_dataset
    from lstm_cli.errors import DataError

    rng = np.random.default_rng(0)
    raw = SequenceDataset.from_sequences([rng.normal(size=(n, 2)) for n in (3, 8, 13)])
    once = transform_dataset(raw, True, 2, 3)
    twice = transform_dataset(transform_dataset(raw, True, 2), frame=3)
    assert once.transforms == twice.transforms == {"per_sequence": True, "pool": 2, "frame": 3}
    np.testing.assert_array_equal(once.x, twice.x)
    for first, then in (({"pool": 2}, {"pool": 2}), ({"frame": 3}, {"pool": 2}),
                        ({"pool": 2}, {"per_sequence": True})):  # fmt: skip
        with pytest.raises(DataError, match="already"):
            transform_dataset(transform_dataset(raw, **first), **then)


def test_transformed_float16_data_is_not_rounded_to_float16():
    """A float16 .npy folder with per-sequence z-scoring or pooling gave probabilities up
    to 2e-4 away from the same values in any other format: the transformed values were
    cast back to float16. They are float32 now, float32 and float64 data keep theirs."""
    rng = np.random.default_rng(0)
    seqs = [rng.normal(5.0, 3.0, (n, 2)).astype(np.float16) for n in (3, 8, 5)]
    for dtype, want in ((np.float16, np.float32), (np.float32, np.float32),
                        (np.float64, np.float64)):  # fmt: skip
        ds = SequenceDataset.from_sequences(seqs, None, "x.npy", dtype)
        out = transform_dataset(ds, per_sequence=True, pool=2)
        wide = transform_dataset(SequenceDataset.from_sequences(seqs), per_sequence=True, pool=2)
        assert out.x.dtype == want
        np.testing.assert_allclose(out.x, wide.x, rtol=0, atol=1e-6)

"""Training-time augmentation (data.augment, config train.augment): reversal, a random
circular start, a random framing phase and input noise, checked against a per-sequence
loop; evaluation is never augmented."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli.cli import evaluate as evaluate_cli
from lstm_cli.cli import train as train_cli
from lstm_cli.config import load_config
from lstm_cli.data import SequenceDataset, pad_batch
from lstm_cli.data.augment import Augmenter, drop_leading_steps, reorder_steps
from lstm_cli.data.framing import frame_steps
from lstm_cli.training import fit


def _steps(lengths, F=2, seed=0):
    rng = np.random.default_rng(seed)
    return SequenceDataset.from_sequences(
        [rng.normal(size=(T, F)) for T in lengths], labels=list(range(len(lengths)))
    )


def _framed(ds, k):
    x, offsets = frame_steps(ds.x, ds.offsets, k)
    return SequenceDataset(x, offsets, ds.labels, ds.source)


def test_drop_leading_steps():
    x = np.arange(10.0)[:, None]  # sequences [0 1 2], [3 4 5 6], [7 8 9]
    out = drop_leading_steps(x, np.array([3, 4, 3]), np.array([1, 0, 2]))
    assert out[:, 0].tolist() == [1, 2, 3, 4, 5, 6, 9]


def test_reorder_steps():
    x = np.arange(10.0)[:, None]  # sequences [0 1 2], [3 4 5 6], [7 8 9]
    lens = np.array([3, 4, 3])
    rolled = reorder_steps(x, lens, start=np.array([1, 3, 0]))
    assert rolled[:, 0].tolist() == [1, 2, 0, 6, 3, 4, 5, 7, 8, 9]
    flipped = reorder_steps(x, lens, reverse=np.array([True, False, True]))
    assert flipped[:, 0].tolist() == [2, 1, 0, 3, 4, 5, 6, 9, 8, 7]
    both = reorder_steps(x, lens, np.array([True, True, False]), np.array([1, 1, 2]))
    assert both[:, 0].tolist() == [1, 0, 2, 5, 4, 3, 6, 9, 7, 8]


def test_roll_and_reverse_reorder_each_sequence_before_framing():
    """Oracle: each sequence reversed, rotated with np.roll and then shifted and framed on
    its own; every draw stays within its sequence and both options move something."""
    lengths, k = [1, 2, 5, 9, 13, 4, 7, 6], 3
    steps = _steps(lengths)
    aug = Augmenter(_framed(steps, k), steps=steps, frame=k, shift=True, roll=True, reverse=True)
    assert aug.active
    mean, std = np.array([0.1, -0.2] * k), np.array([1.5, 0.5] * k)
    idx = np.array([5, 0, 3, 2, 4, 1, 7, 6])
    plan = aug.draw(np.random.default_rng(3), idx)
    x, lens = aug.batch(plan, None, np.float64, mean, std)
    assert (plan.start >= 0).all() and (plan.start < steps.lengths[idx]).all()
    assert plan.start.max() > 0 and plan.reverse.any() and not plan.reverse.all()
    for b, n in enumerate(idx):
        seq = steps.sequence(int(n))
        seq = seq[::-1] if plan.reverse[b] else seq
        seq = np.roll(seq, -plan.start[b], axis=0)[plan.phase[b] :]
        framed, _ = frame_steps(seq, np.array([0, len(seq)]), k)
        want = (framed - mean) / std
        assert lens[b] == len(want) == plan.lengths[b]
        np.testing.assert_allclose(x[b, : lens[b]], want, rtol=0, atol=1e-15)
        assert not x[b, lens[b] :].any()


def test_roll_without_framing_keeps_lengths():
    steps = _steps([4, 9, 6])
    aug = Augmenter(steps, steps=steps, roll=True)
    plan = aug.draw(np.random.default_rng(5), np.arange(3))
    x, lens = aug.batch(plan, None, np.float64)
    np.testing.assert_array_equal(lens, steps.lengths)
    for n in range(3):
        want = np.roll(steps.sequence(n), -plan.start[n], axis=0)
        np.testing.assert_array_equal(x[n, : lens[n]], want)


def test_shift_frames_each_sequence_from_its_drawn_phase():
    """Oracle: each sequence cut at its phase, then framed on its own."""
    lengths, k = [1, 2, 5, 9, 13, 4], 4
    steps = _steps(lengths)
    aug = Augmenter(_framed(steps, k), steps=steps, frame=k, shift=True)
    mean, std = np.array([0.1, -0.2] * k), np.array([1.5, 0.5] * k)
    idx = np.array([5, 0, 3, 2, 4, 1])
    plan = aug.draw(np.random.default_rng(7), idx)
    x, lens = aug.batch(plan, None, np.float64, mean, std)
    assert (plan.phase < np.maximum(steps.lengths[idx], 1)).all()
    assert (plan.phase <= steps.lengths[idx] - 1).all()  # a sequence keeps >= 1 step
    assert plan.phase.max() > 0  # the draw moved some sequence
    for b, n in enumerate(idx):
        seq = steps.sequence(int(n))[plan.phase[b] :]
        framed, _ = frame_steps(seq, np.array([0, len(seq)]), k)
        want = (framed - mean) / std
        assert lens[b] == len(want) == plan.lengths[b]
        np.testing.assert_allclose(x[b, : lens[b]], want, rtol=0, atol=1e-15)
        assert not x[b, lens[b] :].any()  # padding stays 0


def test_phase_never_drops_a_whole_sequence():
    steps = _steps([1, 1, 2, 2])
    aug = Augmenter(_framed(steps, 8), steps=steps, frame=8, shift=True)
    for seed in range(20):
        plan = aug.draw(np.random.default_rng(seed), np.arange(4))
        assert (plan.phase <= np.array([0, 0, 1, 1])).all() and (plan.lengths == 1).all()


def test_off_is_pad_batch_and_draws_nothing():
    ds = _steps([3, 7, 5])
    aug = Augmenter(ds)
    rng = np.random.default_rng(1)
    before = rng.bit_generator.state
    plan = aug.draw(rng, np.array([2, 0]))
    assert rng.bit_generator.state == before and not aug.active
    x, lens = aug.batch(plan, None, np.float32)
    want, want_lens = pad_batch(ds, np.array([2, 0]), np.float32)
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(lens, want_lens)


def test_noise_is_on_real_steps_only_with_its_std():
    ds = _steps([50, 200, 120], F=3)
    aug = Augmenter(ds, noise=0.25)
    plan = aug.draw(np.random.default_rng(2), np.arange(3))
    x, lens = aug.batch(plan, None, np.float64)
    clean, _ = pad_batch(ds, np.arange(3), np.float64)
    diff = x - clean
    real = np.arange(x.shape[1])[None, :] < lens[:, None]
    assert not diff[~real].any()
    assert abs(diff[real].std() - 0.25) < 0.02 and abs(diff[real].mean()) < 0.02


@pytest.mark.parametrize(
    "shift, noise, roll", [(True, 0.0, False), (False, 0.3, False), (True, 0.3, True)]
)
def test_rows_of_a_plan_are_the_rows_of_the_whole_batch(shift, noise, roll):
    """What an MPI shard builds (its positions of the plan) equals those rows of the
    one-process batch, trimmed to the shard's longest sequence."""
    steps = _steps([3, 17, 8, 11, 1, 25])
    framed = _framed(steps, 3)
    aug = Augmenter(framed, steps=steps, frame=3, shift=shift, noise=noise, roll=roll, reverse=roll)
    plan = aug.draw(np.random.default_rng(4), np.array([4, 1, 0, 5, 2, 3]))
    whole, whole_lens = aug.batch(plan)
    for rows in ([0, 2], [1, 3, 5], [4]):
        part, lens = aug.batch(plan, rows)
        np.testing.assert_array_equal(lens, whole_lens[rows])
        np.testing.assert_array_equal(part, whole[rows, : part.shape[1]])


@pytest.mark.parametrize(
    "augment",
    [["train.augment.noise=0.5"], ["train.augment.roll=true", "train.augment.reverse=true"]],
    ids=["noise", "roll+reverse"],
)
def test_augmented_training_differs_and_evaluation_is_clean(
    write_config, pattern_files, tmp_path, augment
):
    """The augmentation reaches the training batches (parameters differ from a run
    without it, and a second augmented run repeats the first) and not evaluation: the
    run's test report equals lstm-eval's of best.npz on the test file."""

    def run(name, *over):
        cfg = load_config(
            write_config(), ["train.epochs=2", f"output.dir={tmp_path / name}", *over]
        )
        return fit(cfg, progress=False, log=lambda *a: None)

    plain, noisy = run("plain"), run("noisy", *augment)
    again = run("again", *augment)
    a, b = plain.trained.model.params, noisy.trained.model.params
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    assert again.history[-1]["train_loss"] == noisy.history[-1]["train_loss"]
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(
        evaluate_cli,
        [str(tmp_path / "noisy" / "best.npz"), "--data", pattern_files["test"], "--json",
         str(report), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["loss"] == pytest.approx(
        noisy.test_report["loss"], rel=1e-12
    )


def test_shift_without_framing_is_a_config_error(write_config):
    result = CliRunner().invoke(
        train_cli, ["--config", write_config(), "--set", "train.augment.shift=true"]
    )
    assert result.exit_code == 3, result.output
    assert "train.augment.shift" in result.output and "data.frame" in result.output
    assert "Traceback" not in result.output


def test_negative_noise_is_a_config_error(write_config):
    result = CliRunner().invoke(
        train_cli, ["--config", write_config(), "--set", "train.augment.noise=-0.1"]
    )
    assert result.exit_code == 3, result.output
    assert "train.augment.noise" in result.output

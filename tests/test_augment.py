"""Training-time augmentation (data.augment, config train.augment): reversal, a random
circular start, a random framing phase and input noise, checked against a per-sequence
loop; evaluation is never augmented."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from lstm_cli.cli import evaluate as evaluate_cli
from lstm_cli.cli import train as train_cli
from lstm_cli.config import load_config
from lstm_cli.data import SequenceDataset, pad_batch, write_jsonl
from lstm_cli.data.augment import Augmenter, drop_leading_steps, reorder_steps
from lstm_cli.data.framing import frame_steps
from lstm_cli.training import config_for_resume, fit, fit_folds


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


# --- train.augment.roll / reverse: auto (data.invariance decides on the training file) ---


def _shape_files(tmp_path, rolled):
    """Two closed shapes as 24-step series, each started at a random step when
    ``rolled`` (outlines: roll auto turns on), else a bump early or late (the position is
    the class: roll auto stays off). Train 40, test 10."""
    rng = np.random.default_rng(7)
    T = 24
    t = np.linspace(0, 2 * np.pi, T, endpoint=False)
    shapes = [np.sin(t) + 0.6 * np.sin(3 * t), np.sin(t) + 0.6 * np.cos(2 * t)]
    paths = {}
    for part, n in (("train", 40), ("test", 10)):
        seqs, labels = [], []
        for i in range(n):
            c = i % 2
            if rolled:
                s = np.roll(shapes[c], rng.integers(T))
            else:
                s = np.zeros(T)
                s[4 + 10 * c : 8 + 10 * c] = 2.0
            seqs.append((s + 0.05 * rng.normal(size=T))[:, None])
            labels.append(c)
        paths[part] = str(tmp_path / f"{'rolled' if rolled else 'bumps'}_{part}.jsonl")
        write_jsonl(SequenceDataset.from_sequences(seqs, labels), paths[part])
    return paths


@pytest.mark.parametrize("rolled", [True, False], ids=["outlines", "positions"])
def test_auto_resolves_on_the_training_file_and_the_run_records_it(write_config, tmp_path, rolled):
    """roll / reverse auto trains exactly as the bools they resolve to would; the run
    folder and its checkpoints record those bools, so resume compares like with like."""
    files = _shape_files(tmp_path, rolled)
    path = write_config(data={"train": files["train"], "test": files["test"]})
    auto = ["train.augment.roll=auto", "train.augment.reverse=auto", "train.epochs=2"]
    logs = []
    chosen = fit(load_config(path, auto), progress=False, log=logs.append)
    notes = [m for m in logs if m.startswith("train.augment.roll auto: ")]
    assert len(notes) == 1 and "training sequences" in notes[0], logs
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["augment"]
    assert saved["roll"] is rolled and isinstance(saved["reverse"], bool)
    on = {True: "on", False: "off"}
    assert notes[0].startswith(
        f"train.augment.roll auto: {on[rolled]}, train.augment.reverse auto: "
        f"{on[saved['reverse']]} (leave-one-out 1-NN on 40 training sequences: "
    )
    given = [f"train.augment.roll={str(rolled).lower()}", "train.epochs=2"]
    given += [f"train.augment.reverse={str(saved['reverse']).lower()}"]
    given += [f"output.dir={tmp_path / 'given'}"]
    same = fit(load_config(path, given), progress=False, log=lambda *a: None)
    assert [h["train_loss"] for h in chosen.history] == [h["train_loss"] for h in same.history]
    more = fit(
        config_for_resume(str(tmp_path / "run"), ["train.epochs=3"]),
        resume=True,
        progress=False,
        log=lambda *a: None,
    )
    assert len(more.history) == 3


def test_an_ensemble_resolves_auto_once_and_says_so_once(write_config, tmp_path, monkeypatch):
    """Once for the whole ensemble: not again per member, nor when its summary is made."""
    import lstm_cli.training.prepare as prepare

    tests = []
    decide = prepare.reorder_evidence
    monkeypatch.setattr(prepare, "reorder_evidence", lambda *a: tests.append(1) or decide(*a))
    files = _shape_files(tmp_path, rolled=True)
    path = write_config(data={"train": files["train"], "test": files["test"]})
    over = ["train.augment.roll=auto", "train.folds=3", "train.epochs=1"]
    logs = []
    fit_folds(load_config(path, over), progress=False, log=logs.append)
    assert len([m for m in logs if m.startswith("train.augment.roll auto: on")]) == 1, logs
    assert len(tests) == 1
    for i in range(3):
        member = yaml.safe_load((tmp_path / "run" / f"fold-{i}" / "config.yaml").read_text())
        assert member["train"]["augment"]["roll"] is True
    top = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert top["train"]["augment"]["roll"] == "auto"
    again = load_config(path, [*over[:2], "train.epochs=2"])
    fit_folds(again, resume=True, progress=False, log=lambda *a: None)


def test_auto_is_a_value_of_roll_and_reverse_only(write_config):
    cfg = load_config(write_config(), ["train.augment.roll=auto", "train.augment.reverse=auto"])
    assert (cfg.train.augment.roll, cfg.train.augment.reverse) == ("auto", "auto")
    with pytest.raises(ValueError, match="resolve roll / reverse 'auto' first"):
        cfg.train.augment.reorders  # noqa: B018 (the property is the test)
    for key, value in (("roll", "Auto"), ("shift", "auto")):
        result = CliRunner().invoke(
            train_cli, ["--config", write_config(), "--set", f"train.augment.{key}={value}"]
        )
        assert result.exit_code == 3, result.output
        assert f"'train.augment.{key}'" in result.output and "Traceback" not in result.output
        assert ("or 'auto'" in result.output) == (key == "roll")
        assert ("Did you mean 'auto'?" in result.output) == (key == "roll")

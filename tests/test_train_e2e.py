"""End-to-end training through the library API: it learns, it is reproducible, it resumes."""

import json
import os

import numpy as np
import pytest

from lstm_cli.config import load_config
from lstm_cli.errors import ConfigError, TrainingError
from lstm_cli.store.checkpoint import load_checkpoint
from lstm_cli.training import fit


def _fit(path, *overrides, **kw):
    return fit(load_config(path, overrides), progress=False, log=lambda *a: None, **kw)


@pytest.mark.parametrize("head", ["last", "all"])
def test_learns_the_pattern_task(write_config, head):
    result = _fit(write_config(), f"model.head={head}")
    assert result.test_report["accuracy"] >= 0.9, result.test_report["accuracy"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_run_folder_contents(write_config, tmp_path):
    result = _fit(write_config())
    run = tmp_path / "run"
    assert sorted(os.listdir(run)) == [
        "best.npz",
        "config.yaml",
        "last.npz",
        "metrics.csv",
        "metrics.jsonl",
        "summary.json",
    ]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 13))
    header = (run / "metrics.csv").read_text().splitlines()[0].strip().split(",")
    assert header[:8] == [
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "grad_norm",
        "seconds",
    ]
    best = load_checkpoint(str(run / "best.npz"))
    assert best.meta["epoch"] == result.best_epoch
    for k, v in result.trained.model.params.items():  # fit returns the best model
        np.testing.assert_array_equal(best.params[k], v)
    last = load_checkpoint(str(run / "last.npz"))
    assert last.meta["epoch"] == 12 and last.optim_arrays  # optimizer state is saved
    assert last.meta["classes"] == [0, 1, 2] and len(last.meta["normalization"]["mean"]) == 3


def test_same_seed_same_everything(write_config, tmp_path):
    a = _fit(write_config(), "train.epochs=3", f"output.dir={tmp_path / 'a'}")
    b = _fit(write_config(), "train.epochs=3", f"output.dir={tmp_path / 'b'}")
    for k in a.trained.model.params:
        np.testing.assert_array_equal(a.trained.model.params[k], b.trained.model.params[k])

    def strip(h):
        return [
            {k: v for k, v in r.items() if k not in ("seconds", "sequences_per_second")} for r in h
        ]

    assert strip(a.history) == strip(b.history)
    c = _fit(write_config(), "train.epochs=3", "train.seed=1", f"output.dir={tmp_path / 'c'}")
    assert not np.array_equal(
        a.trained.model.params["lstm.0.W"], c.trained.model.params["lstm.0.W"]
    )


def test_resume_continues_to_the_same_result(write_config, tmp_path):
    _fit(write_config(), "train.epochs=4", f"output.dir={tmp_path / 'full'}")
    _fit(write_config(), "train.epochs=2", f"output.dir={tmp_path / 'part'}")
    resumed = _fit(write_config(), "train.epochs=4", f"output.dir={tmp_path / 'part'}", resume=True)
    last_full = load_checkpoint(str(tmp_path / "full" / "last.npz"))
    last_resumed = load_checkpoint(str(tmp_path / "part" / "last.npz"))
    for k in last_full.params:
        np.testing.assert_array_equal(last_full.params[k], last_resumed.params[k])
    for k in last_full.optim_arrays:
        np.testing.assert_array_equal(last_full.optim_arrays[k], last_resumed.optim_arrays[k])
    assert len(resumed.history) == 4


def test_resume_refuses_a_changed_architecture(write_config, tmp_path):
    _fit(write_config(), "train.epochs=1")
    with pytest.raises(ConfigError, match="model.hidden_size"):
        _fit(write_config(), "train.epochs=2", "model.hidden_size=8", resume=True)


def test_refuses_non_empty_run_folder(write_config, tmp_path):
    _fit(write_config(), "train.epochs=1")
    with pytest.raises(ConfigError, match="not empty"):
        _fit(write_config(), "train.epochs=1")
    _fit(write_config(), "train.epochs=1", overwrite=True)


def test_a_non_finite_gradient_norm_stops_with_a_clear_error(write_config, monkeypatch):
    """A finite loss whose gradient norm overflows (clipping cannot mend it) stops at that
    step, before the update, naming the last finite loss."""
    from lstm_cli.training import loop

    calls = []

    def norm_overflows_at_step_3(grads, max_norm):
        calls.append(1)
        return grads, float("inf") if len(calls) == 3 else 1.0

    monkeypatch.setattr(loop, "clip_by_global_norm", norm_overflows_at_step_3)
    with pytest.raises(TrainingError) as err:
        _fit(write_config(), "train.epochs=1")
    message = str(err.value)
    assert message.startswith("epoch 1 step 3: the gradient norm is not finite; last finite")
    assert "Try a lower" not in message


def test_divergence_stops_with_a_clear_error(write_config, tmp_path):
    with pytest.raises(
        TrainingError,
        match=r"epoch 1 step \d+: the training loss is not finite.*"
        r"last finite loss",
    ):
        _fit(
            write_config(),
            "train.epochs=3",
            "train.optimizer.lr=1.0e38",
            "train.clip_grad_norm=0",
            "train.optimizer.name=sgd",
            "train.optimizer.momentum=0",
        )


def test_nan_mid_run_keeps_the_last_good_checkpoints(write_config, tmp_path, monkeypatch):
    """A loss that turns NaN in epoch 3 stops training; the files of epoch 2 stay intact."""
    from lstm_cli.nn.model import LSTMClassifier

    real = LSTMClassifier.loss_from_logits
    calls = {"n": 0}
    steps_per_epoch = 12  # 192 training sequences / batch 16

    def flaky(self, *args, **kw):
        loss, d = real(self, *args, **kw)
        calls["n"] += 1
        return (float("nan") if calls["n"] == 2 * steps_per_epoch + 3 else loss), d

    monkeypatch.setattr(LSTMClassifier, "loss_from_logits", flaky)
    with pytest.raises(TrainingError, match=r"epoch 3 step 27: .*from epoch 2 and earlier"):
        _fit(write_config())
    monkeypatch.undo()
    run = tmp_path / "run"
    assert load_checkpoint(str(run / "last.npz")).meta["epoch"] == 2
    assert load_checkpoint(str(run / "best.npz")).meta["epoch"] <= 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = _fit(write_config(), "train.epochs=4", resume=True)  # and the run can go on
    assert len(resumed.history) == 4


def test_balanced_class_weights_and_all_options_run(write_config):
    result = _fit(
        write_config(),
        "train.epochs=2",
        "train.class_weights=balanced",
        "train.optimizer.name=sgd",
        "train.optimizer.nesterov=true",
        "train.schedule.name=cosine",
        "model.num_layers=2",
        "model.dropout=0.2",
        "data.bucket=false",
        "data.normalize=false",
        "model.init=glorot_orthogonal",
    )
    assert len(result.history) == 2


def test_a_non_finite_first_metric_does_not_block_later_improvements():
    from lstm_cli.training import _metric_better

    assert _metric_better("val_loss", 0.5, float("nan"), 0.0)
    assert _metric_better("val_accuracy", 0.5, float("nan"), 0.0)
    assert not _metric_better("val_loss", float("nan"), 0.5, 0.0)
    # a first epoch whose validation loss is not finite is no best: its best.npz predicted NaN
    assert not _metric_better("val_loss", float("inf"), None, 0.0)
    assert not _metric_better("val_accuracy", float("nan"), None, 0.0)
    assert _metric_better("val_loss", 0.4, 0.5, 0.0) and not _metric_better(
        "val_loss", 0.49, 0.5, 0.02
    )


def test_a_gain_of_exactly_min_delta_counts():
    """min_delta 0.1 on 10 validation sequences (one more right): 0.7 -> 0.8 counted, but
    0.3 -> 0.4 and 0.6 -> 0.7 did not, as their subtractions round below 0.1."""
    from lstm_cli.training import _metric_better

    for a, b in ((0.1, 0.2), (0.3, 0.4), (0.6, 0.7), (0.7, 0.8)):
        assert _metric_better("val_accuracy", b, a, 0.1), (a, b)
        assert _metric_better("val_loss", a, b, 0.1), (a, b)
    assert not _metric_better("val_accuracy", 0.79, 0.7, 0.1)
    assert not _metric_better("val_loss", 0.71, 0.8, 0.1)


@pytest.mark.parametrize("metric", ["val_loss", "val_accuracy"])
def test_a_tie_is_not_an_improvement(metric):
    from lstm_cli.training import _metric_better

    assert not _metric_better(metric, 0.75, 0.75, 0.0)
    assert not _metric_better(metric, 0.75, 0.75, 0.01)


def test_best_npz_keeps_the_earliest_epoch_of_a_tied_val_accuracy(write_config, tmp_path):
    """README: best.npz is the first epoch that improved; a later epoch with the same
    val_accuracy (the validation accuracy saturates here) does not replace it."""
    over = ("train.early_stopping.metric=val_accuracy", "train.epochs=6")
    result = _fit(write_config(), *over)
    accs = [row["val_accuracy"] for row in result.history]
    first_best = accs.index(max(accs)) + 1
    assert accs.count(max(accs)) > 1, accs  # the task ties, or this test checks nothing
    assert result.best_epoch == first_best, accs
    best = load_checkpoint(str(tmp_path / "run" / "best.npz"))
    assert best.meta["epoch"] == first_best

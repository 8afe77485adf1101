"""lstm-train / lstm-eval / lstm-predict through click's CliRunner."""

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import file_bytes

from lstm_cli.cli import evaluate, predict, train


@pytest.fixture
def runner():
    return CliRunner()


def _train(runner, config, *args):
    return runner.invoke(train, ["--config", config, "--quiet", *args])


def test_train_eval_predict_round_trip(runner, write_config, pattern_files, tmp_path):
    result = runner.invoke(train, ["--config", write_config(), "--set", "train.epochs=3"])
    assert result.exit_code == 0, result.output
    assert "epoch 3/3" in result.stdout and "train loss" in result.stdout
    run = tmp_path / "run"
    ckpt = str(run / "best.npz")

    out_json = tmp_path / "report.json"
    preds = tmp_path / "preds.csv"
    result = runner.invoke(
        evaluate,
        [
            ckpt,
            "--data",
            pattern_files["test"],
            "--json",
            str(out_json),
            "--predictions",
            str(preds),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    report = json.loads(out_json.read_text())
    for key in (
        "accuracy",
        "loss",
        "macro_f1",
        "weighted_f1",
        "per_class",
        "confusion_matrix",
        "labels",
    ):
        assert key in report
    assert report["labels"] == [0, 1, 2] and report["n"] == 90
    assert sum(map(sum, report["confusion_matrix"])) == 90
    rows = list(csv.DictReader(io.StringIO(preds.read_text())))
    assert len(rows) == 90 and set(rows[0]) == {
        "index",
        "true_label",
        "predicted_label",
        "prob_0",
        "prob_1",
        "prob_2",
    }
    assert abs(sum(float(rows[0][f"prob_{k}"]) for k in range(3)) - 1.0) < 1e-5
    acc = sum(r["true_label"] == r["predicted_label"] for r in rows) / 90
    assert acc == pytest.approx(report["accuracy"])

    result = runner.invoke(predict, [ckpt, "--data", pattern_files["test"]])
    assert result.exit_code == 0, result.output
    pred_rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["predicted_label"] for r in pred_rows] == [r["predicted_label"] for r in rows]

    result = runner.invoke(evaluate, [ckpt, "--data", pattern_files["test"], "--json", "-"])
    assert json.loads(result.stdout)["accuracy"] == report["accuracy"]
    # JSON to stdout by another name (the process's fd 1): no table runs into it
    result = runner.invoke(
        evaluate, [ckpt, "--data", pattern_files["test"], "--json", "/dev/stdout"]
    )
    assert result.exit_code == 0 and result.stdout == "", result.output


def test_help_and_version(runner):
    for cmd in (train, evaluate, predict):
        r = runner.invoke(cmd, ["--help"])
        assert r.exit_code == 0 and "Example" in r.output
        assert runner.invoke(cmd, ["--version"]).output.startswith("lstm_cli ")


def test_print_config(runner, write_config):
    r = runner.invoke(
        train, ["--config", write_config(), "--print-config", "--set", "model.head=all"]
    )
    assert r.exit_code == 0
    assert "head: all" in r.stdout and "hidden_size: 16" in r.stdout


def test_usage_errors_exit_2(runner, tmp_path):
    assert runner.invoke(train, []).exit_code == 2
    assert runner.invoke(train, ["--config", str(tmp_path / "missing.yaml")]).exit_code == 2
    assert runner.invoke(evaluate, [str(tmp_path / "missing.npz"), "--data", "x"]).exit_code == 2
    # --resume names the folder: another given by --set was ignored (exit 0, nothing there)
    for other in (["--output", "b"], ["--set", "output.dir=b"], ["--set", " output.dir =b"]):
        r = runner.invoke(train, ["--resume", str(tmp_path), *other])
        assert r.exit_code == 2 and "already names the run folder" in r.stderr, r.output


def test_bad_config_exits_3_without_traceback(runner, write_config):
    r = _train(runner, write_config(), "--set", "model.hiden_size=3")
    assert r.exit_code == 3
    assert (
        "unknown key 'model.hiden_size'" in r.stderr
        and "did you mean 'model.hidden_size'" in r.stderr
    )
    assert "Traceback" not in r.output


def test_debug_shows_the_traceback_and_keeps_the_exit_code(runner, write_config):
    r = _train(runner, write_config(), "--set", "model.hidden_size=0", "--debug")
    assert r.exit_code == 3
    assert "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_a_model_too_large_for_the_machine_is_refused_before_allocating(
    runner, write_config, tmp_path
):
    from lstm_cli.cli import gradcheck

    for key in ("model.hidden_size=50000000", "model.num_layers=100000000"):
        r = _train(runner, write_config(), "--set", key, "--set", "train.class_weights={0: 2.0}")
        assert r.exit_code == 3, r.output
        assert r.stderr.startswith("Error: model: a model with") and "GiB" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    r = runner.invoke(gradcheck, ["--hidden-size", "50000000"])  # usage, not a failed gradient
    assert r.exit_code == 2 and "GiB" in r.output
    r = runner.invoke(
        gradcheck, ["--config", write_config(), "--set", "model.hidden_size=50000000"]
    )
    assert r.exit_code == 3 and "GiB" in r.stderr


def test_out_of_memory_is_one_line(runner, write_config, monkeypatch):
    from lstm_cli.training import Trainer

    def no_memory(self, *args, **kwargs):
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000)")

    monkeypatch.setattr(Trainer, "run", no_memory)
    r = _train(runner, write_config())
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.startswith("Error: out of memory: Unable to allocate 74.5 GiB")


def test_eval_and_predict_refuse_to_write_over_their_inputs(
    runner, write_config, pattern_files, tmp_path
):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    ckpt = str(tmp_path / "run" / "best.npz")
    data = pattern_files["test"]
    before = file_bytes(tmp_path / "run"), Path(data).read_bytes()
    for cmd, args in (
        (evaluate, ["--json", ckpt]),
        (evaluate, ["--predictions", data]),
        (predict, ["--output", ckpt]),
        (predict, ["--output", data]),
    ):
        r = runner.invoke(cmd, [ckpt, "--data", data, *args])
        assert r.exit_code == 2, r.output
        assert "would destroy it" in r.output
    assert (file_bytes(tmp_path / "run"), Path(data).read_bytes()) == before


def test_bad_data_exits_4_and_leaves_the_run_folder_alone(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    before = file_bytes(tmp_path / "run")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": [[1, 2, 3]], "y": 0}\n{"x": [[1, 2]], "y": 1}\n')
    r = _train(runner, write_config(), "--set", f"data.train={bad}", "--overwrite")
    assert r.exit_code == 4
    assert "bad.jsonl" in r.stderr and "line 2" in r.stderr
    assert file_bytes(tmp_path / "run") == before


def test_non_empty_run_folder_needs_overwrite(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    r = _train(runner, write_config(), "--set", "train.epochs=1")
    assert r.exit_code == 3 and "--overwrite" in r.stderr
    assert _train(runner, write_config(), "--set", "train.epochs=1", "--overwrite").exit_code == 0


@pytest.mark.parametrize("inside", [False, True], ids=["the-folder", "a-parent"])
def test_a_dangling_symlink_as_the_run_folder_is_named(runner, write_config, tmp_path, inside):
    """makedirs says only "File exists" for a symbolic link to something missing."""
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nowhere")
    out = link / "run" if inside else link
    r = _train(runner, write_config(), "--output", str(out), "--set", "train.epochs=1")
    assert r.exit_code == 3, r.output
    assert f"{str(link)!r} is a symbolic link to {str(tmp_path / 'nowhere')!r}" in r.stderr
    assert "which does not exist" in r.stderr and not (tmp_path / "nowhere").exists()


def test_resume_from_the_command_line(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=2").exit_code == 0
    r = runner.invoke(train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=3"])
    assert r.exit_code == 0, r.output
    assert "resuming" in r.stdout and "epoch 3/3" in r.stdout
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_class_weights_mixing_int_and_str_labels_train_and_resume(runner, write_config, tmp_path):
    # YAML gives {0: 2.0, "1": 0.5} an int and a str key; both name a label by its text.
    weights = 'train.class_weights={0: 2.0, "1": 0.5}'
    r = _train(runner, write_config(), "--set", "train.epochs=1", "--set", weights)
    assert r.exit_code == 0, r.output
    assert {"best.npz", "last.npz"} <= {p.name for p in (tmp_path / "run").iterdir()}
    r = runner.invoke(
        train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_eval_errors(runner, write_config, pattern_files, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    ckpt = str(tmp_path / "run" / "best.npz")
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"x": [[1, 2, 3]], "y": 0}\n{"x": [[1, 2, 3]], "y": 7}\n')
    r = runner.invoke(evaluate, [ckpt, "--data", str(unknown)])
    assert r.exit_code == 4 and "label 7" in r.stderr
    r = runner.invoke(evaluate, [ckpt, "--data", str(unknown), "--allow-unknown", "--json", "-"])
    assert r.exit_code == 0 and json.loads(r.stdout)["unknown_labels"] == 1
    wrong_f = tmp_path / "wrong.jsonl"
    wrong_f.write_text('{"x": [[1, 2]], "y": 0}\n')
    r = runner.invoke(predict, [ckpt, "--data", str(wrong_f)])
    assert r.exit_code == 4 and "2 features" in r.stderr
    broken = tmp_path / "broken.npz"
    broken.write_bytes(Path(ckpt).read_bytes()[:200])
    r = runner.invoke(evaluate, [str(broken), "--data", pattern_files["test"]])
    assert r.exit_code == 5 and "broken.npz" in r.stderr and "Traceback" not in r.output


def test_unlabelled_data_predicts(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text('{"x": [[1, 2, 3], [0, 0, 1]]}\n{"x": [[1, 2, 3]]}\n')
    out = tmp_path / "p.csv"
    r = runner.invoke(
        predict, [str(tmp_path / "run" / "best.npz"), "--data", str(nolabel), "--output", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 3


def test_csv_label_type_from_the_config(runner, tmp_path):
    """data.csv.label_type reaches the CSV reader: 'str' keeps integer-looking labels as text."""
    import yaml

    rows = ["id,label,a,b"] + [
        f"{n},{n % 2},{n * 0.1:.2f},{(n % 3) * 1.0:.1f}" for n in range(40) for _ in range(3)
    ]
    data = tmp_path / "d.csv"
    data.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": str(data), "valid_fraction": 0.0, "csv": {"label_type": "str"}},
                "model": {"hidden_size": 4},
                "train": {"epochs": 1},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    assert _train(runner, str(cfg)).exit_code == 0
    from lstm_cli.store.checkpoint import load_checkpoint

    assert load_checkpoint(str(tmp_path / "run" / "last.npz")).meta["classes"] == ["0", "1"]


# ------------------------------------------------ failed runs lose nothing, errors name files


def test_overwrite_run_that_fails_before_a_checkpoint_leaves_the_earlier_run_alone(
    runner, write_config, tmp_path
):
    assert _train(runner, write_config(), "--set", "train.epochs=2").exit_code == 0
    run = tmp_path / "run"
    before = file_bytes(run)
    assert set(before) == {
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "last.npz",
        "best.npz",
        "summary.json",
    }
    # the first update makes every weight huge -> the first loss is not finite (exit 6)
    r = _train(
        runner,
        write_config(),
        "--overwrite",
        "--set",
        "train.optimizer.weight_decay=1e300",
        "--set",
        "train.optimizer.name=sgd",
        "--set",
        "train.optimizer.lr=1.0",
    )
    assert r.exit_code == 6, r.output
    assert "earlier run's files" in r.stderr and "untouched" in r.stderr
    assert file_bytes(run) == before


def test_an_epoch_whose_last_step_overflows_the_parameters_is_exit_6(
    runner, write_config, tmp_path
):
    """With lr 3e38 and one batch per epoch, the losses stayed finite but the first update
    made the weights inf: the run exited 0, its best.npz held inf (lstm-eval refused it),
    or with val_loss it ended with no best.npz at all."""
    huge = ["--set", "train.optimizer.lr=3e38", "--set", "train.batch_size=100000"]
    for metric in ("val_loss", "val_accuracy"):
        out = tmp_path / metric
        args = ["--set", "train.epochs=1", "--set", f"train.early_stopping.metric={metric}"]
        r = _train(runner, write_config(), "--output", str(out), *huge, *args)
        assert r.exit_code == 6, r.output
        assert "the parameters are not finite after the update" in r.stderr
        assert list(out.iterdir()) == []
    # mid-epoch (a checkpoint every step): the overflowing update was saved as last.npz
    out = tmp_path / "every"
    args = ["--set", "train.checkpoint_every_steps=1", "--set", "train.batch_size=8"]
    r = _train(runner, write_config(), "--output", str(out), *huge[:2], *args)
    assert r.exit_code == 6 and "step 1: the parameters are not finite" in r.stderr, r.output
    assert list(out.iterdir()) == []


def test_a_run_whose_every_validation_loss_overflows_is_exit_6(
    runner, write_config, tmp_path, monkeypatch
):
    """It exited 0 with no best.npz (summary best_epoch 0), and logged a test accuracy of
    the untrained weights; an error stopping later said best.npz was kept."""
    from lstm_cli.training import Trainer

    real = Trainer.losses_and_probs

    def overflowing(self, ds, y):
        losses, probs = real(self, ds, y)
        return np.full_like(losses, np.inf) if ds is self.data.valid else losses, probs

    monkeypatch.setattr(Trainer, "losses_and_probs", overflowing)
    r = _train(runner, write_config(), "--set", "train.epochs=2")
    assert r.exit_code == 6, r.output
    assert "no epoch had a finite val_loss" in r.stderr
    assert "last.npz in" in r.stderr and "is from epoch 2, untouched; no epoch had a " in r.stderr
    assert not (tmp_path / "run" / "best.npz").exists()


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_its_folder_empty(
    runner, write_config, tmp_path
):
    """It wrote config.yaml at once, so the same command, mended, was refused as a
    non-empty folder (and --resume found nothing to resume): it now needed --overwrite
    for a run that never happened."""
    diverge = ["train.optimizer.weight_decay=1e300", "train.optimizer.name=sgd"]
    r = _train(runner, write_config(), *(a for s in diverge for a in ("--set", s)))
    assert r.exit_code == 6 and "wrote no checkpoint" in r.stderr, r.output
    assert list((tmp_path / "run").iterdir()) == []
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_overwrite_replaces_the_earlier_run_once_it_has_a_checkpoint(
    runner, write_config, tmp_path, monkeypatch
):
    from lstm_cli.errors import TrainingError
    from lstm_cli.training import Trainer

    assert _train(runner, write_config(), "--set", "train.epochs=2").exit_code == 0
    run = tmp_path / "run"
    old_last = (run / "last.npz").read_bytes()
    real_step = Trainer._train_step

    def fail_at_step_3(self, idx, epoch):
        if self.step == 2:
            raise TrainingError(f"stopped for the test. {self.kept()}")
        return real_step(self, idx, epoch)

    monkeypatch.setattr(Trainer, "_train_step", fail_at_step_3)
    r = _train(
        runner,
        write_config(),
        "--overwrite",
        "--set",
        "train.checkpoint_every_steps=1",
        "--set",
        "train.epochs=5",
    )
    assert r.exit_code == 6, r.output
    # this run's last.npz (step 1) and config.yaml; the earlier run's best.npz, metrics and
    # summary are gone (a best.npz of another run would be resumed from)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "last.npz"]
    assert (run / "last.npz").read_bytes() != old_last
    assert "epochs: 5" in (run / "config.yaml").read_text()
    assert "inside epoch 1" in r.stderr


def test_epoch_seconds_leave_out_mid_epoch_checkpoint_writes(
    runner, write_config, tmp_path, monkeypatch
):
    """metrics' seconds (and so sequences_per_second) cover the training steps only: on a
    clock that moves only while a checkpoint is written they are 0, where they counted
    each train.checkpoint_every_steps write of the epoch."""
    import types

    from lstm_cli.training import loop

    clock = [0.0]
    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0])  # loop's only use
    real_save = loop.save_checkpoint

    def slow_save(*args, **kwargs):
        clock[0] += 1000.0
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "time", fake_time)
    monkeypatch.setattr(loop, "save_checkpoint", slow_save)
    every_step = ["--set", "train.checkpoint_every_steps=1", "--set", "train.epochs=2"]
    r = _train(runner, write_config(), *every_step)
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [row["seconds"] for row in rows] == [0.0, 0.0]


def test_a_folder_in_the_way_of_an_earlier_run_file_is_one_line(runner, write_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").mkdir()  # a folder where a run file goes
    (run / "summary.json" / "keep").write_text("x")
    r = _train(runner, write_config(), "--overwrite", "--set", "train.epochs=1")
    assert r.exit_code == 1, r.output
    assert (
        "cannot remove" in r.stderr and "summary.json" in r.stderr and "Traceback" not in r.output
    )
    assert len(r.stderr.strip().splitlines()) == 1
    assert (run / "summary.json" / "keep").read_text() == "x"


def test_a_run_file_that_cannot_be_written_is_one_line(runner, write_config, tmp_path, monkeypatch):
    import errno

    from lstm_cli.store import atomic as atomic_mod

    real = atomic_mod.atomic_write_text

    def disk_full(path, text):
        if str(path).endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, text)

    monkeypatch.setattr(atomic_mod, "atomic_write_text", disk_full)
    r = _train(runner, write_config(), "--set", "train.epochs=1")
    assert r.exit_code == 1, r.output
    assert (
        r.stderr
        == f"Error: cannot write {tmp_path / 'run' / 'metrics.jsonl'}: No space left on device\n"
    )


def test_overwrite_never_leaves_two_runs_mixed(runner, write_config, tmp_path, monkeypatch):
    # The first checkpoint of an --overwrite run fails between best.npz and last.npz (disk
    # full): the earlier run's files must be gone, not left beside the new best.npz (a
    # resume would continue the old run with the new run's best weights).
    from lstm_cli.store import checkpoint as ckpt_mod

    assert (
        _train(
            runner, write_config(), "--set", "train.epochs=2", "--set", "model.hidden_size=8"
        ).exit_code
        == 0
    )
    run = tmp_path / "run"
    real = ckpt_mod.atomic_write

    def disk_full_on_last(path, write):
        if str(path).endswith("last.npz"):
            raise OSError(28, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(ckpt_mod, "atomic_write", disk_full_on_last)
    r = _train(runner, write_config(), "--overwrite", "--set", "model.hidden_size=12")
    assert r.exit_code == 5 and "No space left on device" in r.stderr, r.output
    assert sorted(p.name for p in run.iterdir()) == ["best.npz", "config.yaml"]
    assert "hidden_size: 12" in (run / "config.yaml").read_text()
    monkeypatch.undo()
    r = runner.invoke(train, ["--resume", str(run)])
    assert r.exit_code == 5 and "last.npz" in r.stderr  # nothing to resume, said plainly


@pytest.mark.parametrize(
    "other_settings", [{"model": {"hidden_size": 12}}, {"train": {"seed": 1, "epochs": 1}}],
    ids=["other-shapes", "same-shapes"],
)  # fmt: skip
def test_resume_refuses_a_best_npz_of_another_run(runner, write_config, tmp_path, other_settings):
    other = write_config(
        name="other.yaml", output={"dir": str(tmp_path / "other")}, **other_settings
    )
    assert _train(runner, other, "--set", "train.epochs=1").exit_code == 0
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    run = tmp_path / "run"
    (run / "best.npz").write_bytes((tmp_path / "other" / "best.npz").read_bytes())
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2"])
    assert r.exit_code == 5, r.output
    assert str(run / "best.npz") in r.stderr and "Traceback" not in r.output


def test_resume_after_a_crash_between_best_and_last_npz(runner, write_config, tmp_path):
    """best.npz is saved before last.npz: a crash between the two leaves a best.npz one
    epoch ahead of last.npz. Resuming accepts it and repeats that epoch as it ran."""
    from lstm_cli.store.checkpoint import load_checkpoint

    run = tmp_path / "run"
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    epoch1_last = (run / "last.npz").read_bytes()
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 0, r.output
    best = load_checkpoint(str(run / "best.npz"))
    assert best.meta["epoch"] == 2  # the premise: epoch 2 was the best
    (run / "last.npz").write_bytes(epoch1_last)  # as if the crash came before last.npz
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 0, r.output
    again = load_checkpoint(str(run / "best.npz"))
    timing = ("seconds", "sequences_per_second")
    rows = [[{k: v for k, v in row.items() if k not in timing} for row in c.meta["history"]]
            for c in (best, again)]  # fmt: skip
    assert rows[0] == rows[1] and again.meta["epoch"] == 2
    for k in best.params:
        assert (again.params[k] == best.params[k]).all()


def test_outputs_beside_an_npy_data_folder_s_arrays_are_fine(
    runner, write_config, pattern_files, tmp_path
):
    from lstm_cli.data import load_dataset, write_npy_dir

    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    ckpt = str(tmp_path / "run" / "best.npz")
    npd = tmp_path / "npd"
    write_npy_dir(load_dataset(pattern_files["test"]), str(npd))
    for _ in range(2):  # the second run replaces its own earlier output
        r = runner.invoke(
            predict, [ckpt, "--data", str(npd), "--output", str(npd / "preds.csv"), "--quiet"]
        )
        assert r.exit_code == 0, r.output
    before = (npd / "x.npy").read_bytes()
    r = runner.invoke(predict, [ckpt, "--data", str(npd), "--output", str(npd / "x.npy")])
    assert r.exit_code == 2 and "would destroy it" in r.output
    assert (npd / "x.npy").read_bytes() == before


def test_resume_after_the_training_data_changed(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    cfg_train = yaml_train_path(write_config())
    with open(cfg_train) as fh:
        rows = [json.loads(line) for line in fh]
    with open(cfg_train, "w") as fh:  # one feature fewer at every step
        for row in rows:
            fh.write(json.dumps({"x": [step[:-1] for step in row["x"]], "y": row["y"]}) + "\n")
    r = runner.invoke(train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2"])
    assert r.exit_code == 4, r.output
    assert cfg_train in r.stderr and "features" in r.stderr and "Traceback" not in r.output
    with open(cfg_train, "w") as fh:  # a label the run never saw
        for n, row in enumerate(rows):
            fh.write(json.dumps({"x": row["x"], "y": 9 if n == 0 else row["y"]}) + "\n")
    r = runner.invoke(train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2"])
    assert r.exit_code == 4 and "labels" in r.stderr, r.output


def test_resume_from_a_checkpoint_without_optimizer_state_names_it(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    run = tmp_path / "run"
    (run / "last.npz").write_bytes(
        (run / "best.npz").read_bytes()
    )  # best.npz has no optimizer state
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2"])
    assert r.exit_code == 5, r.output
    assert str(run / "last.npz") in r.stderr and "Traceback" not in r.output


def yaml_train_path(config_path):
    import yaml

    with open(config_path) as fh:
        return yaml.safe_load(fh)["data"]["train"]


def test_a_value_that_overflows_once_normalised_is_refused_before_training(
    runner, write_config, pattern_files, tmp_path
):
    # training features scaled by 1e-5 (std ~1e-5); one test value of 1e34 is finite in
    # float32 but 1e39 once normalised: refused before anything is written, naming it
    train_small, test_big = tmp_path / "train_small.jsonl", tmp_path / "test_big.jsonl"
    with open(pattern_files["train"]) as src, open(train_small, "w") as dst:
        for line in src:
            row = json.loads(line)
            dst.write(
                json.dumps({"x": [[v * 1e-5 for v in step] for step in row["x"]], "y": row["y"]})
                + "\n"
            )
    with open(pattern_files["test"]) as src, open(test_big, "w") as dst:
        for n, line in enumerate(src):
            row = json.loads(line)
            if n == 7:
                row["x"][2][1] = 1e34
            dst.write(json.dumps(row) + "\n")
    r = _train(runner, write_config(data={"train": str(train_small), "test": str(test_big)}))
    assert r.exit_code == 4, r.output
    assert str(test_big) in r.stderr and "sequence 7, step 3, feature 2" in r.stderr
    assert not (tmp_path / "run").exists()


def test_ctrl_c_before_the_first_checkpoint_of_an_overwrite_run_keeps_the_earlier_run(
    runner, write_config, tmp_path, monkeypatch
):
    import signal

    from lstm_cli.training import Trainer

    assert _train(runner, write_config(), "--set", "train.epochs=2").exit_code == 0
    run = tmp_path / "run"
    before = file_bytes(run)
    real_step = Trainer._train_step

    def ctrl_c_at_step_3(self, idx, epoch):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # caught by the trainer's guard
        return real_step(self, idx, epoch)

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_at_step_3)
    r = _train(runner, write_config(), "--overwrite", "--set", "model.hidden_size=12")
    assert r.exit_code == 130, r.output
    assert "earlier run's files" in r.stderr and "untouched" in r.stderr
    assert file_bytes(run) == before


def test_resuming_an_early_stopped_run_trains_no_further(runner, write_config, tmp_path):
    # lr 0 never improves: early stopping after patience + 1 epochs
    stop = (
        "--set",
        "train.optimizer.lr=1e-12",
        "--set",
        "train.early_stopping.patience=2",
        "--set",
        "train.schedule.name=constant",
    )
    r = _train(runner, write_config(), *stop)
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    epochs = len((run / "metrics.jsonl").read_text().splitlines())
    assert epochs < 12
    last = (run / "last.npz").read_bytes()
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=30"])
    assert r.exit_code == 0 and "nothing left to train" in r.stdout, r.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == epochs
    assert (run / "last.npz").read_bytes() == last
    assert "epochs: 30" in (run / "config.yaml").read_text()  # the run's config as continued


def test_resume_checks_the_config_first_and_refuses_fewer_epochs(runner, write_config, tmp_path):
    assert _train(runner, write_config(), "--set", "train.epochs=3").exit_code == 0
    run = tmp_path / "run"
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2"])
    assert r.exit_code == 3 and "below the 3 epochs" in r.stderr, r.output
    other = write_config(name="other.yaml", model={"hidden_size": 12})
    r = runner.invoke(train, ["--resume", str(run), "--config", other])
    assert r.exit_code == 3 and "model.hidden_size" in r.stderr, r.output


def test_resume_may_change_how_mpi_processes_share_the_work(runner, write_config, tmp_path):
    """train.distributed chooses only that, as the process count does (which may change
    on resume); changing it was refused as a change "that breaks the run"."""
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    run = tmp_path / "run"
    sets = ["--set", "train.epochs=2", "--set", "train.distributed=always"]
    r = runner.invoke(train, ["--resume", str(run), *sets, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "distributed: always" in (run / "config.yaml").read_text()


def test_dash_means_stdout_for_every_output(
    runner, write_config, pattern_files, tmp_path, monkeypatch
):
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    ckpt = str(tmp_path / "run" / "best.npz")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(predict, [ckpt, "--data", pattern_files["test"], "--output", "-"])
    assert r.exit_code == 0 and r.stdout.startswith("index,predicted_label,prob_0")
    r = runner.invoke(
        evaluate, [ckpt, "--data", pattern_files["test"], "--predictions", "-", "--quiet"]
    )
    assert r.exit_code == 0 and r.stdout.startswith("index,true_label,predicted_label")
    assert len(r.stdout.splitlines()) == 91
    assert not (tmp_path / "-").exists()


def test_resume_refuses_training_data_that_was_reordered(runner, write_config, tmp_path):
    # same sequences, labels and feature count, another order: the seeded validation split
    # would now hold sequences the run trained on
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    path = yaml_train_path(write_config())
    lines = Path(path).read_text().splitlines(keepends=True)
    Path(path).write_text("".join(lines[1:] + lines[:1]))
    r = runner.invoke(train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2"])
    assert r.exit_code == 4, r.output
    assert path in r.stderr and "changed since the run started" in r.stderr
    Path(path).write_text("".join(lines))  # restored: resumes
    r = runner.invoke(
        train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2", "--quiet"]
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("recorded", [True, False])
@pytest.mark.parametrize("change", ["swap", "grow"])
def test_resume_refuses_a_split_drawn_otherwise(
    runner, write_config, tmp_path, monkeypatch, recorded, change
):
    """Same data and config, a split drawn otherwise (a new rounding rule, another numpy):
    the resumed run trained on sequences it had validated on, silently. recorded=False: a
    checkpoint from before the split was recorded, known by its normalisation."""
    from lstm_cli.training import prepare

    with monkeypatch.context() as mp:
        if not recorded:
            mp.setattr(prepare.PreparedData, "split", lambda self: None)
        assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    real = prepare.stratified_split

    def drawn_otherwise(labels, fraction, rng):
        tr, va = real(labels, fraction, rng)
        if change == "grow":  # one more validates
            return tr[1:], np.sort(np.append(va, tr[0]))
        return np.sort(np.append(tr[1:], va[0])), np.sort(np.append(va[1:], tr[0]))

    resume = ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2", "--quiet"]
    with monkeypatch.context() as mp:
        mp.setattr(prepare, "stratified_split", drawn_otherwise)
        r = runner.invoke(train, resume)
    assert r.exit_code == 4 and "splits the training data" in r.stderr, r.output
    if recorded:
        how = "other sequences validate" if change == "swap" else "sequences train and"
    else:
        how = "its normalisation statistics differ"
    assert how in r.stderr, r.stderr
    r = runner.invoke(train, resume)  # split as it was: resumes
    assert r.exit_code == 0, r.output


def test_resume_with_a_validation_file_that_grew_goes_on(
    runner, write_config, pattern_files, tmp_path
):
    """Nothing is drawn from a data.valid file: its new size was refused as a split "this
    version of lstm_cli (or numpy)" draws otherwise (exit 4)."""
    valid = tmp_path / "valid.jsonl"
    lines = Path(pattern_files["test"]).read_text().splitlines(keepends=True)
    valid.write_text("".join(lines[:40]))
    config = write_config(data={"valid": str(valid)})
    assert _train(runner, config, "--set", "train.epochs=1").exit_code == 0
    valid.write_text("".join(lines[:60]))
    r = runner.invoke(train, ["--resume", str(tmp_path / "run"), "--set", "train.epochs=2"])
    assert r.exit_code == 0, r.output


def test_the_run_folder_lock_is_released_on_every_exit_path(
    runner, write_config, tmp_path, monkeypatch
):
    from lstm_cli.errors import TrainingError
    from lstm_cli.training import LOCK_NAME, Trainer

    run = tmp_path / "run"
    lock = run / LOCK_NAME
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    assert not lock.exists()  # normal end
    r = _train(runner, write_config(), "--set", "train.epochs=1")
    assert r.exit_code == 3 and "not empty" in r.stderr and not lock.exists()  # refused folder

    def stop(self, idx, epoch):
        raise TrainingError("stopped for the test")

    monkeypatch.setattr(Trainer, "_train_step", stop)
    r = _train(runner, write_config(), "--overwrite")
    assert r.exit_code == 6 and not lock.exists(), r.output  # an error inside the run

    def bug(self, idx, epoch):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Trainer, "_train_step", bug)
    r = runner.invoke(train, ["--resume", str(run), "--quiet", "--set", "train.epochs=2"])
    assert isinstance(r.exception, RuntimeError) and not lock.exists()  # a bug, on resume
    monkeypatch.undo()
    assert runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2"]).exit_code == 0


def test_a_held_run_folder_is_refused_with_exit_3_naming_it(runner, write_config, tmp_path):
    from lstm_cli.training import RunLock

    run = tmp_path / "run"
    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    before = file_bytes(run)
    held = RunLock(str(run))
    held.acquire()
    try:
        for args in (["--config", write_config(), "--overwrite"], ["--resume", str(run)]):
            r = runner.invoke(train, [*args, "--quiet"])
            assert r.exit_code == 3, r.output
            assert r.stderr == (
                f"Error: run folder {str(run)!r} is in use by another training (pid "
                f"{os.getpid()}); wait for it to end or choose another folder\n"
            )
    finally:
        held.release()
    assert file_bytes(run) == before  # the holder's files untouched, its lock gone with it
    assert _train(runner, write_config(), "--overwrite", "--set", "train.epochs=1").exit_code == 0


def test_fine_tuning_starts_from_train_init_from(runner, write_config, tmp_path):
    """train.init_from: the run starts from the checkpoint's parameters (here one that
    lstm-import wrote from a PyTorch export, when those extras are installed, else the
    first run's own best.npz); a different architecture is exit 5 naming the file."""
    import numpy as np

    from lstm_cli.store.checkpoint import load_checkpoint

    first = tmp_path / "first"
    r = _train(runner, write_config(), "--output", str(first), "--set", "train.epochs=2")
    assert r.exit_code == 0, r.output
    start = first / "best.npz"
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401

        from lstm_cli.cli import export, import_

        st = tmp_path / "model.safetensors"
        assert runner.invoke(export, [str(start), "--to", "pytorch", str(st)]).exit_code == 0
        start = tmp_path / "imported.npz"
        assert runner.invoke(import_, [str(st), str(start)]).exit_code == 0
    except ImportError:
        pass
    tuned = tmp_path / "tuned"
    r = _train(  # an SGD step of 1e-300 leaves the parameters where they started
        runner,
        write_config(),
        "--output", str(tuned),
        "--set", f"train.init_from={start}",
        "--set", "train.epochs=1",
        "--set", "train.optimizer.name=sgd",
        "--set", "train.optimizer.lr=1e-300",
        "--set", "model.dtype=float64",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    a, b = load_checkpoint(str(start)).params, load_checkpoint(str(tuned / "last.npz")).params
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7)  # float32 -> float64
    # other shapes, and what changes the function without changing the shapes
    for setting in ("model.hidden_size=3", "model.head=mean", "model.forget_bias=0.0"):
        r = _train(
            runner,
            write_config(),
            "--output", str(tmp_path / "other"),
            "--set", f"train.init_from={start}",
            "--set", setting,
        )  # fmt: skip
        assert r.exit_code == 5 and str(start) in r.stderr and "train.init_from" in r.stderr
        if "hidden_size" not in setting:
            assert f"its {setting.split('=')[0]} is" in r.stderr, r.stderr


def test_a_fine_tuned_run_resumes_without_its_init_from_checkpoint(runner, write_config, tmp_path):
    """last.npz holds all a resume needs: the checkpoint the run started from may be gone
    (the resume read it again, exit 5 when it was deleted)."""
    first, tuned = tmp_path / "first", tmp_path / "tuned"
    assert _train(runner, write_config(), "--output", str(first)).exit_code == 0
    r = _train(
        runner,
        write_config(),
        "--output", str(tuned),
        "--set", f"train.init_from={first / 'best.npz'}",
        "--set", "train.epochs=1",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    shutil.rmtree(first)
    r = runner.invoke(train, ["--resume", str(tuned), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tuned / "summary.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize(
    "where,value,needle",
    [
        ("history", [1, 2, 3], "its history is not one metrics row per epoch"),
        ("history", [], "its history has 0 epochs, its state 1"),
        (
            "partial_epoch",
            {"position": 9, "order": [1]},
            "the state of its unfinished epoch is malformed",
        ),
        (
            "partial_epoch",
            {"batches": [[10**6]], "position": 0},
            "the state of its unfinished epoch is malformed",
        ),
        ("step", None, "its train_state step is None, not a count"),
        ("best_value", "zz", "its train_state best_value is 'zz', not a number"),
        ("rng_state", -1, ""),  # numpy's OverflowError: was a traceback
        ("split", [3, 1], "its split is [3, 1], not a mapping"),
    ],
    ids=[
        "history_not_rows",
        "history_short",
        "partial_no_batches",
        "partial_bad_index",
        "step_null",
        "best_value_text",
        "rng_negative",
        "split_not_mapping",
    ],
)
def test_resume_refuses_a_last_npz_whose_progress_is_malformed(
    runner, write_config, tmp_path, where, value, needle
):
    """A last.npz that verifies (its checksum re-signed) but whose history or unfinished
    epoch the trainer cannot go on from: exit 5 naming it, before anything is written."""
    from lstm_cli.store.checkpoint import load_checkpoint, save_checkpoint

    assert _train(runner, write_config(), "--set", "train.epochs=1").exit_code == 0
    run = tmp_path / "run"
    ckpt = load_checkpoint(str(run / "last.npz"))
    meta = json.loads(json.dumps(ckpt.meta))
    if where == "history":
        meta["history"] = value
    elif where == "rng_state":
        meta["rng_state"]["state"]["inc"] = value
    elif where == "partial_epoch":
        meta["train_state"]["partial_epoch"] = value
    elif where == "split":
        meta["split"] = value
    else:
        meta["train_state"][where] = value
    save_checkpoint(str(run / "last.npz"), ckpt.params, meta, ckpt.optim_arrays or None)
    before = file_bytes(run)
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 5, r.output
    assert f"{run / 'last.npz'}: cannot resume from it: {needle}" in r.stderr
    assert "Traceback" not in r.output and file_bytes(run) == before


def test_a_split_that_carves_no_validation_says_so_and_trains(runner, write_config, tmp_path):
    """One sequence per class: data.valid_fraction leaves nothing to validate on. The run
    goes on as with valid_fraction 0 (best checkpoint on the training loss, early stopping
    off) and the log says so, naming the file and the fraction."""
    data = tmp_path / "one_per_class.jsonl"
    data.write_text('{"x": [[0.1, 0.2]], "y": 0}\n{"x": [[0.3, 0.4], [0.5, 0.6]], "y": 1}\n')
    sets = [f"data.train={data}", "data.test=null", "data.valid_fraction=0.2"]
    sets += ["train.early_stopping.patience=1", "train.epochs=3"]
    r = runner.invoke(train, ["--config", write_config(), *[a for s in sets for a in ("--set", s)]])
    assert r.exit_code == 0, r.output
    assert f"data.valid_fraction 0.2 of the 2 sequences of {data} leaves none" in r.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["valid_sequences"] == 0 and summary["best_metric"] == "train_loss"
    assert summary["epochs_run"] == 3 and not summary["stopped_early"]


def test_a_data_file_among_the_run_files_is_refused(runner, write_config, tmp_path):
    """data.train named metrics.jsonl inside output.dir: --overwrite would replace the data
    with this run's metrics (final sweep). Refused (exit 3) before anything is written."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"x": [[0.1 * i, 0.2]], "y": i % 2} for i in range(12)]
    data = run / "metrics.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = data.read_bytes()
    r = runner.invoke(
        train,
        ["--config", write_config(), "--set", f"data.train={data}", "--set", "data.test=null"]
        + ["--output", str(run), "--overwrite", "--quiet"],
    )
    assert r.exit_code == 3, r.output
    assert f"'data.train' {data} is the run folder's metrics.jsonl" in r.stderr
    assert data.read_bytes() == before and sorted(os.listdir(run)) == ["metrics.jsonl"]


@pytest.mark.parametrize("where", ["best.npz", "fold-1/best.npz"])
def test_an_init_from_among_the_run_files_is_refused(runner, write_config, tmp_path, where):
    """train.init_from OUT/best.npz with --overwrite: the take-over removed it, so member 1
    of an ensemble could not read it (exit 5, the earlier run gone, no resume possible),
    and a single run replaced its own starting point."""
    config = write_config(train={"epochs": 1})
    run = tmp_path / "run"
    earlier = "0" if where == "best.npz" else "2"  # a single run, or an ensemble
    assert _train(runner, config, "--set", f"train.folds={earlier}").exit_code == 0
    before = {d: file_bytes(str(d)) for d in (run, run / "fold-0", run / "fold-1") if d.exists()}
    init = run / where
    assert init.is_file()
    for folds in ("0", "2"):
        r = _train(runner, config, "--set", f"train.init_from={init}", "--overwrite",
                   "--set", f"train.folds={folds}")  # fmt: skip
        assert r.exit_code == 3, r.output
        assert f"'train.init_from' {init} is the run folder's best.npz" in r.stderr, r.stderr
    assert {d: file_bytes(str(d)) for d in before} == before


def test_labels_with_line_breaks_keep_the_eval_tables_one_line_per_row(runner, tmp_path):
    """A JSONL label may hold a line break or a tab; the tables show it escaped, so each
    class is one row of the per-class table and of the confusion matrix."""
    data = tmp_path / "d.jsonl"
    rows = [
        json.dumps({"x": [[float(k % 2)], [float(k % 3)]], "y": ["two\nlines", "tab\there"][k % 2]})
        for k in range(16)
    ]
    data.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{train: {data}}}\nmodel: {{hidden_size: 4}}\n"
        f"train: {{epochs: 1, batch_size: 8}}\noutput: {{dir: {tmp_path / 'run'}}}\n"
    )
    assert _train(runner, str(cfg)).exit_code == 0
    r = runner.invoke(evaluate, [str(tmp_path / "run" / "best.npz"), "--data", str(data)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    for label in ("two\\nlines", "tab\\there"):
        assert sum(line.startswith(label) for line in lines) == 2, r.stdout  # both tables
    assert not any(line.startswith(("lines", "here")) for line in lines)


def test_the_last_line_gives_the_training_figures_without_validation(runner, write_config):
    """Without validation the best epoch is chosen on the training loss: the last line
    gives that loss and accuracy, not dashes for validation figures that do not exist."""
    r = runner.invoke(
        train,
        ["--config", write_config(), "--set", "train.epochs=2", "--set", "data.valid_fraction=0"],
    )
    assert r.exit_code == 0, r.output
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("best epoch") and "train loss 0." in last and "train acc" in last
    assert "val" not in last, last


def test_a_config_given_without_config_is_a_usage_error_that_says_so(
    runner, write_config, monkeypatch
):
    r = runner.invoke(train, [write_config()])
    assert r.exit_code == 2
    assert f"a config is given as --config {write_config()}" in r.stderr, r.stderr
    r = runner.invoke(train, ["--config", write_config(), "extra.txt"])
    assert r.exit_code == 2 and "unexpected extra argument (extra.txt)" in r.stderr
    assert "--config extra.txt" not in r.stderr
    # the stray one is named, not the --config given (its name is part of the stray's)
    monkeypatch.chdir(os.path.dirname(write_config()))
    r = runner.invoke(train, ["--config", "config.yaml", "sub/config.yaml"])
    assert r.exit_code == 2 and "a config is given as --config sub/config.yaml" in r.stderr


def test_resume_after_the_training_file_changed_its_labels_or_features(
    runner, write_config, pattern_files, tmp_path
):
    """The training file rewritten since: other labels, or other features per step, is exit
    4 naming the file and both (the labels cut short as any shown value is); the run's
    files stay as they were."""
    from lstm_cli.validate import show

    r = _train(runner, write_config(data={"test": None}), "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    run, path = tmp_path / "run", pattern_files["train"]
    before = file_bytes(run)
    rows = [json.loads(line) for line in open(path)]
    with open(path, "w") as fh:  # label 2 -> 7: classes [0, 1, 7]
        fh.writelines(json.dumps({**d, "y": 7 if d["y"] == 2 else d["y"]}) + "\n" for d in rows)
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 4, r.output
    assert (
        f"cannot resume {run}: the labels of the training data {path} are now [0, 1, 7]; "
        "the run was trained on [0, 1, 2]" in r.stderr
    )
    many = [{**d, "y": i} for i, d in enumerate(rows)]  # one label per sequence: shown cut
    with open(path, "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in many)
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 4 and f"are now {show(list(range(len(rows))))};" in r.stderr
    with open(path, "w") as fh:  # a fourth feature per step
        fh.writelines(json.dumps({**d, "x": [s + [0.0] for s in d["x"]]}) + "\n" for d in rows)
    r = runner.invoke(train, ["--resume", str(run), "--set", "train.epochs=2", "--quiet"])
    assert r.exit_code == 4, r.output
    assert "now has 4 features per step; the run was trained on 3" in r.stderr
    assert file_bytes(run) == before


def test_overwrite_replaces_symlinked_run_files_without_writing_through(
    runner, write_config, tmp_path
):
    """--overwrite removes an earlier run's symlinked files as links, their targets kept;
    config.yaml was written through its link, so the file it linked to (a config kept
    outside the run folder) was replaced by the new run's."""
    config = write_config(data={"test": None})
    assert _train(runner, config, "--set", "train.epochs=1").exit_code == 0
    run, keep = tmp_path / "run", tmp_path / "keep"
    keep.mkdir()
    for name in ("config.yaml", "best.npz", "metrics.csv"):
        (run / name).rename(keep / name)
        (run / name).symlink_to(keep / name)
    kept = file_bytes(keep)
    r = _train(runner, config, "--set", "train.epochs=2", "--overwrite")
    assert r.exit_code == 0, r.output
    assert file_bytes(keep) == kept
    for name in ("config.yaml", "best.npz", "metrics.csv"):
        assert not (run / name).is_symlink(), name
    assert "epochs: 2" in (run / "config.yaml").read_text()

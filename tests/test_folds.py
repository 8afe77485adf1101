"""train.folds: a cross-validated ensemble. The fold assignment, each member's split and
generator, the ensemble run folder (members, out-of-fold and test reports), resume,
overwrite and the errors."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import file_bytes

from lstm_cli.cli import evaluate, predict, train
from lstm_cli.config import dump_config, load_config
from lstm_cli.data import load_dataset, stratified_folds
from lstm_cli.inference import load_trained, predict_dataset
from lstm_cli.store.checkpoint import load_checkpoint
from lstm_cli.training import prepare_data
from lstm_cli.training.folds import member_config
from lstm_cli.training.prepare import run_rng
from lstm_cli.training.rundir import LOCK_NAME, RunLock

K = 3


def test_stratified_folds_partition_every_class_evenly():
    y = np.array([0] * 7 + [1] * 5 + [2] * 3 + [3] * 2)
    folds = stratified_folds(y, K, np.random.default_rng(0))
    every = np.concatenate(folds)
    assert sorted(every.tolist()) == list(range(len(y)))  # disjoint and covering
    assert all((np.diff(f) > 0).all() for f in folds)  # sorted
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for c, count in enumerate(np.bincount(y)):
        per_fold = [int((y[f] == c).sum()) for f in folds]
        assert set(per_fold) <= {count // K, count // K + 1} and sum(per_fold) == count
    again = stratified_folds(y, K, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))  # seeded
    other = stratified_folds(y, K, np.random.default_rng(1))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))


def test_a_label_with_one_sequence_is_in_no_fold():
    y = np.array(["a", "a", "x", "b", "b", "a"])
    folds = stratified_folds(y, K, np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == [0, 1, 3, 4, 5]  # not 2, the lone 'x'


def test_each_member_validates_on_its_fold_and_trains_on_the_rest(write_config):
    cfg = load_config(write_config(train={"folds": K, "seed": 4}))
    labels = load_dataset(cfg.data.train).labels
    folds = stratified_folds(labels, K, np.random.default_rng(4))
    inits = []
    for i in range(K):
        mcfg = member_config(cfg, i)
        assert mcfg.train.fold == i and mcfg.output.dir.endswith(f"fold-{i}")
        data = prepare_data(mcfg, run_rng(mcfg))
        np.testing.assert_array_equal(data.valid_index, folds[i])
        assert len(data.train) + len(data.valid) == len(labels)
        np.testing.assert_array_equal(data.valid.labels, labels[folds[i]])
        inits.append(run_rng(mcfg).random())
    assert len(set(inits)) == K  # members start from different generators


def _run(*args):
    return CliRunner().invoke(train, [*args, "--quiet"])


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """A 3-member ensemble of the tiny config with a test file."""
    root = tmp_path_factory.mktemp("folds")
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    test = os.path.join(os.path.dirname(__file__), "..", "data", "synthetic", "test.jsonl")
    out = str(root / "ens")
    r = _run("--config", config, "--set", f"train.folds={K}", "--set", f"data.test={test}",
             "--output", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, test


# a non-finite first loss: a run that fails before its first checkpoint
DIVERGE = ["--set", "train.optimizer.weight_decay=1e300", "--set", "train.optimizer.name=sgd"]


def _copy_of(ensemble, tmp_path):
    """A copy of the ensemble in tmp_path/ens: (its folder, a function giving the bytes of
    every file in it and in its member folders)."""
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)

    def tree():
        return {d: file_bytes(os.path.join(out, d)) for d in ["", *(f"fold-{i}" for i in range(K))]}

    return out, tree


def _summary(out):
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        return json.load(fh)


def test_the_ensemble_folder_holds_its_members_and_reports(ensemble):
    out, test = ensemble
    summary = _summary(out)
    assert summary["members"] == [f"fold-{i}/best.npz" for i in range(K)]
    assert summary["folds"] == K and len(summary["member_best"]) == K
    assert load_config(os.path.join(out, "config.yaml")).train.fold is None
    cfg = load_config(os.path.join(out, "config.yaml"))
    train_ds = load_dataset(cfg.data.train)
    folds = stratified_folds(train_ds.labels, K, np.random.default_rng(cfg.train.seed))
    # out of fold: each training sequence as predicted by the one member that held it out
    correct = []
    for i, fold in enumerate(folds):
        assert load_config(os.path.join(out, f"fold-{i}", "config.yaml")).train.fold == i
        tm = load_trained(os.path.join(out, f"fold-{i}", "best.npz"))
        probs = predict_dataset(tm.model, tm.prepare(train_ds.view(fold)), tm.mean, tm.std)
        want = [tm.classes.index(v) for v in train_ds.labels[fold].tolist()]
        correct += list(probs.argmax(1) == np.array(want))
    oof = summary["out_of_fold"]
    assert oof["n"] == len(train_ds) and oof["accuracy"] == pytest.approx(np.mean(correct))
    # the test report is lstm-eval's of the members as one ensemble
    members = [os.path.join(out, m) for m in summary["members"]]
    r = CliRunner().invoke(evaluate, [*members, "--data", test, "--json", "-"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert summary["test"]["accuracy"] == pytest.approx(report["accuracy"])
    assert summary["test"]["loss"] == pytest.approx(report["loss"], rel=1e-6)


def test_resume_trains_only_the_members_that_did_not_finish(ensemble, tmp_path):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    before = _summary(out)
    fold0 = file_bytes(os.path.join(out, "fold-0"))
    shutil.rmtree(os.path.join(out, "fold-2"))  # never started
    os.remove(os.path.join(out, "fold-1", "summary.json"))  # stopped after its last.npz
    os.remove(os.path.join(out, "summary.json"))
    r = _run("--resume", out)
    assert r.exit_code == 0, r.output
    assert file_bytes(os.path.join(out, "fold-0")) == fold0  # finished: untouched
    assert os.path.isfile(os.path.join(out, "fold-2", "best.npz"))
    after = _summary(out)
    assert after["out_of_fold"] == before["out_of_fold"] and after["test"] == before["test"]


def test_resume_with_more_epochs_trains_every_member_longer(ensemble, tmp_path):
    """As for a single run: --resume --set train.epochs=N continues finished members to N
    epochs (and the ensemble's config.yaml and summary say so); fewer than they ran is
    refused, changing nothing."""
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    epochs = load_config(os.path.join(out, "config.yaml")).train.epochs
    r = _run("--resume", out, "--set", f"train.epochs={epochs - 1}")
    assert r.exit_code == 3 and "train.epochs" in r.stderr, r.output
    assert load_config(os.path.join(out, "config.yaml")).train.epochs == epochs
    r = _run("--resume", out, "--set", f"train.epochs={epochs + 1}")
    assert r.exit_code == 0, r.output
    for i in range(K):
        with open(os.path.join(out, f"fold-{i}", "metrics.jsonl"), encoding="utf-8") as fh:
            assert len(fh.read().splitlines()) == epochs + 1
    assert [m["epochs_run"] for m in _summary(out)["member_best"]] == [epochs + 1] * K
    assert load_config(os.path.join(out, "config.yaml")).train.epochs == epochs + 1
    members = [file_bytes(os.path.join(out, f"fold-{i}")) for i in range(K)]
    r = _run("--resume", out, "--set", f"train.epochs={epochs + 1}")  # now nothing to do
    assert r.exit_code == 0, r.output
    assert [file_bytes(os.path.join(out, f"fold-{i}")) for i in range(K)] == members


def test_resume_refuses_a_changed_config(ensemble, tmp_path):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    r = _run("--resume", out, "--set", "model.hidden_size=4")
    assert r.exit_code == 3 and "cannot resume" in r.stderr and "model.hidden_size" in r.stderr


def test_overwrite_replaces_an_earlier_run_and_its_extra_members(ensemble, tmp_path):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    config = os.path.join(out, "config.yaml")
    r = _run("--config", config, "--output", out, "--set", "train.folds=2")
    assert r.exit_code == 3 and "--overwrite" in r.stderr  # not without --overwrite
    assert _summary(out)["folds"] == K
    r = _run("--config", config, "--output", out, "--set", "train.folds=2", "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(n for n in os.listdir(out) if n.startswith("fold-")) == ["fold-0", "fold-1"]
    assert _summary(out)["folds"] == 2
    # the clean-up of members beyond K released their locks, not this ensemble's own
    assert not os.path.exists(os.path.join(out, ".lstm-train.lock"))


def test_a_parallel_overwrite_takes_the_folder_over_at_a_member_s_first_checkpoint(
    ensemble, tmp_path
):
    """With --jobs the take-over ran as the members started, so a run failing in epoch 1
    lost the earlier ensemble; now the first member about to write asks for it."""
    out, tree = _copy_of(ensemble, tmp_path)
    before = tree()
    config = os.path.join(ensemble[0], "config.yaml")
    r = _run("--config", config, "--output", out, "--overwrite", "--jobs", "2", *DIVERGE)
    assert r.exit_code == 6, r.output
    assert tree() == before
    new = ["--set", "train.folds=2", "--set", "train.epochs=1"]
    r = _run("--config", config, "--output", out, "--overwrite", "--jobs", "2", *new)
    assert r.exit_code == 0, r.output
    assert sorted(n for n in os.listdir(out) if n.startswith("fold-")) == ["fold-0", "fold-1"]
    assert (
        _summary(out)["folds"] == 2
        and load_config(os.path.join(out, "config.yaml")).train.epochs == 1
    )
    for i in range(2):
        assert _summary(os.path.join(out, f"fold-{i}"))["epochs_run"] == 1


def test_a_single_run_over_an_ensemble_retires_its_members(ensemble, tmp_path):
    """The member folders stayed beside the new run's files, each a whole earlier run
    (lstm-eval OUT/fold-0/best.npz read the earlier ensemble's model)."""
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    before = {d: file_bytes(os.path.join(out, d)) for d in ["", "fold-0", "fold-1", "fold-2"]}
    config = os.path.join(ensemble[0], "config.yaml")
    single = ["--config", config, "--output", out, "--overwrite", "--set", "train.folds=0"]
    assert _run(*single, *DIVERGE).exit_code == 6  # before its first checkpoint: all kept
    assert {d: file_bytes(os.path.join(out, d)) for d in before} == before
    shutil.rmtree(os.path.join(out, "fold-1"))  # a gap: fold-2 is still a member
    held = RunLock(os.path.join(out, "fold-2"))  # a training running in a member folder
    held.acquire()
    try:
        r = _run(*single, "--set", "train.epochs=1")
        assert r.exit_code == 3 and "fold-2' is in use by another training" in r.stderr
        kept = file_bytes(os.path.join(out, "fold-2"))
        assert {n: b for n, b in kept.items() if n != ".lstm-train.lock"} == before["fold-2"]
    finally:
        held.release()
    r = _run(*single, "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    assert not [n for n in os.listdir(out) if n.startswith("fold-")]
    assert os.path.isfile(os.path.join(out, "best.npz"))


def test_a_single_run_s_overwrite_leaves_other_runs_in_folders_named_like_members(tmp_path):
    """Beside a single run, OUT/fold-0 is no member of it: a first version of the fix
    above emptied any fold-i, another run's included."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    out = tmp_path / "run"
    args = ["--config", config, "--set", "train.epochs=1"]
    assert _run(*args, "--output", str(out)).exit_code == 0
    assert _run(*args, "--output", str(out / "fold-0")).exit_code == 0
    nested = file_bytes(str(out / "fold-0"))
    assert _run(*args, "--output", str(out), "--overwrite").exit_code == 0
    assert file_bytes(str(out / "fold-0")) == nested


def test_an_ensemble_replaces_a_single_run_s_files_when_its_members_start(ensemble, tmp_path):
    out = str(tmp_path / "run")
    config = os.path.join(ensemble[0], "config.yaml")
    assert _run("--config", config, "--output", out, "--set", "train.folds=0").exit_code == 0
    assert os.path.isfile(os.path.join(out, "best.npz"))
    r = _run("--config", config, "--output", out, "--overwrite")
    assert r.exit_code == 0, r.output
    assert not os.path.exists(os.path.join(out, "best.npz"))
    assert not os.path.exists(os.path.join(out, "last.npz"))
    assert _summary(out)["folds"] == K


def test_an_ensemble_s_overwrite_leaves_other_runs_in_folders_named_like_members(tmp_path):
    """The take-over emptied every fold-i up to the first gap, beside a single run too: a
    run of its own in OUT/fold-2, even one in training, lost its files."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    out = tmp_path / "run"
    args = ["--config", config, "--set", "train.epochs=1"]
    assert _run(*args, "--output", str(out)).exit_code == 0
    for i in range(3):
        assert _run(*args, "--output", str(out / f"fold-{i}")).exit_code == 0
    nested = {i: file_bytes(str(out / f"fold-{i}")) for i in range(3)}
    ensemble = [*args, "--output", str(out), "--overwrite"]
    r = _run(*ensemble, "--set", "train.folds=2")  # fold-0 and fold-1 are not its members
    assert r.exit_code == 3 and "fold-0 holds a run that is not a member" in r.stderr, r.output
    assert {i: file_bytes(str(out / f"fold-{i}")) for i in range(3)} == nested
    for i in range(2):  # empty now: fold-2 is the next after them
        shutil.rmtree(out / f"fold-{i}")
        os.mkdir(out / f"fold-{i}")
    (out / "fold-0" / LOCK_NAME).write_text("12345\n")  # a killed run's: no run
    held = RunLock(str(out / "fold-2"))  # a training running in it
    held.acquire()
    try:
        r = _run(*ensemble, "--set", "train.folds=2")
        assert r.exit_code == 0, r.output
    finally:
        held.release()
    assert file_bytes(str(out / "fold-2")) == nested[2]
    assert _summary(str(out))["folds"] == 2
    # unheld too: the end of an ensemble used to empty every fold-i with i >= K
    r = _run(*ensemble, "--set", "train.folds=2", "--set", "train.seed=5")
    assert r.exit_code == 0, r.output
    assert file_bytes(str(out / "fold-2")) == nested[2]


def test_only_canonically_named_folders_are_an_ensemble_s_members(tmp_path):
    """fold-01 beside fold-0 is no member folder (earlier_members once listed names by
    range(folds); reading the folder must not take in fold-01 as member 1)."""
    from lstm_cli.training.rundir import earlier_members, member_index

    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    cfg = load_config(config, ["train.folds=2"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    for name in ("fold-0", "fold-01", "fold-1x", "fold-2"):
        (tmp_path / name).mkdir()
    assert earlier_members(str(tmp_path)) == ["fold-0"]
    assert [member_index(n) for n in ("fold-0", "fold-12", "fold-01", "fold-", "fold-+1")] == [
        0, 12, None, None, None]  # fmt: skip


def test_the_take_over_refuses_an_earlier_member_another_training_took_meanwhile(
    ensemble, tmp_path, monkeypatch
):
    """Locked as the run starts, each earlier member is locked again when its files go:
    one another training started in since is left whole, and so is the rest."""
    from lstm_cli.training import folds

    out, tree = _copy_of(ensemble, tmp_path)
    before = tree()
    held = RunLock(os.path.join(out, "fold-1"))
    real = folds._TakeOver.__call__

    def took_meanwhile(self, training=()):
        held.acquire()
        return real(self, training)

    monkeypatch.setattr(folds._TakeOver, "__call__", took_meanwhile)
    config = os.path.join(ensemble[0], "config.yaml")
    try:
        r = _run("--config", config, "--output", out, "--overwrite")
        assert r.exit_code == 3 and "fold-1' is in use by another training" in r.stderr
        after = tree()
        after["fold-1"].pop(".lstm-train.lock")
        assert after == before
    finally:
        held.release()


def _stopped_at_member(monkeypatch, fold):
    """Make member ``fold`` stop as a Ctrl-C before its first checkpoint stops it."""
    from lstm_cli.errors import Interrupted
    from lstm_cli.training import folds

    real_fit = folds.MemberTask.fit

    def fit(self, **kwargs):
        if self.fold == fold:
            raise Interrupted("SIGINT: training stopped in epoch 1", 2)
        return real_fit(self, **kwargs)

    monkeypatch.setattr(folds.MemberTask, "fit", fit)


def test_a_stopped_resume_to_more_epochs_resumes_to_them(ensemble, tmp_path, monkeypatch):
    """The ensemble's config.yaml took the larger train.epochs only at the end: after a
    stop, --resume read the old one and refused fold-0, which had run more epochs than it
    (exit 3), or kept members "finished" at the old count."""
    out, _ = _copy_of(ensemble, tmp_path)
    epochs = load_config(os.path.join(out, "config.yaml")).train.epochs
    with monkeypatch.context() as mp:
        _stopped_at_member(mp, 1)
        r = _run("--resume", out, "--set", f"train.epochs={epochs + 1}")
        assert r.exit_code == 130, r.output
    assert load_config(os.path.join(out, "config.yaml")).train.epochs == epochs + 1
    r = _run("--resume", out)
    assert r.exit_code == 0, r.output
    assert [m["epochs_run"] for m in _summary(out)["member_best"]] == [epochs + 1] * K


def test_resume_refuses_a_finished_member_of_other_data(tmp_path, monkeypatch):
    """fold-0 finished, fold-1 stopped before its first checkpoint, then the training file
    changed: --resume kept fold-0 and trained fold-1 on the new data (exit 0)."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    full = os.path.join(os.path.dirname(__file__), "..", "data", "synthetic", "train.jsonl")
    data, out = tmp_path / "d.jsonl", str(tmp_path / "ens")
    lines = open(full, encoding="utf-8").read().splitlines(keepends=True)
    data.write_text("".join(lines))
    args = ["--config", config, "--set", f"data.train={data}", "--set", "train.folds=2"]
    with monkeypatch.context() as mp:
        _stopped_at_member(mp, 1)
        assert _run(*args, "--output", out).exit_code == 130
    data.write_text("".join(lines[: len(lines) * 2 // 3]))
    r = _run("--resume", out)
    assert r.exit_code == 4 and "fold-0: the training data" in r.stderr, r.output
    assert not os.path.exists(os.path.join(out, "fold-1", "best.npz"))
    # the data back, but the ensemble's config another run's (a take-over in between)
    data.write_text("".join(lines))
    path = os.path.join(out, "config.yaml")
    cfg = load_config(path)
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + 1))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dump_config(other))
    r = _run("--resume", out)
    assert r.exit_code == 3 and "fold-0: the config changed" in r.stderr, r.output


def test_a_new_ensemble_killed_before_any_checkpoint_leaves_no_folder_behind(tmp_path):
    """Its killed members left their lock files: the folder was kept as something to
    resume, and the same command was refused as a non-empty folder (exit 3)."""
    from lstm_cli.training.folds import _forget_if_unstarted

    out = tmp_path / "ens"
    for i in range(2):
        (out / f"fold-{i}").mkdir(parents=True)
        (out / f"fold-{i}" / LOCK_NAME).write_text("12345\n")  # no process holds them
    (out / "config.yaml").write_text("data: {train: x.jsonl}\n")
    _forget_if_unstarted(str(out), 2)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("earlier", ["ensemble", "single run"])
def test_resume_after_a_stopped_overwrite_continues_the_new_ensemble(
    ensemble, tmp_path, monkeypatch, earlier
):
    """--overwrite stopped in its second member, over a 3-member ensemble or a single run,
    then --resume: the new 2-member ensemble (seed 7) is finished, its second member
    trained over the earlier run's fold-1. It used to read the earlier config.yaml and
    finish a 3-member ensemble with the new fold-0 in it (leaky out-of-fold figures),
    refuse the new members as a config change, or resume the single run (exit 0)."""
    out = str(tmp_path / "ens")
    config = os.path.join(ensemble[0], "config.yaml")
    if earlier == "ensemble":
        shutil.copytree(ensemble[0], out)
    else:
        assert _run("--config", config, "--output", out, "--set", "train.folds=0").exit_code == 0
    new = ["--set", "train.folds=2", "--set", "train.seed=7"]
    with monkeypatch.context() as mp:
        _stopped_at_member(mp, 1)
        r = _run("--config", config, "--output", out, "--overwrite", *new)
    assert r.exit_code == 130, r.output
    assert f"Continue with: lstm-train --resume {out}" in r.stderr
    r = CliRunner().invoke(train, ["--resume", out])
    assert r.exit_code == 0, r.output
    if earlier == "ensemble":
        assert "fold 2 of 2: training" in r.output  # the earlier fold-1 went at the take-over
    summary = _summary(out)
    assert summary["folds"] == 2 and summary["members"] == ["fold-0/best.npz", "fold-1/best.npz"]
    for i in (0, 1):
        member = load_trained(os.path.join(out, f"fold-{i}", "best.npz")).meta["config"]["train"]
        assert (member["folds"], member["fold"], member["seed"]) == (2, i, 7)
    assert not os.path.exists(os.path.join(out, "fold-2"))
    assert not os.path.exists(os.path.join(out, "last.npz"))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["train.folds=1"], "'train.folds' is 1"),
        (["train.fold=3"], "must be below 'train.folds' (3)"),
        (["data.valid=x.jsonl"], "'data.valid' must be null"),
    ],
)
def test_config_errors_exit_3(write_config, tmp_path, sets, message):
    args = ["--config", write_config(train={"folds": K})]
    r = _run(*args, *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 3 and message in r.stderr, r.output
    assert not os.path.exists(tmp_path / "run")


def test_a_lone_label_trains_in_every_member_and_is_left_out_of_fold(
    write_config, pattern_files, tmp_path
):
    rows = open(pattern_files["train"]).read().splitlines()
    lone = json.loads(rows[0])
    lone["y"] = 99
    bad = tmp_path / "lone.jsonl"
    bad.write_text("\n".join([json.dumps(lone), *rows[1:]]) + "\n")
    cfg = write_config(data={"train": str(bad), "test": None}, train={"folds": K, "epochs": 1})
    r = _run("--config", cfg)
    assert r.exit_code == 0, r.output
    summary = _summary(str(tmp_path / "run"))
    assert summary["out_of_fold"]["n"] == len(rows) - 1
    assert 99 in summary["classes"]
    for i in range(K):
        data = prepare_data(member_config(load_config(cfg), i), np.random.default_rng(0))
        assert 0 not in data.valid_index and 99 in data.train.labels.tolist()


def test_too_few_sequences_for_the_folds_exit_4_before_anything_is_written(
    write_config, tmp_path, pattern_files
):
    rows = open(pattern_files["train"]).read().splitlines()
    ys = [json.loads(r)["y"] for r in rows]
    few = tmp_path / "few.jsonl"
    keep = [next(r for r, y in zip(rows, ys) if y == c) for c in sorted(set(ys))] * 2
    few.write_text("\n".join(keep) + "\n")  # 2 of each label
    n = len(keep)
    cfg = write_config(data={"train": str(few), "test": None}, train={"folds": n + 1})
    r = _run("--config", cfg)
    assert r.exit_code == 4 and f"train.folds {n + 1} needs at least" in r.stderr, r.output
    assert f"it has {n}. Give a smaller train.folds" in r.stderr
    assert not os.path.exists(tmp_path / "run")
    assert yaml.safe_load(open(cfg))["train"]["folds"] == n + 1
    few.write_text("\n".join(keep[: len(keep) // 2]) + "\n")  # one of each: no fold at all
    r = _run("--config", write_config(data={"train": str(few), "test": None}, train={"folds": 2}))
    assert r.exit_code == 4 and "it has 0. Give train.folds 0 (one model)" in r.stderr, r.output


def test_plotting_an_ensemble_folder_draws_its_members_and_out_of_fold_matrix(ensemble, tmp_path):
    from lstm_cli.cli import plot

    pytest.importorskip("matplotlib")
    figures = tmp_path / "plots"
    r = CliRunner().invoke(plot, [ensemble[0], "--out", str(figures)])
    assert r.exit_code == 0, r.output
    expected = [f"fold-{i}/learning_curves.png" for i in range(K)]
    expected += ["member_curves.png", "out_of_fold_confusion_matrix.png"]
    assert r.stdout.splitlines() == [f"wrote {figures / name}" for name in expected]
    for name in expected:
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # with a report: its confusion matrix beside the out-of-fold one (it was drawn over it)
    report = tmp_path / "report.json"
    r = CliRunner().invoke(evaluate, [ensemble[0], "--data", ensemble[1], "--json", str(report)])
    assert r.exit_code == 0, r.output
    oof = (figures / "out_of_fold_confusion_matrix.png").read_bytes()
    r = CliRunner().invoke(plot, [ensemble[0], "--out", str(figures), "--report", str(report)])
    assert r.exit_code == 0, r.output
    wrote = r.stdout.splitlines()
    assert len(set(wrote)) == len(wrote) and f"wrote {figures / 'confusion_matrix.png'}" in wrote
    assert (figures / "out_of_fold_confusion_matrix.png").read_bytes() == oof
    # unfinished (no summary.json): one line, exit 4, nothing drawn
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    os.remove(os.path.join(out, "summary.json"))
    r = CliRunner().invoke(plot, [out, "--out", str(tmp_path / "none")])
    assert r.exit_code == 4 and f"lstm-train --resume {out}" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "none").exists()
    # without matplotlib: exit 7 before any member is looked for
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "matplotlib", None)
        mp.setitem(sys.modules, "matplotlib.pyplot", None)
        r = CliRunner().invoke(plot, [out, "--out", str(tmp_path / "none")])
    assert r.exit_code == 7 and "optional extra 'plot'" in r.stderr, r.output


def test_eval_and_predict_take_the_ensemble_folder_and_only_its_members(ensemble, tmp_path):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    test = ensemble[1]
    # an earlier run's extra member must not be mixed in (the summary lists the members)
    shutil.copytree(os.path.join(out, "fold-1"), os.path.join(out, f"fold-{K}"))
    members = [os.path.join(out, m) for m in _summary(out)["members"]]
    for command, opts in ((evaluate, ["--json", "-"]), (predict, [])):
        by_files = CliRunner().invoke(command, [*members, "--data", test, *opts])
        by_folder = CliRunner().invoke(command, [out, "--data", test, *opts])
        assert by_folder.exit_code == 0, by_folder.output
        assert by_folder.stdout == by_files.stdout
    # a member's folder is its best.npz
    one = os.path.join(out, "fold-1")
    r = CliRunner().invoke(evaluate, [one, "--data", test, "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["checkpoint"] == os.path.join(one, "best.npz")


def test_eval_of_an_unfinished_ensemble_or_run_folder_exits_5(ensemble, tmp_path):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    os.remove(os.path.join(out, "summary.json"))
    r = CliRunner().invoke(evaluate, [out, "--data", ensemble[1]])
    assert r.exit_code == 5 and f"lstm-train --resume {out}" in r.stderr, r.output
    os.remove(os.path.join(out, "fold-2", "best.npz"))
    r = CliRunner().invoke(evaluate, [os.path.join(out, "fold-2"), "--data", ensemble[1]])
    assert r.exit_code == 5 and "holds no finished run" in r.stderr, r.output
    assert "Traceback" not in r.output


def test_eval_of_an_ensemble_whose_first_member_was_moved_names_it(ensemble, tmp_path):
    """With fold-0 moved away the folder was not taken for an ensemble: exit 5 saying
    "OUT/best.npz does not exist", a file no run of it ever had."""
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    shutil.move(os.path.join(out, "fold-0"), str(tmp_path / "moved"))
    for command in (evaluate, predict):
        r = CliRunner().invoke(command, [out, "--data", ensemble[1]])
        assert r.exit_code == 5, r.output
        assert f"holds no finished run: {out}/fold-0/best.npz does not exist" in r.stderr


def test_a_single_run_beside_a_folder_named_like_a_member_is_not_an_ensemble(ensemble, tmp_path):
    """A run stopped before its first epoch's end (last.npz, no metrics.jsonl) beside the
    user's own fold-3 folder was read as an unfinished ensemble ("no summary.json")."""
    run = tmp_path / "run"
    shutil.copytree(os.path.join(ensemble[0], "fold-1"), run)
    for name in ("metrics.jsonl", "metrics.csv", "best.npz", "summary.json"):
        os.remove(run / name)
    (run / "fold-3").mkdir()
    r = CliRunner().invoke(evaluate, [str(run), "--data", ensemble[1]])
    assert r.exit_code == 5, r.output
    assert f"holds no finished run: {run}/best.npz does not exist" in r.stderr


@pytest.mark.parametrize(
    "members,needle",
    [
        ([], "not an ensemble's summary ('members' is [], not a list of member paths)"),
        ("fold-0/best.npz", "not an ensemble's summary ('members' is 'fold-0/best.npz'"),
        ([3], "not an ensemble's summary ('members' is [3]"),
        (["fold-0"], "holds no finished run: {out}/fold-0 is not a file"),
    ],
    ids=["empty", "a_string", "not_paths", "a_folder"],
)
def test_a_summary_listing_no_member_files_exits_5(ensemble, tmp_path, members, needle):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    summary = _summary(out)
    summary["members"] = members
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh)
    for command in (evaluate, predict):
        r = CliRunner().invoke(command, [out, "--data", ensemble[1]])
        assert r.exit_code == 5, r.output
        assert needle.format(out=out) in r.stderr and "Traceback" not in r.output


def test_export_takes_an_ensemble_folder_or_one_member(ensemble, tmp_path):
    from lstm_cli.cli import export

    pytest.importorskip("safetensors")
    from safetensors import safe_open

    out = ensemble[0]
    r = CliRunner().invoke(export, [out, "--to", "pytorch", str(tmp_path / "e.safetensors")])
    assert r.exit_code == 0 and f"Ensemble of {K}" in r.stderr, r.output
    with safe_open(str(tmp_path / "e.safetensors"), "np") as f:
        assert len(json.loads(f.metadata()["module_args"])) == K
    member = os.path.join(out, "fold-1")
    for name, source in (("dir", member), ("file", os.path.join(member, "best.npz"))):
        r = CliRunner().invoke(
            export, [source, "--to", "pytorch", str(tmp_path / f"{name}.safetensors"), "--quiet"]
        )
        assert r.exit_code == 0, r.output
    from safetensors.numpy import load_file

    a, b = load_file(tmp_path / "dir.safetensors"), load_file(tmp_path / "file.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_parallel_members_give_the_same_ensemble(ensemble, tmp_path):
    out = str(tmp_path / "par")
    config = os.path.join(ensemble[0], "config.yaml")
    r = CliRunner().invoke(train, ["--config", config, "--output", out, "--jobs", "2"])
    assert r.exit_code == 0, r.output
    assert "training fold-0, fold-1, fold-2" in r.output and "fold-2: epoch 2/2" in r.output
    one, par = _summary(ensemble[0]), _summary(out)
    for key in ("out_of_fold", "test", "member_best"):
        assert par[key] == one[key], key
    for m in one["members"]:
        a, b = (load_trained(os.path.join(d, m)).model.params for d in (ensemble[0], out))
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_jobs_with_one_model_trains_it_here_and_says_so(ensemble, tmp_path):
    """A script may pass --jobs to every recipe: a single-model one just trains, with the
    same result as without it."""
    config = os.path.join(ensemble[0], "fold-0", "config.yaml")  # a member: one model
    runs = {}
    for jobs in ("1", "2"):
        out = str(tmp_path / f"j{jobs}")
        r = CliRunner().invoke(train, ["--config", config, "--output", out, "--jobs", jobs])
        assert r.exit_code == 0, r.output
        assert ("trained in this process" in r.stderr) is (jobs == "2"), r.stderr
        runs[jobs] = _summary(out)
    assert runs["1"]["test"] == runs["2"]["test"]
    assert runs["1"]["best_value"] == runs["2"]["best_value"]


def test_jobs_note_for_one_model_comes_from_rank_0_only(ensemble, tmp_path, monkeypatch):
    """Under mpiexec every rank parses the same command line; one of them says it."""
    import lstm_cli.training as training

    monkeypatch.setattr(training, "fit", lambda *a, **k: None)  # no training here
    config = os.path.join(ensemble[0], "fold-0", "config.yaml")
    for rank, said in (("0", True), ("1", False)):
        monkeypatch.setenv("PMI_RANK", rank)
        out = str(tmp_path / f"r{rank}")
        r = CliRunner().invoke(train, ["--config", config, "--output", out, "--jobs", "2"])
        assert r.exit_code == 0, r.output
        assert ("trained in this process" in r.stderr) is said, r.stderr


@pytest.mark.parametrize(
    "signum, code, to",
    [
        (signal.SIGINT, 130, "group"),
        (signal.SIGTERM, 143, "group"),
        (signal.SIGTERM, 143, "every process"),
    ],  # fmt: skip
)
def test_a_signal_stops_parallel_members_resumably(tmp_path, signum, code, to):
    """The signal reaches lstm-train only (as from a terminal, where a Ctrl-C goes to
    the process group it leads), or every process (scancel, systemd: each member gets
    it twice, as it comes and forwarded, which it took as a second signal and saved
    nothing); the running members save last.npz, no other starts."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    run = tmp_path / "run"
    args = ["--config", config, "--set", "train.folds=3", "--set", "train.epochs=400", "--set",
            "model.hidden_size=32", "--output", str(run), "--jobs", "2", "--quiet"]  # fmt: skip
    code_ = "import sys; from lstm_cli.cli import train; sys.argv[0] = 'lstm-train'; train()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code_, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started = [run / f"fold-{i}" / "last.npz" for i in (0, 1)]
    deadline = time.time() + 120
    while not all(p.exists() for p in started) and time.time() < deadline:
        time.sleep(0.05)
    assert all(p.exists() for p in started), "the members did not start"
    if to == "group":
        os.killpg(proc.pid, signum)  # the whole group, as a terminal's Ctrl-C
    else:
        children = [int(pid) for pid in os.listdir("/proc") if _is_member_of(pid, proc.pid)]
        for pid in [proc.pid, *children]:
            os.kill(pid, signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"lstm-train --resume {run}" in err and "Traceback" not in err
    assert "fold-0, fold-1 saved last.npz" in err
    assert not (run / "fold-2").exists() and not (run / "summary.json").exists()
    epochs = [load_checkpoint(str(p)).meta["epoch"] for p in started]
    assert max(epochs) < 400
    r = _run("--resume", str(run), "--set", f"train.epochs={max(epochs) + 1}", "--jobs", "2")
    assert r.exit_code == 0, r.output
    assert _summary(str(run))["folds"] == 3


def test_a_ctrl_c_as_the_members_start_prints_no_traceback(tmp_path):
    """A member is in the terminal's process group until its _child leaves it: a Ctrl-C
    in that first second raised KeyboardInterrupt in its imports, two tracebacks before
    the stop line. The stop signals are blocked in a member until then."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    run = tmp_path / "run"
    args = ["--config", config, "--set", "train.folds=3", "--set", "train.epochs=3",
            "--output", str(run), "--jobs", "2", "--quiet"]  # fmt: skip
    code_ = "import sys; from lstm_cli.cli import train; sys.argv[0] = 'lstm-train'; train()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code_, *args],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline, children = time.time() + 60, []
    while len(children) < 2 and time.time() < deadline:
        children = [pid for pid in os.listdir("/proc") if _is_member_of(pid, proc.pid)]
    assert len(children) == 2, "the members did not start"
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C, while they import
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.count("Error:") == 1 and "SIGINT: training stopped" in err, err


def test_a_parallel_member_killed_is_one_error_line_and_resumable(tmp_path):
    """A member killed (kill -9, the out-of-memory killer) was reported as a bug: a
    RuntimeError traceback, exit 1."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    run = tmp_path / "run"
    args = ["--config", config, "--set", "train.folds=2", "--set", "train.epochs=150", "--set",
            "model.hidden_size=32", "--output", str(run), "--jobs", "2", "--quiet"]  # fmt: skip
    code_ = "import sys; from lstm_cli.cli import train; sys.argv[0] = 'lstm-train'; train()"
    proc = subprocess.Popen([sys.executable, "-c", code_, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "fold-0" / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    children = [int(pid) for pid in os.listdir("/proc") if _is_member_of(pid, proc.pid)]
    assert children, "the members did not start"
    os.kill(children[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "the process training it died (killed by signal 9)" in err
    assert err.count("Error:") == 1 and len(err.splitlines()) == 1, err  # no warnings
    assert err.rstrip().endswith(f"Continue with: lstm-train --resume {run}"), err
    r = _run("--resume", str(run))
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("took_over", [False, True])
def test_a_dead_member_s_message_says_what_a_resume_would_continue(
    ensemble, tmp_path, monkeypatch, took_over
):
    """It said "lstm-train --resume continues the ensemble" when the member died before
    the take-over too, when the folder still held the earlier ensemble (which a resume
    would have finished instead)."""
    from lstm_cli.training import folds
    from lstm_cli.training.members import MemberDied

    def a_member_dies(tasks, jobs, log, before_first_checkpoint=None):
        if took_over:  # fold-1 dies before its first checkpoint
            locks = [RunLock(os.path.join(out, f"fold-{i}")) for i in range(2)]
            for lock in locks:  # as the two members hold them, here
                lock.acquire()
            before_first_checkpoint({0: os.getpid(), 1: os.getpid()})
            for lock in locks:
                lock.release()
        return [MemberDied("fold-1: the process training it died (killed by signal 9)")]

    monkeypatch.setattr(folds, "run_members", a_member_dies)
    out, tree = _copy_of(ensemble, tmp_path)
    before = tree()
    config = os.path.join(ensemble[0], "config.yaml")
    r = _run("--config", config, "--output", out, "--overwrite", "--jobs", "2")
    assert r.exit_code == 1 and r.stderr.count("Error:") == 1, r.output
    end = f"Continue with: lstm-train --resume {out}" if took_over else "Nothing to resume."
    assert r.stderr.rstrip().endswith("(killed by signal 9). " + end), r.stderr
    if took_over:  # the earlier members went: the running ones' files, the others whole
        assert not os.path.exists(os.path.join(out, "fold-2"))
        for i in range(2):  # or --resume kept the earlier fold-1 as a finished member
            assert file_bytes(os.path.join(out, f"fold-{i}")) == {}
    else:
        assert tree() == before


def _is_member_of(pid, parent):
    """Whether /proc/PID is a member process lstm-train ``parent`` spawned (not its
    multiprocessing resource tracker)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read()
    except (OSError, ValueError, IndexError):
        return False
    return ppid == parent and b"spawn_main" in command and b"resource_tracker" not in command


def test_a_signal_says_which_parallel_members_saved_something():
    """It said "fold-0, fold-1 saved last.npz" of every member the signal stopped, also of
    one stopped before its first checkpoint over an earlier run's files (which saves
    nothing) and of one killed before it could catch the signal."""
    from lstm_cli.errors import Interrupted
    from lstm_cli.training.members import _stopped

    outcomes = {
        0: Interrupted("SIGINT: training stopped in epoch 2", 2, resume="r/fold-0"),
        1: Interrupted("SIGINT: training stopped before this run's first checkpoint", 2),
        2: RuntimeError("the process training fold 2 died"),
        3: None,  # it finished as the signal came
    }
    err = _stopped(signal.SIGTERM, outcomes)
    assert (
        err.stopped
        == "SIGTERM: training stopped; fold-0 saved last.npz, fold-1, fold-2 saved nothing"
    )
    assert err.exit_code == 143 and err.resume is None
    assert _stopped(signal.SIGINT, {3: None}).stopped.endswith("no member was training")


def test_parallel_members_stopped_before_writing_leave_nothing_to_resume(tmp_path, monkeypatch):
    """A new ensemble whose members were all stopped before they wrote a file is forgotten
    (its folder emptied), so the message must not say to resume it, as it did."""
    from lstm_cli.errors import Interrupted
    from lstm_cli.training import folds

    def stopped_at_once(tasks, jobs, log, **_):
        raise Interrupted("SIGINT: training stopped; fold-0, fold-1 saved nothing", 2)

    monkeypatch.setattr(folds, "run_members", stopped_at_once)
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    out = tmp_path / "ens"
    r = _run("--config", config, "--set", f"train.folds={K}", "--output", str(out), "--jobs", "2")
    assert r.exit_code == 130, r.output
    assert list(out.iterdir()) == []
    assert r.stderr.rstrip().endswith(f"(members of the ensemble in {out}). Nothing to resume.")


def test_a_parallel_member_s_error_is_the_run_s_error(ensemble, tmp_path):
    out = str(tmp_path / "ens")
    shutil.copytree(ensemble[0], out)
    os.remove(os.path.join(out, "summary.json"))
    for i in (1, 2):
        os.remove(os.path.join(out, f"fold-{i}", "summary.json"))
    bad = os.path.join(out, "fold-1", "last.npz")
    with open(bad, "r+b") as fh:
        fh.truncate(100)
    r = _run("--resume", out, "--jobs", "2")
    assert r.exit_code == 5 and bad in r.stderr, r.output
    assert "Traceback" not in r.output and not os.path.exists(os.path.join(out, "summary.json"))


def test_an_overwrite_that_stops_before_any_checkpoint_leaves_the_earlier_ensemble(
    ensemble, tmp_path, monkeypatch
):
    """A non-finite first loss, or a Ctrl-C, before the first member's first checkpoint:
    the earlier ensemble is byte-identical and lstm-eval still reads it (its summary.json
    and config.yaml were gone, and the message said to resume a run that wrote nothing)."""
    out, tree = _copy_of(ensemble, tmp_path)
    before = tree()
    config = os.path.join(ensemble[0], "config.yaml")
    r = _run("--config", config, "--output", out, "--overwrite", *DIVERGE)
    assert r.exit_code == 6, r.output
    assert tree() == before
    with monkeypatch.context() as mp:
        _stopped_at_member(mp, 0)
        r = _run("--config", config, "--output", out, "--overwrite")
    assert r.exit_code == 130, r.output
    assert "(fold 1 of 3 of the ensemble in" in r.stderr and "Nothing to resume." in r.stderr
    assert "Continue with" not in r.stderr
    assert tree() == before
    assert CliRunner().invoke(evaluate, [out, "--data", ensemble[1]]).exit_code == 0


def _ensemble_on_a_copy_of_the_data(tmp_path, folds, *sets):
    """An ensemble of tiny.yaml trained on a copy of the synthetic training file: (the
    copy, its original lines, the folder, the train arguments that made it)."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    full = os.path.join(os.path.dirname(__file__), "..", "data", "synthetic", "train.jsonl")
    data = tmp_path / "d.jsonl"
    lines = open(full, encoding="utf-8").read().splitlines()
    data.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "ens")
    args = ["--config", config, "--set", f"data.train={data}", "--set", f"train.folds={folds}"]
    assert _run(*args, "--output", out, *sets).exit_code == 0
    return data, lines, out, args


def test_resume_after_a_stopped_overwrite_on_other_data_retrains_the_old_members(
    tmp_path, monkeypatch
):
    """Same config, other training data: the members the stopped --overwrite had not
    reached were kept as finished, so the ensemble mixed members of two data sets; the
    take-over now retires the earlier members' files with the rest."""
    data, lines, out, args = _ensemble_on_a_copy_of_the_data(tmp_path, K)
    data.write_text("\n".join(lines[: len(lines) * 2 // 3]) + "\n")
    with monkeypatch.context() as mp:
        _stopped_at_member(mp, 1)
        assert _run(*args, "--output", out, "--overwrite").exit_code == 130
    r = CliRunner().invoke(train, ["--resume", out])
    assert r.exit_code == 0, r.output
    assert "fold 2 of 3: training" in r.output and "fold 3 of 3: training" in r.output
    prints = {load_trained(os.path.join(out, f"fold-{i}", "best.npz")).meta["data_fingerprint"]
              for i in range(K)}  # fmt: skip
    assert len(prints) == 1


def test_a_signal_in_the_first_members_first_epoch_leaves_an_earlier_single_run(
    ensemble, tmp_path, monkeypatch
):
    """The signal's own save of last.npz used to run the take-over: the earlier run's
    best.npz, metrics and summary were gone and the message said to resume."""
    import time

    from lstm_cli.training import Trainer

    out = str(tmp_path / "run")
    config = os.path.join(ensemble[0], "config.yaml")
    assert _run("--config", config, "--output", out, "--set", "train.folds=0").exit_code == 0
    before = file_bytes(out)
    real_step = Trainer._train_step

    def signal_at_step_2(self, idx, epoch):
        if self.step == 1:
            self._stop_on_signal(signal.SIGINT, time.perf_counter())
        return real_step(self, idx, epoch)

    monkeypatch.setattr(Trainer, "_train_step", signal_at_step_2)
    r = _run("--config", config, "--output", out, "--overwrite")
    assert r.exit_code == 130, r.output
    assert "the earlier run's files are untouched (fold 1 of 3" in r.stderr, r.stderr
    assert r.stderr.rstrip().endswith("Nothing to resume."), r.stderr
    assert file_bytes(out) == before and not os.path.exists(os.path.join(out, "fold-0"))


def test_resume_of_an_ensemble_whose_training_data_changed_is_refused(tmp_path):
    data, lines, out, _ = _ensemble_on_a_copy_of_the_data(tmp_path, 2, "--set", "train.epochs=2")
    data.write_text("\n".join(lines[:400]) + "\n")
    r = _run("--resume", out, "--set", "train.epochs=3")
    assert r.exit_code == 4 and "changed since the run started" in r.stderr, r.output


def test_a_new_ensemble_that_fails_before_any_checkpoint_leaves_its_folder_empty(tmp_path):
    """As a single run does: it left config.yaml and an empty fold-0, so the same command,
    mended, was refused as a non-empty folder (exit 3)."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    out = tmp_path / "ens"
    args = ["--config", config, "--set", f"train.folds={K}", "--output", str(out)]
    r = _run(*args, *DIVERGE)
    assert r.exit_code == 6, r.output
    assert list(out.iterdir()) == []
    r = _run(*args, "--set", "train.epochs=1")
    assert r.exit_code == 0, r.output
    assert _summary(str(out))["folds"] == K


def test_a_member_folder_written_to_during_the_clean_up_keeps_the_error(tmp_path, monkeypatch):
    """A file written into an empty member folder between the check and its removal made
    the clean-up's rmdir raise: an OSError traceback (exit 1) in place of the divergence."""
    from lstm_cli.training import folds

    def rmdir_of_a_folder_written_to(path, *a, **k):
        raise OSError(39, "Directory not empty", path)

    monkeypatch.setattr(folds.os, "rmdir", rmdir_of_a_folder_written_to)
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    out = tmp_path / "ens"
    r = _run("--config", config, "--set", f"train.folds={K}", "--output", str(out), *DIVERGE)
    assert r.exit_code == 6 and "Traceback" not in r.output, r.output


def test_a_member_stopped_after_another_s_take_over_saves_as_a_run_of_its_own(
    write_config, tmp_path, monkeypatch
):
    """--jobs: the take-over (at another member's first checkpoint) removed the earlier
    run's files in this member's folder, yet a signal before its own first checkpoint
    saved nothing, saying the earlier run's files were untouched. Now it saves last.npz
    (asking for the hook first, which has nothing left to do) and names it; a failure's
    message no longer says they are untouched either."""
    from lstm_cli.errors import Interrupted
    from lstm_cli.training import RUN_FILES, Trainer, fit

    cfg = load_config(write_config(train={"epochs": 1}))
    fit(cfg, progress=False, log=lambda m: None)  # the earlier run in the folder
    run = cfg.output.dir

    class Hook:  # as members._AskParent: the parent's take-over already done
        done, calls = False, 0

        def __call__(self):
            self.calls += 1

    hook, real_step, said = Hook(), Trainer._train_step, []

    def taken_over_then_signalled(self, idx, epoch):
        if self.step == 2:  # another member's take-over, then a signal
            for name in RUN_FILES:
                if os.path.exists(os.path.join(run, name)):
                    os.unlink(os.path.join(run, name))
            hook.done = True
            said.append(self.kept())  # what a failure now would say is left
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, idx, epoch)

    monkeypatch.setattr(Trainer, "_train_step", taken_over_then_signalled)
    with pytest.raises(Interrupted) as stop:
        fit(
            dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2)),
            overwrite=True,
            progress=False,
            log=lambda m: None,
            before_first_checkpoint=hook,
        )
    assert stop.value.resume == run and "untouched" not in stop.value.stopped
    assert hook.calls == 1
    assert said == ["No epoch finished, so this run wrote no checkpoint."]
    assert load_checkpoint(os.path.join(run, "last.npz")).meta["train_state"]["step"] == 3
    assert "epochs: 2" in open(os.path.join(run, "config.yaml")).read()


def test_parallel_members_learn_of_the_take_over_another_member_ran(
    write_config, pattern_files, tmp_path
):
    """run_members tells the members waiting to ask that the hook has run: a slow member
    (fold-1) stopped in its first epoch after the fast one's take-over removed its
    earlier files saves last.npz, where it saved nothing and said they were untouched."""
    import threading

    from lstm_cli.data import write_jsonl
    from lstm_cli.data.synthetic import make_pattern_task
    from lstm_cli.errors import Interrupted
    from lstm_cli.training import RUN_FILES, fit
    from lstm_cli.training.members import MemberTask, run_members

    pattern = pattern_files["train"]
    long = str(tmp_path / "long.jsonl")  # fold-1's first epoch: seconds, not milliseconds
    write_jsonl(make_pattern_task(200, 200, 200, 3, 3, np.random.default_rng(0)), long)
    fast = {"model": {"hidden_size": 8}}
    slow = {"model": {"hidden_size": 256}, "data": {"train": long, "test": None}}
    cfgs = []
    for fold, sections in ((0, fast), (1, slow)):
        path = write_config(
            f"c{fold}.yaml", train={"epochs": 2, "batch_size": 4},
            output={"dir": str(tmp_path / f"fold-{fold}")}, **sections,
        )  # fmt: skip
        cfgs.append(load_config(path))
        earlier = ["model.hidden_size=4", "train.epochs=1", f"data.train={pattern}"]
        fit(load_config(path, earlier), progress=False, log=lambda m: None)  # the earlier run

    class TakeOver:  # as folds._TakeOver: the earlier files of every member go, once
        done = False

        def __call__(self, training):
            if not self.done:
                for c in cfgs:
                    for name in RUN_FILES:
                        if os.path.exists(os.path.join(c.output.dir, name)):
                            os.unlink(os.path.join(c.output.dir, name))
                self.done = True

    def signal_once_fold_0_saved():
        first = os.path.join(cfgs[0].output.dir, "best.npz")
        training = os.path.join(cfgs[1].output.dir, LOCK_NAME)  # fold-1 past its data
        deadline = time.time() + 120
        while time.time() < deadline and not (
            take.done and os.path.exists(first) and os.path.exists(training)
        ):
            time.sleep(0.05)
        time.sleep(0.3)  # into its first epoch, which takes seconds
        os.kill(os.getpid(), signal.SIGINT)

    tasks = [MemberTask(f, c, overwrite=True, resume=False) for f, c in enumerate(cfgs)]
    take = TakeOver()
    threading.Thread(target=signal_once_fold_0_saved, daemon=True).start()
    with pytest.raises(Interrupted) as stop:
        run_members(tasks, 2, lambda m: None, before_first_checkpoint=take)
    assert "fold-1 saved last.npz" in stop.value.stopped, stop.value.stopped
    last = load_checkpoint(os.path.join(cfgs[1].output.dir, "last.npz"))
    assert last.meta["train_state"]["epoch"] == 0  # from inside its first epoch


def test_the_take_over_refuses_a_running_member_s_folder_another_training_holds(ensemble, tmp_path):
    """--jobs: a member still reading its data has not locked its folder. The take-over
    emptied it of its run files all the same, also when a standalone `lstm-train
    --resume OUT/fold-1` held it in that window (its files removed under it). Now that
    is exit 3 before anything is removed; a folder no training holds yet is emptied as
    before, so the new ensemble never keeps an earlier member's files."""
    from lstm_cli.errors import ConfigError
    from lstm_cli.training import folds

    out, tree = _copy_of(ensemble, tmp_path)
    before = tree()
    cfg = load_config(os.path.join(out, "config.yaml"))
    earlier = sorted(n for n in os.listdir(out) if n.startswith("fold-"))
    members = {0: os.getpid() + 10**6, 1: os.getpid() + 10**6}  # neither locked yet
    take = folds._TakeOver(out, earlier, cfg)
    held = RunLock(os.path.join(out, "fold-1"))  # another training holds fold-1
    held.acquire()
    try:
        with pytest.raises(ConfigError, match="fold-1' is in use by another training"):
            take(members)
        after = tree()
    finally:
        held.release()
    after["fold-1"].pop(LOCK_NAME)
    assert after == before and not take.done
    with pytest.raises(ConfigError, match="fold-1' is in use"):  # later members too: a
        take(members)  # take-over after it left the refused member's run to fail alone
    assert tree() == before
    take = folds._TakeOver(out, earlier, cfg)  # a new run, no other training now: both
    take(members)  # running members' folders emptied
    assert take.done and not os.path.exists(os.path.join(out, "fold-2"))
    assert all(file_bytes(os.path.join(out, f"fold-{i}")) == {} for i in (0, 1))


def test_a_lock_file_names_another_holder_only_if_it_is_alive_and_locked(tmp_path):
    """refuse_if_held_by_other: the member's own pid, a dead process's file (a killed
    run's) and a live process that does not hold the lock (its pid reused) are no other
    training; a held lock is, named with its pid."""
    from lstm_cli.errors import ConfigError
    from lstm_cli.training.rundir import refuse_if_held_by_other

    folder = tmp_path / "fold-1"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (os.getpid(), dead.pid, os.getppid()):  # own, dead, alive but not holding
        (folder / LOCK_NAME).write_text(f"{pid}\n")
        refuse_if_held_by_other(str(folder), os.getpid())
    held = RunLock(str(folder))
    held.acquire()  # writes this process's pid: another process's view of it is "held"
    try:
        refuse_if_held_by_other(str(folder), os.getpid())  # the holder itself
        with pytest.raises(ConfigError, match=rf"in use by another training \(pid {os.getpid()}\)"):
            refuse_if_held_by_other(str(folder), os.getpid() + 10**6)
    finally:
        held.release()


def test_out_of_fold_loss_of_an_all_head_ensemble_is_its_members_loss(tmp_path):
    """The out-of-fold loss was the cross-entropy of each sequence's mean probabilities,
    where lstm-eval of its member, and the member's own val_loss, average the per-step
    losses (the all head): 1.30089 against 1.30590 in the audit's run. Each member's
    best_value is its validation loss on its fold at the epoch best.npz holds."""
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.yaml")
    out = str(tmp_path / "ens")
    r = _run("--config", config, "--set", f"train.folds={K}", "--set", "model.head=all",
             "--output", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    summary = _summary(out)
    cfg = load_config(os.path.join(out, "config.yaml"))
    sizes = [len(prepare_data(member_config(cfg, i), run_rng(member_config(cfg, i))).valid)
             for i in range(K)]  # fmt: skip
    members = [m["best_value"] for m in summary["member_best"]]
    want = float(np.dot(sizes, members) / sum(sizes))
    assert summary["out_of_fold"]["loss"] == pytest.approx(want, rel=1e-9)


def test_the_stop_message_names_members_a_signal_of_their_own_ended():
    """A signal to every process can end a member before lstm-train passes its own on: it
    was left out of "fold-0, fold-1 saved ..." when it had stopped (Interrupted) or died by
    it outside its training (MemberDied); one that finished (None) or failed is not."""
    from lstm_cli.errors import ConfigError, Interrupted
    from lstm_cli.training.members import MemberDied, _stopped_members

    outcome = {
        0: MemberDied("fold-0: the process training it died (killed by signal 15)"),
        1: Interrupted("SIGTERM: training stopped", 15, resume="r/fold-1"),
        2: None,
        3: ConfigError("bad"),
        4: Interrupted("SIGTERM: training stopped", 15, resume="r/fold-4"),
    }
    assert sorted(_stopped_members(outcome, signalled=[4])) == [0, 1, 4]


def test_no_parallel_member_starts_after_a_refused_take_over(write_config, tmp_path):
    """Once the hook has refused a member (another training holds a member folder),
    members went on starting, each training an epoch to be refused in turn."""
    from lstm_cli.errors import ConfigError
    from lstm_cli.training.members import MemberTask, run_members

    cfgs = [load_config(write_config(f"c{i}.yaml", train={"epochs": 1},
                                     output={"dir": str(tmp_path / f"fold-{i}")}))
            for i in range(3)]  # fmt: skip

    class Refuses:
        done, calls = False, 0

        def __call__(self, training):
            self.calls += 1
            raise ConfigError("run folder 'fold-9' is in use by another training")

    hook = Refuses()
    tasks = [MemberTask(i, c, overwrite=False, resume=False) for i, c in enumerate(cfgs)]
    got = run_members(tasks, 2, lambda m: None, before_first_checkpoint=hook)
    assert [type(e).__name__ for e in got[:2]] == ["ConfigError", "ConfigError"]
    assert got[2] is None and not os.path.exists(tmp_path / "fold-2")  # never started
    assert str(got[0]) == str(got[1]) and 1 <= hook.calls <= 2  # once failed, not asked


def test_a_parallel_member_that_fails_refuses_the_others_their_take_over(write_config, tmp_path):
    """A member that failed (here its data) let a member already training run the hook at
    its first checkpoint: the take-over then wrote the run's config.yaml and removed the
    earlier run for a run that was failing. The hook now answers it with that failure."""
    from lstm_cli.config import OutputConfig
    from lstm_cli.training.members import MemberTask, run_members

    missing = str(tmp_path / "missing.jsonl")
    cfgs = [
        load_config(write_config("bad.yaml", data={"test": missing})),
        load_config(
            write_config(
                "slow.yaml", train={"epochs": 1, "batch_size": 1}, model={"hidden_size": 64}
            )
        ),  # fmt: skip
    ]
    cfgs = [dataclasses.replace(c, output=OutputConfig(dir=str(tmp_path / f"fold-{i}")))
            for i, c in enumerate(cfgs)]  # fmt: skip

    class Hook:
        done, calls = False, 0

        def __call__(self, training):
            self.calls += 1

    hook = Hook()
    tasks = [MemberTask(i, c, overwrite=False, resume=False) for i, c in enumerate(cfgs)]
    got = run_members(tasks, 2, lambda m: None, before_first_checkpoint=hook)
    assert type(got[0]).__name__ == "DataError" and str(got[1]) == str(got[0]), got
    assert hook.calls == 0 and not os.path.exists(tmp_path / "fold-1" / "best.npz")


def test_no_parallel_member_starts_after_one_was_stopped_by_a_signal(write_config, tmp_path):
    """A signal sent to a member only (not to lstm-train) stopped it, and the next member
    started in its place and trained to the end: now a stopped member ends the starting,
    as a signal to lstm-train does."""
    import threading

    from lstm_cli.errors import Interrupted
    from lstm_cli.training.members import MemberTask, run_members

    cfgs = [load_config(write_config(f"c{i}.yaml", train={"epochs": 40 if i else 400},
                                     output={"dir": str(tmp_path / f"fold-{i}")}))
            for i in range(3)]  # fmt: skip
    tasks = [MemberTask(i, c, overwrite=False, resume=False) for i, c in enumerate(cfgs)]
    got = []
    runner = threading.Thread(target=lambda: got.extend(run_members(tasks, 2, lambda m: None)))
    runner.start()
    deadline = time.time() + 120
    first = tmp_path / "fold-0" / "last.npz"  # fold-0 is in training
    while not first.exists() and time.time() < deadline:
        time.sleep(0.05)
    pid = int((tmp_path / "fold-0" / LOCK_NAME).read_text())  # fold-0's process
    assert _is_member_of(str(pid), os.getpid())
    os.kill(pid, signal.SIGTERM)  # to the member only
    runner.join(timeout=120)
    assert isinstance(got[0], Interrupted) and got[0].resume == str(tmp_path / "fold-0")
    assert got[1] is None and got[2] is None  # fold-1 finished; fold-2 never started
    assert not os.path.exists(tmp_path / "fold-2")


def _members_in_a_thread(write_config, tmp_path, epochs):
    """run_members of 3 members (jobs 2) in a thread: (the thread, its result list)."""
    import threading

    from lstm_cli.training.members import MemberTask, run_members

    cfgs = [load_config(write_config(f"c{i}.yaml", train={"epochs": e},
                                     output={"dir": str(tmp_path / f"fold-{i}")}))
            for i, e in enumerate(epochs)]  # fmt: skip
    tasks = [MemberTask(i, c, overwrite=False, resume=False) for i, c in enumerate(cfgs)]
    got = []
    runner = threading.Thread(target=lambda: got.extend(run_members(tasks, 2, lambda m: None)))
    runner.start()
    return runner, got


def test_a_member_killed_by_a_stop_signal_as_it_starts_is_a_stop(write_config, tmp_path):
    """Before fit's guard a member's SIGTERM kills it, and the next member started in its
    place; then it ended the starting, but as a death (MemberDied: exit 1, "killed by
    signal 15"). It is a stop that saved nothing: Interrupted, exit 143."""
    from lstm_cli.errors import Interrupted

    runner, got = _members_in_a_thread(write_config, tmp_path, (40, 40, 40))
    deadline, children = time.time() + 60, []
    while not children and time.time() < deadline:
        children = [int(p) for p in os.listdir("/proc") if _is_member_of(p, os.getpid())]
    os.kill(children[0], signal.SIGTERM)  # as it starts
    runner.join(timeout=120)
    assert sorted(type(e).__name__ for e in got[:2]) == ["Interrupted", "NoneType"]
    stop = next(e for e in got if isinstance(e, Interrupted))
    assert (stop.exit_code, stop.resume) == (143, None)
    assert stop.stopped.endswith("ended by it outside its training loop, saving nothing on it")
    assert got[2] is None and not os.path.exists(tmp_path / "fold-2")  # never started


def test_two_different_signals_to_a_member_stop_it_at_once_without_a_traceback(
    write_config, tmp_path
):
    """A member's second, other signal raised KeyboardInterrupt or Terminated, which its
    process reported as a bug: a RuntimeError traceback, exit 1, and the next member
    started."""
    from lstm_cli.errors import Interrupted

    runner, got = _members_in_a_thread(write_config, tmp_path, (400, 40, 40))
    first = tmp_path / "fold-0" / "last.npz"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:
        time.sleep(0.05)
    pid = int((tmp_path / "fold-0" / LOCK_NAME).read_text())
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)  # handled after SIGINT: the second, other signal
    runner.join(timeout=120)
    assert isinstance(got[0], Interrupted) and got[0].signum == signal.SIGTERM, got[0]
    assert got[0].resume is None and "stopped at once" in str(got[0])
    assert got[1] is None and got[2] is None and not os.path.exists(tmp_path / "fold-2")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_resume_that_fails_leaves_the_ensemble_unfinished(ensemble, tmp_path, jobs):
    """--resume --set train.epochs=N that failed in a member kept the ensemble's earlier
    summary.json: lstm-eval and lstm-plot took the folder for finished, with the earlier
    members' out-of-fold report, while fold-0 had trained on. The summary goes as the
    ensemble continues; lstm-train --resume finishes it."""
    from lstm_cli.nn.model import LSTMClassifier

    out, _ = _copy_of(ensemble, tmp_path)
    # fold-0 continues and, in its 2nd new epoch, its loss turns NaN (every member process)
    real, calls = LSTMClassifier.loss_from_logits, {"n": 0}

    def nan_later(self, *args, **kw):
        loss, d = real(self, *args, **kw)
        calls["n"] += 1
        return (float("nan") if calls["n"] > 4 else loss), d

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LSTMClassifier, "loss_from_logits", nan_later)
        r = _run("--resume", out, "--set", "train.epochs=6", "--jobs", "1")
    assert r.exit_code == 6, r.output
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert not os.path.exists(os.path.join(out, "fold-0", "summary.json"))
    r = CliRunner().invoke(evaluate, [out, "--data", ensemble[1]])
    assert r.exit_code == 5 and f"lstm-train --resume {out} finishes it" in r.stderr, r.output
    r = _run("--resume", out, "--set", "train.epochs=6", "--jobs", str(jobs))
    assert r.exit_code == 0, r.output
    assert _summary(out)["folds"] == K


def test_a_parallel_resume_refused_for_a_member_starts_no_other(ensemble, tmp_path):
    """--resume --set train.epochs=1 (below the 2 its members ran) with --jobs 2: fold-0
    and fold-1 were refused (exit 3), yet fold-2 (never trained) then started, trained
    to the refused budget and its take-over wrote train.epochs 1 into OUT/config.yaml, so
    the plain --resume OUT the message suggests was refused in turn. Without --jobs the
    first refusal ends the run and changes nothing; so it does with --jobs now."""
    out, _ = _copy_of(ensemble, tmp_path)
    shutil.rmtree(os.path.join(out, "fold-2"))  # a member never trained

    def files():
        return {d: file_bytes(os.path.join(out, d)) for d in ("", "fold-0", "fold-1")}

    before = files()
    r = _run("--resume", out, "--set", "train.epochs=1", "--jobs", "2")
    assert r.exit_code == 3 and "train.epochs 1 is below" in r.stderr, r.output
    assert files() == before and not os.path.exists(os.path.join(out, "fold-2"))
    assert load_config(os.path.join(out, "config.yaml")).train.epochs == 2
    r = _run("--resume", out, "--jobs", "2")  # what the message says: it goes on
    assert r.exit_code == 0, r.output

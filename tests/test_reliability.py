"""Resume is bit-exact (at epoch ends and mid-epoch), signals save a resumable last.npz."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lstm_cli.config import load_config
from lstm_cli.store.atomic import temp_path
from lstm_cli.store.checkpoint import load_checkpoint
from lstm_cli.training import LOCK_NAME, RUN_FILES, Trainer, fit

VOLATILE = ("seconds", "sequences_per_second")


def _fit(path, *overrides, **kw):
    return fit(load_config(path, overrides), progress=False, log=lambda *a: None, **kw)


def _assert_same_run(dir_a, dir_b):
    a, b = (
        load_checkpoint(os.path.join(dir_a, "last.npz")),
        load_checkpoint(os.path.join(dir_b, "last.npz")),
    )
    for k in a.params:
        assert a.params[k].tobytes() == b.params[k].tobytes(), k
    assert a.optim_arrays.keys() == b.optim_arrays.keys()
    for k in a.optim_arrays:
        assert a.optim_arrays[k].tobytes() == b.optim_arrays[k].tobytes(), k

    def strip(h):
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in h]

    assert strip(a.meta["history"]) == strip(b.meta["history"])
    assert a.meta["rng_state"] == b.meta["rng_state"]
    assert a.meta["optimizer"] == b.meta["optimizer"] and a.meta["schedule"] == b.meta["schedule"]
    ba, bb = (
        load_checkpoint(os.path.join(dir_a, "best.npz")),
        load_checkpoint(os.path.join(dir_b, "best.npz")),
    )
    for k in ba.params:
        assert ba.params[k].tobytes() == bb.params[k].tobytes(), k


EXTRA = (
    "model.dropout=0.3",
    "model.num_layers=2",
    "train.schedule.name=plateau",
    "train.schedule.patience=1",
    "train.early_stopping.patience=3",
)


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resume_after_an_epoch_is_bit_exact(write_config, tmp_path, stop_after):
    cfg = write_config()
    _fit(cfg, "train.epochs=5", f"output.dir={tmp_path / 'full'}", *EXTRA)
    _fit(cfg, f"train.epochs={stop_after}", f"output.dir={tmp_path / 'part'}", *EXTRA)
    _fit(cfg, "train.epochs=5", f"output.dir={tmp_path / 'part'}", *EXTRA, resume=True)
    _assert_same_run(tmp_path / "full", tmp_path / "part")


AUGMENT = (
    "data.frame=2",
    "train.augment.shift=true",
    "train.augment.noise=0.2",
    "train.augment.roll=true",
    "train.augment.reverse=true",
)


def _crash_at_step_17(monkeypatch, cfg, over, run):
    """Train cfg with overrides ``over`` into ``run`` until a simulated crash in step 17."""
    real_step = Trainer._train_step

    def crash_at_step_17(self, idx, epoch):
        if self.step == 16:
            raise RuntimeError("simulated crash")
        return real_step(self, idx, epoch)

    monkeypatch.setattr(Trainer, "_train_step", crash_at_step_17)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(cfg, *over, f"output.dir={run}")
    monkeypatch.undo()


@pytest.mark.parametrize("augment", [(), AUGMENT], ids=["plain", "augmented"])
def test_resume_mid_epoch_is_bit_exact(write_config, tmp_path, monkeypatch, augment):
    """Also with train.augment on: its draws come from the run's saved generator."""
    cfg = write_config()
    over = ("train.epochs=3", "train.checkpoint_every_steps=5", *EXTRA, *augment)
    _fit(cfg, *over, f"output.dir={tmp_path / 'full'}")

    _crash_at_step_17(monkeypatch, cfg, over, tmp_path / "part")
    last = load_checkpoint(str(tmp_path / "part" / "last.npz"))
    assert last.meta["step"] == 15 and last.meta["train_state"]["partial_epoch"]["position"] == 3
    _fit(cfg, *over, f"output.dir={tmp_path / 'part'}", resume=True)
    _assert_same_run(tmp_path / "full", tmp_path / "part")


def test_an_epoch_resumed_mid_way_records_the_flow_of_its_later_batches(
    write_config, tmp_path, monkeypatch
):
    """gradflow.jsonl after a crash at step 17 (epoch 2, 9 steps an epoch) and a resume:
    epochs 1 and 3 as in an uninterrupted run; epoch 2 marked partial, one record per
    layer and direction, counting only the batches after the resume."""
    import json

    cfg = write_config()
    over = ("train.epochs=3", "train.checkpoint_every_steps=5", "train.gradflow_every=1",
            "model.bidirectional=true", *EXTRA)  # fmt: skip
    _fit(cfg, *over, f"output.dir={tmp_path / 'full'}")
    _crash_at_step_17(monkeypatch, cfg, over, tmp_path / "part")
    _fit(cfg, *over, f"output.dir={tmp_path / 'part'}", resume=True)
    _assert_same_run(tmp_path / "full", tmp_path / "part")
    full, part = (
        [json.loads(x) for x in (tmp_path / d / "gradflow.jsonl").read_text().splitlines()]
        for d in ("full", "part")
    )
    tracks = [(k, d) for k in (0, 1) for d in ("forward", "reverse")]
    for records in (full, part):
        assert [(r["epoch"], r["layer"], r["direction"]) for r in records] == [
            (e, k, d) for e in (1, 2, 3) for k, d in tracks
        ]
    assert part[:4] + part[8:] == full[:4] + full[8:] and not any("partial" in r for r in full)
    for whole, later in zip(full[4:8], part[4:8]):
        assert later["partial"] is True
        assert 0 < sum(later["count_by_fraction"]) < sum(whole["count_by_fraction"])


def test_training_longer_on_resume_is_allowed(write_config, tmp_path):
    cfg = write_config()
    _fit(cfg, "train.epochs=2")
    result = _fit(cfg, "train.epochs=3", resume=True)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def _train_subprocess(*args):
    """lstm-train ARGS --quiet in a child process (stdout/stderr captured as text)."""
    code = "import sys; from lstm_cli.cli import train; sys.argv[0] = 'lstm-train'; train()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _mtime(path):
    """path's modification time in ns, or None when it does not exist."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _start_long_training(cfg, run):
    """A 400-epoch lstm-train child, returned once it has written run/last.npz."""
    proc = _train_subprocess(
        "--config", cfg, "--set", "train.epochs=400", "--set", "model.hidden_size=32"
    )
    deadline = time.time() + 60
    while not (run / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert (run / "last.npz").exists(), "training did not start"
    return proc


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_resumable_checkpoint(write_config, tmp_path, signum, code):
    cfg = write_config()
    run = tmp_path / "run"
    proc = _start_long_training(cfg, run)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "--resume" in err and "Traceback" not in err
    last = load_checkpoint(str(run / "last.npz"))
    assert last.meta["epoch"] < 400
    assert not [n for n in os.listdir(run) if ".tmp" in n]
    resumed = _fit(
        cfg,
        "train.epochs=400",
        "model.hidden_size=32",
        f"output.dir={run}",
        "train.epochs=" + str(last.meta["epoch"] + 1),
        resume=True,
    )
    assert len(resumed.history) == last.meta["epoch"] + 1


def _check_run_files(run):
    """Every file a run folder holds must load completely."""
    import json

    load_checkpoint(str(run / "last.npz"))
    if (run / "best.npz").exists():
        load_checkpoint(str(run / "best.npz"))
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            json.loads(line)
    if (run / "metrics.csv").exists():
        rows = (run / "metrics.csv").read_text().splitlines()
        assert all(len(r.split(",")) == len(rows[0].split(",")) for r in rows)


def test_kill_9_never_leaves_a_corrupt_file(write_config, tmp_path):
    """SIGKILL a training process at seeded random moments, many times, resuming after
    each kill: every file in the run folder always loads and the run keeps progressing."""
    cfg = write_config()
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    proc = _train_subprocess(
        "--config", cfg, "--set", "train.epochs=200", "--set", "train.checkpoint_every_steps=3"
    )
    steps, started, stamp = [], time.time(), None
    while len(steps) < 10 and time.time() - started < 90:
        # kill only once this process has written a checkpoint of its own, so that every
        # round makes progress however slow start-up is on a loaded machine
        while proc.poll() is None and _mtime(run / "last.npz") in (None, stamp):
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.6)))
        proc.kill()
        proc.communicate()
        _check_run_files(run)
        steps.append(load_checkpoint(str(run / "last.npz")).meta["step"])
        stamp = _mtime(run / "last.npz")
        proc = _train_subprocess("--resume", str(run))
    proc.kill()
    proc.communicate()
    assert len(steps) >= 5 and steps[-1] > steps[0], steps


def test_second_ctrl_c_exits_at_once_without_partial_files(write_config, tmp_path):
    cfg = write_config()
    run = tmp_path / "run"
    proc = _start_long_training(cfg, run)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not [n for n in os.listdir(run) if ".tmp" in n]
    _check_run_files(run)


def test_training_writes_only_inside_the_run_folder(write_config, tmp_path, monkeypatch):
    """Path safety: a run reads its data and writes only into output.dir (and nothing in
    the working directory or next to the data)."""
    cfg = write_config(output={"dir": str(tmp_path / "out" / "run")})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    _fit(cfg, "train.epochs=2", "train.checkpoint_every_steps=3")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert new and all(
        str(p).startswith(os.path.join("out", "run")) or str(p) == "out" for p in new
    ), new
    assert list(cwd.iterdir()) == []
    meta = load_checkpoint(str(tmp_path / "out" / "run" / "last.npz")).meta
    assert "threads" in meta["blas_threads"]


def test_a_second_training_into_a_running_folder_is_refused(write_config, tmp_path):
    """The run folder is locked for the whole run: a second lstm-train into it, even with
    --overwrite (which passes the non-empty check) or --resume, is refused with exit 3."""
    cfg = write_config()
    run = tmp_path / "run"
    proc = _start_long_training(cfg, run)
    try:
        for args in (("--config", cfg, "--overwrite"), ("--resume", str(run))):
            second = _train_subprocess(*args)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 3, err
            assert err == (
                f"Error: run folder {str(run)!r} is in use by another training (pid "
                f"{proc.pid}); wait for it to end or choose another folder\n"
            )
        assert proc.poll() is None, "the first run must go on"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not (run / LOCK_NAME).exists()  # released on the signal's exit path
    assert load_checkpoint(str(run / "last.npz")).meta["config"]["model"]["hidden_size"] == 32


def test_a_lock_left_by_a_killed_run_does_not_block(write_config, tmp_path):
    cfg = write_config()
    run = tmp_path / "run"
    proc = _start_long_training(cfg, run)
    proc.kill()
    proc.communicate()
    assert (run / LOCK_NAME).read_text() == f"{proc.pid}\n"  # left behind by kill -9
    done = load_checkpoint(str(run / "last.npz")).meta["epoch"]
    resumed = _fit(cfg, "model.hidden_size=32", f"train.epochs={done + 1}", resume=True)
    assert len(resumed.history) == done + 1
    assert not (run / LOCK_NAME).exists()
    # a fresh start into a folder that holds nothing but a dead process's lock
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_NAME).write_text(f"{proc.pid}\n")
    _fit(cfg, "train.epochs=1", f"output.dir={fresh}")
    assert sorted(os.listdir(fresh)) == sorted(set(RUN_FILES) - {"gradflow.jsonl"})  # opt-in file


def test_start_and_resume_remove_only_their_own_orphaned_temporaries(write_config, tmp_path):
    """What kill -9 during an atomic write leaves (``last.npz.tmp-<hex>``) is removed by the
    next start or resume in that folder; other files, even similar names, stay."""
    cfg = write_config()
    run = tmp_path / "run"
    _fit(cfg, "train.epochs=1")
    others = [
        "last.npz.tmp-notmine",
        "last.npz.tmp-0123456789abc",
        "notes.txt.tmp-0123456789ab",
        "data.npz.tmp-0123456789ab",
        "keep.txt",
    ]

    def plant():
        for name in ("last.npz", "best.npz", "metrics.jsonl", "config.yaml"):
            with open(temp_path(str(run / name)), "wb") as fh:
                fh.write(b"half a checkpoint")
        for name in others:
            (run / name).write_bytes(b"not lstm_cli's")

    plant()
    _fit(cfg, "train.epochs=2", resume=True)
    assert sorted(set(os.listdir(run)) - set(RUN_FILES)) == sorted(others)
    plant()
    _fit(cfg, "train.epochs=1", overwrite=True)
    assert sorted(set(os.listdir(run)) - set(RUN_FILES)) == sorted(others)


@pytest.mark.parametrize("repeat_gives_up", [True, False])
def test_a_repeat_of_the_first_signal_gives_up_unless_told_otherwise(monkeypatch, repeat_gives_up):
    """A --jobs member gets a signal sent to every process twice (as sent and forwarded
    by lstm-train), which it took as a second signal: it stopped at once, saving
    nothing. There a repeat is ignored; another signal still gives up."""
    from lstm_cli.errors import Terminated
    from lstm_cli.training.signals import SignalGuard

    monkeypatch.setattr(SignalGuard, "repeat_gives_up", repeat_gives_up)
    monkeypatch.setattr(SignalGuard, "caught", None)
    with SignalGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert SignalGuard.caught == signal.SIGTERM  # for members._outside_fit
        if repeat_gives_up:
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.signum == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)


def test_a_member_outside_its_training_ignores_only_the_repeat_of_its_stop():
    """Once fit's guard has stopped a --jobs member, it only reports how it ended; the
    forwarded repeat of that signal killed it in that report. Any other signal (the
    SIGTERM multiprocessing sends a member as lstm-train gives up on a second Ctrl-C),
    or one before the guard took any, still ends it at once, as by default."""
    code = (
        "import os, signal, sys\n"
        "from lstm_cli.training import members\n"
        "from lstm_cli.training.signals import SignalGuard\n"
        "SignalGuard.caught = {'none': None, 'term': signal.SIGTERM, 'int': signal.SIGINT}"
        "[sys.argv[1]]\n"
        "signal.signal(signal.SIGTERM, members._outside_fit)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('went on')\n"
    )
    for caught, code_, out in (
        ("term", 0, "went on\n"),
        ("int", -signal.SIGTERM, ""),
        ("none", -signal.SIGTERM, ""),
    ):
        r = subprocess.run([sys.executable, "-c", code, caught], capture_output=True, text=True)
        assert (r.returncode, r.stdout) == (code_, out), (caught, r.stderr)


# lstm-train whose training, once started (MPI too), gets SIGTERM (as while it loads data)
_TERMINATED_IN_FIT = """
import os, signal, sys, time
import lstm_cli.training as training
from lstm_cli.training.distributed import make_comm
def fit(*args, **kwargs):
    comm = make_comm()
    if comm.rank == 0:
        os.kill(os.getpid(), signal.SIGTERM)
    comm.bcast(None)  # the other ranks wait for rank 0, as in a collective of training
training.fit = fit
from lstm_cli.cli import train
sys.argv[0] = "lstm-train"
train()
"""


def test_sigterm_outside_training_is_exit_143_with_one_line(write_config):
    """Outside the training loop's guard SIGTERM had its default action: no message
    (fine in one process, where the shell says 143) and, under mpiexec, exit 15 with the
    launcher's banner (test_mpi). It now ends the command as SIGINT does."""
    args = ["--config", write_config(), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-c", _TERMINATED_IN_FIT, *args], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (143, "Terminated.\n")

"""Data-parallel training under mpiexec equals one process (docs/design.md §9).

Run only where mpi4py imports and an `mpiexec` is on PATH (the `mpi` extra brings both;
.ci/run installs it); skipped otherwise. Open MPI refuses to start as root without
--allow-run-as-root, which the harness adds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec on PATH (pip install -e '.[mpi]')", allow_module_level=True)

from lstm_cli.store.checkpoint import load_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN = "import sys; from lstm_cli.cli import train; sys.argv[0] = 'lstm-train'; train()"
TIMEOUT = 180


def _launcher_args():
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" in version or "OpenRTE" in version:
        extra = ["--oversubscribe"]
        return extra + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return []


LAUNCHER = _launcher_args()


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        env.pop(name, None)
    return env


def _command(n, *args, program=TRAIN, quiet=True):
    cmd = [sys.executable, "-c", program, *args, *(["--quiet"] if quiet else [])]
    return cmd if n == 1 else [MPIEXEC, *LAUNCHER, "-n", str(n), *cmd]


def run(n, *args, program=TRAIN, check=True, quiet=True):
    """lstm-train ARGS (--quiet unless not quiet) in n processes (1: no launcher); the
    CompletedProcess."""
    done = subprocess.run(
        _command(n, *args, program=program, quiet=quiet),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def start(n, *args, program=TRAIN):
    return subprocess.Popen(
        _command(n, *args, program=program),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def write_task(root: Path, n=90, head="last", dtype="float64", data=None, bi=False, **train):
    """A small 3-class task with lengths 1..29 and a config: 2 layers, dropout on."""
    rng = np.random.default_rng(0)
    with open(root / "train.jsonl", "w") as fh:
        for i in range(n):
            y, T = i % 3, int(rng.integers(1, 30))
            x = rng.normal(size=(T, 4))
            x[: min(T, 3), y] += 2.0
            fh.write(json.dumps({"x": x.round(4).tolist(), "y": int(y)}) + "\n")
    cfg = {
        "data": {
            "train": "train.jsonl",
            "valid_fraction": 0.2,
            "test": "train.jsonl",
            **(data or {}),
        },
        "model": {
            "hidden_size": 6,
            "num_layers": 2,
            "dropout": 0.3,
            "head": head,
            "dtype": dtype,
            "bidirectional": bi,
        },
        "train": {"epochs": 2, "batch_size": 16, "seed": 3, "distributed": "always", **train},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(root / "config.yaml")


def normwise(a, b):
    """max |a - b| / max |a| (0 when both are 0)."""
    scale = float(np.max(np.abs(a)))
    return float(np.max(np.abs(a - b))) / scale if scale else float(np.max(np.abs(b)))


def assert_same_run(one: Path, other: Path, tol):
    a, b = load_checkpoint(str(one / "last.npz")), load_checkpoint(str(other / "last.npz"))
    for k in a.params:
        assert normwise(a.params[k], b.params[k]) <= tol, k
    assert set(a.optim_arrays) == set(b.optim_arrays)
    for k in a.optim_arrays:
        assert normwise(a.optim_arrays[k], b.optim_arrays[k]) <= tol, k
    rows_a, rows_b = a.meta["history"], b.meta["history"]
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert abs(ra[key] - rb[key]) <= tol * max(1.0, abs(ra[key])), (key, ra, rb)
    sa = json.loads((one / "summary.json").read_text())
    sb = json.loads((other / "summary.json").read_text())
    assert abs(sa["test"]["loss"] - sb["test"]["loss"]) <= tol * max(1.0, sa["test"]["loss"])
    assert sa["best_epoch"] == sb["best_epoch"]
    if (one / "gradflow.jsonl").exists():  # gradient flow summed over the ranks
        fa, fb = ((d / "gradflow.jsonl").read_text().splitlines() for d in (one, other))
        assert len(fa) == len(fb) > 0
        for la, lb in zip(fa, fb):
            ra, rb = json.loads(la), json.loads(lb)
            assert ra["count"] == rb["count"] and ra.get("direction") == rb.get("direction")
            for x, y in zip(ra["dh_norm"] + ra["dc_norm"], rb["dh_norm"] + rb["dc_norm"]):
                assert (x is None and y is None) or abs(x - y) <= tol * max(1.0, abs(x))


@pytest.mark.parametrize(
    "head, dtype, tol",
    [("last", "float64", 1e-12), ("all", "float64", 1e-12), ("all", "float32", 1e-5)],
)
def test_two_and_three_processes_equal_one(tmp_path, head, dtype, tol):
    cfg = write_task(tmp_path, head=head, dtype=dtype, gradflow_every=1)
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    for n in (2, 3):  # 3: shards of uneven size and work
        done = run(n, "--config", cfg, "--output", str(tmp_path / f"n{n}"))
        assert done.stderr == ""  # rank 0's progress bar is off with --quiet; others silent
        assert done.stdout.count("best epoch") == 1  # only rank 0 reports
        assert_same_run(tmp_path / "one", tmp_path / f"n{n}", tol)
    ev = subprocess.run(  # lstm-eval reads an MPI run's checkpoint as any other
        [sys.executable, "-c", "from lstm_cli.cli import evaluate; evaluate()",
         str(tmp_path / "n2" / "best.npz"), "--data", str(tmp_path / "train.jsonl"), "--quiet"],
        capture_output=True, text=True, env=_env(), timeout=TIMEOUT,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr


def test_a_bidirectional_models_gradient_flow_under_two_processes_equals_one(tmp_path):
    cfg = write_task(tmp_path, bi=True, gradflow_every=1)
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    run(2, "--config", cfg, "--output", str(tmp_path / "n2"))
    assert_same_run(tmp_path / "one", tmp_path / "n2", 1e-12)
    lines = (tmp_path / "n2" / "gradflow.jsonl").read_text().splitlines()
    assert [json.loads(x)["direction"] for x in lines] == ["forward", "reverse"] * 4  # 2 epochs


@pytest.mark.parametrize("reorder", [True, "auto"])
def test_augmented_batches_are_sharded_as_one_process_draws_them(tmp_path, reorder):
    """train.augment's draws are made for the whole batch on every rank; roll / reverse
    auto is decided by rank 0 and shared, and recorded as one process records it."""
    augment = {"shift": True, "noise": 0.3, "roll": reorder, "reverse": reorder}
    cfg = write_task(tmp_path, data={"frame": 3}, augment=augment)
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    run(2, "--config", cfg, "--output", str(tmp_path / "n2"))
    assert_same_run(tmp_path / "one", tmp_path / "n2", 1e-12)
    one, n2 = (
        yaml.safe_load((tmp_path / d / "config.yaml").read_text())["train"]["augment"]
        for d in ("one", "n2")
    )
    assert one == n2 and "auto" not in one.values()


def test_a_folds_ensemble_under_two_processes_equals_one(tmp_path):
    """train.folds: every member trained by both ranks; rank 0 alone writes the summary."""
    cfg = write_task(tmp_path, folds=3)
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    done = run(2, "--config", cfg, "--output", str(tmp_path / "n2"))
    assert done.stdout.count("ensemble of 3") == 1
    for i in range(3):
        assert_same_run(tmp_path / "one" / f"fold-{i}", tmp_path / "n2" / f"fold-{i}", 1e-12)
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "n2"))
    assert sa["out_of_fold"]["n"] == 90
    assert [m["best_epoch"] for m in sa["member_best"]] == [
        m["best_epoch"] for m in sb["member_best"]
    ]
    assert abs(sa["out_of_fold"]["loss"] - sb["out_of_fold"]["loss"]) <= 1e-12


def test_an_ensembles_progress_is_printed_by_rank_0_alone(tmp_path):
    """docs/distributed.md: the other ranks print nothing but errors."""
    cfg = write_task(tmp_path, n=30, epochs=1, folds=2)
    out = tmp_path / "n2"
    lines = run(2, "--config", cfg, "--output", str(out), quiet=False).stdout.splitlines()
    assert [x for x in lines if x.startswith("fold ")] == [
        f"fold {i + 1} of 2: training {out / f'fold-{i}'}" for i in range(2)
    ]
    assert [x.split()[0] for x in lines].count("epoch") == 2  # one per member, one epoch
    assert [x for x in lines if x.startswith("ensemble of 2")] == lines[-1:]


def test_sigterm_while_loading_data_ends_the_job_with_143(tmp_path):
    """Before the training loop SIGTERM had its default action: rank 0 died by it and
    mpiexec said exit 15 with its "BAD TERMINATION" banner, where one process gives 143."""
    from test_reliability import _TERMINATED_IN_FIT

    cfg = write_task(tmp_path)
    done = run(2, "--config", cfg, program=_TERMINATED_IN_FIT, check=False)
    assert done.returncode == 143, done.stderr
    assert "Terminated." in done.stderr and "BAD TERMINATION" not in done.stdout + done.stderr


# lstm-eval whose rank 1 gets SIGTERM as it reads its data (lstm-eval never starts MPI)
_EVAL_TERMINATED_ON_RANK_1 = """
import os, signal, sys
import lstm_cli.cli.evaluate
ev = sys.modules["lstm_cli.cli.evaluate"]  # the module (lstm_cli.cli.evaluate: the command)
real = ev._members_raw
def members_raw(*args, **kwargs):
    if os.environ.get("PMI_RANK") == "1":
        os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)
ev._members_raw = members_raw
sys.argv[0] = "lstm-eval"
ev.evaluate()
"""


def test_a_config_error_on_one_rank_only_ends_the_job(tmp_path):
    """Ranks reading different configs (nodes without a shared file system; here the
    launcher's MPMD form): the failing rank exited quietly without starting MPI, and rank
    0 waited in MPI_Init for it for good."""
    cfg = write_task(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(cfg).read().replace("hidden_size: 6", "hidden_size: -3"))
    assert bad.read_text() != open(cfg).read()
    good_cmd, bad_cmd = (_command(1, "--config", str(c), "--output", str(tmp_path / "r"))
                         for c in (cfg, bad))  # fmt: skip
    cmd = [MPIEXEC, *LAUNCHER, "-n", "1", *good_cmd, ":", "-n", "1", *bad_cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert done.returncode == 3 and "model.hidden_size" in done.stderr, done.stderr


def test_sigterm_to_one_rank_of_an_eval_ends_it_with_143(tmp_path):
    """Reporting the SIGTERM, the rank started MPI to abort the job, and MPI_Init waited
    for ranks that never start it: the job hung until killed."""
    cfg = write_task(tmp_path, epochs=1)
    run(1, "--config", cfg, "--output", str(tmp_path / "run"))
    data = str(tmp_path / "train.jsonl")
    args = [str(tmp_path / "run" / "best.npz"), "--data", data, "--quiet"]
    done = run(2, *args, program=_EVAL_TERMINATED_ON_RANK_1, check=False, quiet=False)
    assert done.returncode == 143 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_help_and_version_are_printed_once(option):
    """click prints them while it parses the command line, which every rank does: three
    ranks printed three copies."""
    done = run(3, option, quiet=False)
    first = done.stdout.splitlines()[0]
    assert done.stdout.count(first) == 1, done.stdout


def test_same_process_count_is_bit_identical(tmp_path):
    cfg = write_task(tmp_path, dtype="float32")
    for name in ("a", "b"):
        run(2, "--config", cfg, "--output", str(tmp_path / name))
    a, b = (load_checkpoint(str(tmp_path / n / "last.npz")) for n in ("a", "b"))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_more_processes_than_sequences_in_a_batch(tmp_path):
    """batch_size 2 with 3 processes: one rank has an empty shard at every step."""
    cfg = write_task(tmp_path, n=30, batch_size=2, epochs=1)
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    run(3, "--config", cfg, "--output", str(tmp_path / "n3"))
    assert_same_run(tmp_path / "one", tmp_path / "n3", 1e-12)


def _interrupted_run(tmp_path, cfg, name):
    """A 2-process run stopped by SIGINT to mpiexec after its first mid-epoch checkpoint."""
    run_dir = tmp_path / name
    proc = start(2, "--config", cfg, "--output", str(run_dir))
    deadline = time.time() + TIMEOUT
    while not (run_dir / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "training stopped" in err and "Traceback" not in err
    meta = load_checkpoint(str(run_dir / "last.npz")).meta
    assert meta["train_state"]["partial_epoch"] is not None or meta["epoch"] < 3
    return run_dir


def test_interrupted_two_process_run_resumes_with_two_or_one(tmp_path):
    cfg = write_task(tmp_path, n=600, epochs=3, checkpoint_every_steps=2)
    run(1, "--config", cfg, "--output", str(tmp_path / "full"))
    stopped = _interrupted_run(tmp_path, cfg, "stopped")
    shutil.copytree(stopped, tmp_path / "copy")
    run(2, "--resume", str(stopped))
    run(1, "--resume", str(tmp_path / "copy"))
    assert_same_run(tmp_path / "full", stopped, 1e-12)
    assert_same_run(tmp_path / "full", tmp_path / "copy", 1e-12)


FAULT = """
import os, sys
from lstm_cli.training import Trainer
rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
real = Trainer._train_step
def step(self, idx, epoch):
    if rank == 1 and self.step == 3:
        {action}
    return real(self, idx, epoch)
Trainer._train_step = step
open(os.path.join(os.environ["PIDS"], str(rank)), "w").write(str(os.getpid()))
from lstm_cli.cli import train
sys.argv[0] = "lstm-train"
train()
"""


def _fault_run(tmp_path, action):
    cfg = write_task(tmp_path, n=300, epochs=50, checkpoint_every_steps=1)
    pids = tmp_path / "pids"
    pids.mkdir()
    os.environ["PIDS"] = str(pids)
    try:
        t0 = time.time()
        proc = start(
            2,
            "--config",
            cfg,
            "--output",
            str(tmp_path / "run"),
            program=FAULT.format(action=action),
        )
        return proc, t0, pids
    finally:
        del os.environ["PIDS"]


@pytest.mark.parametrize(
    "action, code, needle",
    [
        ("raise RuntimeError('a bug on one rank')", 1, "RuntimeError: a bug on one rank"),
        (
            "from lstm_cli.errors import TrainingError; raise TrainingError('rank 1 gave up')",
            6,
            "[rank 1] Error: rank 1 gave up",
        ),
    ],
)
def test_one_rank_failing_ends_the_job(tmp_path, action, code, needle):
    proc, t0, _ = _fault_run(tmp_path, action)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == code, err
    assert needle in err
    assert time.time() - t0 < TIMEOUT
    for name in ("last.npz", "best.npz"):  # what rank 0 wrote before the failure loads
        if (tmp_path / "run" / name).exists():
            load_checkpoint(str(tmp_path / "run" / name))


def test_a_rank_killed_with_sigkill_ends_the_job(tmp_path):
    proc, t0, pids = _fault_run(tmp_path, "import time; time.sleep(60)")
    deadline = time.time() + TIMEOUT
    while not (pids / "1").exists() and time.time() < deadline:
        time.sleep(0.02)
    while not (tmp_path / "run" / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(int((pids / "1").read_text()), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)  # bounded: the launcher ends the other rank
    assert proc.returncode != 0
    load_checkpoint(str(tmp_path / "run" / "last.npz"))


ONLY_RANK0_READS = """
import os, sys
import lstm_cli.training.prepare as prepare
if int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))) != 0:
    def whole_file_pass(*args, **kwargs):
        raise RuntimeError("a rank other than 0 read the whole training file")
    prepare.feature_summary = prepare.fingerprint = prepare.check_normalisable = whole_file_pass
from lstm_cli.cli import train
sys.argv[0] = "lstm-train"
train()
"""


def test_statistics_are_computed_once_and_shared(tmp_path):
    """Only rank 0 makes the passes over every training row; the others get the mean, std
    and fingerprint from it (and train to the same result as one process)."""
    cfg = write_task(tmp_path, epochs=1)
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    run(2, "--config", cfg, "--output", str(tmp_path / "n2"), program=ONLY_RANK0_READS)
    assert_same_run(tmp_path / "one", tmp_path / "n2", 1e-12)


def test_too_little_work_per_process_trains_in_one(tmp_path):
    """train.distributed auto: a batch of 16 sequences of 6 units over 2 processes is too
    little work to split; rank 0 trains alone, says so, and gets the one-process result."""
    cfg = write_task(tmp_path, epochs=1, distributed="auto")
    run(1, "--config", cfg, "--output", str(tmp_path / "one"))
    done = subprocess.run(
        [MPIEXEC, *LAUNCHER, "-n", "2", sys.executable, "-c", TRAIN, "--config", cfg],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("training in one process") == 1
    a = load_checkpoint(str(tmp_path / "one" / "last.npz"))
    b = load_checkpoint(str(tmp_path / "runs" / "run" / "last.npz"))
    for k in a.params:  # the very same computation: bit-identical
        np.testing.assert_array_equal(a.params[k], b.params[k])


SLOW_SAVE_SIGNAL_ON_RANK_1 = """
import os, signal, sys, time
import lstm_cli.training.loop as loop
rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
real_step, real_save = loop.Trainer._train_step, loop.save_checkpoint
def step(self, idx, epoch):
    if rank == 1 and self.step == 5:
        os.kill(os.getpid(), signal.SIGTERM)  # only rank 1 gets it: the ranks must agree
    return real_step(self, idx, epoch)
def slow_save(*args, **kwargs):
    time.sleep(1.5)  # longer than the other ranks' report delays
    return real_save(*args, **kwargs)
loop.Trainer._train_step, loop.save_checkpoint = step, slow_save
from lstm_cli.cli import train
sys.argv[0] = "lstm-train"
train()
"""


def test_a_signal_on_one_rank_stops_all_after_rank_0_saved(tmp_path):
    cfg = write_task(tmp_path, n=300, epochs=5)
    run_dir = tmp_path / "run"
    done = run(
        2,
        "--config",
        cfg,
        "--output",
        str(run_dir),
        program=SLOW_SAVE_SIGNAL_ON_RANK_1,
        check=False,
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr.count("training stopped") == 1 and "[rank 1]" not in done.stderr
    meta = load_checkpoint(str(run_dir / "last.npz")).meta
    assert meta["step"] == 6 and meta["train_state"]["partial_epoch"] is not None


# rank 0 gets SIGTERM twice in one step (kill twice, or scancel and a user): the second
# gives up at once
SIGTERM_TWICE_ON_RANK_0 = """
import os, signal, sys
import lstm_cli.training.loop as loop
rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
real_step = loop.Trainer._train_step
def step(self, idx, epoch):
    if rank == 0 and self.step == 5:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
    return real_step(self, idx, epoch)
loop.Trainer._train_step = step
from lstm_cli.cli import train
sys.argv[0] = "lstm-train"
train()
"""


@pytest.mark.parametrize("n", [1, 2])
def test_a_second_sigterm_on_one_rank_ends_the_job_at_once(tmp_path, n):
    """The guard's second SIGTERM raised SystemExit, which bypassed the error path that
    ends an MPI job: rank 0 exited, rank 1 waited in the Allreduce until killed (and in
    one process it exited 143 saying nothing)."""
    cfg = write_task(tmp_path, n=300, epochs=5)
    done = run(n, "--config", cfg, "--output", str(tmp_path / "run"),
               program=SIGTERM_TWICE_ON_RANK_0, check=False)  # fmt: skip
    assert done.returncode == 143 and "Terminated." in done.stderr, done.stderr


def test_usage_and_config_errors_are_reported_once(tmp_path):
    cfg = write_task(tmp_path)
    usage = run(2, "--config", cfg, "--resume", str(tmp_path), "--output", "x", check=False)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert usage.stderr.count("Error:") == 1, usage.stderr
    bad = run(2, "--config", cfg, "--set", "train.epochs=-1", check=False)
    assert bad.returncode == 3 and bad.stderr.count("Error:") == 1, bad.stderr
    # found by click as it parses the command line, before the command runs: every rank
    # printed its usage error
    for args in (["--config", str(tmp_path / "nope.yaml")], ["--config", cfg, "--bogus"]):
        parse = run(3, *args, check=False)
        assert parse.returncode == 2 and parse.stderr.count("Error:") == 1, parse.stderr
    shown = run(2, "--config", cfg, "--print-config", check=False)
    assert shown.returncode == 0 and shown.stdout.count("model:") == 1, shown.stdout


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_one_rank_trains_alone_saves_and_resumes(tmp_path, signum, code):
    """The idle ranks ignore the signal to the end: lstm-train's SIGTERM handler, put
    back as the command returned, undid that, so an idle rank died by the forwarded
    SIGTERM and mpiexec killed rank 0 before it saved (exit 15)."""
    cfg = write_task(tmp_path, n=300, epochs=400, distributed="auto", checkpoint_every_steps=5)
    run_dir = tmp_path / "run"
    proc = start(2, "--config", cfg, "--output", str(run_dir))
    deadline = time.time() + TIMEOUT
    while not (run_dir / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == code, err
    assert err.count("training stopped") == 1 and "Continue with" in err
    load_checkpoint(str(run_dir / "last.npz"))

"""Smoke tests of the benchmark scripts: they run, write what they promise, and their GEMM
floors do the work they claim. No timing is asserted here (figures live in benchmarks/)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def _bench_step():
    """benchmarks/bench_step.py as a module (benchmarks/ is not a package)."""
    sys.path.insert(0, BENCH)
    try:
        import bench_step
    finally:
        sys.path.remove(BENCH)
    return bench_step


def _run(args, cwd=ROOT):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_bench_step_quick_run_writes_every_cell(tmp_path):
    out = tmp_path / "b.json"
    r = _run(
        [
            os.path.join(BENCH, "bench_step.py"),
            "--quick",
            "--workloads",
            "tiny,stacked",
            "--repeats",
            "1",
            "--warmup",
            "1",
            "--no-torch",
            "--json",
            str(out),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "Training step" in r.stdout and "Inference batch" in r.stdout
    assert "torch_pad is torch's packed run" not in r.stdout  # no bidirectional row
    data = json.loads(out.read_text())
    cells = {(c["workload"], c["head"]) for c in data["results"]}
    assert cells == {(w, h) for w in ("tiny", "stacked") for h in ("last", "all")}
    for c in data["results"]:
        for key in ("lstm_cli_train", "gemm_floor", "gemm_floor_cli", "lstm_cli_infer"):
            assert c["stats"][key]["median_ms"] > 0, (c["workload"], key)


def test_bench_step_says_what_a_bidirectional_row_compares_with():
    """medium_bi's torch "padded" contender is its packed run: the table said cli/pad as
    for the fused kernel, so lstm_cli read as 7x faster than it."""
    args = ["--workloads", "medium_bi", "--head", "last", "--repeats", "1", "--warmup", "1"]
    r = _run([os.path.join(BENCH, "bench_step.py"), "--quick", *args, "--no-torch"])
    assert r.returncode == 0, r.stderr
    assert "medium_bi: torch_pad is torch's packed run" in r.stdout
    assert "medium_bi: torch runs on pack_padded_sequence here too" in r.stdout  # inference


def test_engine_floor_counts_the_engines_gemm_work():
    """floor_cli's flop count is the engine's: per layer 2 N (1+I+H) 4H twice (forward
    steps, weight gradient), 2 N 4H H (backward steps), 2 N 4H I above the first layer."""
    bench_step = _bench_step()
    B, T, I, H, L = bench_step.WORKLOADS["stacked"]
    sizes = np.array([B] * (T // 2) + [B // 2] * (T - T // 2))
    floor, flops = bench_step.make_engine_floor(np, "stacked", 0, sizes)
    assert floor() is None
    N = int(sizes.sum())
    want = 0
    for k in range(L):
        Ik = I if k == 0 else H
        want += (
            2 * N * (1 + Ik + H) * 4 * H * 2 + 2 * N * 4 * H * H + (2 * N * 4 * H * Ik if k else 0)
        )
    assert flops == want


@pytest.mark.skipif(
    shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")),
    reason="bench_history extracts git revisions",
)
def test_bench_history_compares_a_revision_with_the_worktree():
    r = _run(
        [os.path.join(BENCH, "bench_history.py"), "HEAD", "--rounds", "1", "--workloads", "tiny"]
    )
    assert r.returncode == 0, r.stderr
    assert "HEAD train" in r.stdout and "worktree infer" in r.stdout


def test_bench_history_outside_a_git_checkout_says_so_in_one_line(tmp_path):
    """From a copy without git (a `git archive` of the checkout) it was a traceback."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "*.egg-info", "runs", "data"))
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tmp_path), PYTHONPATH=str(copy))
    r = subprocess.run(
        [sys.executable, str(copy / "benchmarks" / "bench_history.py"), "HEAD", "--rounds", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs a git checkout" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_engine_floor_issues_the_engines_gemms(monkeypatch):
    """floor_cli runs exactly the matrix products (shapes, count) that lstm_cli's layers
    issue for the benchmark's stacked batch, so `cli/floor_cli` measures overhead only."""
    bench_step = _bench_step()
    from lstm_cli.nn.model import LSTMClassifier

    calls = []
    real_matmul = np.matmul

    def recording_matmul(a, b, *args, **kwargs):
        calls.append((np.shape(a), np.shape(b)))
        return real_matmul(a, b, *args, **kwargs)

    B, T, I, H, L = bench_step.WORKLOADS["stacked"]
    x, lengths, y = bench_step.make_batch(np, "stacked", 0)
    model = LSTMClassifier(I, H, bench_step.NUM_CLASSES, L, seed=0)
    running = (lengths[None, :] > np.arange(T)[:, None]).sum(axis=1)
    monkeypatch.setattr(np, "matmul", recording_matmul)
    floor, _ = bench_step.make_engine_floor(np, "stacked", 0, running)
    model.loss_and_grads(x, lengths, y)  # the heads use `@`, which is not recorded
    engine_calls = sorted(calls)
    calls.clear()
    floor()
    assert sorted(calls) == engine_calls
    assert len(engine_calls) == L * (2 * T + 1) + (
        L - 1
    )  # per layer 2T steps + dW; dx above layer 0


def test_bench_infer_standalone_runs(tmp_path):
    pytest.importorskip("torch")
    r = _run(
        [os.path.join(BENCH, "bench_infer_standalone.py"), "--workloads", "tiny", "--blocks", "2"],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "tiny/last: lstm_cli" in r.stdout and "ratio of medians" in r.stdout


TEST = os.path.join(ROOT, "data", "synthetic", "test.jsonl")


def test_recipe_search_ranks_on_validation_and_records_every_run(tmp_path):
    """Two candidates of configs/tiny.yaml over two seeds: one JSON line per run, and the
    table ranked by median validation accuracy, then loss (the selection rule)."""
    runs = tmp_path / "runs.jsonl"
    done = _run(
        [os.path.join(BENCH, "recipe_search.py"), os.path.join(ROOT, "configs", "tiny.yaml"),
         "--candidate", f"base=data.test={TEST}",
         "--candidate", f"noisy=data.test={TEST} train.augment.noise=3.0",
         "--seeds", "0", "1", "--work", str(tmp_path / "w"), "--json", str(runs)],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    assert sorted((r["candidate"], r["seed"]) for r in rows) == [
        ("base", 0), ("base", 1), ("noisy", 0), ("noisy", 1)
    ]  # fmt: skip
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    names = [line.split("|")[1].strip() for line in table]

    def key(name):
        mine = [r for r in rows if r["candidate"] == name]
        med = lambda k: float(np.median([r[k] for r in mine]))  # noqa: E731
        return (-med("val_accuracy"), med("val_loss"))

    assert sorted(names) == ["base", "noisy"] and names == sorted(names, key=key)
    # the paired column: noisy minus base, seed by seed
    val = {(r["candidate"], r["seed"]): r["val_loss"] for r in rows}
    d = [val["noisy", s] - val["base", s] for s in (0, 1)]
    row = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table}
    assert row["base"] == "-"
    assert row["noisy"].startswith(f"{np.mean(d):+.4f} ± {np.std(d, ddof=1) / np.sqrt(2):.4f}")
    assert row["noisy"].endswith(f"{sum(x < 0 for x in d)}/2 lower")
    # the test column is left out of the table the choice is made on, and added afterwards
    # from the record, training nothing
    assert "test" not in done.stdout.splitlines()[0] and "--show-test adds it" in done.stdout
    again = _run(
        [os.path.join(BENCH, "recipe_search.py"), os.path.join(ROOT, "configs", "tiny.yaml"),
         "--table", str(runs), "--show-test", "--work", str(tmp_path / "none")],
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "none").exists()
    shown = [line for line in again.stdout.splitlines() if line.startswith("| ")]
    assert "test median [range]" in shown[0]
    for line in shown[1:]:
        name, test = line.split("|")[1].strip(), line.split("|")[6].strip()
        mine = sorted(r["test_accuracy"] for r in rows if r["candidate"] == name)
        assert test == f"{np.median(mine):.3f} [{mine[0]:.3f}, {mine[-1]:.3f}]"
    assert [line.split("|")[1] for line in shown[1:]] == [line.split("|")[1] for line in table]


def test_recipe_search_reads_an_ensemble_s_out_of_fold_figures(tmp_path):
    runs = tmp_path / "runs.jsonl"
    done = _run(
        [os.path.join(BENCH, "recipe_search.py"), os.path.join(ROOT, "configs", "tiny.yaml"),
         "--candidate", "cv=train.folds=2", "--seeds", "0", "--work", str(tmp_path / "w"),
         "--json", str(runs)],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in runs.read_text().splitlines()]
    summary = json.loads((tmp_path / "w" / "cv-0" / "summary.json").read_text())
    assert row["val_loss"] == summary["out_of_fold"]["loss"]
    assert row["val_accuracy"] == summary["out_of_fold"]["accuracy"]
    assert row["best_epoch"] == np.median([m["best_epoch"] for m in summary["member_best"]])


def test_ensemble_check_holds_out_validation_and_pairs_the_arms(tmp_path):
    runs = tmp_path / "runs.jsonl"
    done = _run(
        [os.path.join(BENCH, "ensemble_check.py"), os.path.join(ROOT, "configs", "tiny.yaml"),
         "--seeds", "0", "1", "--folds", "2", "--jobs", "1", "--work", str(tmp_path / "w"),
         "--json", str(runs), "--arms", "folds", "refit"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1] and all(len(r["folds"]) == 2 for r in rows)
    assert all(r["n_folds"] == 2 for r in rows)
    work = tmp_path / "w" / "tiny"
    n_train = len((work / "outer_train-0.jsonl").read_text().splitlines())
    n_valid = len((work / "outer_valid-0.jsonl").read_text().splitlines())
    assert n_valid == 120 and n_train == 480  # 20 % of the 600 training sequences held out
    summary = json.loads((work / "cv-0" / "summary.json").read_text())
    assert summary["test"]["n"] == n_valid and summary["out_of_fold"]["n"] == n_train
    assert rows[0]["folds"] == [summary["test"]["loss"], summary["test"]["accuracy"]]
    d = [r["folds"][0] - r["single"][0] for r in rows]
    assert f"loss {np.mean(d):+.4f} ± {np.std(d, ddof=1) / np.sqrt(2):.4f}" in done.stdout
    # refit: all of the outer training file, no validation, the single model's best epoch
    single = json.loads((work / "one-0" / "summary.json").read_text())
    refit_dir = work / "refit-0"
    epochs = [json.loads(line) for line in (refit_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["refit_epochs"] == single["best_epoch"] == len(epochs)
    assert all(e.get("val_loss") is None for e in epochs), epochs[0]
    refit = json.loads((refit_dir / "summary.json").read_text())
    assert rows[0]["refit"] == [refit["test"]["loss"], refit["test"]["accuracy"]]
    assert "refit - folds, paired by seed" in done.stdout


def test_val_vs_test_pairs_candidates_with_their_files_base(tmp_path):
    sys.path.insert(0, BENCH)
    try:
        import val_vs_test
    finally:
        sys.path.remove(BENCH)
    assert val_vs_test.spearman([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert val_vs_test.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties
    rows = []
    for seed in range(4):  # "good" lowers the loss and raises TEST; "bad" the reverse
        for cand, dv, dt in (("base", 0, 0), ("good", -0.1, 0.05), ("bad", 0.2, -0.1)):
            wobble = 0.001 * seed if cand != "base" else 0.0  # paired SE 0.00065
            rows.append({"config": "configs/x.yaml", "candidate": cand, "seed": seed,
                         "val_loss": 0.5 + dv + wobble, "test_accuracy": 0.7 + dt})  # fmt: skip
    rows += [{"config": "configs/x.yaml", "candidate": "shipped", "seed": s,
              "val_loss": 0.4 + s / 10, "test_accuracy": 0.8} for s in (0, 1)]  # fmt: skip
    rows.append(
        {
            "config": "configs/y.yaml",
            "candidate": "good",
            "seed": 0,
            "val_loss": 0.1,
            "test_accuracy": 0.9,
        }
    )  # no base in this file: skipped
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"other": 1}\n')
    changes = val_vs_test.paired_changes(val_vs_test.read_runs([str(path)]))
    assert list(changes) == ["x"]
    got = {c[1]: (c[2], round(c[3], 6), round(c[5], 6)) for c in changes["x"]}
    assert got == {"good": (4, -0.0985, 0.05), "bad": (4, 0.2015, -0.1)}
    rho, clear, agree = val_vs_test.summary(changes["x"])
    assert rho == pytest.approx(-1.0) and (clear, agree) == (2, 2)
    assert val_vs_test.summary(changes["x"], bar=400.0)[1:] == (0, 0)
    r = _run([os.path.join(BENCH, "val_vs_test.py"), str(path)])
    assert r.returncode == 0 and "| x | 2 | -1.00 |" in r.stdout, r.stderr

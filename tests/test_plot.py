"""lstm-plot and lstm-eval --plot: valid non-blank PNGs; clean errors for bad input, no extra."""

import json
import pathlib
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli.cli import evaluate, plot, train
from lstm_cli.diagnostics import GradFlowAccumulator

ROOT = pathlib.Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
    """A real PNG of laptop-screen size with something drawn on it."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert 5_000 < len(data) < 400_000, (path, len(data))
    import matplotlib.image

    img = matplotlib.image.imread(path)
    height, width = img.shape[:2]
    assert 500 <= width <= 1600 and 300 <= height <= 1200, (path, img.shape)
    assert float(np.var(img[..., :3])) > 1e-3, path  # not blank


def _look_before_saving(monkeypatch, look):
    """Call look(fig) on every figure just before figures._save writes it."""
    from lstm_cli.plot import figures

    real_save = figures._save

    def save(plt, fig, path):
        look(fig)
        return real_save(plt, fig, path)

    monkeypatch.setattr(figures, "_save", save)


def _run_folder(tmp_path, with_flow=True):
    """A run folder as lstm-train writes it (metrics.jsonl keys of a real run) plus gradflow."""
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for e in range(1, 9):
        rows.append(
            {
                "epoch": e,
                "train_loss": 1.5 / e,
                "train_accuracy": 1 - 0.6 / e,
                "val_loss": 1.6 / e + 0.02 * e,
                "val_accuracy": 1 - 0.7 / e,
                "lr": 0.01 * 0.5 ** (e // 3),
                "grad_norm": 0.3,
                "seconds": 0.05,
                "padded_fraction": 0.07,
                "sequences_per_second": 9000.0,
            }
        )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if with_flow:
        rng = np.random.default_rng(0)
        acc, lines = GradFlowAccumulator(), []
        for epoch in (1, 4, 8):
            for layer in (0, 1):
                lengths = rng.integers(3, 15, 16)
                decay = 0.8 ** np.arange(14)[::-1][None, :]  # larger near the end
                acc.add(layer, decay * rng.random((16, 14)), decay * rng.random((16, 14)), lengths)
            lines += [json.dumps(r) + "\n" for r in acc.records(epoch)]
        (run / "gradflow.jsonl").write_text("".join(lines))
    return run


def _report(tmp_path):
    return {
        "labels": ["a", "b", "c"],
        "confusion_matrix": [[5, 1, 0], [0, 4, 2], [1, 0, 7]],
        "by_step": {
            "head": "last",
            "percent": list(range(10, 101, 10)),
            "accuracy": [0.3 + 0.06 * k for k in range(10)],
            "loss": [1.2 - 0.1 * k for k in range(10)],
            "mean_steps": [1.0 + k for k in range(10)],
            "n": 20,
        },
        "gates": {
            "high": 0.95,
            "low": 0.05,
            "bins": 20,
            "layers": [
                {
                    "layer": 0,
                    "values": 100,
                    **{
                        g: {
                            "mean": 0.5,
                            "std": 0.2,
                            "above_0.95": 0.1,
                            "below_0.05": 0.02,
                            "histogram": list(range(20)),
                        }
                        for g in ("input", "forget", "output")
                    },
                }
            ],
        },
    }


def test_lstm_plot_without_matplotlib_exits_7(tmp_path, monkeypatch):
    run = _run_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    result = CliRunner().invoke(plot, [str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 7, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "optional extra 'plot'" in lines[0] and "pip install 'lstm_cli[plot]'" in lines[0]
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{bad")  # was read first: exit 4 for a file that would not be drawn
    result = CliRunner().invoke(
        plot, [str(run), "--out", str(tmp_path / "out"), "--report", str(bad)]
    )
    assert result.exit_code == 7, result.output
    # lstm-eval --plot fails the same way, before evaluating anything
    result = CliRunner().invoke(
        evaluate, ["no-such.npz", "--data", str(run / "metrics.jsonl"), "--plot", str(tmp_path)]
    )
    assert result.exit_code == 2  # click checks the checkpoint path first
    ckpt = tmp_path / "x.npz"
    ckpt.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(
        evaluate, [str(ckpt), "--data", str(run / "metrics.jsonl"), "--plot", str(tmp_path / "o")]
    )
    assert result.exit_code == 7 and "lstm-eval --plot needs the optional extra 'plot'" in (
        result.stderr
    )


def test_lstm_plot_run_folder_and_report(tmp_path):
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(tmp_path)))
    result = CliRunner().invoke(plot, [str(run), "--report", str(report)])
    assert result.exit_code == 0, result.output
    out = run / "plots"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "learning_curves.png",
            "gradient_flow.png",
            "confusion_matrix.png",
            "accuracy_by_step.png",
            "gate_saturation.png",
        ]
    )
    for name in names:
        _check_png(out / name)
        assert f"wrote {out / name}" in result.output


@pytest.mark.parametrize("title", [None, "Out-of-fold confusion matrix"])
def test_the_confusion_matrix_is_titled_by_its_caller(tmp_path, monkeypatch, title):
    pytest.importorskip("matplotlib")
    from lstm_cli.plot import figures

    titles = []
    _look_before_saving(
        monkeypatch,
        lambda fig: titles.append((fig.get_suptitle(), [a.get_title() for a in fig.axes[:2]])),
    )
    args = () if title is None else (title,)
    figures.confusion_matrix(_report(tmp_path), tmp_path / "cm.png", *args)
    expected = f"{title or 'Confusion matrix'} on 20 sequences (accuracy 0.800)"
    assert titles == [(expected, ["Counts", "Row-normalised (each true label sums to 1)"])]


def test_lstm_plot_without_gradflow_draws_learning_curves_only(tmp_path):
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path, with_flow=False)
    with open(run / "metrics.jsonl", "a") as fh:  # a diverged epoch is drawn as a gap
        fh.write('{"epoch": 9, "train_loss": NaN, "val_loss": Infinity, "lr": null}\n')
    result = CliRunner().invoke(plot, [str(run), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["learning_curves.png"]


def _strict_json(text):
    """json.loads refusing NaN and Infinity, which are not JSON (RFC 8259)."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_diverging_run_writes_standard_json_that_lstm_plot_draws(tmp_path):
    """A float32 run whose gradients grow to about 1e37 before its loss overflows: the
    norms stay finite numbers in gradflow.jsonl (an unscaled float32 norm overflowed above
    about 2e19 and was written as Infinity, which lstm-plot refused with exit 4)."""
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    overrides = [
        "train.optimizer.lr=4e38",
        "train.optimizer.name=sgd",
        "train.schedule.warmup_epochs=60",
        "train.epochs=20",
        "train.gradflow_every=1",
    ]
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--output", str(run), "--quiet"]
    result = CliRunner().invoke(train, args + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 6, result.output  # the loss became non-finite
    for name in ("metrics.jsonl", "gradflow.jsonl"):
        records = [_strict_json(line) for line in (run / name).read_text().splitlines()]
        assert records, name
    norms = [v for r in records for v in r["dh_norm"]]
    assert None not in norms and max(norms) > 1e20  # beyond float32's sqrt(max)
    result = CliRunner().invoke(plot, [str(run), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    _check_png(tmp_path / "o" / "gradient_flow.png")


def test_gradient_flow_draws_zero_norms_at_the_bottom_and_nulls_as_gaps(tmp_path, monkeypatch):
    """A log axis cannot show 0: exact zeros are triangles a decade below the smallest
    positive norm of the panel, named in the legend; null (no data) stays a gap."""
    pytest.importorskip("matplotlib")
    from lstm_cli.plot import figures

    dh = [None, 0.0, 0.0, 1e-3, 1e-2, 1e-1]
    record = {
        "epoch": 1,
        "layer": 0,
        "step": [1, 2, 3, 4, 5, 6],
        "dh_norm": dh,
        "dc_norm": [2 * v if v else v for v in dh],
        "fraction": [0.5, 1.0],
        "dh_norm_by_fraction": [0.0, 0.1],
        "dc_norm_by_fraction": [0.0, 0.2],
    }
    drawn = []

    def look(fig):
        for ax in fig.axes[:2]:
            lines = [(ln.get_marker(), ln.get_xdata(), ln.get_ydata()) for ln in ax.get_lines()]
            drawn.append((ax.get_yscale(), lines))
        drawn.append([t.get_text() for t in fig.axes[1].get_legend().get_texts()])

    _look_before_saving(monkeypatch, look)
    figures.gradient_flow([record], tmp_path / "gf.png")
    _check_png(tmp_path / "gf.png")
    (scale0, by_step), (scale1, by_fraction), legend = drawn
    assert scale0 == scale1 == "log"
    zeros = [(list(x), list(y)) for m, x, y in by_step if m == "v"]
    assert zeros == [([2, 3], [1e-4, 1e-4]), ([2, 3], [1e-4, 1e-4])]  # dh, dc: floor 1e-4
    lines = [np.asarray(y, float) for m, x, y in by_step if m == "."]
    assert len(lines) == 2 and all(np.isnan(y[:3]).all() and (y[3:] > 0).all() for y in lines)
    assert [(list(x), list(y)) for m, x, y in by_fraction if m == "v"] == [
        ([50.0], [0.01]),
        ([50.0], [0.01]),
    ]
    assert "exactly 0 (at the bottom)" in legend
    # an epoch resumed mid-way counts only its batches after the resume: the legend says so
    drawn.clear()
    figures.gradient_flow([{**record, "partial": True}], tmp_path / "gf.png")
    assert "epoch 1 (its batches after a resume)" in drawn[-1]


def test_run_files_hold_a_non_finite_value_as_null(tmp_path):
    """A diverged val_loss (the loop keeps training past it) and a NaN best_value."""
    from lstm_cli.training.rundir import write_metrics, write_summary

    rows = [{"epoch": 1, "val_loss": float("nan")}, {"epoch": 2, "val_loss": float("inf")}]
    write_metrics(tmp_path, rows)
    write_summary(tmp_path, {"best_value": float("nan"), "test": {"loss": [float("-inf"), 1.5]}})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [_strict_json(line)["val_loss"] for line in lines] == [None, None]
    summary = _strict_json((tmp_path / "summary.json").read_text())
    assert summary == {"best_value": None, "test": {"loss": [None, 1.5]}}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda run: (run / "metrics.jsonl").unlink(), "metrics.jsonl: no such file"),
        (
            lambda run: (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2,\n'),
            "metrics.jsonl:2: not valid JSON",
        ),
        (
            lambda run: (run / "gradflow.jsonl").write_text('{"epoch": 1, "layer": 0}\n'),
            "gradflow.jsonl:1: 'step' must be",
        ),
    ],
)
def test_lstm_plot_bad_input_is_one_line_exit_4(tmp_path, make, message):
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path)
    make(run)
    result = CliRunner().invoke(plot, [str(run)])
    assert result.exit_code == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert str(run) in lines[0]


def test_lstm_plot_bad_report_exit_4(tmp_path):
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path)
    report = tmp_path / "report.json"
    report.write_text("{not json")
    result = CliRunner().invoke(plot, [str(run), "--report", str(report)])
    assert result.exit_code == 4 and f"{report}: not valid JSON" in result.stderr


def _edited(report, path, value):
    """A deep copy of report with the entry at path (keys and indices) set to value."""
    out = json.loads(json.dumps(report))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    "path,value,needle",
    [
        (["by_step", "mean_steps"], ["a"] * 10, "by_step: 'mean_steps' must be a list"),
        (["by_step", "mean_steps"], [1.0], "'by_step.mean_steps' has 1 values, not 10"),
        (["gates", "layers", 0, "layer"], "x", "'gates.layers'[0].layer must be a layer index"),
        (["gates", "high"], "x", "'gates.high' must be a number"),
        (["labels"], [], "no non-empty 'labels' list"),
        (["confusion_matrix", 0, 0], 10**30, "'confusion_matrix' must be 3 rows of 3 counts"),
    ],
    ids=["mean_steps_text", "mean_steps_short", "layer_text", "high_text", "no_labels", "huge"],
)
def test_a_report_field_the_figures_use_is_checked(tmp_path, path, value, needle):
    """Each was a traceback (ValueError, TypeError, AxisError, OverflowError), exit 1."""
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path, with_flow=False)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_edited(_report(tmp_path), path, value)))
    result = CliRunner().invoke(plot, [str(run), "--report", str(report), "--quiet"])
    assert result.exit_code == 4, result.output
    assert f"{report}: " in result.stderr and needle in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_a_figure_folder_that_cannot_be_made_is_one_line_and_loses_no_report(tmp_path, monkeypatch):
    """A part of the path that is a file: exit 2 before any work. A folder the system
    refuses: one line naming it (it was a traceback), after lstm-eval wrote --json."""
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path)
    sub = run / "metrics.jsonl" / "figs"
    result = CliRunner().invoke(plot, [str(run), "--out", str(sub)])
    assert result.exit_code == 2 and f"{run / 'metrics.jsonl'} is a file" in result.stderr
    result = CliRunner().invoke(
        evaluate, ["no-such.npz", "--data", str(run / "metrics.jsonl"), "--plot", str(sub)]
    )
    assert result.exit_code == 2
    config = str(ROOT / "configs" / "tiny.yaml")
    args = ["--config", config, "--output", str(tmp_path / "r"), "--set", "train.epochs=1"]
    assert CliRunner().invoke(train, [*args, "--quiet"]).exit_code == 0
    data = str(ROOT / "data" / "synthetic" / "test.jsonl")
    report = tmp_path / "report.json"
    args = [str(tmp_path / "r" / "best.npz"), "--data", data, "--json", str(report)]
    result = CliRunner().invoke(evaluate, [*args, "--plot", str(sub)])
    assert result.exit_code == 2 and not report.exists(), result.output  # before evaluating

    def refused(path, exist_ok=False):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("lstm_cli.plot.os.makedirs", refused)
    figs = tmp_path / "figs"
    result = CliRunner().invoke(evaluate, [*args, "--plot", str(figs), "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.stderr == f"Error: cannot create the folder {figs}: Permission denied\n"
    assert json.loads(report.read_text())["accuracy"] >= 0
    result = CliRunner().invoke(plot, [str(run), "--out", str(figs)])
    assert result.exit_code == 1 and result.stderr.startswith("Error: cannot create the folder")


def test_train_eval_plot_end_to_end(tmp_path):
    """A real tiny run: lstm-eval --by-step --gates --json --plot, then lstm-plot --report."""
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    run = tmp_path / "run"
    config = str(ROOT / "configs" / "tiny.yaml")
    result = runner.invoke(train, ["--config", config, "--output", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    data = str(ROOT / "data" / "synthetic" / "test.jsonl")
    report = tmp_path / "report.json"
    figs = tmp_path / "eval_figs"
    args = [str(run / "best.npz"), "--data", data, "--json", str(report), "--plot", str(figs)]
    result = runner.invoke(evaluate, args)
    assert result.exit_code == 0, result.output
    assert "accuracy by part of each sequence seen" in result.output
    assert "gate values over valid steps" in result.output
    rep = json.loads(report.read_text())
    assert rep["by_step"]["percent"] == list(range(10, 101, 10))
    assert rep["by_step"]["accuracy"][-1] == pytest.approx(rep["accuracy"])
    assert rep["by_step"]["loss"][-1] == pytest.approx(rep["loss"], rel=1e-5)
    assert set(rep["gates"]["layers"][0]) >= {"layer", "values", "input", "forget", "output"}
    for name in ("confusion_matrix.png", "accuracy_by_step.png", "gate_saturation.png"):
        _check_png(figs / name)
    # without the flags the report stays as before
    result = runner.invoke(evaluate, [str(run / "best.npz"), "--data", data, "--json", "-"])
    assert result.exit_code == 0
    assert "by_step" not in json.loads(result.stdout) and "gates" not in result.stdout
    # --allow-unknown: by_step counts the sequences whose label the model knows
    lines = pathlib.Path(data).read_text().splitlines()
    unknown = json.loads(lines[0])
    unknown["y"] = 99
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(lines + [json.dumps(unknown)]) + "\n")
    args = [str(run / "best.npz"), "--data", str(mixed), "--allow-unknown", "--by-step"]
    result = runner.invoke(evaluate, args + ["--json", "-"])
    assert result.exit_code == 0, result.output
    mixed_rep = json.loads(result.stdout)
    assert mixed_rep["unknown_labels"] == 1 and mixed_rep["by_step"]["n"] == len(lines)
    assert mixed_rep["by_step"]["accuracy"] == pytest.approx(rep["by_step"]["accuracy"])
    result = runner.invoke(plot, [str(run), "--report", str(report), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    for png in (tmp_path / "p").iterdir():
        _check_png(png)


def test_eval_by_step_and_gates_of_a_bidirectional_run(tmp_path, monkeypatch):
    """The shipped recipes JapaneseVowels and ArrowHead are bidirectional: lstm-eval's
    by-step and gate reports and the gradient flow name each direction, and the figures
    draw a row for each."""
    runner = CliRunner()
    run = tmp_path / "run"
    config = str(ROOT / "configs" / "tiny.yaml")
    args = ["--config", config, "--output", str(run), "--quiet"]
    sets = ["--set", "model.bidirectional=true", "--set", "train.gradflow_every=2"]
    result = runner.invoke(train, args + sets)
    assert result.exit_code == 0, result.output
    data = str(ROOT / "data" / "synthetic" / "test.jsonl")
    report = tmp_path / "report.json"
    args = [str(run / "best.npz"), "--data", data, "--by-step", "--gates", "--json", str(report)]
    result = runner.invoke(evaluate, args)
    assert result.exit_code == 0, result.output
    assert "1 reverse" in result.output
    rep = json.loads(report.read_text())
    assert [(e["layer"], e["direction"]) for e in rep["gates"]["layers"]] == [
        (0, "forward"),
        (0, "reverse"),
    ]
    assert rep["by_step"]["accuracy"][-1] == pytest.approx(rep["accuracy"])
    assert rep["by_step"]["loss"][-1] == pytest.approx(rep["loss"], rel=1e-5)
    pytest.importorskip("matplotlib")
    titles = []
    _look_before_saving(
        monkeypatch,
        lambda fig: titles.append((fig.get_suptitle(), [a.get_title() for a in fig.axes])),
    )
    result = runner.invoke(plot, [str(run), "--report", str(report), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    _check_png(tmp_path / "p" / "gate_saturation.png")
    _check_png(tmp_path / "p" / "gradient_flow.png")
    flow = next(t for t in titles if t[0].startswith("Gradient flow"))
    assert flow[0].endswith("; in a reverse direction, towards late ones)")
    assert [t for t in flow[1] if t.endswith("by time step")] == [
        "Layer 1: gradient norm by time step",
        "Layer 1 reverse: gradient norm by time step",
    ]


def _curves_of(monkeypatch, run, out):
    """{axes title: {line label: (x, y)}} and the suptitle of lstm-plot's learning curves."""
    seen = {}

    def look(fig):
        if fig._suptitle is not None and "learning curves" in fig._suptitle.get_text():
            seen["title"] = fig._suptitle.get_text()
            seen["axes"] = {
                ax.get_title(): {
                    ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata()))
                    for ln in ax.get_lines()
                }
                for ax in fig.axes
            }

    _look_before_saving(monkeypatch, look)
    result = CliRunner().invoke(plot, [str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return seen


def test_the_best_epoch_drawn_is_best_npz_s(tmp_path, monkeypatch):
    """The marker came from summary.json, else the lowest val_loss: after a --resume that
    stopped (the earlier summary.json still there) it marked the earlier best epoch, and
    a run kept on val_accuracy without a summary was marked at its lowest val_loss."""
    from lstm_cli.store.checkpoint import read_meta

    pytest.importorskip("matplotlib")
    run = tmp_path / "r"
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--output", str(run), "--quiet"]
    sets = ["train.epochs=6", "train.early_stopping.metric=val_accuracy"]
    result = CliRunner().invoke(train, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    best = read_meta(str(run / "best.npz"))["train_state"]["best_epoch"]
    (run / "summary.json").write_text(json.dumps({"best_epoch": 99, "best_metric": "val_loss"}))
    for summary in ("stale", "gone"):
        seen = _curves_of(monkeypatch, run, tmp_path / summary)
        assert seen["title"].endswith("(best.npz: highest val_accuracy)"), seen["title"]
        marks = [label for lines in seen["axes"].values() for label in lines if "best" in label]
        assert marks == [f"best epoch {best}"] * 3, marks
        (run / "summary.json").unlink(missing_ok=True)
    # without a readable best.npz: summary.json's, before the lowest val_loss
    (run / "best.npz").rename(tmp_path / "moved.npz")
    (run / "summary.json").write_text(json.dumps({"best_epoch": 2, "best_metric": "val_accuracy"}))
    seen = _curves_of(monkeypatch, run, tmp_path / "no-best")
    assert seen["title"].endswith("(best.npz: highest val_accuracy)"), seen["title"]


def test_a_null_metric_is_a_gap_in_its_line(tmp_path, monkeypatch):
    """A non-finite val_loss (null in metrics.jsonl) was left out of the points, so the
    line joined the epochs on either side of it."""
    pytest.importorskip("matplotlib")
    run = _run_folder(tmp_path, with_flow=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[2]["val_loss"] = None
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    x, y = _curves_of(monkeypatch, run, tmp_path / "out")["axes"]["Loss per epoch"]["validation"]
    assert x == list(range(1, 9)) and np.isnan(y[2]) and np.isfinite(np.delete(y, 2)).all()


def test_a_figure_may_not_be_another_output_or_the_report_read(tmp_path):
    """lstm-eval --json DIR/confusion_matrix.png --plot DIR wrote the report and then the
    figure over it (exit 0); lstm-plot --report DIR/confusion_matrix.png --out DIR drew
    over the report it had read. Both are usage errors now, before anything is written."""
    pytest.importorskip("matplotlib")
    run = tmp_path / "r"
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--output", str(run), "--quiet"]
    assert CliRunner().invoke(train, [*args, "--set", "train.epochs=1"]).exit_code == 0
    data = str(ROOT / "data" / "synthetic" / "test.jsonl")
    figs = tmp_path / "figs"
    for opt in ("--json", "--predictions"):
        clash = figs / "confusion_matrix.png"
        args = [str(run / "best.npz"), "--data", data, opt, str(clash), "--plot", str(figs)]
        figs.mkdir(exist_ok=True)
        result = CliRunner().invoke(evaluate, [*args, "--quiet"])
        assert result.exit_code == 2 and not clash.exists(), result.output
        assert f"{opt} {clash} is a figure --plot {figs} gets" in result.stderr
    report = figs / "accuracy_by_step.png"
    args = [str(run / "best.npz"), "--data", data, "--json", str(report), "--by-step"]
    assert CliRunner().invoke(evaluate, [*args, "--quiet"]).exit_code == 0
    before = report.read_bytes()
    result = CliRunner().invoke(plot, [str(run), "--report", str(report), "--out", str(figs)])
    assert result.exit_code == 2 and report.read_bytes() == before, result.output
    assert f"--report {report} is a figure --out {figs} gets" in result.stderr
    # a link at a figure's name is replaced by the figure, not written through: no clash
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "confusion_matrix.png").symlink_to(tmp_path / "r.json")
    args = [str(run / "best.npz"), "--data", data, "--json", str(tmp_path / "r.json")]
    result = CliRunner().invoke(evaluate, [*args, "--plot", str(linked), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["labels"]
    assert not (linked / "confusion_matrix.png").is_symlink()
    # an ensemble's members' figures are drawn in --out/fold-i: a report there is refused
    ens = tmp_path / "ens"
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--output", str(ens), "--quiet"]
    sets = ["--set", "train.folds=2", "--set", "train.epochs=1"]
    assert CliRunner().invoke(train, [*args, *sets]).exit_code == 0
    inside = figs / "fold-1" / "learning_curves.png"
    inside.parent.mkdir()
    inside.write_bytes(before)
    result = CliRunner().invoke(plot, [str(ens), "--report", str(inside), "--out", str(figs)])
    assert result.exit_code == 2 and inside.read_bytes() == before, result.output
    # ... also through a link at OUT/fold-0 to the report's folder
    linked_out, elsewhere = tmp_path / "lo", tmp_path / "elsewhere"
    linked_out.mkdir()
    elsewhere.mkdir()
    (linked_out / "fold-0").symlink_to(elsewhere)
    (elsewhere / "learning_curves.png").write_bytes(before)
    args = [str(ens), "--report", str(elsewhere / "learning_curves.png"), "--out", str(linked_out)]
    result = CliRunner().invoke(plot, args)
    assert result.exit_code == 2 and (elsewhere / "learning_curves.png").read_bytes() == before
    # a bad --out is the usage error it is, before a broken ensemble is read
    (tmp_path / "afile").write_text("")
    (ens / "fold-1" / "best.npz").unlink()
    result = CliRunner().invoke(plot, [str(ens), "--out", str(tmp_path / "afile" / "sub")])
    assert result.exit_code == 2 and "the folder cannot be created" in result.stderr


@pytest.mark.parametrize("head,unit", [("last", "model steps"), ("ensemble of 2", "file steps")])
def test_the_by_step_figure_and_table_name_the_steps_they_count(tmp_path, monkeypatch, head, unit):
    """One model's mean_steps count its input steps (after pool / frame), an ensemble's the
    file's; both were "steps", so a framed model and its ensemble of one disagreed."""
    pytest.importorskip("matplotlib")
    from lstm_cli.cli.evaluate import _render_by_step
    from lstm_cli.plot import figures

    report = _report(tmp_path)
    report["by_step"]["head"] = head
    titles = []
    _look_before_saving(monkeypatch, lambda fig: titles.append(fig._suptitle.get_text()))
    figures.accuracy_by_step(report, tmp_path / "a.png")
    assert titles[0].endswith(f"on average 1.0 to 10.0 {unit})"), titles
    assert f"mean {unit}" in _render_by_step(report["by_step"]).splitlines()[1]

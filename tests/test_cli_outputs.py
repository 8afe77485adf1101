"""The files commands write (--json, --predictions, --output, OUT): one rule in
cli.common.refuse_output_over_input keeps them off the inputs, each other, a run
folder's own files and checkpoints (docs/cli.md, "Output files")."""

import shutil

import pytest
from click.testing import CliRunner
from conftest import file_bytes

from lstm_cli.cli import evaluate, export, gradcheck, import_, predict, train
from lstm_cli.inference import load_trained


@pytest.fixture
def run_dir(write_config, tmp_path):
    r = CliRunner().invoke(
        train, ["--config", write_config(), "--quiet", "--set", "train.epochs=1"]
    )
    assert r.exit_code == 0, r.output
    return tmp_path / "run"


def _usage_error(r, *fragments):
    assert r.exit_code == 2, (r.exit_code, r.output)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, r.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_no_output_lands_on_a_file_of_a_run_folder(run_dir, pattern_files, tmp_path):
    runner, data = CliRunner(), pattern_files["test"]
    best, last = str(run_dir / "best.npz"), str(run_dir / "last.npz")
    state = tmp_path / "m.safetensors"
    assert runner.invoke(export, [best, "--to", "pytorch", str(state), "--quiet"]).exit_code == 0
    link = tmp_path / "link.json"  # a symlink stands for its target
    link.symlink_to(run_dir / "last.npz")
    before = file_bytes(run_dir)
    for cmd, args, option, target in (
        (evaluate, [best, "--data", data, "--json", str(link)], "--json", str(link)),
        (evaluate, [best, "--data", data, "--json", last], "--json", last),
        (evaluate, [best, "--data", data, "--json", str(run_dir / "metrics.jsonl")], "--json", ""),
        (predict, [best, "--data", data, "--output", last], "--output", last),
        (predict, [best, "--data", data, "--output", str(run_dir / "config.yaml")], "--output", ""),
        (export, [best, "--to", "onnx", last], "OUT", last),
        (gradcheck, ["--flow", best, "--data", data, "--output", last], "--output", last),
        (import_, [str(state), best], "OUT", best),
        (import_, [str(state), best, "--overwrite"], "OUT", best),  # never a run's own file
    ):
        _usage_error(runner.invoke(cmd, args), option, target, "file of the run folder")
    assert file_bytes(run_dir) == before


@pytest.mark.parametrize(
    "spelling",
    ["{run}/last.npz/", "{run}/last.npz/.", "{run}/nosuch/../last.npz", "{run}/gradflow.jsonl"],
    ids=["trailing_slash", "slash_dot", "dotdot", "not_written_yet"],
)
def test_every_spelling_of_a_run_file_is_refused(run_dir, pattern_files, spelling):
    """The rule judges the path the write replaces (the real path), so no spelling of a
    run file gets round it; a run file the run has not written yet (no gradient flow
    here) is a run file too (the audit overwrote last.npz through 'last.npz/')."""
    out = spelling.format(run=run_dir)
    before = file_bytes(run_dir)
    r = CliRunner().invoke(
        evaluate, [str(run_dir / "best.npz"), "--data", pattern_files["test"], "--json", out]
    )
    _usage_error(r, f"--json {out}", "file of the run folder")
    assert file_bytes(run_dir) == before


def test_two_outputs_are_never_one_file(run_dir, pattern_files, tmp_path):
    report, same = tmp_path / "r.json", f"{tmp_path}/./r.json"
    for _ in range(2):  # new, then existing
        r = CliRunner().invoke(
            evaluate,
            [str(run_dir / "best.npz"), "--data", pattern_files["test"], "--quiet"]
            + ["--json", str(report), "--predictions", same],
        )
        _usage_error(r, f"--predictions {same} is also the --json file")
        report.write_text("an earlier report\n")
    assert report.read_text() == "an earlier report\n"
    # nor both stdout, by any name: the JSON report then ran into the CSV (exit 0)
    for other in ("-", "/dev/stdout", "//dev/stdout", "/proc/self/fd/1", "/dev/fd/1"):
        r = CliRunner().invoke(
            evaluate,
            [str(run_dir / "best.npz"), "--data", pattern_files["test"], "--quiet"]
            + ["--json", "-", "--predictions", other],
        )
        _usage_error(r, f"--json - and --predictions {other} would both write to stdout")
    r = CliRunner().invoke(  # another stream, even one that goes where stdout goes
        evaluate,
        [str(run_dir / "best.npz"), "--data", pattern_files["test"], "--quiet"]
        + ["--json", "-", "--predictions", "/dev/stderr"],
    )
    assert r.exit_code == 0, r.output


def test_a_checkpoint_is_replaced_only_by_lstm_import_overwrite(run_dir, pattern_files, tmp_path):
    runner, best = CliRunner(), str(run_dir / "best.npz")
    kept = tmp_path / "kept.npz"
    shutil.copy(best, kept)
    r = runner.invoke(predict, [best, "--data", pattern_files["test"], "--output", str(kept)])
    _usage_error(r, f"--output {kept} is an existing .npz file (a checkpoint)")
    state = tmp_path / "m.safetensors"
    assert runner.invoke(export, [best, "--to", "pytorch", str(state), "--quiet"]).exit_code == 0
    r = runner.invoke(import_, [str(state), str(kept), "--quiet"])
    _usage_error(r, f"OUT {kept} is an existing .npz file", "pass --overwrite to replace it")
    assert kept.read_bytes() == (run_dir / "best.npz").read_bytes()
    r = runner.invoke(import_, [str(state), str(kept), "--quiet", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert load_trained(kept).meta["imported_from"]["file"] == "m.safetensors"


def test_ordinary_outputs_are_written_and_replaced(run_dir, pattern_files, tmp_path):
    runner, best, data = CliRunner(), str(run_dir / "best.npz"), pattern_files["test"]
    report, preds, onnx = tmp_path / "r.json", tmp_path / "p.csv", tmp_path / "m.onnx"
    inside = run_dir / "report.json"  # a new file in a run folder is not one of its run files
    elsewhere = tmp_path / "reports" / "metrics.jsonl"  # a run file's name, in no run folder
    elsewhere.parent.mkdir()
    for _ in range(2):  # the second time each file exists and is replaced
        for cmd, args in (
            (evaluate, [best, "--data", data, "--json", report, "--predictions", preds]),
            (evaluate, [best, "--data", data, "--json", inside]),
            (evaluate, [best, "--data", data, "--json", elsewhere]),
            (predict, [best, "--data", data, "--output", preds]),
            (export, [best, "--to", "onnx", onnx]),
        ):
            r = runner.invoke(cmd, [str(a) for a in args] + ["--quiet"])
            assert r.exit_code == 0, r.output
    r = runner.invoke(evaluate, [best, "--data", data, "--json", "-", "--predictions", preds])
    assert r.exit_code == 0 and r.stdout.startswith("{")
    assert all(p.exists() for p in (report, preds, onnx, inside, elsewhere))


def test_figures_replace_a_link_in_their_folder_never_its_target(run_dir, pattern_files, tmp_path):
    """lstm-eval --plot DIR writes its PNGs under names of its own: a symlink or hard link
    left at such a name is replaced, and the checkpoint it led to stays intact (the sweep
    audit turned best.npz and last.npz into PNGs this way, exit 0)."""
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "confusion_matrix.png").symlink_to(run_dir / "best.npz")
    (plots / "accuracy_by_step.png").hardlink_to(run_dir / "last.npz")
    before = file_bytes(run_dir)
    r = CliRunner().invoke(
        evaluate,
        [str(run_dir / "best.npz"), "--data", pattern_files["test"], "--plot", str(plots)]
        + ["--quiet"],
    )
    assert r.exit_code == 0, r.output
    assert file_bytes(run_dir) == before
    assert not (plots / "confusion_matrix.png").is_symlink()
    assert (plots / "accuracy_by_step.png").read_bytes()[:4] == b"\x89PNG"


def test_the_lock_and_a_missing_data_array_are_outputs_no_command_takes(run_dir, tmp_path):
    """The training lock (replacing it let a second training into a live run folder) and
    y.npy of an .npy data folder that has none (predict wrote its CSV there) are refused
    like the other run files and data arrays."""
    import numpy as np

    best = str(run_dir / "best.npz")
    npd = tmp_path / "unlabelled"
    npd.mkdir()
    F = load_trained(best).num_features
    np.save(npd / "x.npy", np.zeros((6, F), np.float32))
    np.save(npd / "lengths.npy", np.array([3, 3]))
    for out, fragment in (
        (run_dir / ".lstm-train.lock", "file of the run folder"),
        (npd / "y.npy", "an array of the data file"),
    ):
        r = CliRunner().invoke(predict, [best, "--data", str(npd), "--output", str(out)])
        _usage_error(r, f"--output {out}", fragment)
    assert not (npd / "y.npy").exists()


def test_a_checkpoint_by_another_name_is_refused_as_one(run_dir, pattern_files, tmp_path):
    """lstm-eval reads a checkpoint whatever its name, so the rule knows one by its form
    (a zip holding the meta entry), not by the .npz ending alone; other zips are files."""
    import zipfile

    runner, best = CliRunner(), str(run_dir / "best.npz")
    kept = tmp_path / "model.ckpt"
    shutil.copy(best, kept)
    assert runner.invoke(evaluate, [str(kept), "--data", pattern_files["test"]]).exit_code == 0
    for command, args in (
        (evaluate, [best, "--data", pattern_files["test"], "--json", str(kept)]),
        (predict, [best, "--data", pattern_files["test"], "--output", str(kept)]),
        (export, [best, "--to", "onnx", str(kept)]),
    ):
        r = runner.invoke(command, args)
        _usage_error(r, f"{kept} is an lstm_cli checkpoint (by its content)")
    state = tmp_path / "m.safetensors"
    assert runner.invoke(export, [best, "--to", "pytorch", str(state), "--quiet"]).exit_code == 0
    r = runner.invoke(import_, [str(state), str(kept), "--quiet"])
    _usage_error(r, "is an lstm_cli checkpoint (by its content)", "pass --overwrite")
    assert kept.read_bytes() == (run_dir / "best.npz").read_bytes()
    other = tmp_path / "other.zip"  # a zip without the meta entry, and a plain file
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("x.npy", b"")
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(b"PK\x03\x04 not really a zip")
    for out in (other, plain):
        r = runner.invoke(evaluate, [best, "--data", pattern_files["test"], "--json", str(out)])
        assert r.exit_code == 0, r.output


def test_an_output_in_a_folder_that_is_not_there_is_refused_first(
    run_dir, pattern_files, tmp_path, monkeypatch
):
    """Every output's folder is checked with the rest of the rule, before the work: lstm-eval
    computed and printed its whole report and only then failed (exit 1) on --json
    nodir/r.json; lstm-import said exit 5 naming its temporary file."""
    import lstm_cli.inference

    runner, data, best = CliRunner(), pattern_files["test"], str(run_dir / "best.npz")
    state = tmp_path / "m.safetensors"
    assert runner.invoke(export, [best, "--to", "pytorch", str(state), "--quiet"]).exit_code == 0
    out = str(tmp_path / "nodir" / "r.out")
    monkeypatch.setattr(lstm_cli.inference, "load_trained", None)  # no work may start
    for cmd, args, option in (
        (evaluate, [best, "--data", data, "--json", out], "--json"),
        (evaluate, [best, "--data", data, "--predictions", out], "--predictions"),
        (predict, [best, "--data", data, "--output", out], "--output"),
        (gradcheck, ["--flow", best, "--data", data, "--output", out], "--output"),
        (export, [best, "--to", "onnx", out], "OUT"),
        (import_, [str(state), out], "OUT"),
    ):
        _usage_error(runner.invoke(cmd, args), f"{option} {out}: its folder", "does not exist")
    assert not (tmp_path / "nodir").exists()

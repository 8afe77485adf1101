"""lstm-eval / lstm-predict with several checkpoints: one ensemble, the mean of the members'
probabilities, each member reading the data through its own checkpoint."""

import csv
import io
import json
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_cli.cli import evaluate, predict, train
from lstm_cli.store.checkpoint import load_checkpoint, save_checkpoint

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = str(ROOT / "data" / "synthetic" / "test.jsonl")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny runs that differ in seed, head and input framing."""
    root = tmp_path_factory.mktemp("ensemble")
    config = str(ROOT / "configs" / "tiny.yaml")
    paths = []
    for name, sets in (("a", ["train.seed=0"]), ("b", ["train.seed=1", "data.frame=2",
                                                         "model.head=mean"])):  # fmt: skip
        args = ["--config", config, "--output", str(root / name), "--quiet"]
        result = CliRunner().invoke(train, args + [a for s in sets for a in ("--set", s)])
        assert result.exit_code == 0, result.output
        paths.append(str(root / name / "best.npz"))
    return paths


def _probs(args):
    result = CliRunner().invoke(predict, [*args, "--data", DATA])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    labels = [k for k in rows[0] if k.startswith("prob_")]
    return np.array([[float(r[k]) for k in labels] for r in rows]), rows


def test_predict_averages_the_members_probabilities(members):
    p_a, _ = _probs([members[0]])
    p_b, _ = _probs([members[1]])
    assert np.abs(p_a - p_b).max() > 1e-3  # the members differ
    p_ab, rows = _probs(members)
    np.testing.assert_allclose(p_ab, (p_a + p_b) / 2, atol=2e-6)  # the CSV rounds
    classes = [k.removeprefix("prob_") for k in rows[0] if k.startswith("prob_")]
    assert [r["predicted_label"] for r in rows] == [classes[i] for i in p_ab.argmax(1)]


def test_eval_reports_the_ensemble(members):
    result = CliRunner().invoke(evaluate, [*members, "--data", DATA, "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checkpoints"] == members and "checkpoint" not in report
    p, _ = _probs(members)
    y = np.array([json.loads(line)["y"] for line in open(DATA)])
    labels = [int(lbl) for lbl in report["labels"]]
    idx = np.array([labels.index(v) for v in y])
    assert report["n"] == len(y)
    assert report["accuracy"] == pytest.approx((p.argmax(1) == idx).mean())
    want_loss = -np.log(p[np.arange(len(y)), idx]).mean()  # the averaged probabilities' CE
    assert report["loss"] == pytest.approx(want_loss, rel=1e-4)
    single = json.loads(
        CliRunner().invoke(evaluate, [members[0], "--data", DATA, "--json", "-"]).stdout
    )
    assert single["checkpoint"] == members[0] and "checkpoints" not in single


def test_members_with_other_labels_are_refused(members, tmp_path):
    ckpt = load_checkpoint(members[0])
    meta = dict(ckpt.meta, classes=list(reversed(ckpt.meta["classes"])))
    other = str(tmp_path / "other.npz")
    save_checkpoint(other, ckpt.params, meta)
    for command in (evaluate, predict):
        result = CliRunner().invoke(command, [members[0], other, "--data", DATA])
        assert result.exit_code == 5, result.output
        assert f"{other}: its labels" in result.stderr and "must share their labels" in (
            result.stderr
        )
        assert "Traceback" not in result.output


def test_the_data_file_is_read_once_per_set_of_csv_options(members, tmp_path, monkeypatch):
    """The members of one run read the file alike: one read for all of them; a member
    with other CSV options gets a read of its own. The reports are unchanged."""
    import lstm_cli.data

    before = _report(members)
    reads = _record_calls(
        monkeypatch, lstm_cli.data, "load_dataset", lambda *a, **k: k["csv_options"]
    )
    assert _report(members) == before
    assert len(reads) == 1
    ckpt = load_checkpoint(members[0])
    config = json.loads(json.dumps(ckpt.meta["config"]))
    config["data"]["csv"]["label_column"] = "y"
    other = str(tmp_path / "other_csv.npz")
    save_checkpoint(other, ckpt.params, dict(ckpt.meta, config=config))
    reads.clear()
    _report([*members, other])
    assert len(reads) == 2 and reads[1]["label_column"] == "y"


def test_gates_need_one_checkpoint(members):
    result = CliRunner().invoke(evaluate, [*members, "--data", DATA, "--gates"])
    assert result.exit_code == 2 and "give one checkpoint" in result.stderr


def _record_calls(monkeypatch, module, name, what):
    """Wrap module.name so each call first appends what(*args, **kwargs) to the list
    returned; the call itself is unchanged."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(what(*a, **k)) or real(*a, **k))
    return calls


def _report(args):
    result = CliRunner().invoke(evaluate, [*args, "--data", DATA, "--json", "-"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_by_step_of_an_ensemble_averages_the_members_on_each_prefix(members, tmp_path):
    """--by-step takes an ensemble: each member classifies every prefix (cut on the file's
    own steps, then transformed as it was trained) and their probabilities are averaged.
    Two copies of one unframed model are that model: its own by_step, to rounding; at
    100 % the figures are the ensemble's report."""
    twin = tmp_path / "twin.npz"
    twin.write_bytes(pathlib.Path(members[0]).read_bytes())
    one = _report([members[0], "--by-step"])["by_step"]
    two = _report([members[0], str(twin), "--by-step"])["by_step"]
    assert two["head"] == "ensemble of 2" and two["percent"] == one["percent"]
    assert two["accuracy"] == one["accuracy"] and two["mean_steps"] == one["mean_steps"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)  # float32 model
    report = _report([*members, "--by-step"])  # members b frames 2 steps into one
    bs = report["by_step"]
    assert bs["accuracy"][-1] == pytest.approx(report["accuracy"])
    assert bs["loss"][-1] == pytest.approx(report["loss"], rel=1e-9)
    assert bs["accuracy"][0] != bs["accuracy"][-1] and bs["n"] == report["n"]


def test_plot_of_an_ensemble_draws_its_figures_but_no_gates(members, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figures"
    result = CliRunner().invoke(evaluate, [*members, "--data", DATA, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_by_step.png", "confusion_matrix.png"]
    assert "ensemble of 2" in result.stdout


@pytest.mark.parametrize("count", [1, 2])
def test_no_known_label_left_to_evaluate_is_one_clear_error(members, tmp_path, count):
    """--allow-unknown on a file none of whose labels the model knows: exit 4, one sentence,
    for one checkpoint and for an ensemble alike."""
    unknown = tmp_path / "unknown.jsonl"
    lines = [json.loads(line) for line in open(DATA)][:5]
    unknown.write_text("".join(json.dumps({**r, "y": 99}) + "\n" for r in lines))
    args = [*members[:count], "--data", str(unknown), "--allow-unknown"]
    result = CliRunner().invoke(evaluate, args)
    assert result.exit_code == 4, result.output
    assert f"{unknown}: no sequence has a label the model knows" in result.stderr


def test_members_that_read_alike_share_one_transformed_copy(members, tmp_path, monkeypatch):
    """Members with the same input transforms (one run's) transform the data once, in the
    report and on every --by-step prefix; a member framing otherwise gets its own. The
    report is unchanged."""
    import lstm_cli.inference
    from lstm_cli.diagnostics import PERCENTS

    twin = tmp_path / "twin.npz"
    twin.write_bytes(pathlib.Path(members[0]).read_bytes())
    args = [members[0], str(twin), members[1], "--by-step"]
    before = _report(args)
    calls = _record_calls(
        monkeypatch, lstm_cli.inference, "transform_dataset", lambda ds, **k: k["frame"]
    )
    assert _report(args) == before
    per_member = 1 + len(PERCENTS)  # the report, then each prefix
    assert calls.count(1) == calls.count(2) == per_member and len(calls) == 2 * per_member


def test_a_shared_copy_still_checks_each_members_features():
    from lstm_cli.ensemble import prepare_members

    class Member:
        transforms = {"per_sequence": False, "pool": 1, "frame": 1}

        def __init__(self, fits):
            self.fits = fits

        def check_raw(self, ds):
            if not self.fits:
                raise ValueError("wrong features")

        def prepare(self, ds):
            self.check_raw(ds)
            return ("prepared", ds)

    raw = object()
    a, b = Member(True), Member(True)
    out = prepare_members([(a, raw), (b, raw)])
    assert out[0][1] is out[1][1] and out[1][0] is b
    with pytest.raises(ValueError, match="wrong features"):
        prepare_members([(a, raw), (Member(False), raw)])


def test_ensemble_by_step_refuses_prepared_data(members):
    """Given each member's prepared data, ensemble_by_step transformed every prefix again
    (a framed member then had twice its features; a pooled one, pooled twice, silently)."""
    from lstm_cli.data import load_dataset
    from lstm_cli.diagnostics import ensemble_by_step
    from lstm_cli.errors import DataError
    from lstm_cli.inference import encode_dataset_labels, load_trained

    tms = [load_trained(p) for p in members]
    test = load_dataset(DATA)
    y = encode_dataset_labels(test, tms[0].classes)
    as_read = ensemble_by_step([(tm, test) for tm in tms], y)
    assert as_read["n"] == len(test)
    with pytest.raises(DataError, match="needs the data as read"):
        ensemble_by_step([(tm, tm.prepare(test)) for tm in tms], y)


def test_the_diagnostics_refuse_labels_that_are_not_class_indices(members):
    """diagnose counted y = -1 (an unknown label) as the last class, silently; a y of the
    wrong length, beyond the classes or of floats was a bare IndexError. Each is one
    LstmCliError now; ensemble_by_step leaves -1 out, as documented."""
    from lstm_cli.data import load_dataset
    from lstm_cli.diagnostics import checkpoint_gradient_flow, diagnose, ensemble_by_step
    from lstm_cli.errors import LstmCliError
    from lstm_cli.inference import encode_dataset_labels, load_trained

    tm = load_trained(members[0])
    test = load_dataset(DATA)
    y = encode_dataset_labels(test, tm.classes)
    unknown = y.copy()
    unknown[::5] = -1
    with pytest.raises(LstmCliError, match=r"y holds -1.*pass the known sequences"):
        diagnose(tm, test, unknown, gates=False)
    for bad in (y[:-1], y.astype(float), np.full_like(y, len(tm.classes))):
        with pytest.raises(LstmCliError, match="^y "):
            diagnose(tm, test, bad, gates=False)
        with pytest.raises(LstmCliError, match="^y "):
            checkpoint_gradient_flow(tm, test, bad, epoch=1)
    known = np.flatnonzero(unknown >= 0)
    left_out = ensemble_by_step([(tm, test)], unknown)
    assert left_out["n"] == known.size
    assert left_out["accuracy"][-1] == pytest.approx(
        diagnose(tm, test.view(known), y[known], gates=False)["by_step"]["accuracy"][-1]
    )


def test_the_api_refuses_an_ensemble_config_to_fit_and_no_members(tmp_path):
    """fit(cfg) with train.folds 3 trained one model whose folder a later --resume filled
    with members beside it (lstm-eval then read the stale single model); fit_folds of a
    one-model config was a ZeroDivisionError; no members a TypeError or IndexError."""
    from lstm_cli.config import load_config
    from lstm_cli.ensemble import ensemble_probs, evaluate_ensemble
    from lstm_cli.errors import ConfigError, LstmCliError
    from lstm_cli.training import fit, fit_folds

    config = str(ROOT / "configs" / "tiny.yaml")
    out = f"output.dir={tmp_path / 'run'}"
    with pytest.raises(ConfigError, match="train.folds 3 makes a cross-validated ensemble"):
        fit(load_config(config, [out, "train.folds=3"]), progress=False, log=lambda m: None)
    with pytest.raises(ConfigError, match="fit_folds trains a train.folds ensemble"):
        fit_folds(load_config(config, [out]), progress=False, log=lambda m: None)
    assert not (tmp_path / "run").exists()
    for function in (ensemble_probs, evaluate_ensemble):
        with pytest.raises(LstmCliError, match="at least one member"):
            function([])

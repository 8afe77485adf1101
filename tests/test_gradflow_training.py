"""Gradient flow through time recorded during training (train.gradflow_every, issue #14).

The training backward pass itself reports, per packed row, the norms of the total dL/dh_t
and dL/dc_t (both paths: the head at t and step t+1); these are checked against
lstm_cli.diagnostics.batch_gradient_flow, an independent step-by-step BPTT on each
sequence's own loss.
"""

import json

import numpy as np
import pytest

from lstm_cli.config import load_config
from lstm_cli.data import load_dataset
from lstm_cli.diagnostics import (
    GradFlowAccumulator,
    batch_gradient_flow,
    checkpoint_gradient_flow,
)
from lstm_cli.inference import TrainedModel, encode_dataset_labels
from lstm_cli.nn.gradcheck import random_problem
from lstm_cli.plot import check_gradflow_record
from lstm_cli.store.checkpoint import load_checkpoint
from lstm_cli.training import fit
from lstm_cli.training.rundir import append_gradflow


def _fit(path, *overrides):
    return fit(load_config(path, overrides), progress=False, log=lambda *a: None)


@pytest.mark.parametrize("head", ["last", "all"])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_training_backward_reports_each_steps_gradient_norms(head, weighted):
    model, x, lengths, y = random_problem(num_layers=2, head=head, seed=3)
    cw = np.array([0.5, 2.0, 1.0]) if weighted else None
    flow = []
    model.loss_and_grads(x, lengths, y, cw, flow=flow)
    ref_dh, ref_dc, _ = batch_gradient_flow(model, x, lengths, y)  # per-sequence losses
    w = np.ones(len(y)) if cw is None else cw[y]
    scale = (w.sum() / w)[:, None]  # the batch loss weighs sequence b by w_b / sum(w)
    assert len(flow) == 2
    for k, (dh, dc) in enumerate(flow):
        np.testing.assert_allclose(dh * scale, ref_dh[k], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(dc * scale, ref_dc[k], rtol=1e-10, atol=1e-14)
        valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
        assert (dh[~valid] == 0).all() and (dh[valid] > 0).all()


def test_a_norm_that_overflowed_is_recorded_as_null():
    """JSON has no Infinity: a non-finite mean is null, as a step with no data."""
    acc = GradFlowAccumulator()
    acc.add(0, np.array([[1.0, np.inf, 0.0]]), np.array([[np.nan, 2.0, 0.0]]), [2])
    record = check_gradflow_record(acc.records(1)[0], "record")
    assert record["dh_norm"] == [1.0, None, None] and record["dc_norm"] == [None, 2.0, None]


@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_an_epochs_records_are_the_mean_over_its_sequences(write_config, tmp_path, bi):
    """With a learning rate too small to move the weights, one epoch's records equal the
    per-sequence gradient flow of the initial model over the training split; a
    bidirectional model's name their direction."""
    cfg = write_config(
        model={"hidden_size": 5, "num_layers": 2, "dtype": "float64", "bidirectional": bi},
        data={"valid_fraction": 0.0},
        train={"epochs": 1, "gradflow_every": 1, "optimizer": {"name": "sgd", "lr": 1e-300}},
    )
    result = _fit(cfg)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "gradflow.jsonl").read_text().splitlines()]
    tracks = [(1, k, d) for k in (0, 1) for d in (("forward", "reverse") if bi else (None,))]
    assert [(r["epoch"], r["layer"], r.get("direction")) for r in records] == tracks
    c = load_config(cfg)
    ds = load_dataset(c.data.train)
    tm = result.trained  # the weights moved by ~1e-300 at most
    y = encode_dataset_labels(ds, tm.classes)
    want = checkpoint_gradient_flow(
        TrainedModel(tm.model, tm.classes, tm.mean, tm.std, {}), ds, y, 1
    )
    for got, ref in zip(records, want):
        assert got["count"] == ref["count"] and got["step"] == ref["step"]
        for key in ("dh_norm", "dc_norm", "dh_norm_by_fraction", "dc_norm_by_fraction"):
            assert [v is None for v in got[key]] == [v is None for v in ref[key]]
            g, r = (np.array([v for v in vals if v is not None]) for vals in (got[key], ref[key]))
            np.testing.assert_allclose(g, r, rtol=1e-9)


def test_records_only_every_n_epochs_and_off_by_default(write_config, tmp_path):
    _fit(write_config(train={"epochs": 4, "gradflow_every": 2}))
    lines = (tmp_path / "run" / "gradflow.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [2, 4]
    _fit(write_config(name="off.yaml", train={"epochs": 2}, output={"dir": str(tmp_path / "off")}))
    assert not (tmp_path / "off" / "gradflow.jsonl").exists()
    assert load_checkpoint(str(tmp_path / "off" / "last.npz")).meta["epoch"] == 2


def test_a_crash_while_an_epochs_records_are_written_loses_no_epoch(
    write_config, tmp_path, monkeypatch
):
    """gradflow.jsonl is not in last.npz, so it is written first: a crash as epoch 2's records
    are written leaves last.npz at epoch 1 and the resume records epoch 2 again. Written after
    last.npz, the resume started at epoch 3 and the file held epochs [1, 3]."""
    import lstm_cli.training.gradflow as gradflow
    from lstm_cli.training.resume import config_for_resume

    real = gradflow.append_gradflow

    def crash_at_epoch_2(run_dir, records):
        if records[0]["epoch"] == 2:
            raise RuntimeError("killed")
        real(run_dir, records)

    monkeypatch.setattr(gradflow, "append_gradflow", crash_at_epoch_2)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(write_config(train={"epochs": 3, "gradflow_every": 1}))
    monkeypatch.setattr(gradflow, "append_gradflow", real)
    run = tmp_path / "run"
    fit(config_for_resume(run), resume=True, progress=False, log=lambda *a: None)
    lines = (run / "gradflow.jsonl").read_text().splitlines()
    assert sorted({json.loads(line)["epoch"] for line in lines}) == [1, 2, 3]


def test_an_epoch_run_again_replaces_its_records(tmp_path):
    def rec(epoch, layer):
        return {"epoch": epoch, "layer": layer}

    append_gradflow(tmp_path, [rec(1, 0), rec(1, 1)])
    append_gradflow(tmp_path, [rec(2, 0), rec(2, 1)])
    append_gradflow(tmp_path, [rec(2, 0), rec(2, 1)])  # epoch 2 again, after a resume
    lines = (tmp_path / "gradflow.jsonl").read_text().splitlines()
    assert [(json.loads(x)["epoch"], json.loads(x)["layer"]) for x in lines] == [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
    ]


@pytest.mark.parametrize(
    "bad", ['{"epoch": 1, "layer": 0, "step": [1', "[1, 2]", '{"layer": 0}', '{"epoch": 0}']
)
def test_resume_refuses_a_damaged_gradflow_file_before_training(write_config, tmp_path, bad):
    """A line of gradflow.jsonl that is not a record crashed --resume at its first recording
    epoch: a JSONDecodeError (or TypeError, KeyError) traceback, that epoch's work lost.
    Now exit 4 before training, naming the file and line; the run's files untouched."""
    from click.testing import CliRunner
    from conftest import file_bytes

    from lstm_cli.cli import train

    _fit(write_config(train={"epochs": 2, "gradflow_every": 1}))
    run = tmp_path / "run"
    lines = (run / "gradflow.jsonl").read_text().splitlines()
    (run / "gradflow.jsonl").write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n")
    before = file_bytes(run)
    r = CliRunner().invoke(train, ["--resume", str(run), "--set", "train.epochs=3", "--quiet"])
    assert r.exit_code == 4, r.output
    assert r.stderr.startswith(f"Error: {run / 'gradflow.jsonl'}:2: not a gradient-flow record")
    assert len(r.stderr.strip().splitlines()) == 1 and file_bytes(run) == before
    # with nothing left to train the file is never appended to: the resume goes through
    r = CliRunner().invoke(train, ["--resume", str(run), "--quiet"])
    assert r.exit_code == 0, r.output
    (run / "gradflow.jsonl").unlink()
    (run / "gradflow.jsonl").mkdir()  # a folder in the way: one line, exit 1
    r = CliRunner().invoke(train, ["--resume", str(run), "--set", "train.epochs=3", "--quiet"])
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: cannot read {run / 'gradflow.jsonl'}")
    assert "Traceback" not in r.output

"""lstm-gradcheck through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from lstm_cli.cli import gradcheck
from lstm_cli.nn.model import LSTMClassifier


def test_default_matrix_passes():
    result = CliRunner().invoke(gradcheck, [])
    assert result.exit_code == 0, result.output
    for combo in ("last/1", "last/2", "all/1", "all/2"):
        assert combo in result.output
    assert "PASSED" in result.output


def test_json_output_is_valid():
    result = CliRunner().invoke(gradcheck, ["--json", "--head", "all", "--layers", "3"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["passed"] is True
    (check,) = report["checks"]
    assert check["head"] == "all" and check["num_layers"] == 3
    names = [r["name"] for r in check["rows"]]
    assert names == [
        "lstm.0.W",
        "lstm.0.b",
        "lstm.1.W",
        "lstm.1.b",
        "lstm.2.W",
        "lstm.2.b",
        "head.W",
        "head.b",
        "input x",
    ]


def test_a_step_too_large_for_the_stencil_exits_1():
    # truncation error of a two-point difference at h = 0.3: a real finite-difference failure
    result = CliRunner().invoke(
        gradcheck, ["--order", "2", "--eps", "0.3", "--layers", "1", "--head", "last"]
    )
    assert result.exit_code == 1
    assert "FAIL" in result.output and "FAILED" in result.output


@pytest.mark.parametrize("scale", [1 + 1e-5, 1 + 1e-3])
def test_a_slightly_wrong_gradient_exits_1_and_names_it(monkeypatch, scale):
    # One parameter's gradient off by 1e-5 or 1e-3 relative (as a dropped small term would
    # be): the round-off floor must not hide it.
    real = LSTMClassifier.loss_and_grads

    def broken(self, *args, **kwargs):
        loss, grads, *rest = real(self, *args, **kwargs)
        grads["lstm.0.b"] = grads["lstm.0.b"] * scale
        return (loss, grads, *rest)

    monkeypatch.setattr(LSTMClassifier, "loss_and_grads", broken)
    result = CliRunner().invoke(gradcheck, ["--layers", "2", "--head", "all", "--quiet"])
    assert result.exit_code == 1, result.output
    failed = [line.split()[1] for line in result.output.splitlines() if line.endswith("FAIL")]
    assert failed == ["lstm.0.b"]


def test_default_problems_pass_with_the_round_off_floor():
    # These failed correct gradients under the pure relative measure (|a| ~ 1e-8..1e-9 entries
    # deep in a 3-layer stack, resolved by the finite differences only to ~4e-14 absolute).
    runner = CliRunner()
    for args in (
        ["--head", "all", "--layers", "3", "--hidden-size", "5"],
        ["--head", "last", "--layers", "3", "--forget-bias", "0"],
        ["--head", "all", "--layers", "3", "--seed", "6"],
        ["--seed", "10"],
        ["--seed", "36"],
    ):
        result = runner.invoke(gradcheck, [*args, "--quiet"])
        assert result.exit_code == 0, (args, result.output)


def test_bad_options_exit_2():
    runner = CliRunner()
    for args in (
        ["--layers", "0"],
        ["--head", "first"],
        ["--eps", "-1"],
        ["--bogus"],
        ["--tol", "nan"],
        ["--eps", "inf"],
        ["--eps", "nan"],
        ["--forget-bias", "nan"],
        ["--tol", "0"],
    ):
        result = runner.invoke(gradcheck, args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output


def test_sampled_entries_and_version():
    result = CliRunner().invoke(
        gradcheck,
        ["--hidden-size", "12", "--max-entries", "40", "--json", "--head", "last", "--layers", "1"],
    )
    assert result.exit_code == 0
    rows = json.loads(result.stdout)["checks"][0]["rows"]
    assert rows[0]["checked"] == 40  # lstm.0.W has 15*48 entries: a seeded sample
    assert CliRunner().invoke(gradcheck, ["--version"]).output.startswith("lstm_cli ")


def test_config_architecture(write_config):
    cfg = write_config(model={"hidden_size": 5, "num_layers": 2, "head": "all", "forget_bias": 0.5})
    result = CliRunner().invoke(gradcheck, ["--config", cfg, "--json"])
    assert result.exit_code == 0, result.output
    (check,) = json.loads(result.stdout)["checks"]
    assert check["head"] == "all" and check["num_layers"] == 2
    shapes = {r["name"]: r["shape"] for r in check["rows"]}
    assert shapes["lstm.0.W"] == [3 + 5, 20] and shapes["head.W"] == [5, 3]
    assert CliRunner().invoke(gradcheck, ["--config", cfg, "--head", "last"]).exit_code == 2
    assert CliRunner().invoke(gradcheck, ["--set", "model.head=all"]).exit_code == 2

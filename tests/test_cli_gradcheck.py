"""lstm-gradcheck through click's CliRunner."""

import json

from click.testing import CliRunner

from lstm_cli.cli import gradcheck


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
    assert names == ["lstm.0.W", "lstm.0.b", "lstm.1.W", "lstm.1.b", "lstm.2.W", "lstm.2.b",
                     "head.W", "head.b", "input x"]


def test_impossible_tolerance_exits_1():
    result = CliRunner().invoke(gradcheck, ["--tol", "1e-15", "--layers", "1", "--head", "last"])
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_bad_options_exit_2():
    runner = CliRunner()
    for args in (["--layers", "0"], ["--head", "first"], ["--eps", "-1"], ["--bogus"]):
        assert runner.invoke(gradcheck, args).exit_code == 2, args


def test_sampled_entries_and_version():
    result = CliRunner().invoke(gradcheck, ["--hidden-size", "12", "--max-entries", "40", "--json",
                                            "--head", "last", "--layers", "1"])
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

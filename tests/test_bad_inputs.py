"""A corpus of bad inputs (tests/bad_inputs/), each proving "one clear error, nothing lost".

For every case the real CLI runs through click's CliRunner and the test checks:

1. the exit code is the documented one (README "Exit codes": 2 usage, 3 config,
   4 data, 5 checkpoint);
2. stderr is exactly one line starting "Error: ", no "Traceback" anywhere, nothing on
   stdout, and the line names the file and the line/row/column/key that is wrong;
3. a run folder trained once per module is untouched: every training case points
   --output at it *with --overwrite*, so only the up-front validation protects it, and
   afterwards every file's bytes (and mtime and inode) must be unchanged; eval/predict
   cases also check that existing --json/--predictions/--output files are untouched;
4. with --debug a few cases raise the lstm_cli error type instead.

Static cases live in tests/bad_inputs/ (see its README.md); binary ones (NPZ data,
damaged checkpoints, pickles, a multi-MB line) are built in tmp by
tests/bad_inputs/make_npz.py and the fixtures below.
"""

import importlib.util
import json
import os
import random
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from lstm_cli.cli import evaluate, predict, train
from lstm_cli.errors import ConfigError, DataError

BAD = Path(__file__).resolve().parent / "bad_inputs"
GOOD_CONFIG = BAD / "good" / "good.yaml"

_spec = importlib.util.spec_from_file_location("bad_inputs_make_npz", BAD / "make_npz.py")
make_npz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_npz)


# --------------------------------------------------------------------------- helpers


def _snapshot(folder):
    """{relative path: (bytes, mtime_ns, inode)} of every file and folder under ``folder``."""
    snap = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.stat(path)
            rel = os.path.relpath(path, folder)
            if os.path.isdir(path):
                snap[rel + "/"] = (None, st.st_mtime_ns, st.st_ino)
            else:
                with open(path, "rb") as fh:
                    snap[rel] = (fh.read(), st.st_mtime_ns, st.st_ino)
    return snap


def _restore(folder, snap):
    """Put ``folder`` back to the bytes of ``snap`` (after a case damaged it)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for rel, (data, _, _) in sorted(snap.items()):
        path = os.path.join(folder, rel.rstrip("/"))
        if data is None:
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)


def assert_one_clear_error(result, code, *needles):
    """Exit ``code``, no traceback, nothing on stdout, one 'Error: ' line naming every needle."""
    out, err = result.stdout, result.stderr
    assert "Traceback" not in out + err, out + err
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{err}"
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}: {err!r}"
    assert out == "", f"unexpected stdout: {out[:500]!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err[:2000]!r}"
    line = lines[0]
    assert line.startswith("Error: "), line
    assert len(line) < 1000, f"message too long ({len(line)} chars): {line[:300]!r}..."
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory):
    """A tiny valid run (1 epoch, hidden size 4, 2 features, int labels 0/1), trained once."""
    root = tmp_path_factory.mktemp("valid_run")
    rng = np.random.default_rng(0)
    with open(root / "train.jsonl", "w") as fh:
        for n in range(24):
            y = n % 2
            x = rng.normal(loc=y, size=(2 + n % 4, 2)).round(3)  # (T, 2)
            fh.write(json.dumps({"x": x.tolist(), "y": y}) + "\n")
    cfg = root / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "train.jsonl", "valid_fraction": 0.25},
                "model": {"hidden_size": 4},
                "train": {"epochs": 1, "batch_size": 8, "seed": 0},
            }
        )
    )
    run = root / "run"
    result = CliRunner().invoke(train, ["--config", str(cfg), "--output", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert {
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "last.npz",
        "best.npz",
        "summary.json",
    } <= set(os.listdir(run))
    baseline = CliRunner().invoke(
        predict, [str(run / "best.npz"), "--data", str(BAD / "good" / "train.jsonl")]
    )
    assert baseline.exit_code == 0, baseline.output
    return SimpleNamespace(
        dir=run,
        best=run / "best.npz",
        last=run / "last.npz",
        snapshot=_snapshot(run),
        predictions=baseline.stdout,
    )


@pytest.fixture
def run_guard(valid_run):
    """Yields the valid run; afterwards its folder must be byte-for-byte as before.

    If a case did damage it, the folder is restored so later cases are judged on their own.
    """
    yield valid_run
    now = _snapshot(valid_run.dir)
    before = valid_run.snapshot
    if now != before:
        _restore(valid_run.dir, before)
        valid_run.snapshot = _snapshot(valid_run.dir)
        changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        pytest.fail(f"the run folder was touched: {changed}")


@pytest.fixture
def runner():
    return CliRunner()


def _train_into(run_dir, config, *args, debug=False):
    """Train args that point --output at the valid run with --overwrite."""
    return ["--config", str(config), "--output", str(run_dir), "--overwrite", "--quiet", *args] + (
        ["--debug"] if debug else []
    )


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npz_cases")
    for build in make_npz.NPZ_DATA_CASES.values():
        build(str(folder))
    return folder


@pytest.fixture
def outputs(tmp_path):
    """Existing --json / --predictions / --output targets a failing command must not touch."""
    folder = tmp_path / "existing_outputs"
    folder.mkdir()
    for name in ("report.json", "predictions.csv", "predict.csv"):
        (folder / name).write_text(f"precious {name}\n")
    snap = _snapshot(folder)
    yield SimpleNamespace(
        dir=folder,
        json=folder / "report.json",
        preds=folder / "predictions.csv",
        out=folder / "predict.csv",
    )
    assert _snapshot(folder) == snap, "an existing output file was touched"


def _eval_args(ckpt, data, outputs, *extra):
    return [
        str(ckpt),
        "--data",
        str(data),
        "--json",
        str(outputs.json),
        "--predictions",
        str(outputs.preds),
        *extra,
    ]


def _predict_args(ckpt, data, outputs, *extra):
    return [str(ckpt), "--data", str(data), "--output", str(outputs.out), *extra]


# --------------------------------------------------------------------------- config cases

# (file in tests/bad_inputs/config, exit code, substrings the one-line message must hold)
CONFIG_CASES = [
    ("unknown_key.yaml", 3, ["unknown key 'model.hiden_size'", "did you mean 'model.hidden_size'"]),
    ("unknown_section.yaml", 3, ["unknown key 'trainer'", "did you mean 'train'"]),
    ("string_for_int.yaml", 3, ["'model.hidden_size'", "must be an int", "'four'"]),
    ("float_for_int.yaml", 3, ["'train.batch_size'", "must be an int", "4.0"]),
    ("negative_hidden_size.yaml", 3, ["'model.hidden_size'", "[1, inf)", "-4"]),
    ("bool_for_int.yaml", 3, ["'train.epochs'", "must be an int", "True"]),
    ("bool_for_str.yaml", 3, ["'model.head'", "True", "quotes"]),
    ("out_of_range_float.yaml", 3, ["'model.dropout'", "[0.0, 1.0)", "1.5"]),
    ("bad_choice.yaml", 3, ["'train.optimizer.name'", "'adamm'", "Did you mean 'adam'"]),
    ("missing_data_section.yaml", 3, ["missing required key 'data.train'"]),
    ("missing_data_train.yaml", 3, ["missing required key 'data.train'"]),
    ("yaml_syntax_error.yaml", 3, ["invalid YAML", "line 5, column 14"]),
    ("unclosed_bracket.yaml", 3, ["invalid YAML", "line 7"]),
    ("tab_indent.yaml", 3, ["invalid YAML", "line 4, column 1", "tabs"]),
    ("duplicate_key.yaml", 3, ["line 6", "duplicate key 'hidden_size'", "first given on line 4"]),
    (
        "duplicate_merge_key.yaml",
        3,
        ["line 5", "duplicate key '<<'", "first given on line 4", "<<: [*a, *b]"],
    ),
    ("dotted_key.yaml", 3, ["dotted key 'train.epochs'", "--set only", "train: {epochs: 1}"]),
    (
        "dotted_key_nested.yaml",
        3,
        ["dotted key 'csv.id_column' under 'data'", "data: {csv: {id_column: seq}}"],
    ),
    ("empty_key.yaml", 3, ["empty key '' at the top level", "valid keys at the top level are"]),
    (
        "alias_bomb.yaml",
        3,
        ["'model.hidden_size'", "must be an int", "Got [['x', 'x', 'x', 'x', ...], "],
    ),
    (
        "merge_bomb.yaml",
        3,
        ["invalid YAML", "line 11", "merge keys ('<<') copy more than 10000 entries"],
    ),
    (
        "bad_date.yaml",
        3,
        ["invalid YAML", "line 3, column 9", "cannot read '2024-02-30' as a date", "quotes"],
    ),
    ("huge_int.yaml", 3, ["invalid YAML", "line 4, column 16", "as an int (too many digits)"]),
    ("nul_in_path.yaml", 3, ["'data.train'", "'train\\x00.jsonl'", "NUL character"]),
    ("deep_nesting.yaml", 3, ["invalid YAML", "nested too deeply"]),
    ("list_for_mapping.yaml", 3, ["section 'model' must be a mapping", "list [1, 2]"]),
    ("scalar_for_mapping.yaml", 3, ["section 'train' must be a mapping", "int 5"]),
    ("top_level_list.yaml", 3, ["the top level must be a mapping", "got list"]),
    ("empty.yaml", 3, ["is empty", "data.train"]),
    ("comments_only.yaml", 3, ["is empty", "data.train"]),
    ("non_utf8.yaml", 3, ["not UTF-8"]),
    # the config is fine, a file it names is not: data errors (exit 4) naming that file
    ("data_train_missing_file.yaml", 4, ["data file not found", "does_not_exist.jsonl"]),
    (
        "data_test_unknown_label.yaml",
        4,
        [
            "unknown_label.jsonl",
            "label 7",
            "sequence 2",
            "set data.test to null",
            "--allow-unknown",
        ],
    ),
    ("data_valid_wrong_features.yaml", 4, ["three_features.jsonl", "3 features per step", "has 2"]),
]

# these fail on a data file the config names: the message names that file, not the config
_NO_FILE_NAME = {
    "data_train_missing_file.yaml",
    "data_test_unknown_label.yaml",
    "data_valid_wrong_features.yaml",
}


@pytest.mark.parametrize("name,code,needles", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(runner, run_guard, name, code, needles):
    config = BAD / "config" / name
    result = runner.invoke(train, _train_into(run_guard.dir, config))
    file_needle = [] if name in _NO_FILE_NAME else [name]
    assert_one_clear_error(result, code, *file_needle, *needles)


# (--set arguments on the valid config, exit code, substrings)
OVERRIDE_CASES = [
    (
        "unknown_key",
        ["model.hiden_size=3"],
        3,
        [
            "unknown key 'model.hiden_size'",
            "--set model.hiden_size=3",
            "did you mean 'model.hidden_size'",
        ],
    ),
    ("no_equals", ["model.hidden_size"], 3, ["invalid override 'model.hidden_size'", "KEY=VALUE"]),
    ("no_value", ["model.hidden_size="], 3, ["invalid override 'model.hidden_size='", "no value"]),
    ("section", ["model=3"], 3, ["invalid override 'model=3'", "'model' is a section"]),
    (
        "out_of_range",
        ["model.hidden_size=0"],
        3,
        ["--set model.hidden_size=0", "'model.hidden_size'", "Got 0"],
    ),
    (
        "bad_yaml_value",
        ["train.epochs=[1"],
        3,
        ["invalid override 'train.epochs=[1'", "not valid YAML"],
    ),
    ("empty_path", ["data.train=''"], 3, ["--set data.train=''", "'data.train'", "non-empty"]),
    (
        "later_one_bad",
        ["model.hidden_size=8", "train.epochs=-1"],
        3,
        ["--set train.epochs=-1", "'train.epochs'"],
    ),
    (
        "needs_validation",
        ["data.valid_fraction=0", "train.early_stopping.patience=3"],
        3,
        ["'train.early_stopping.patience' needs validation data"],
    ),
    (
        "noise_overflows",
        ["train.augment.noise=1e39"],
        3,
        ["--set train.augment.noise=1e39", "too large for float32", "below 3.4e+36"],
    ),
    (
        "folds_beyond_the_data",  # refused at once: no list of that many folds is built
        ["train.folds=100000000000000000000000", "data.valid_fraction=0"],
        4,
        ["train.jsonl", "train.folds 100000000000000000000000 needs at least", "it has 12"],
    ),
]


@pytest.mark.parametrize(
    "sets,code,needles", [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES]
)
def test_bad_override(runner, run_guard, sets, code, needles):
    args = [a for s in sets for a in ("--set", s)]
    result = runner.invoke(train, _train_into(run_guard.dir, GOOD_CONFIG, *args))
    assert_one_clear_error(result, code, *needles)


def test_non_empty_run_folder_without_overwrite(runner, run_guard):
    result = runner.invoke(
        train, ["--config", str(GOOD_CONFIG), "--output", str(run_guard.dir), "--quiet"]
    )
    assert_one_clear_error(result, 3, str(run_guard.dir), "is not empty", "--overwrite")


@pytest.mark.parametrize(
    "sets,needles",
    [
        (["model.hidden_size=8"], ["cannot resume", "model.hidden_size: 4 -> 8"]),
        (["train.epochs=0"], ["--set train.epochs=0", "'train.epochs'"]),
        (["model.hiden_size=8"], ["unknown key 'model.hiden_size'"]),
    ],
    ids=["changed_architecture", "bad_epochs", "unknown_key"],
)
def test_bad_resume(runner, run_guard, sets, needles):
    args = [a for s in sets for a in ("--set", s)]
    result = runner.invoke(train, ["--resume", str(run_guard.dir), "--quiet", *args])
    assert_one_clear_error(result, 3, *needles)


@pytest.mark.parametrize(
    "args",
    [
        ["--config", str(BAD / "config" / "does_not_exist.yaml")],
        ["--config", str(GOOD_CONFIG), "--output", str(BAD / "good" / "train.jsonl")],
        ["--config", str(GOOD_CONFIG), "--no-such-option"],
    ],
    ids=["missing_config_file", "output_is_a_file", "unknown_option"],
)
def test_usage_errors_exit_2(runner, run_guard, args):
    # click's own usage errors: exit 2, "Usage: ..." then the Error line (not one line)
    result = runner.invoke(train, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("Error: ")


# --------------------------------------------------------------------------- data cases

# (file under tests/bad_inputs, substrings); every one is a data error, exit 4
TEXT_DATA_CASES = [
    # JSONL
    ("jsonl/ragged_steps.jsonl", ["line 2", "'x' step 2 has 3 features, step 1 has 2"]),
    ("jsonl/ragged_lines.jsonl", ["line 3", "3 features per step, expected 2", "as on line 1"]),
    ("jsonl/zero_length.jsonl", ["line 2", "empty list", "at least 1 step"]),
    ("jsonl/no_features.jsonl", ["line 2", "no features"]),
    ("jsonl/nan.jsonl", ["line 2", "step 2, feature 1 is nan"]),
    ("jsonl/inf.jsonl", ["line 3", "step 1, feature 2 is -inf"]),
    ("jsonl/overflow.jsonl", ["line 1", "step 2, feature 2 is inf"]),
    ("jsonl/huge_value.jsonl", ["line 2", "step 2, feature 1 is 1e+300", "float32's range"]),
    ("jsonl/huge_digits.jsonl", ["line 1", "an integer of more than 4300 digits"]),
    ("jsonl/non_numeric.jsonl", ["line 3", "step 2, feature 2 is a string ('0.8')"]),
    ("jsonl/bool_value.jsonl", ["line 1", "step 2, feature 2 is a boolean"]),
    ("jsonl/missing_label.jsonl", ["line 3", "missing label"]),
    ("jsonl/null_label.jsonl", ["line 2", "'y' is null"]),
    ("jsonl/mixed_label_types.jsonl", ["line 2", "label '1' is a string", "from line 1"]),
    (
        "jsonl/surrogate_label.jsonl",
        ["line 3", "'y' is a string ('\\ud800b')", "U+D800", "lone surrogate"],
    ),
    ("jsonl/missing_x.jsonl", ["line 2", "missing key 'x'"]),
    ("jsonl/not_an_object.jsonl", ["line 2", "expected a JSON object", "got a list"]),
    ("jsonl/empty.jsonl", ["no sequences", "empty"]),
    ("jsonl/blank_lines_only.jsonl", ["no sequences", "blank lines"]),
    ("jsonl/truncated.jsonl", ["line 3", "invalid JSON", "column 27", "looks truncated"]),
    ("jsonl/non_utf8.jsonl", ["line 2", "not valid UTF-8", "0xe9"]),
    # CSV, long form
    ("csv/ragged.csv", ["line 4", "3 cells, expected 4"]),
    ("csv/nan.csv", ["line 4", "column 'f2'", "nan"]),
    ("csv/inf.csv", ["line 3", "column 'f1'", "-inf"]),
    ("csv/huge_value.csv", ["line 4", "column 'f2'", "-5e+38", "float32's range"]),
    ("csv/huge_label.csv", ["line 2", "label '999999", "...", "does not fit in a 64-bit integer"]),
    ("csv/non_numeric.csv", ["line 5", "column 'f2'", "'abc', not a number"]),
    ("csv/empty_cell.csv", ["line 3", "column 'f1'", "an empty cell"]),
    ("csv/missing_label.csv", ["line 4", "empty label in column 'label'"]),
    ("csv/missing_label_column.csv", ["missing label column 'label'", "found: 'id', 'f1', 'f2'"]),
    ("csv/label_changes.csv", ["line 5", "label '0' differs from label '1'", "sequence 's2'"]),
    ("csv/id_not_contiguous.csv", ["line 4", "sequence id 's1' reappears", "first seen on line 2"]),
    ("csv/no_header.csv", ["missing id column 'id'", "the first row must be a header"]),
    ("csv/empty.csv", ["the file is empty", "header row"]),
    ("csv/header_only.csv", ["no sequences", "no data rows"]),
    ("csv/truncated.csv", ["line 5", "3 cells, expected 4"]),
    ("csv/truncated_quote.csv", ["line 5", "malformed CSV", "unexpected end of data"]),
    ("csv/non_utf8.csv", ["line 4", "not valid UTF-8", "0xe9"]),
    # UEA/UCR .ts
    ("ts/missing_data.ts", ["line 6", "missing @data"]),
    ("ts/header_only_no_data.ts", ["missing @data line"]),
    ("ts/dimensions_mismatch.ts", ["line 7", "2 dimensions, expected 3", "@dimensions 3"]),
    ("ts/univariate_contradiction.ts", ["line 3", "@dimensions 2 contradicts @univariate true"]),
    ("ts/label_not_declared.ts", ["line 9", "label 'c'", "@classLabel"]),
    ("ts/no_classlabel.ts", ["missing @classLabel header"]),
    ("ts/classlabel_false.ts", ["line 5", "@classLabel false", "labels are required"]),
    ("ts/unknown_header.ts", ["line 3", "unknown header @dimensionz"]),
    ("ts/ragged.ts", ["line 8", "dimension 2 has 2 values, dimension 1 has 3"]),
    ("ts/series_length_mismatch.ts", ["line 9", "2 steps", "@seriesLength 3"]),
    ("ts/zero_length.ts", ["line 8", "a dimension has no values"]),
    ("ts/nan.ts", ["line 8", "dimension 1, value 2 is nan"]),
    ("ts/inf.ts", ["line 7", "dimension 2, value 2 is inf"]),
    ("ts/huge_value.ts", ["line 8", "dimension 2, value 2 is 1e+39", "float32's range"]),
    ("ts/huge_series_length.ts", ["line 4", "@serieslength must be a positive integer"]),
    ("ts/comment_after_data.ts", ["line 5", "a '#' comment after @data"]),
    ("ts/classlabel_twice.ts", ["line 3", "@classLabel lists 'a' twice"]),
    ("ts/missing_value.ts", ["line 8", "dimension 2, value 2 is '?'"]),
    ("ts/non_numeric.ts", ["line 8", "dimension 2, value 2 is 'x0.2', not a number"]),
    ("ts/missing_label.ts", ["line 8", "is the label missing?"]),
    ("ts/no_cases.ts", ["no sequences", "no cases after @data"]),
    ("ts/empty.ts", ["missing @data line"]),
    ("ts/truncated.ts", ["line 8", "1 dimensions, expected 2"]),
    ("ts/non_utf8.ts", ["line 8", "not valid UTF-8", "0xe9"]),
]
_TEXT_IDS = [c[0] for c in TEXT_DATA_CASES]


@pytest.mark.parametrize("rel,needles", TEXT_DATA_CASES, ids=_TEXT_IDS)
def test_bad_data_file_train(runner, run_guard, rel, needles):
    path = BAD / rel
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    assert_one_clear_error(result, 4, str(path), *needles)


@pytest.mark.parametrize("rel,needles", TEXT_DATA_CASES, ids=_TEXT_IDS)
def test_bad_data_file_eval(runner, run_guard, outputs, rel, needles):
    path = BAD / rel
    result = runner.invoke(evaluate, _eval_args(run_guard.best, path, outputs))
    assert_one_clear_error(result, 4, str(path), *needles)


# (name in make_npz.NPZ_DATA_CASES, substrings); exit 4
NPZ_DATA_CASES = [
    ("ragged", ["array 'lengths' sums to 8", "array 'x' has 9 rows"]),
    ("too_long", ["array 'lengths'[2] is 40", "9 rows"]),
    ("x_not_2d", ["array 'x' has 1 dimension(s)", "(18,)"]),
    ("zero_length", ["array 'lengths'[1] is 0", "at least 1 step"]),
    ("nan", ["array 'x'[4, 1] is nan"]),
    ("inf", ["array 'x'[7, 0] is -inf"]),
    ("huge_value", ["array 'x'[5, 1] is 1e+300", "float32's range"]),
    ("non_numeric", ["array 'x' has non-numeric dtype"]),
    ("missing_label", ["missing array 'y'", "found: lengths, x"]),
    ("label_count", ["array 'y' has shape (2,), expected (3,)"]),
    ("empty_label", ["array 'y'[1] is the empty string"]),
    ("surrogate_label", ["array 'y'[1]", "U+D800", "lone surrogate"]),
    ("bytes_labels", ["array 'y' has dtype |S1", "unicode"]),
    ("empty", ["not a valid .npz archive"]),
    ("no_arrays", ["missing array 'x'", "found: none"]),
    ("truncated", ["not a valid .npz archive"]),
    ("single_npy", ["single .npy array", "expected an .npz archive"]),
    ("raw_member", ["array 'lengths'", "zip member 'lengths'", "not a .npy array"]),
]
assert {c[0] for c in NPZ_DATA_CASES} == set(make_npz.NPZ_DATA_CASES)


@pytest.mark.parametrize("name,needles", NPZ_DATA_CASES, ids=[c[0] for c in NPZ_DATA_CASES])
def test_bad_npz_data_train(runner, run_guard, npz_dir, name, needles):
    path = npz_dir / f"{name}.npz"
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    assert_one_clear_error(result, 4, str(path), *needles)


@pytest.mark.parametrize("name,needles", NPZ_DATA_CASES, ids=[c[0] for c in NPZ_DATA_CASES])
def test_bad_npz_data_predict(runner, run_guard, outputs, npz_dir, name, needles):
    if name == "missing_label":
        pytest.skip("labels are optional for lstm-predict")
    path = npz_dir / f"{name}.npz"
    result = runner.invoke(predict, _predict_args(run_guard.best, path, outputs))
    assert_one_clear_error(result, 4, str(path), *needles)


@pytest.mark.parametrize("kind", ["object_array_in_npz", "pickle_renamed_npz"])
def test_pickled_npz_data_is_refused_and_never_unpickled(runner, run_guard, tmp_path, kind):
    marker = tmp_path / "MARKER-unpickled"
    if kind == "object_array_in_npz":
        path = Path(make_npz.npz_object_array(str(tmp_path), str(marker)))
        needles = ["array 'y' is an object array"]
    else:
        path = Path(make_npz.pickle_as_npz(str(tmp_path / "data.npz"), str(marker)))
        needles = ["not a valid .npz archive"]
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    assert_one_clear_error(result, 4, str(path), *needles)
    assert not marker.exists(), "the pickle's payload ran"
    result = runner.invoke(evaluate, [str(run_guard.best), "--data", str(path)])
    assert_one_clear_error(result, 4, str(path), *needles)
    assert not marker.exists(), "the pickle's payload ran"


def test_a_line_break_in_a_file_name_stays_in_one_error_line(runner, run_guard, tmp_path):
    """A message names the file as it is called; a line break in the name is shown as
    \\n, so the error is still one line."""
    path = tmp_path / "new\nline.jsonl"
    path.write_text("not json\n")
    result = runner.invoke(evaluate, [str(run_guard.best), "--data", str(path)])
    assert_one_clear_error(result, 4, str(path).replace("\n", "\\n"), "invalid JSON")


def test_huge_malformed_jsonl_line(runner, run_guard, tmp_path):
    """A ~4 MB JSONL line, malformed at its very end, between valid lines: one short message."""
    good = (BAD / "good" / "train.jsonl").read_text()
    steps = ",".join(["[0.123456, -0.654321]"] * 200_000)
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as fh:
        fh.write(good)
        fh.write('{"x": [' + steps + '], "y": 1\n')  # the closing brace is missing
        fh.write(good)
    assert path.stat().st_size > 4_000_000
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    line = assert_one_clear_error(result, 4, str(path), "line 13", "invalid JSON")
    assert len(line) < 300  # the line itself is not echoed


def test_huge_jsonl_line_with_nan_at_the_end(runner, run_guard, tmp_path):
    good = (BAD / "good" / "train.jsonl").read_text()
    steps = ",".join(["[0.5, 0.25]"] * 300_000)
    path = tmp_path / "huge_nan.jsonl"
    with open(path, "w") as fh:
        fh.write(good)
        fh.write('{"x": [' + steps + ', [0.1, NaN]], "y": 0}\n')
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    line = assert_one_clear_error(result, 4, str(path), "line 13", "step 300001, feature 2 is nan")
    assert len(line) < 300


def test_huge_jsonl_line_with_non_utf8_byte_at_the_end(runner, run_guard, tmp_path):
    good = (BAD / "good" / "train.jsonl").read_bytes()
    steps = ",".join(["[0.5, 0.25]"] * 300_000).encode()
    path = tmp_path / "huge_latin1.jsonl"
    path.write_bytes(good + b'{"x": [' + steps + b'], "y": "caf\xe9"}\n')
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    assert_one_clear_error(result, 4, str(path), "line 13", "not valid UTF-8")


def test_csv_quote_left_open_names_the_line_it_opened(runner, run_guard, tmp_path):
    """A quote opened on line 5001 of a CSV and never closed: the message names line 5001."""
    lines = ["id,label,f1,f2"] + [f"s{k // 5},{k // 5 % 2},0.{k},0.5" for k in range(4999)]
    lines.append('s999,1,"0.1,0.2')  # line 5001
    lines += [f"t{k},0,0.3,0.4" for k in range(30)]
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}")
    )
    assert_one_clear_error(result, 4, str(path), "line 5001: malformed CSV", "runs on to line 5031")


@pytest.mark.parametrize(
    "fmt,needles",
    [
        ("csv", ["missing id column 'id'"]),
        ("ts", ["line 1", "missing @data"]),
    ],
    ids=["jsonl_read_as_csv", "jsonl_read_as_ts"],
)
def test_wrong_data_format(runner, run_guard, fmt, needles):
    path = BAD / "good" / "train.jsonl"
    result = runner.invoke(
        train, _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.format={fmt}")
    )
    assert_one_clear_error(result, 4, str(path), *needles)


# --------------------------------------------------------------------------- eval / predict


def test_eval_label_never_seen_in_training(runner, run_guard, outputs):
    path = BAD / "eval" / "unknown_label.jsonl"
    result = runner.invoke(evaluate, _eval_args(run_guard.best, path, outputs))
    assert_one_clear_error(result, 4, str(path), "label 7", "sequence 2", "(0, 1)")


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_wrong_feature_count_against_the_checkpoint(runner, run_guard, outputs, command):
    path = BAD / "eval" / "three_features.jsonl"
    if command == "eval":
        result = runner.invoke(evaluate, _eval_args(run_guard.best, path, outputs))
    else:
        result = runner.invoke(predict, _predict_args(run_guard.best, path, outputs))
    assert_one_clear_error(result, 4, str(path), "3 features per step", "trained on 2")


def _copy_best(valid_run, tmp_path, name):
    dst = tmp_path / name
    shutil.copyfile(valid_run.best, dst)
    return dst


def _damaged_checkpoints(valid_run, tmp_path):
    """{case id: (path, substrings)} of checkpoints damaged in every way we refuse."""
    cases = {}
    for frac in (0.1, 0.5, 0.9, 0.999):
        p = make_npz.truncate(str(_copy_best(valid_run, tmp_path, f"truncated_{frac}.npz")), frac)
        cases[f"truncated_{frac}"] = (p, ["truncated or damaged"])
    for member, array in (
        ("meta.npy", "meta"),
        ("lstm.0.W.npy", "lstm.0.W"),
        ("head.b.npy", "head.b"),
    ):
        p = str(_copy_best(valid_run, tmp_path, f"flip_{array}.npz"))
        start, size = make_npz.member_data_offset(p, member)
        make_npz.flip_bit(p, start + size - 3, bit=4)  # inside the array data, past the .npy header
        cases[f"bit_flip_in_{array}"] = (p, ["damaged", f"'{array}'"])
    p = make_npz.flip_bit(str(_copy_best(valid_run, tmp_path, "flip_magic.npz")), 0)
    cases["bit_flip_in_zip_magic"] = (p, ["not an .npz checkpoint"])
    text = tmp_path / "text.npz"
    text.write_text("this is a text file, renamed .npz\n")
    cases["text_renamed_npz"] = (str(text), ["not an .npz checkpoint"])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    cases["empty_file"] = (str(empty), ["the file is empty"])
    data = tmp_path / "data_npz.npz"
    make_npz._savez(str(data), **make_npz._good_arrays())
    cases["data_npz_not_a_checkpoint"] = (
        str(data),
        ["no 'meta' entry", "not an lstm_cli checkpoint"],
    )
    edited = make_npz.edit_parameter(str(valid_run.best), str(tmp_path / "edited_param.npz"))
    cases["edited_parameter"] = (edited, ["checksum mismatch"])
    edited = make_npz.edit_meta(str(valid_run.best), str(tmp_path / "edited_meta.npz"))
    cases["edited_meta"] = (edited, ["checksum mismatch"])
    return cases


_CKPT_IDS = [
    "truncated_0.1",
    "truncated_0.5",
    "truncated_0.9",
    "truncated_0.999",
    "bit_flip_in_meta",
    "bit_flip_in_lstm.0.W",
    "bit_flip_in_head.b",
    "bit_flip_in_zip_magic",
    "text_renamed_npz",
    "empty_file",
    "data_npz_not_a_checkpoint",
    "edited_parameter",
    "edited_meta",
]


@pytest.mark.parametrize("case", _CKPT_IDS)
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_damaged_checkpoint(runner, run_guard, outputs, tmp_path, command, case):
    cases = _damaged_checkpoints(run_guard, tmp_path)
    assert set(cases) == set(_CKPT_IDS)
    path, needles = cases[case]
    data = BAD / "good" / "train.jsonl"
    if command == "eval":
        result = runner.invoke(evaluate, _eval_args(path, data, outputs))
    else:
        result = runner.invoke(predict, _predict_args(path, data, outputs))
    assert_one_clear_error(result, 5, str(path), *needles)


@pytest.mark.parametrize("kind", ["pickle_renamed_npz", "object_array_in_checkpoint"])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_pickled_checkpoint_is_refused_and_never_unpickled(
    runner, run_guard, outputs, tmp_path, command, kind
):
    marker = tmp_path / "MARKER-unpickled"
    if kind == "pickle_renamed_npz":
        path = make_npz.pickle_as_npz(str(tmp_path / "model.npz"), str(marker))
        needles = ["pickle", "never unpickles"]
    else:
        path = make_npz.add_object_array(
            str(run_guard.best), str(tmp_path / "model.npz"), str(marker)
        )
        needles = ["'evil'"]
    data = BAD / "good" / "train.jsonl"
    if command == "eval":
        result = runner.invoke(evaluate, _eval_args(path, data, outputs))
    else:
        result = runner.invoke(predict, _predict_args(path, data, outputs))
    assert_one_clear_error(result, 5, str(path), *needles)
    assert not marker.exists(), "the pickle's payload ran"


def test_random_bit_flips_are_refused_or_harmless(runner, run_guard, tmp_path):
    """Flip one random bit at 40 seeded offsets: each copy is refused with one clean
    checkpoint error (exit 5) or, when the flip hit a zip field the reader ignores, gives
    exactly the undamaged predictions. Never a traceback, never different numbers."""
    size = run_guard.best.stat().st_size
    rnd = random.Random(1234)
    outcomes = {0: 0, 5: 0}
    data = str(BAD / "good" / "train.jsonl")
    for k in range(40):
        offset, bit = rnd.randrange(size), rnd.randrange(8)
        path = make_npz.flip_bit(str(_copy_best(run_guard, tmp_path, f"rand_{k}.npz")), offset, bit)
        result = runner.invoke(predict, [path, "--data", data])
        where = f"offset {offset} bit {bit}"
        if result.exit_code == 0:
            assert result.stdout == run_guard.predictions, f"{where}: loaded with different numbers"
        else:
            assert_one_clear_error(result, 5, path)
        outcomes[result.exit_code] += 1
    assert outcomes[5] >= 30, outcomes  # nearly all of the file is CRC- or sha256-protected


# --------------------------------------------------------------------------- --debug


@pytest.mark.parametrize(
    "case", ["config_unknown_key", "jsonl_nan", "npz_zero_length", "ts_bad_label"]
)
def test_debug_raises_the_lstm_cli_error_train(runner, run_guard, npz_dir, case):
    if case == "config_unknown_key":
        args, err_type = (
            _train_into(run_guard.dir, BAD / "config" / "unknown_key.yaml", debug=True),
            ConfigError,
        )
    else:
        path = {
            "jsonl_nan": BAD / "jsonl" / "nan.jsonl",
            "npz_zero_length": npz_dir / "zero_length.npz",
            "ts_bad_label": BAD / "ts" / "label_not_declared.ts",
        }[case]
        args = _train_into(run_guard.dir, GOOD_CONFIG, "--set", f"data.train={path}", debug=True)
        err_type = DataError
    result = runner.invoke(train, args)
    # the traceback, then the usual error line and exit code
    assert "Traceback" in result.stderr and f"{err_type.__name__}:" in result.stderr
    assert result.exit_code == err_type.exit_code
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")


def test_debug_raises_the_lstm_cli_error_eval(runner, run_guard, outputs, tmp_path):
    unknown = BAD / "eval" / "unknown_label.jsonl"
    result = runner.invoke(evaluate, _eval_args(run_guard.best, unknown, outputs, "--debug"))
    assert (
        "Traceback" in result.stderr
        and "DataError:" in result.stderr
        and "label 7" in result.stderr
    )
    assert result.exit_code == 4
    truncated = make_npz.truncate(str(_copy_best(run_guard, tmp_path, "t.npz")), 0.5)
    result = runner.invoke(
        predict, _predict_args(truncated, BAD / "good" / "train.jsonl", outputs, "--debug")
    )
    assert "Traceback" in result.stderr and "CheckpointError:" in result.stderr
    assert result.exit_code == 5


# --------------------------------------------------------------------------- the corpus itself


def test_every_bad_input_is_listed():
    """tests/bad_inputs/README.md lists every static file, and every listed file exists."""
    readme = (BAD / "README.md").read_text(encoding="utf-8")
    files = {
        str(p.relative_to(BAD))
        for p in BAD.rglob("*")
        if p.is_file()
        and p.name not in ("README.md", "make_npz.py")
        and "__pycache__" not in p.parts
    }
    listed = set(re.findall(r"^\| `([a-z_]+/[^`]+)` \|", readme, re.M))
    assert files == listed, (
        f"not listed: {sorted(files - listed)}; missing: {sorted(listed - files)}"
    )
    used = {c[0] for c in TEXT_DATA_CASES} | {f"config/{c[0]}" for c in CONFIG_CASES}
    used |= {
        "config/class_weights_unknown_label.yaml",
        "good/train.jsonl",
        "good/good.yaml",
        "eval/unknown_label.jsonl",
        "eval/three_features.jsonl",
    }
    assert files <= used, f"files no test uses: {sorted(files - used)}"


# --------------------------------------------------------------------------- known bugs


def test_class_weights_error_names_the_config_file(runner, run_guard):
    config = BAD / "config" / "class_weights_unknown_label.yaml"
    result = runner.invoke(train, _train_into(run_guard.dir, config))
    assert_one_clear_error(
        result, 3, "train.class_weights", "'5'", "class_weights_unknown_label.yaml"
    )


def test_class_weights_error_names_the_override_that_gave_them(runner, run_guard):
    # checked against the training labels after loading; used to name the config file
    sets = ["--set", "model.hidden_size=4", "--set", "train.class_weights={0: 1.0, 7: 2.0}"]
    result = runner.invoke(train, _train_into(run_guard.dir, GOOD_CONFIG, *sets))
    line = assert_one_clear_error(
        result,
        3,
        "Error: --set train.class_weights={0: 1.0, 7: 2.0}: ",
        "train.class_weights names labels",
        "'7'",
    )
    assert "good.yaml" not in line
    # from the file, with an unrelated --set: the file is named
    config = BAD / "config" / "class_weights_unknown_label.yaml"
    result = runner.invoke(
        train, _train_into(run_guard.dir, config, "--set", "model.hidden_size=5")
    )
    assert_one_clear_error(
        result, 3, "class_weights_unknown_label.yaml: train.class_weights", "'5'"
    )


def test_class_weights_unknown_label_is_still_a_clean_config_error(runner, run_guard):
    config = BAD / "config" / "class_weights_unknown_label.yaml"
    result = runner.invoke(train, _train_into(run_guard.dir, config))
    assert_one_clear_error(result, 3, "train.class_weights", "'5'")


def test_non_utf8_config_names_the_line(runner, run_guard):
    result = runner.invoke(train, _train_into(run_guard.dir, BAD / "config" / "non_utf8.yaml"))
    assert_one_clear_error(result, 3, "non_utf8.yaml", "line 3")


def test_unclosed_bracket_names_the_opening_line(runner, run_guard):
    result = runner.invoke(
        train, _train_into(run_guard.dir, BAD / "config" / "unclosed_bracket.yaml")
    )
    assert_one_clear_error(result, 3, "unclosed_bracket.yaml", "line 6")


@pytest.mark.parametrize("kind", ["text_file_as_npz", "pickle_renamed_npz", "pk_then_junk"])
def test_non_npz_data_message_does_not_advise_unpickling(runner, run_guard, tmp_path, kind):
    if kind == "text_file_as_npz":
        path = BAD / "good" / "train.jsonl"
        args = ["--set", "data.format=npz"]
    elif kind == "pk_then_junk":  # "PK" and then no zip: numpy would call it pickled data
        path = tmp_path / "data.npz"
        path.write_bytes(b"PK" + bytes(range(256)))
        args = ["--set", f"data.train={path}"]
    else:
        path = Path(make_npz.pickle_as_npz(str(tmp_path / "data.npz"), str(tmp_path / "MARKER")))
        args = ["--set", f"data.train={path}"]
    result = runner.invoke(train, _train_into(run_guard.dir, GOOD_CONFIG, *args))
    line = assert_one_clear_error(result, 4, str(path))
    assert "pickle.load" not in line and "allow_pickle" not in line
    if kind != "pickle_renamed_npz":
        assert "pickled" not in line  # a text file, or junk after "PK"

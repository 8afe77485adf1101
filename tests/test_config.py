"""Tests of lstm_cli.config: loading, validation messages, overrides, paths, round trips."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lstm_cli.config import (
    Config,
    CsvConfig,
    DataConfig,
    EarlyStoppingConfig,
    ModelConfig,
    OptimizerConfig,
    OutputConfig,
    ScheduleConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_override,
    value_origin,
)
from lstm_cli.config.schema import (
    CONSTRAINTS,
    LEAVES,
    MODEL_KEYS,
    constraint,
    section_constraints,
    section_keys,
)
from lstm_cli.config.yaml_safe import load_yaml
from lstm_cli.errors import ConfigError, LstmCliError

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "configs" / "reference.yaml"
DOCS = REPO / "docs" / "configuration.md"  # the configuration reference table


def write(tmp_path, text, name="x.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path, text, overrides=()):
    return load_config(write(tmp_path, text), overrides)


def error_of(tmp_path, text, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, overrides)
    return str(info.value)


MINIMAL = "data:\n  train: train.jsonl\n"


# ------------------------------------------------------------------ valid loads


def test_minimal_file_fills_every_default(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg == Config(data=DataConfig(train=str(tmp_path / "train.jsonl")))
    assert cfg.model == ModelConfig()
    assert cfg.train == TrainConfig()
    assert cfg.train.optimizer == OptimizerConfig()
    assert cfg.train.schedule == ScheduleConfig()
    assert cfg.train.early_stopping == EarlyStoppingConfig()
    assert cfg.output == OutputConfig()
    assert cfg.data.csv == CsvConfig()
    assert cfg.model.hidden_size == 64 and cfg.train.optimizer.lr == 1e-3
    assert cfg.train.optimizer.betas == (0.9, 0.999)
    assert cfg.train.class_weights is None


def test_full_file_is_read(tmp_path):
    cfg = load_text(
        tmp_path,
        """
data:
  train: a.csv
  valid: b.csv
  test: c.csv
  format: csv
  normalize: false
  csv: {id_column: seq, label_column: y, feature_columns: [f1, f2]}
model: {hidden_size: 8, num_layers: 2, head: all, forget_bias: 0, dropout: 0.25,
        dtype: float64, init: glorot_orthogonal}
train:
  epochs: 3
  optimizer: {name: sgd, lr: 0.1, momentum: 0.5, nesterov: true, weight_decay: 1.0e-4}
  clip_grad_norm: null
  schedule: {name: step, step_size: 2, gamma: 1}
  early_stopping: {metric: val_accuracy, patience: 4, min_delta: 0.01}
  class_weights: {0: 1, cat: 2.5}
  checkpoint_every_steps: 100
output: {dir: out/here}
""",
    )
    assert cfg.data.valid == str(tmp_path / "b.csv")
    assert cfg.data.csv.feature_columns == ("f1", "f2")
    assert cfg.model.head == "all" and cfg.model.dropout == 0.25
    assert cfg.model.forget_bias == 0.0 and isinstance(cfg.model.forget_bias, float)
    assert cfg.train.optimizer.nesterov is True
    assert cfg.train.clip_grad_norm is None
    assert cfg.train.schedule.gamma == 1.0
    assert cfg.train.class_weights == ((0, 1.0), ("cat", 2.5))
    assert cfg.output.dir == "out/here"


def test_empty_optional_section_takes_defaults(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "model:\n  # everything commented out\n")
    assert cfg.model == ModelConfig()


def test_config_is_frozen(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.hidden_size = 3


def test_config_error_is_a_value_error(tmp_path):
    with pytest.raises(LstmCliError):
        load_text(tmp_path, "")
    with pytest.raises(ValueError):
        load_text(tmp_path, "")


# ------------------------------------------------------------------ rule 1: file and YAML problems


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"^config file not found: .*nope\.yaml$"):
        load_config(path)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    msg = error_of(tmp_path, text)
    assert "x.yaml is empty" in msg and "data.train" in msg


@pytest.mark.parametrize(
    "text, kind",
    [
        ("- 1\n- 2\n", "list"),
        ("42\n", "int"),
        ("hello\n", "str"),
    ],
)
def test_top_level_not_a_mapping(tmp_path, text, kind):
    msg = error_of(tmp_path, text)
    assert "x.yaml" in msg and "top level must be a mapping" in msg and kind in msg


def test_section_not_a_mapping(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "model: [1, 2]\n")
    assert "x.yaml" in msg and "section 'model' must be a mapping" in msg
    assert "hidden_size" in msg  # lists what belongs there


def test_nested_section_not_a_mapping(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "train:\n  optimizer: adam\n")
    assert "section 'train.optimizer' must be a mapping" in msg


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    msg = error_of(tmp_path, "data:\n  train: a\nmodel: {hidden_size: 3\n")
    assert msg.startswith("invalid YAML in ")
    assert "x.yaml" in msg
    assert re.search(r"line \d+, column \d+", msg)


def test_yaml_bad_indentation_reports_line(tmp_path):
    msg = error_of(tmp_path, "data:\n  train: a\n model: x\n")
    assert "line 3" in msg


def test_tabs_are_reported_with_line_and_hint(tmp_path):
    msg = error_of(tmp_path, "data:\n\ttrain: a\n")
    assert "x.yaml" in msg and "line 2, column 1" in msg and "tabs" in msg


@pytest.mark.parametrize(
    "value, problem",
    [
        ("2001-13-45", "cannot read '2001-13-45' as a date (month must be in 1..12)"),
        ("2024-02-30", "cannot read '2024-02-30' as a date (day is out of range for month)"),
        ("1" * 5000, "as an int (too many digits)"),  # more than int() converts
    ],
    ids=["month_13", "30_february", "5000_digits"],
)
def test_scalars_python_cannot_make_are_yaml_errors(tmp_path, value, problem):
    # these were a ValueError traceback
    msg = error_of(tmp_path, f"data:\n  train: {value}\n")
    assert msg.startswith("invalid YAML in ") and "x.yaml at line 2, column 10: " in msg
    assert problem in msg and msg.endswith("; put it in quotes if it is meant as text")
    assert len(msg) < 500


def test_deep_nesting_is_a_yaml_error(tmp_path):
    # PyYAML composes nested nodes recursively: a RecursionError must become one ConfigError
    path = write(tmp_path, MINIMAL + "model: {hidden_size: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"invalid YAML in {path}: lists or mappings nested too deeply"


@pytest.mark.parametrize(
    "value, problem",
    [
        ("2001-13-45", "cannot read '2001-13-45' as a date"),
        ("1" * 5000, "as an int (too many digits)"),
        ("[" * 5000 + "]" * 5000, "lists or mappings nested too deeply"),
    ],
    ids=["month_13", "5000_digits", "deep"],
)
def test_override_values_python_cannot_make_are_errors(tmp_path, value, problem):
    msg = error_of(tmp_path, MINIMAL, [f"model.hidden_size={value}"])
    assert "the value is not valid YAML" in msg and problem in msg


def test_duplicate_key_is_an_error(tmp_path):
    msg = error_of(tmp_path, "data:\n  train: a\nmodel:\n  hidden_size: 8\n  hidden_size: 16\n")
    assert "duplicate key 'hidden_size'" in msg and "line 5" in msg and "line 4" in msg


def test_a_bare_equals_key_given_twice_is_a_duplicate(tmp_path):
    # YAML reads a bare '=' key as the str '='; it is checked like every other key
    msg = error_of(tmp_path, MINIMAL + "train:\n  class_weights: {=: 1.0, =: 2.0}\n")
    assert "x.yaml at line 4, column 27: duplicate key '=' (first given on line 4)" in msg


def test_yaml_merge_keys_still_work(tmp_path):
    # anchors and merge keys inside a section are not "duplicates"
    cfg = load_text(
        tmp_path,
        MINIMAL
        + """
train:
  optimizer: &opt {name: sgd, lr: 0.5}
  schedule: {name: step}
""",
    )
    assert cfg.train.optimizer.name == "sgd"


def test_merge_keys_merge_and_the_mapping_overrides(tmp_path):
    cfg = load_text(
        tmp_path,
        MINIMAL
        + """
model:
  <<: [{hidden_size: 8, num_layers: 2}, {hidden_size: 16, dropout: 0.5}]
  num_layers: 3
""",
    )
    assert (cfg.model.hidden_size, cfg.model.num_layers, cfg.model.dropout) == (8, 3, 0.5)


def test_an_overridden_merged_key_is_not_a_duplicate():
    # &n merges p and overrides it; merging *n into c flattens n before n itself is
    # built, and the duplicate check must not then see p twice
    text = "a: {b: &n {<<: {p: 1}, p: 2}}\nc: {<<: *n}\n"
    expected = {"a": {"b": {"p": 2}}, "c": {"p": 2}}
    assert load_yaml(text, "x.yaml") == expected  # (some PyYAML releases give c: {p: 1})


def test_two_merge_keys_in_one_mapping_are_an_error(tmp_path):
    # PyYAML merges both; every other key given twice is refused, so '<<' is too
    msg = error_of(tmp_path, MINIMAL + "model:\n  <<: {hidden_size: 8}\n  <<: {num_layers: 2}\n")
    assert "x.yaml at line 5, column 3: duplicate key '<<' (first given on line 4)" in msg
    assert "<<: [*a, *b]" in msg


def merge_bomb(levels):
    """A YAML flow list: &m0 = {x: 1, y: 2}, then each &mN merges 9 aliases of &m(N-1)."""
    items = ["&m0 {x: 1, y: 2}"]
    items += [f"&m{n} {{<<: [" + ",".join([f"*m{n - 1}"] * 9) + "]}" for n in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def test_merges_that_copy_too_many_entries_are_an_error(tmp_path):
    # PyYAML copies every merged entry: 2 * 9**5 entries for 6 levels, 2 * 9**8 for 9
    msg = error_of(tmp_path, MINIMAL + f"model: {{hidden_size: {merge_bomb(6)}}}\n")
    assert "x.yaml at line 3" in msg and "merge keys ('<<') copy more than 10000 entries" in msg
    blocks = [
        "{" + ", ".join(f"{n}: 1.0" for n in range(k, k + 1000)) + "}" for k in range(0, 9000, 1000)
    ]
    cfg = load_text(
        tmp_path,
        MINIMAL + "train:\n  class_weights: {<<: [" + ", ".join(blocks) + "]}\n",
    )
    assert len(cfg.train.class_weights) == 9000  # 9000 merged entries are fine


# ------------------------------------------------------------------ rule 2: unknown keys


def test_unknown_key_with_suggestion(tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  optimizer:\n    learnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"unknown key 'train.optimizer.learnig_rate' in {path}; did you mean 'train.optimizer.lr'?"
    )


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("model.hiden_size", "model.hidden_size"),  # a typo
        ("model.epochs", "train.epochs"),  # the wrong section
        ("train.lr", "train.optimizer.lr"),  # a missing section level
        ("train.optimizer.learning_rate", "train.optimizer.lr"),  # a long name for an abbreviation
        ("train.optim", "train.optimizer"),  # a misspelt section is reported as such
        ("modle", "model"),
    ],
)
def test_unknown_key_suggestions(tmp_path, key, suggestion):
    parts = key.split(".")
    text = ""
    for depth, part in enumerate(parts[:-1]):
        text += "  " * depth + part + ":\n"
    text += "  " * (len(parts) - 1) + parts[-1] + ": {a: 1}\n"
    if not key.startswith("data"):
        text = MINIMAL + text
    msg = error_of(tmp_path, text)
    assert f"unknown key {key!r}" in msg
    assert f"did you mean {suggestion!r}" in msg


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "train:\n  schedule:\n    swa: 3\n")
    assert "unknown key 'train.schedule.swa'" in msg
    assert "valid keys under 'train.schedule' are: name, step_size" in msg


def test_unknown_top_level_section(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "optimiser: {lr: 0.1}\n")
    assert "unknown key 'optimiser'" in msg


def test_dotted_key_in_a_file_is_an_error(tmp_path):
    path = write(tmp_path, MINIMAL + "train.epochs: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"dotted key 'train.epochs' in {path}; dotted names are for --set only,"
        " write the nested form train: {epochs: 1} instead"
    )


@pytest.mark.parametrize(
    "text, key, nested",
    [
        (
            "data:\n  train: a\n  csv.id_column: foo\n",
            "'csv.id_column' under 'data'",
            "data: {csv: {id_column: foo}}",
        ),
        (
            MINIMAL + "train:\n  optimizer.lr: 0.5\n",
            "'optimizer.lr' under 'train'",
            "train: {optimizer: {lr: 0.5}}",
        ),
        (MINIMAL + "train.optimizer: {lr: 0.5}\n", "'train.optimizer'", "train: {optimizer: ...}"),
        (
            MINIMAL + "data.csv.label_type: str\n",
            "'data.csv.label_type'",
            "data: {csv: {label_type: str}}",
        ),
        (MINIMAL + "model.head: null\n", "'model.head'", "model: {head: null}"),
        (MINIMAL + "model.head: &x [*x]\n", "'model.head'", "model: {head: ...}"),
    ],
)
def test_dotted_keys_are_errors_at_every_level(tmp_path, text, key, nested):
    # _build looks keys up one level at a time: a dotted key would be dropped silently
    msg = error_of(tmp_path, text)
    assert msg.startswith(f"dotted key {key} in ") and "x.yaml" in msg
    assert "--set only" in msg and f"write the nested form {nested} instead" in msg


def test_dotted_key_from_a_dict_is_an_error():
    with pytest.raises(ConfigError, match=r"dotted key 'train\.epochs' in <dict>"):
        config_from_dict({"data": {"train": "a"}, "train.epochs": 1})


@pytest.mark.parametrize(
    "text, where",
    [
        (MINIMAL + "'': {model: {hidden_size: 3}}\n", "at the top level"),
        (MINIMAL + "model: {'': 3}\n", "under 'model'"),
        (MINIMAL + "train: {optimizer: {'': {lr: 1}}}\n", "under 'train.optimizer'"),
    ],
)
def test_empty_key_is_an_error(tmp_path, text, where):
    msg = error_of(tmp_path, text)
    assert msg.startswith(f"empty key '' {where} in ") and "x.yaml" in msg
    assert f"valid keys {where} are: " in msg


# ------------------------------------------------------------------ rule 3: types and ranges


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "model: {hidden_size: 0}",
            "The 'model.hidden_size' parameter must be an int in the range [1, inf). Got 0"
            " instead.",
        ),
        (
            "model: {num_layers: -2}",
            "The 'model.num_layers' parameter must be an int in the range [1, inf). Got -2"
            " instead.",
        ),
        (
            "train: {batch_size: -1}",
            "The 'train.batch_size' parameter must be an int in the range [1, inf). Got -1"
            " instead.",
        ),
        (
            "train: {seed: -1}",
            "The 'train.seed' parameter must be an int in the range [0, inf). Got -1 instead.",
        ),
        (
            "model: {dropout: 1.0}",
            "The 'model.dropout' parameter must be a float in the range [0.0, 1.0). Got 1.0"
            " instead.",
        ),
        (
            "data: {train: a, valid_fraction: 1}",
            "The 'data.valid_fraction' parameter must be a float in the range [0.0, 1.0). Got 1"
            " instead.",
        ),
        (
            "train: {optimizer: {lr: 0}}",
            "The 'train.optimizer.lr' parameter must be a float in the range (0.0, inf). Got 0"
            " instead.",
        ),
        (
            "train: {schedule: {gamma: 0}}",
            "The 'train.schedule.gamma' parameter must be a float in the range (0.0, 1.0]."
            " Got 0 instead.",
        ),
        (
            "train: {schedule: {factor: 1}}",
            "The 'train.schedule.factor' parameter must be a float in the range (0.0, 1.0)."
            " Got 1 instead.",
        ),
        (
            "train: {clip_grad_norm: -1}",
            "The 'train.clip_grad_norm' parameter must be a float in the range [0.0, inf)"
            " or null (None). Got -1 instead.",
        ),
        (
            "train: {early_stopping: {patience: 0}}",
            "The 'train.early_stopping.patience' parameter must be an int in the range [1, inf)"
            " or null (None). Got 0 instead.",
        ),
        (
            "model: {head: first}",
            "The 'model.head' parameter must be a str among {'last', 'all', 'mean', 'max'}."
            " Got 'first' instead.",
        ),
    ],
)
def test_type_and_range_messages(tmp_path, text, expected):
    if not text.startswith("data"):
        text = MINIMAL + text
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.hidden_size", "true"),  # bool is not an int
        ("train.epochs", "yes"),  # YAML 1.1 bool
        ("train.epochs", "3.0"),  # a float is not an int
        ("train.epochs", "'3'"),  # a str is not an int
        ("train.optimizer.lr", "true"),  # bool is not a float
        ("train.optimizer.lr", "fast"),
        ("train.optimizer.lr", ".nan"),
        ("model.forget_bias", ".inf"),
        ("train.optimizer.betas", "[0.9]"),
        ("train.optimizer.betas", "[0.9, 1.0]"),
        ("train.optimizer.nesterov", "'true'"),  # bool keys take real bools only
        ("train.optimizer.nesterov", "1"),
        ("data.normalize", "'yes'"),
        ("data.csv.feature_columns", "[]"),
        ("data.csv.feature_columns", "[a, a]"),
        ("data.csv.feature_columns", "a"),
        ("data.csv.id_column", "''"),
        ("train.class_weights", "balance"),
        ("train.class_weights", "{a: 0}"),
        ("train.class_weights", "{a: -1}"),
        ("train.class_weights", "{1.5: 1}"),
        ("train.class_weights", "{}"),
        ("train.class_weights", "[1, 2]"),
        ("train.class_weights", "{1: 2, '1': 3}"),
        ("train.checkpoint_every_steps", "-5"),
        ("output.dir", "null"),
        ("data.format", "parquet"),
    ],
)
def test_wrong_values_name_the_key(key, value):
    *sections, name = key.split(".")
    raw = yaml.safe_load(value)
    node = d = {"data": {"train": "a"}}
    for part in sections:
        node = node.setdefault(part, {})
    node[name] = raw
    with pytest.raises(ConfigError, match=re.escape(f"<dict>: The {key!r} parameter must be")):
        config_from_dict(d)


def test_bool_for_a_str_key_hints_to_quote(tmp_path):
    msg = error_of(tmp_path, "data:\n  train: a\n  csv:\n    id_column: on\n")
    assert "'data.csv.id_column'" in msg and "Got True instead" in msg and "quotes" in msg
    msg = error_of(tmp_path, MINIMAL + "model: {head: no}\n")
    assert "'model.head'" in msg and "Got False instead" in msg and "quotes" in msg


def test_yes_for_a_bool_key_is_a_real_bool(tmp_path):
    # PyYAML reads bare yes/no as booleans; for a bool key that is what the user meant.
    cfg = load_text(tmp_path, "data: {train: a, normalize: no, bucket: yes}\n")
    assert cfg.data.normalize is False and cfg.data.bucket is True


def test_choice_suggests_the_close_option(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "train: {optimizer: {name: Adam}}\n")
    assert "Got 'Adam' instead. Did you mean 'adam'?" in msg


@pytest.mark.parametrize(
    "text, value", [("1e-3", 1e-3), ("5e-4", 5e-4), ("1E+2", 100.0), ("'2.5e-1'", 0.25)]
)
def test_yaml_trap_float_strings_are_accepted(tmp_path, text, value):
    raw = yaml.safe_load(f"v: {text}")["v"]
    assert isinstance(raw, str)  # the PyYAML trap this test is about
    cfg = load_text(tmp_path, MINIMAL + f"train:\n  optimizer:\n    lr: {text}\n    eps: {text}\n")
    assert cfg.train.optimizer.lr == value and isinstance(cfg.train.optimizer.lr, float)
    assert cfg.train.optimizer.eps == value


@pytest.mark.parametrize(
    "text, key",
    [("train: {epochs: 1:30}", "train.epochs"),
     ("train: {optimizer: {lr: 1:30.5}}", "train.optimizer.lr"),
     ("train: {class_weights: {0: 2:0}}", "train.class_weights")],
)  # fmt: skip
def test_yaml_trap_base_60_numbers_are_not_numbers(tmp_path, text, key):
    """YAML 1.1 reads 1:30 as 90: a value mistyped with ':' must be an error, not 90."""
    assert yaml.safe_load("v: 1:30")["v"] == 90  # the PyYAML trap this test is about
    msg = error_of(tmp_path, MINIMAL + text + "\n")
    assert f"'{key}'" in msg and ":" in msg.split("Got ")[1]


@pytest.mark.parametrize("text", ["train: {seed: 0123}", "model: {hidden_size: 010}",
                                  "train: {epochs: 0x2}", "train: {batch_size: 0b1000}",
                                  "train: {optimizer: {lr: 007}}"])  # fmt: skip
def test_yaml_trap_zero_padded_ints_are_not_numbers(tmp_path, text):
    """YAML 1.1 reads 0123 as 83 (octal), 0x2 and 0b1000 as hex and binary: a seed of
    0123 trained with seed 83, silently."""
    assert yaml.safe_load("v: 0123")["v"] == 83  # the PyYAML trap this test is about
    msg = error_of(tmp_path, MINIMAL + text + "\n")
    assert "line" in msg and "octal, hexadecimal or binary" in msg, msg
    assert yaml_safe_ok("v: 0") == {"v": 0} and yaml_safe_ok("v: 1_000") == {"v": 1000}


def yaml_safe_ok(text):
    from lstm_cli.config.yaml_safe import load_yaml

    return load_yaml(text, "t.yaml")


def test_trap_strings_inside_lists_and_mappings(tmp_path):
    cfg = load_text(
        tmp_path,
        MINIMAL + "train:\n  optimizer: {betas: [5e-1, 9e-1]}\n  class_weights: {a: 1e+1}\n",
    )
    assert cfg.train.optimizer.betas == (0.5, 0.9)
    assert cfg.train.class_weights == (("a", 10.0),)


def test_int_accepted_where_float_expected(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "train: {optimizer: {lr: 1}, clip_grad_norm: 0}\n")
    assert cfg.train.optimizer.lr == 1.0 and type(cfg.train.optimizer.lr) is float
    assert cfg.train.clip_grad_norm == 0.0 and type(cfg.train.clip_grad_norm) is float


def test_int_keys_stay_int(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "train: {epochs: 7}\n")
    assert cfg.train.epochs == 7 and type(cfg.train.epochs) is int


def alias_bomb(levels):
    """A YAML flow list: &a0 = 9 x's, then each &aN = 9 aliases of &a(N-1); 9**levels x's in all.

    With 9 levels it is about 400 bytes of text, and its repr() would never finish.
    """
    items = ["&a0 [" + ",".join(["x"] * 9) + "]"]
    items += [f"&a{n} [" + ",".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, levels)]
    return "[" + ", ".join(items) + "]"


# (file text with BOMB for the bomb, the key the message names); overrides use the same keys
_BOMB_CASES = [
    (MINIMAL + "model: {hidden_size: BOMB}\n", "'model.hidden_size'"),  # int range
    (MINIMAL + "model: {dropout: BOMB}\n", "'model.dropout'"),  # float range
    (MINIMAL + "model: {head: BOMB}\n", "'model.head'"),  # choice (did-you-mean)
    ("data: {train: a, valid: BOMB}\n", "'data.valid'"),  # str
    ("data: {train: a, csv: {feature_columns: BOMB}}\n", "'data.csv.feature_columns'"),
    (MINIMAL + "train: {optimizer: {betas: BOMB}}\n", "'train.optimizer.betas'"),
    (MINIMAL + "train: {class_weights: BOMB}\n", "'train.class_weights'"),
    (MINIMAL + "train: {class_weights: {a: BOMB}}\n", "'train.class_weights'"),
    (MINIMAL + "model: BOMB\n", "section 'model' must be a mapping"),
    ("BOMB\n", "the top level must be a mapping"),
]


@pytest.mark.parametrize("text, needle", _BOMB_CASES)
def test_messages_show_a_bounded_repr_of_the_value(tmp_path, text, needle):
    # 6 levels (531441 items) keep the unbounded repr quick enough to fail this test, not hang
    msg = error_of(tmp_path, text.replace("BOMB", alias_bomb(6)))
    assert needle in msg and "x.yaml" in msg
    assert len(msg) < 500, f"{len(msg)} characters: {msg[:300]}..."


def test_a_bounded_repr_in_an_override_error(tmp_path):
    override = f"model.hidden_size={alias_bomb(6)}"
    msg = error_of(tmp_path, MINIMAL, [override])
    assert "'model.hidden_size'" in msg and "Got [['x', 'x'," in msg
    assert len(msg.replace(override, "")) < 500


def test_400_byte_yaml_bombs_fail_at_once(tmp_path):
    # 9 levels: a full repr() of an alias bomb runs for minutes and takes gigabytes, and
    # unbounded merges copy 2 * 9**8 entries; run in a child with a memory cap and a
    # timeout, so that a regression fails instead of hanging
    paths = []
    for n, (text, _) in enumerate(_BOMB_CASES):
        paths.append(write(tmp_path, text.replace("BOMB", alias_bomb(9)), f"bomb{n}.yaml"))
    for n, (text, _) in enumerate(_BOMB_CASES[:3]):
        paths.append(write(tmp_path, text.replace("BOMB", merge_bomb(9)), f"merge_bomb{n}.yaml"))
    assert len(alias_bomb(9)) < 400
    code = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from lstm_cli.config import load_config\n"
        "from lstm_cli.errors import ConfigError\n"
        "for path in sys.argv[1:]:\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        load_config(path)\n"
        "    except ConfigError as err:\n"
        "        print(round(time.perf_counter() - start, 3), len(str(err)))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [tuple(map(float, line.split())) for line in done.stdout.splitlines()]
    assert len(results) == len(paths), done.stdout
    for path, (seconds, length) in zip(paths, results):
        assert seconds < 1.0 and length < 500, (path.name, seconds, length)


def test_a_long_digit_string_is_refused_quickly(tmp_path):
    # the number regex must not backtrack quadratically on a long digit string
    start = time.perf_counter()
    msg = error_of(tmp_path, MINIMAL + f"model: {{dropout: {'1' * 20000}x}}\n")
    assert time.perf_counter() - start < 1.0
    assert "'model.dropout'" in msg and len(msg) < 500


# ------------------------------------------------------------------ rule 4: required key


def test_missing_data_train(tmp_path):
    path = write(tmp_path, "data:\n  valid: v.jsonl\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: missing required key 'data.train'"


def test_missing_data_section(tmp_path):
    msg = error_of(tmp_path, "model: {hidden_size: 8}\n")
    assert "missing required key 'data.train'" in msg


def test_null_data_train(tmp_path):
    msg = error_of(tmp_path, "data: {train: null}\n")
    assert "'data.train' parameter must be a non-empty str (a path). Got None instead." in msg


# ------------------------------------------------------------------ cross-key checks


def test_early_stopping_needs_validation_data(tmp_path):
    msg = error_of(
        tmp_path, "data: {train: a, valid_fraction: 0}\ntrain: {early_stopping: {patience: 3}}\n"
    )
    assert "'train.early_stopping.patience' needs validation data" in msg
    # a separate validation file is enough
    load_text(
        tmp_path,
        "data: {train: a, valid: b, valid_fraction: 0}\ntrain: {early_stopping: {patience: 3}}\n",
    )


def test_plateau_needs_validation_data(tmp_path):
    msg = error_of(
        tmp_path, "data: {train: a, valid_fraction: 0}\ntrain: {schedule: {name: plateau}}\n"
    )
    assert "'train.schedule.name' needs validation data" in msg


def test_min_lr_above_lr(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "train: {schedule: {name: cosine, min_lr: 0.1}}\n")
    assert "'train.schedule.min_lr' (0.1) must not exceed 'train.optimizer.lr' (0.001)" in msg


def test_nesterov_without_momentum(tmp_path):
    """It passed the config checks and failed as the optimizer was built: exit 1, naming
    no key."""
    text = MINIMAL + "train: {optimizer: {name: sgd, momentum: 0, nesterov: true}}\n"
    msg = error_of(tmp_path, text)
    assert "'train.optimizer.nesterov' is true, which needs 'train.optimizer.momentum' > 0" in msg


def test_gradflow_is_recorded_for_a_bidirectional_model_too(tmp_path):
    cfg = load_text(
        tmp_path, MINIMAL + "model: {bidirectional: true}\ntrain: {gradflow_every: 2}\n"
    )
    assert cfg.train.gradflow_every == 2 and cfg.model.bidirectional


def test_csv_columns_must_differ(tmp_path):
    msg = error_of(tmp_path, "data: {train: a, csv: {id_column: y, label_column: y}}\n")
    assert "'data.csv.id_column' and 'data.csv.label_column' are both 'y'" in msg
    msg = error_of(tmp_path, "data: {train: a, csv: {feature_columns: [x, label]}}\n")
    assert "'data.csv.feature_columns' lists 'label'" in msg


# ------------------------------------------------------------------ rule 5: overrides


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data.valid=null", ("data.valid", None)),
        ("data.valid=~", ("data.valid", None)),
        ("data.valid_fraction=0.1", ("data.valid_fraction", 0.1)),
        ("data.normalize=true", ("data.normalize", True)),
        ("train.optimizer.lr=1e-3", ("train.optimizer.lr", 0.001)),
        ("train.optimizer.lr=5E-4", ("train.optimizer.lr", 0.0005)),
        ("model.hidden_size=128", ("model.hidden_size", 128)),
        ("train.optimizer.betas=[0.8, 0.99]", ("train.optimizer.betas", [0.8, 0.99])),
        ("train.class_weights={a: 2, b: 1}", ("train.class_weights", {"a": 2, "b": 1})),
        ("output.dir=runs/a=b", ("output.dir", "runs/a=b")),  # split at the first '='
        (" model.head = all", ("model.head", "all")),
        ("data.csv.id_column='1e3'", ("data.csv.id_column", "1e3")),  # quoted: stays a str
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_overrides_apply_after_the_file(tmp_path):
    cfg = load_text(
        tmp_path,
        MINIMAL + "model: {hidden_size: 8}\ntrain: {optimizer: {lr: 0.5}}\n",
        [
            "model.hidden_size=16",
            "train.optimizer.lr=1e-3",
            "data.valid_fraction=0",
            "train.clip_grad_norm=null",
            "data.bucket=false",
            "train.early_stopping.patience=2",
            "data.valid=v.jsonl",
        ],
    )
    assert cfg.model.hidden_size == 16
    assert cfg.train.optimizer.lr == 0.001
    assert cfg.data.valid_fraction == 0.0
    assert cfg.train.clip_grad_norm is None
    assert cfg.data.bucket is False
    assert cfg.train.early_stopping.patience == 2


def test_override_creates_missing_sections(tmp_path):
    cfg = load_text(tmp_path, MINIMAL, ["train.schedule.name=cosine", "data.csv.id_column=seq"])
    assert cfg.train.schedule.name == "cosine"
    assert cfg.data.csv.id_column == "seq"


def test_later_override_wins(tmp_path):
    cfg = load_text(tmp_path, MINIMAL, ["train.epochs=3", "train.epochs=4"])
    assert cfg.train.epochs == 4


def test_override_can_supply_data_train(tmp_path):
    cfg = load_text(tmp_path, "model: {hidden_size: 8}\n", ["data.train=/abs/t.jsonl"])
    assert cfg.data.train == os.path.abspath("/abs/t.jsonl")


def test_unknown_override_key_with_suggestion(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, MINIMAL, ["train.optimizer.learnig_rate=0.01"])
    assert str(info.value) == (
        "unknown key 'train.optimizer.learnig_rate' in --set train.optimizer.learnig_rate=0.01;"
        " did you mean 'train.optimizer.lr'?"
    )


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model.hidden_size=0",
            "--set model.hidden_size=0: The 'model.hidden_size' parameter must be an int in the"
            " range [1, inf). Got 0 instead.",
        ),
        (
            "model.hidden_size=true",
            "--set model.hidden_size=true: The 'model.hidden_size' parameter must be an int in the"
            " range [1, inf). Got True instead.",
        ),
        (
            "train.optimizer.lr=fast",
            "--set train.optimizer.lr=fast: The 'train.optimizer.lr' parameter must be a float in"
            " the range (0.0, inf). Got 'fast' instead.",
        ),
    ],
)
def test_override_type_errors_name_the_override(tmp_path, override, expected):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, MINIMAL, [override])
    assert str(info.value) == expected


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.optimizer.lr", "expected KEY=VALUE, e.g. --set train.optimizer.lr=0.01"),
        ("train=1", "'train' is a section"),
        ("train.optimizer={lr: 1}", "'train.optimizer' is a section"),
        ("=3", "the key is empty"),
        ("model.hidden_size=", "no value after '='"),
        ("model.hidden_size=[1,", "the value is not valid YAML"),
    ],
)
def test_malformed_overrides(tmp_path, override, fragment):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, MINIMAL, [override])
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("train.optim.lr", "train.optimizer.lr"),  # a misspelt section
        ("optimizer.lr", "train.optimizer.lr"),  # a missing top section
        ("trian.epochs", "train.epochs"),
        ("model.patience", "train.schedule.patience' or 'train.early_stopping.patience"),
    ],
)
def test_override_key_suggestions(key, suggestion):
    with pytest.raises(ConfigError, match=re.escape(f"did you mean '{suggestion}'?")):
        parse_override(f"{key}=1")


def test_override_into_a_leaf_is_unknown():
    with pytest.raises(ConfigError, match="unknown key 'train.epochs.x'"):
        parse_override("train.epochs.x=1")


def test_file_errors_come_before_override_errors(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "model: [1]\n", ["model.hidden_size=3"])
    assert "section 'model' must be a mapping" in msg


def test_value_origin_is_the_last_override_of_the_key_or_the_file():
    key = "train.class_weights"
    assert value_origin(key, "x.yaml") == "x.yaml"
    assert value_origin(key, Path("x.yaml"), ["model.hidden_size=3"]) == "x.yaml"
    sets = ["train.class_weights={a: 2}", " train.class_weights = balanced", "train.epochs=2"]
    assert value_origin(key, "x.yaml", sets) == "--set  train.class_weights = balanced"
    assert value_origin("train.epochs", "x.yaml", "train.epochs=2") == "--set train.epochs=2"


def test_a_single_string_is_one_override(tmp_path):
    cfg = load_text(tmp_path, MINIMAL, "model.hidden_size=5")
    assert cfg.model.hidden_size == 5


# ------------------------------------------------------------------ rule 6: paths


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "configs"
    sub.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(
        sub, "data:\n  train: ../data/t.jsonl\n  valid: v.jsonl\n  test: /abs/test.jsonl\n"
    )
    cfg = load_config(path)
    assert cfg.data.train == str(tmp_path / "data" / "t.jsonl")
    assert cfg.data.valid == str(sub / "v.jsonl")
    assert cfg.data.test == os.path.abspath("/abs/test.jsonl")
    assert cfg.output.dir == "runs/run"  # output.dir stays relative to the cwd


def test_output_dir_expands_a_leading_tilde_like_the_data_paths(tmp_path, monkeypatch):
    """'~/runs/x' made a folder literally named '~' in the cwd (a later `rm -rf ~` away
    from disaster); it is the home folder, as in data.train. A relative dir stays so."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, "data:\n  train: t.jsonl\noutput:\n  dir: ~/runs/x\n")
    assert load_config(path).output.dir == str(tmp_path / "home" / "runs" / "x")
    assert load_config(path, ["output.dir=out/x"]).output.dir == "out/x"


def test_relative_config_path(tmp_path, monkeypatch):
    sub = tmp_path / "configs"
    sub.mkdir()
    write(sub, "data: {train: t.jsonl}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/x.yaml")
    assert cfg.data.train == str(sub / "t.jsonl")


def test_override_paths_resolve_against_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "configs"
    sub.mkdir()
    path = write(sub, "data: {train: t.jsonl}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, ["data.valid=data/v.jsonl", "output.dir=out"])
    assert cfg.data.train == str(sub / "t.jsonl")  # from the file: config folder
    assert cfg.data.valid == str(tmp_path / "data" / "v.jsonl")  # from --set: cwd
    assert cfg.output.dir == "out"


def test_config_from_dict_base_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_from_dict({"data": {"train": "t"}}).data.train == str(tmp_path / "t")
    cfg = config_from_dict({"data": {"train": "t"}}, base_dir="/base")
    assert cfg.data.train == os.path.abspath("/base/t")


def test_data_file_need_not_exist(tmp_path):
    cfg = load_text(tmp_path, "data: {train: does/not/exist.jsonl}\n")
    assert not os.path.exists(cfg.data.train)


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_text(tmp_path, "data: {train: ~/t.jsonl}\n")
    assert cfg.data.train == str(tmp_path / "t.jsonl")


# ------------------------------------------------------------------ rule 7: class weights


def test_class_weight_labels_may_be_ints_or_strs(tmp_path):
    cfg = load_text(
        tmp_path, MINIMAL + "train:\n  class_weights:\n    0: 1\n    '1': 2.5\n    cat: 0.5\n"
    )
    assert cfg.train.class_weights == ((0, 1.0), ("1", 2.5), ("cat", 0.5))
    assert dict(cfg.train.class_weights)["cat"] == 0.5


def test_balanced_class_weights(tmp_path):
    cfg = load_text(tmp_path, MINIMAL + "train: {class_weights: balanced}\n")
    assert cfg.train.class_weights == "balanced"


def test_bool_class_weight_label_hints_to_quote(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "train: {class_weights: {yes: 2, no: 1}}\n")
    assert "'train.class_weights'" in msg and "quotes" in msg


# ------------------------------------------------------------------ writing and round trips


def _rich_config(tmp_path):
    return load_text(
        tmp_path,
        """
data:
  train: a.jsonl
  valid: b.jsonl
  csv: {feature_columns: [f1, f2]}
model: {hidden_size: 8, head: all}
train:
  optimizer: {name: adamw, lr: 3e-4, betas: [0.8, 0.9]}
  early_stopping: {patience: 3}
  class_weights: {0: 2, b: 0.5}
output: {dir: out}
""",
    )


def test_config_to_dict_is_plain_and_complete(tmp_path):
    cfg = _rich_config(tmp_path)
    d = config_to_dict(cfg)
    json.dumps(d)  # JSON-serialisable
    assert list(d) == ["data", "model", "train", "output"]
    assert list(d["train"]["optimizer"]) == [
        "name",
        "lr",
        "momentum",
        "nesterov",
        "betas",
        "eps",
        "weight_decay",
    ]
    assert d["train"]["optimizer"]["betas"] == [0.8, 0.9]
    assert d["data"]["csv"]["feature_columns"] == ["f1", "f2"]
    assert d["train"]["class_weights"] == {0: 2.0, "b": 0.5}
    assert d["data"]["train"] == str(tmp_path / "a.jsonl")
    leaves = []

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and key != "train.class_weights":
                walk(v, key)
            else:
                leaves.append(key)

    walk(d, "")
    assert leaves == LEAVES


def test_round_trip_through_dict(tmp_path):
    cfg = _rich_config(tmp_path)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_round_trip_through_yaml_text(tmp_path, monkeypatch):
    cfg = _rich_config(tmp_path)
    text = dump_config(cfg)
    assert [line for line in text.splitlines() if not line.startswith(" ")] == [
        "data:",
        "model:",
        "train:",
        "output:",
    ]
    assert "betas: [0.8, 0.9]" in text
    other = tmp_path / "run"
    other.mkdir()
    monkeypatch.chdir(other)  # data paths are absolute, so a dump loads anywhere
    assert load_config(write(other, text, "config.yaml")) == cfg


def test_round_trip_of_defaults(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_config_works_with_dataclass_tools(tmp_path):
    import copy
    import pickle

    cfg = _rich_config(tmp_path)
    assert copy.deepcopy(cfg) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert isinstance(hash(cfg), int)
    dataclasses.asdict(cfg)


# ------------------------------------------------------------------ reference.yaml and docs


def test_reference_yaml_loads_and_matches_the_defaults():
    cfg = load_config(REFERENCE)
    assert cfg.data.train == str(REPO / "data" / "synthetic" / "train.jsonl")
    defaults = Config(data=DataConfig(train=cfg.data.train))
    assert config_to_dict(cfg) == config_to_dict(defaults)
    assert cfg == defaults


def test_reference_yaml_sets_every_key_explicitly():
    raw = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    keys = []

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(v, key)
            else:
                keys.append(key)

    walk(raw, "")
    assert keys == LEAVES


def test_reference_yaml_comments_every_key():
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#")  # purpose comment
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert lines[i - 1].strip().startswith("#"), f"no comment above: {line!r}"


def test_every_key_has_a_constraint():
    assert set(CONSTRAINTS) == set(LEAVES)


def test_the_schema_states_the_model_section_for_other_packages():
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    assert list(MODEL_KEYS) == fields == list(section_keys("model"))
    by_name = section_constraints("model")
    assert list(by_name) == fields
    for name in fields:
        assert by_name[name] is constraint(f"model.{name}") is CONSTRAINTS[f"model.{name}"]
    assert constraint("model.hidden_size").description() == "an int in the range [1, inf)"
    assert list(section_constraints("data")) == [k for k in section_keys("data") if k != "csv"]
    with pytest.raises(KeyError):
        constraint("model")  # a section has no constraint


def test_docs_table_covers_every_key():
    text = DOCS.read_text(encoding="utf-8")
    documented = re.findall(r"^\| `([a-z_.]+)` \|", text, flags=re.M)
    assert documented == LEAVES


def test_every_default_satisfies_its_constraint():
    cfg = config_from_dict({"data": {"train": "t"}})
    d = config_to_dict(cfg)
    for key in LEAVES:
        node = d
        for part in key.split("."):
            node = node[part]
        CONSTRAINTS[key].check(node)  # raises if a default is out of range


def test_a_mapping_merging_itself_adds_nothing():
    assert load_yaml("a: &a {x: 1, <<: *a}\n", "x.yaml") == {"a": {"x": 1}}
    assert load_yaml("a: &a {x: 1, b: &b {y: 2, <<: *a}, <<: *b}\n", "x.yaml") == {
        "a": {"y": 2, "x": 1, "b": {"y": 2}}
    }


def test_an_int_yaml_cannot_make_says_why(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "model: {hidden_size: 0x_}\n")
    assert "'0x_' is an octal, hexadecimal or binary number" in msg, msg

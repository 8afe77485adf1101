"""Tests for lstm_cli.inference.load_trained: the trainer's metadata in a checkpoint is
checked before lstm-eval / lstm-predict use it.

Every bad checkpoint here is written with the public ``save_checkpoint``, so its
checksum is valid and only the metadata check can refuse it: exit 5, one ``Error:``
line naming the file, no traceback.
"""

import copy
import json
import warnings

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from lstm_cli.cli import evaluate, predict
from lstm_cli.config import load_config
from lstm_cli.data import SequenceDataset, pad_batch
from lstm_cli.errors import CheckpointError, DataError, LstmCliError
from lstm_cli.inference import load_trained
from lstm_cli.store.checkpoint import load_checkpoint, save_checkpoint
from lstm_cli.training import fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (2 features, labels 'neg'/'pos', normalised): (best.npz, data)."""
    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    data = root / "train.jsonl"
    with open(data, "w") as fh:
        for n in range(24):
            y = n % 2
            x = rng.normal(loc=y, size=(2 + n % 4, 2)).round(3)  # (T, 2)
            fh.write(json.dumps({"x": x.tolist(), "y": ["neg", "pos"][y]}) + "\n")
    cfg = root / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "train.jsonl", "valid_fraction": 0.25},
                "model": {"hidden_size": 4},
                "train": {"epochs": 1, "batch_size": 8, "seed": 0},
                "output": {"dir": str(root / "run")},
            }
        )
    )
    fit(load_config(cfg), progress=False, log=lambda *_: None)
    return root / "run" / "best.npz", data


def resave(trained, tmp_path, edit_meta=None, edit_params=None, name="edited.npz"):
    """Copy of the trained best.npz with edited meta/params, written by save_checkpoint
    (so the checksum is valid)."""
    ckpt = load_checkpoint(trained[0])
    meta = copy.deepcopy(ckpt.meta)
    params = {k: v.copy() for k, v in ckpt.params.items()}
    if edit_meta:
        edit_meta(meta)
    if edit_params:
        edit_params(params)
    path = tmp_path / name
    save_checkpoint(path, params, meta)
    return path


def run_command(command, ckpt, data, tmp_path):
    args = [str(ckpt), "--data", str(data)]
    if command == "eval":
        return CliRunner().invoke(
            evaluate,
            args
            + [
                "--json",
                str(tmp_path / "report.json"),
                "--predictions",
                str(tmp_path / "preds.csv"),
            ],
        )
    return CliRunner().invoke(predict, args + ["--output", str(tmp_path / "out.csv")])


def assert_checkpoint_error(result, path, *needles):
    """Exit 5, no traceback, no stdout, one 'Error: <path>: ...' line holding every needle."""
    out, err = result.stdout, result.stderr
    assert "Traceback" not in out + err, out + err
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{err}"
    assert result.exit_code == 5, f"exit {result.exit_code}: {err!r}"
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"Error: {path}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def _set(*keys_and_value):
    """An edit that sets meta[k1][k2]... = value."""
    *keys, value = keys_and_value

    def edit(meta):
        node = meta
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


def _delete(key):
    return lambda meta: meta.pop(key)


# (case id, meta edit, substrings of the message)
BAD_META = [
    (
        "normalization_str",
        _set("normalization", "abc"),
        ["'normalization' is 'abc'", "expected null or"],
    ),
    ("normalization_list", _set("normalization", [1, 2]), ["'normalization' is [1, 2]"]),
    ("normalization_empty", _set("normalization", {}), ["'normalization' is {}"]),
    ("normalization_false", _set("normalization", False), ["'normalization' is False"]),
    ("normalization_no_std", _set("normalization", {"mean": [0.0, 0.0]}), ["'normalization' is"]),
    (
        "normalization_extra_key",
        _set("normalization", {"mean": [0, 0], "std": [1, 1], "clip": 3}),
        ["'normalization' is"],
    ),
    (
        "mean_too_long",
        _set("normalization", "mean", [0.0, 0.0, 0.0]),
        ["'normalization.mean' has 3 values", "2 input features"],
    ),
    ("std_too_short", _set("normalization", "std", [1.0]), ["'normalization.std' has 1 values"]),
    ("mean_not_a_list", _set("normalization", "mean", 0.5), ["'normalization.mean' is 0.5"]),
    (
        "mean_nested",
        _set("normalization", "mean", [[0.0], [0.0]]),
        ["'normalization.mean'[0] is [0.0]"],
    ),
    ("mean_str", _set("normalization", "mean", ["0", 0.0]), ["'normalization.mean'[0] is '0'"]),
    ("mean_bool", _set("normalization", "mean", [0.0, True]), ["'normalization.mean'[1] is True"]),
    (
        "mean_nan",
        _set("normalization", "mean", [0.0, float("nan")]),
        ["'normalization.mean'[1] is nan", "finite"],
    ),
    ("mean_huge_int", _set("normalization", "mean", [0.0, 10**400]), ["'normalization.mean'[1]"]),
    (
        "std_zero",
        _set("normalization", "std", [1.0, 0.0]),
        ["'normalization.std'[1] is 0.0", "> 0"],
    ),
    (
        "std_negative",
        _set("normalization", "std", [-2.0, 1.0]),
        ["'normalization.std'[0] is -2.0", "> 0"],
    ),
    (
        "std_inf",
        _set("normalization", "std", [1.0, float("inf")]),
        ["'normalization.std'[1] is inf"],
    ),
    ("config_str", _set("config", "x"), ["'config' is 'x'", "expected a mapping"]),
    ("config_null", _set("config", None), ["'config' is None"]),
    ("config_data_list", _set("config", "data", [1]), ["'config.data' is [1]"]),
    ("config_csv_str", _set("config", "data", "csv", "x"), ["'config.data.csv' is 'x'"]),
    (
        "csv_id_column_int",
        _set("config", "data", "csv", "id_column", 3),
        ["'config.data.csv.id_column' is 3"],
    ),
    (
        "csv_feature_columns_str",
        _set("config", "data", "csv", "feature_columns", "ab"),
        ["'config.data.csv.feature_columns' is 'ab'"],
    ),
    (
        "csv_feature_columns_twice",
        _set("config", "data", "csv", "feature_columns", ["a", "a"]),
        ["'config.data.csv.feature_columns'"],
    ),
    (
        "csv_label_type",
        _set("config", "data", "csv", "label_type", "float"),
        ["'config.data.csv.label_type' is 'float'"],
    ),
    ("classes_duplicate", _set("classes", ["neg", "neg"]), ["'classes' lists 'neg' twice"]),
    ("classes_str", _set("classes", "np"), ["'classes' is 'np'"]),
    ("classes_empty", _set("classes", []), ["'classes' is []"]),
    ("classes_too_many", _set("classes", ["neg", "pos", "other"]), ["3 class labels", "2 outputs"]),
    ("classes_mixed", _set("classes", [1, "1"]), ["'classes' mixes ints and strs"]),
    ("classes_bool", _set("classes", [True, False]), ["'classes'[0] is True"]),
    ("classes_float", _set("classes", [0.5, 1.5]), ["'classes'[0] is 0.5"]),
    ("classes_null", _set("classes", [None, "pos"]), ["'classes'[0] is None"]),
    ("classes_empty_str", _set("classes", ["", "pos"]), ["'classes'[0] is the empty string"]),
    ("classes_beyond_int64", _set("classes", [0, 2**63]), ["'classes'[1]", "64-bit"]),
    ("no_classes", _delete("classes"), ["no 'classes' entry"]),
    ("no_model", _delete("model"), ["no 'model' entry"]),
    ("model_list", _set("model", [4]), ["'model' is [4]"]),
    ("model_unknown_key", _set("model", "depth", 2), ["'model' has unknown key(s) ['depth']"]),
    (
        "model_missing_input_size",
        lambda m: m["model"].pop("input_size"),
        ["'model' lacks 'input_size'"],
    ),
    (
        "hidden_size_zero",
        _set("model", "hidden_size", 0),
        ["'model.hidden_size' is 0", "expected an int in the range [1, inf)"],
    ),
    ("hidden_size_float", _set("model", "hidden_size", 4.0), ["'model.hidden_size' is 4.0"]),
    ("hidden_size_str", _set("model", "hidden_size", "4"), ["'model.hidden_size' is '4'"]),
    ("num_classes_bool", _set("model", "num_classes", True), ["'model.num_classes' is True"]),
    ("head_unknown", _set("model", "head", "first"), ["'model.head' is 'first'"]),
    ("dtype_unknown", _set("model", "dtype", "float16"), ["'model.dtype' is 'float16'"]),
    ("dtype_list", _set("model", "dtype", ["float32"]), ["'model.dtype' is ['float32']"]),
    ("init_unknown", _set("model", "init", "zeros"), ["'model.init' is 'zeros'"]),
    ("forget_bias_nan", _set("model", "forget_bias", float("nan")), ["'model.forget_bias' is nan"]),
    ("dropout_one", _set("model", "dropout", 1.0), ["'model.dropout' is 1.0"]),
    # sizes that disagree with the stored parameters: refused before a model is allocated
    (
        "hidden_size_edited",
        _set("model", "hidden_size", 5),
        ["parameter 'lstm.0.W' has shape (6, 16)", "needs (7, 20)"],
    ),
    (
        "input_size_edited",
        _set("model", "input_size", 3),
        ["parameter 'lstm.0.W' has shape (6, 16)"],
    ),
    (
        "num_classes_edited",
        lambda m: (m["model"].update(num_classes=3), m.update(classes=["a", "b", "c"])),
        ["parameter 'head.W' has shape (4, 2)", "needs (4, 3)"],
    ),
    (
        "num_layers_huge",
        _set("model", "num_layers", 10**5),
        ["4 parameters stored", "100000 layer(s)"],
    ),
    (
        "hidden_size_huge",
        _set("model", "hidden_size", 10**9),
        ["parameter 'lstm.0.W' has shape (6, 16)"],
    ),
]


@pytest.mark.parametrize("case, edit, needles", BAD_META, ids=[c[0] for c in BAD_META])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_bad_model_metadata_is_a_checkpoint_error(trained, tmp_path, command, case, edit, needles):
    path = resave(trained, tmp_path, edit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way to the error
        result = run_command(command, path, trained[1], tmp_path)
    line = assert_checkpoint_error(result, path, "bad checkpoint metadata", *needles)
    assert len(line) < 500
    assert not any((tmp_path / n).exists() for n in ("report.json", "preds.csv", "out.csv"))


@pytest.mark.parametrize(
    "classes, index, needle",
    [
        (["neg\udcff", "pos"], 0, "U+DCFF, a lone surrogate (character 4)"),
        (["neg", "\ud800"], 1, "U+D800, a lone surrogate (character 1)"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_class_label_with_a_lone_surrogate_is_refused(
    trained, tmp_path, command, classes, index, needle
):
    """Such labels trained before the data loaders refused them; lstm-predict then crashed with
    UnicodeEncodeError writing them (and lstm-eval blamed the data file, exit 4)."""
    path = resave(trained, tmp_path, _set("classes", classes))
    result = run_command(command, path, trained[1], tmp_path)
    line = assert_checkpoint_error(
        result, path, f"'classes'[{index}] is {classes[index]!r}", needle, "valid Unicode text"
    )
    line.encode("utf-8")  # the message itself can be printed
    with pytest.raises(CheckpointError, match="lone surrogate"):
        load_trained(path)


BAD_PARAMS = [
    (
        "param_nan",
        lambda p: p["head.b"].__setitem__(0, np.nan),
        ["parameter 'head.b'", "NaN or Inf"],
    ),
    (
        "param_inf",
        lambda p: p["lstm.0.W"].__setitem__((1, 2), np.inf),
        ["parameter 'lstm.0.W'", "NaN or Inf"],
    ),
    (
        "param_beyond_float32",
        lambda p: p.update({"head.W": p["head.W"].astype(np.float64) * 1e300}),
        ["parameter 'head.W'", "as float32"],
    ),
    (
        "param_int",
        lambda p: p.update({"head.b": np.zeros(2, np.int64)}),
        ["parameter 'head.b' has dtype int64"],
    ),
    (
        "param_str",
        lambda p: p.update({"head.b": np.array(["1", "2"])}),
        ["parameter 'head.b' has dtype <U1"],
    ),
    (
        "param_extra",
        lambda p: p.update({"lstm.1.W": p["lstm.0.W"]}),
        ["5 parameters stored", "has 4"],
    ),
    (
        "param_renamed",
        lambda p: p.update({"head.V": p.pop("head.W")}),
        ["parameter 'head.V' is not part"],
    ),
]


@pytest.mark.parametrize("case, edit, needles", BAD_PARAMS, ids=[c[0] for c in BAD_PARAMS])
def test_bad_parameters_are_a_checkpoint_error(trained, tmp_path, case, edit, needles):
    path = resave(trained, tmp_path, edit_params=edit)
    with (
        warnings.catch_warnings(),
        pytest.raises(CheckpointError, match="bad checkpoint metadata") as err,
    ):
        warnings.simplefilter("error")
        load_trained(path)
    assert str(err.value).startswith(f"{path}: ")
    for needle in needles:
        assert needle in str(err.value)
    result = run_command("predict", path, trained[1], tmp_path)
    assert_checkpoint_error(result, path, *needles)


def test_valid_metadata_variants_still_load(trained, tmp_path):
    """What the checks must keep accepting: the trainer's own file, no normalisation, no
    config, a csv section of nulls, int std values, the constructor's defaults."""
    tm = load_trained(trained[0])
    meta = load_checkpoint(trained[0]).meta
    assert tm.classes == ["neg", "pos"] == meta["classes"]
    np.testing.assert_array_equal(tm.mean, meta["normalization"]["mean"])
    np.testing.assert_array_equal(tm.std, meta["normalization"]["std"])
    assert tm.mean.dtype == tm.std.dtype == np.float64
    edits = {
        "no_norm": _set("normalization", None),
        "absent_norm": _delete("normalization"),
        "no_config": _delete("config"),
        "null_csv": _set("config", "data", "csv", None),
        "null_csv_keys": _set("config", "data", "csv", {"id_column": None, "label_type": None}),
        "int_std": _set("normalization", {"mean": [0, 1], "std": [1, 3]}),
        "int_classes": _set("classes", [0, 7]),
        "defaults": lambda m: [
            m["model"].pop(k)
            for k in ("num_layers", "head", "forget_bias", "dropout", "dtype", "init")
        ],
    }
    for name, edit in edits.items():
        path = resave(trained, tmp_path, edit, name=f"{name}.npz")
        tm = load_trained(path)
        result = run_command("predict", path, trained[1], tmp_path)
        assert result.exit_code == 0, (name, result.output)
        if name in ("no_norm", "absent_norm"):
            assert tm.mean is None and tm.std is None


# ----------------------------------------------- normalised values beyond the model's range


def _tiny_std_dataset(big=1e38):
    """4 sequences of 2 features; sequence 2, step 2, feature 2 holds ``big``."""
    seqs = [np.full((3, 2), 0.5) for _ in range(4)]
    seqs[2] = seqs[2].copy()
    seqs[2][1, 1] = big
    return SequenceDataset.from_sequences(seqs, ["neg", "pos", "neg", "pos"], source="tiny.jsonl")


@pytest.mark.parametrize("dtype, std", [(np.float32, 1e-7), (np.float64, 1e-300)])
def test_value_that_overflows_once_normalised_is_a_data_error(dtype, std):
    """1e38 is a valid float32, but (1e38 - 0.5) / 1e-7 is not; in float64 the divide itself
    overflows. Either way: DataError naming file, sequence, step and feature, no RuntimeWarning."""
    ds = _tiny_std_dataset()
    mean, stds = np.array([0.5, 0.5]), np.array([1.0, std])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as err:
            pad_batch(ds, [0, 3, 2, 1], dtype, mean, stds)
        msg = str(err.value)
        assert msg.startswith(
            "tiny.jsonl: sequence 2, step 2, feature 2: the value 1e+38 is not finite in "
            f"{np.dtype(dtype)} once normalised with the training mean 0.5 and std {std:g}"
        )
        # through a view (a validation split), the sequence is named by its index in the file
        with pytest.raises(DataError, match=r"^tiny.jsonl: sequence 2, step 2, feature 2: "):
            pad_batch(ds.view([3, 2]), [0, 1], dtype, mean, stds)
        # the same batch without the value, or without normalisation, is fine
        xb, _ = pad_batch(ds, [0, 3, 1], dtype, mean, stds)
        assert np.isfinite(xb).all()
        xb, _ = pad_batch(ds, [0, 1, 2, 3], dtype)
        assert xb[2, 1, 1] == dtype(1e38)


def test_normalisation_check_keeps_batches_bit_identical():
    """The check changes nothing for finite batches: same values as (x - mean) / std cast once."""
    rng = np.random.default_rng(3)
    seqs = [rng.normal(size=(n, 3)) * 1e3 for n in (4, 1, 6, 2)]
    ds = SequenceDataset.from_sequences(seqs)
    mean, std = rng.normal(size=3), rng.random(3) + 1e-3
    for dtype in (np.float32, np.float64):
        xb, lens = pad_batch(ds, [2, 0, 3], dtype, mean, std)
        for b, n in enumerate([2, 0, 3]):
            want = ((seqs[n] - mean) / std).astype(dtype)
            assert xb[b, : lens[b]].tobytes() == want.tobytes()
            assert not xb[b, lens[b] :].any()


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_name_the_data_file_and_sequence_that_overflows(
    trained, tmp_path, command
):
    """A checkpoint whose training std is tiny (valid: > 0) and data within float32's range."""
    path = resave(
        trained, tmp_path, _set("normalization", {"mean": [0.0, 0.0], "std": [1.0, 1e-7]})
    )
    data = tmp_path / "big.jsonl"
    rows = [
        {"x": [[0.1, 0.2], [0.3, 0.4]], "y": "neg"},
        {"x": [[0.1, 0.2]], "y": "zzz"},
        {"x": [[0.1, 0.2], [0.3, 0.4], [0.5, 3e38]], "y": "pos"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = ["--allow-unknown"] if command == "eval" else []  # eval goes through views then
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = [str(path), "--data", str(data), *extra]
        result = CliRunner().invoke(evaluate if command == "eval" else predict, args)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 4, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"Error: {data}: sequence 2, step 3, feature 2: the value 3e+38 is not finite "
        "in float32 once normalised with the training mean 0 and std 1e-07"
    ), lines[0]


@pytest.mark.parametrize("command", ["eval", "predict", "ensemble"])
def test_probabilities_that_are_not_finite_are_refused(trained, tmp_path, command):
    """A model whose outputs overflow on the data (as a diverged one's do): lstm-predict
    wrote rows of nan and label 0, lstm-eval counted them as the first class (exit 0)."""

    def huge(params):
        params["lstm.0.b"][:] = 1e3  # every gate saturated: h = tanh(c) = 1
        params["head.W"][:] = 3e38  # finite, but h @ V is inf for both classes: NaN

    path = resave(trained, tmp_path, edit_params=huge)
    args = [str(path), "--data", str(trained[1])]
    if command == "ensemble":
        args = [str(trained[0]), *args]  # the mean of a sound member and the overflowing one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning on the way
        result = CliRunner().invoke(predict if command == "predict" else evaluate, args)
    assert result.exit_code == 5, result.output
    assert result.stderr.startswith(f"Error: {trained[1]}: sequence ")
    assert "the model's probabilities are not finite (for" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_validation_value_that_overflows_once_normalised_stops_training_with_a_data_error(tmp_path):
    """Validation batches are normalised with the training statistics too (a nearly constant
    training feature has a tiny std): the error names the validation file and sequence."""
    rng = np.random.default_rng(0)
    with open(tmp_path / "train.jsonl", "w") as fh:
        for n in range(16):
            x = rng.normal(size=(3, 2)).round(3)
            x[:, 1] = 5.0 + (n % 2) * 1e-5  # std 5e-6
            fh.write(json.dumps({"x": x.tolist(), "y": n % 2}) + "\n")
    with open(tmp_path / "valid.jsonl", "w") as fh:
        for n in range(4):
            x = np.full((3, 2), 5.0)
            x[1, 1] = 3e38 if n == 2 else 5.0
            fh.write(json.dumps({"x": x.tolist(), "y": n % 2}) + "\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "train.jsonl", "valid": "valid.jsonl"},
                "model": {"hidden_size": 4},
                "train": {"epochs": 1, "batch_size": 8},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    with warnings.catch_warnings(), pytest.raises(DataError) as err:
        warnings.simplefilter("error")
        fit(load_config(cfg), progress=False, log=lambda *_: None)
    assert str(err.value).startswith(
        f"{tmp_path / 'valid.jsonl'}: sequence 2, step 2, feature 2: the value 3e+38"
    )


def test_eval_reads_csv_with_the_training_configs_column_names(tmp_path):
    """A CSV model remembers its id/label columns: lstm-eval needs no column options."""
    rng = np.random.default_rng(1)
    rows = ["seq,cls,f1"]
    for n in range(16):
        for _ in range(2 + n % 3):
            rows.append(f"s{n},{'ab'[n % 2]},{rng.normal(loc=n % 2):.3f}")
    data = tmp_path / "train.csv"
    data.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "train.csv", "csv": {"id_column": "seq", "label_column": "cls"}},
                "model": {"hidden_size": 3},
                "train": {"epochs": 1, "batch_size": 8},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    fit(load_config(cfg), progress=False, log=lambda *_: None)
    tm = load_trained(tmp_path / "run" / "best.npz")
    assert tm.csv_options == {
        "id_column": "seq",
        "label_column": "cls",
        "feature_columns": ["f1"],
        "label_type": "auto",
    }
    result = CliRunner().invoke(evaluate, [str(tmp_path / "run" / "best.npz"), "--data", str(data)])
    assert result.exit_code == 0, result.stderr
    assert "sequences 16" in result.stdout


def _columns_csv(path, order, n=24, seed=0):
    """A CSV whose feature columns f0, f1, f2 are written in ``order``; class k's
    sequences are high in feature k, so a model reads which column is which."""
    rng = np.random.default_rng(seed)
    lines = ["id,label," + ",".join(f"f{j}" for j in order)]
    for i in range(n):
        x = rng.normal(size=(3 + i % 4, 3)) * 0.3
        x[:, i % 3] += 1.5
        lines += [f"s{i},{'abc'[i % 3]}," + ",".join(f"{row[j]:.4f}" for j in order) for row in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def _csv_run(tmp_path, **train):
    train_csv = _columns_csv(tmp_path / "train.csv", [0, 1, 2])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "train.csv", "valid_fraction": 0.0},
                "model": {"hidden_size": 8},
                "train": {"epochs": 12, "batch_size": 8, "optimizer": {"lr": 0.03}, **train},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    return cfg, train_csv


def _eval_json(tmp_path, data, name):
    out = tmp_path / f"{name}.json"
    args = [str(tmp_path / "run" / "best.npz"), "--data", str(data), "--json", str(out)]
    result = CliRunner().invoke(evaluate, [*args, "--quiet"])
    return result, (json.loads(out.read_text()) if result.exit_code == 0 else None)


def test_csv_features_are_read_by_the_training_files_column_names(tmp_path):
    """With data.csv.feature_columns left null the run records the training file's feature
    columns, so a test file with its columns in another order is read by name (it was read
    by position: accuracy 1.0 fell to 0.0, exit 0) and one that renames them is refused."""
    cfg, train_csv = _csv_run(tmp_path)
    fit(load_config(cfg), progress=False, log=lambda *_: None)
    assert load_trained(tmp_path / "run" / "best.npz").csv_options["feature_columns"] == [
        "f0",
        "f1",
        "f2",
    ]
    _, same = _eval_json(tmp_path, _columns_csv(tmp_path / "t.csv", [0, 1, 2], seed=1), "t")
    _, moved = _eval_json(tmp_path, _columns_csv(tmp_path / "m.csv", [2, 0, 1], seed=1), "m")
    assert same["accuracy"] > 0.9
    assert moved["loss"] == same["loss"] and moved["accuracy"] == same["accuracy"]
    renamed = tmp_path / "r.csv"
    renamed.write_text(train_csv.read_text().replace("f0,f1,f2", "a,b,c", 1))
    result, _ = _eval_json(tmp_path, renamed, "r")
    assert result.exit_code == 4
    assert "missing feature column 'f0'" in result.stderr


def test_a_csv_run_that_recorded_null_feature_columns_still_resumes(tmp_path):
    """A run written before the columns were recorded holds feature_columns null; the same
    file's columns filled in now are not a config change."""
    cfg, _ = _csv_run(tmp_path, epochs=2)
    fit(load_config(cfg), progress=False, log=lambda *_: None)
    last = tmp_path / "run" / "last.npz"
    ckpt = load_checkpoint(last)
    ckpt.meta["config"]["data"]["csv"]["feature_columns"] = None
    save_checkpoint(last, ckpt.params, ckpt.meta, ckpt.optim_arrays)
    from lstm_cli.training.resume import config_for_resume

    resumed = fit(
        config_for_resume(tmp_path / "run", ["train.epochs=3"]),
        resume=True,
        progress=False,
        log=lambda *_: None,
    )
    assert resumed.summary["epochs_run"] == 3


@pytest.mark.parametrize("model", [{"bidirectional": True, "num_layers": 2}, {"head": "mean"}])
def test_bidirectional_and_mean_checkpoints_evaluate(trained, tmp_path, model):
    """load_trained checks a bidirectional model's parameter count and shapes (4 per layer)."""
    data = trained[1]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": str(data), "valid_fraction": 0.25},
                "model": {"hidden_size": 4, **model},
                "train": {"epochs": 1, "batch_size": 8},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    result = fit(load_config(cfg), progress=False, log=lambda *_: None)
    tm = load_trained(tmp_path / "run" / "best.npz")
    assert tm.model.spec() == result.trained.model.spec()
    r = CliRunner().invoke(evaluate, [str(tmp_path / "run" / "best.npz"), "--data", str(data)])
    assert r.exit_code == 0, r.stderr
    if model.get("bidirectional"):  # one reverse parameter missing: refused by name
        path = resave(
            (tmp_path / "run" / "best.npz", data),
            tmp_path,
            edit_params=lambda p: p.pop("lstm.1.reverse.b"),
        )
        with pytest.raises(CheckpointError, match="9 parameters stored.* has 10"):
            load_trained(path)


def test_a_feature_count_mismatch_names_both_counts_in_good_english():
    from lstm_cli.inference import _feature_mismatch

    one = SequenceDataset.from_sequences([np.zeros((3, 1))], labels=[0])
    two = SequenceDataset.from_sequences([np.zeros((3, 2))], labels=[0])
    assert "has 1 feature per step, but the model was trained on 12" in str(
        _feature_mismatch(one, 12)
    )
    assert "has 2 features per step" in str(_feature_mismatch(two, 1))


def _transforming_model(data, features=2, seed=0):
    """A TrainedModel reading ``features`` raw features through the transforms ``data``."""
    from lstm_cli.inference import TrainedModel
    from lstm_cli.nn.model import LSTMClassifier

    model = LSTMClassifier(features * data.get("frame", 1), 4, 2, seed=seed, dtype="float64")
    return TrainedModel(model, ["a", "b"], None, None, {"config": {"data": data}})


@pytest.mark.parametrize(
    "data",
    [{"normalize_per_sequence": True}, {"normalize_per_sequence": True, "pool": 2, "frame": 3}],
)
def test_the_python_api_applies_the_models_input_transforms_to_data_as_read(data):
    """evaluate_dataset and diagnose take the data as read (as docs/python-api.md shows) or
    prepared: the same report. Before, data as read was evaluated without the per-sequence
    z-score (no error, other probabilities) or refused for its feature count."""
    from lstm_cli.diagnostics import diagnose
    from lstm_cli.inference import evaluate_dataset

    rng = np.random.default_rng(0)
    raw = SequenceDataset.from_sequences(
        [rng.normal(3.0, 2.0, size=(n, 2)) for n in (1, 4, 7, 9, 12)], labels=list("ababa")
    )
    tm = _transforming_model(data)
    prepared = tm.prepare(raw)
    assert prepared.transforms == tm.transforms and raw.transforms is None
    as_read, _, _ = evaluate_dataset(tm, raw)
    assert as_read == evaluate_dataset(tm, prepared)[0]
    y = np.array([0, 1, 0, 1, 0])
    assert diagnose(tm, raw, y, by_step=False) == diagnose(tm, prepared, y, by_step=False)
    with pytest.raises(LstmCliError, match="needs the data as read"):
        diagnose(tm, prepared, y)  # by-step z-scores each prefix of the data as read
    with pytest.raises(DataError, match="through input transforms already"):
        tm.prepare(prepared)  # the transforms twice
    other = _transforming_model({"pool": 2, "frame": 3})
    with pytest.raises(DataError, match="but the model reads it through"):
        evaluate_dataset(other, prepared)
    # the mark survives a subset, and transform_dataset itself marks what it returns, so
    # data prepared either way is never transformed again (pool twice: another loss)
    assert evaluate_dataset(tm, prepared.subset(range(5)))[0] == as_read
    from lstm_cli.data.framing import transform_dataset

    assert evaluate_dataset(tm, transform_dataset(raw, **tm.transforms))[0] == as_read
    with pytest.raises(DataError, match="through the input transforms .* already"):
        transform_dataset(prepared, **tm.transforms)


@pytest.mark.parametrize("head", ["last", "all"])
def test_by_step_of_a_per_sequence_model_z_scores_each_prefix_on_its_own(head):
    """docs/diagnostics.md: each prefix is classified as if it were the whole sequence.
    A model that z-scores each sequence had its prefixes cut from the sequence z-scored
    whole (its mean and std from steps the prefix has not seen): 0.22 against 0.36 at
    30 % in the audit's run. Each prefix, in the model's steps (pool 2 x frame 3 raw
    steps each), must score as the data as read cut there and evaluated."""
    from lstm_cli.diagnostics import diagnose, prefix_lengths
    from lstm_cli.inference import TrainedModel, evaluate_dataset
    from lstm_cli.nn.model import LSTMClassifier

    data = {"normalize_per_sequence": True, "pool": 2, "frame": 3}
    model = LSTMClassifier(2 * 3, 4, 2, seed=1, dtype="float64", head=head)
    tm = TrainedModel(model, ["a", "b"], None, None, {"config": {"data": data}})
    rng = np.random.default_rng(2)
    lengths = (1, 5, 7, 13, 20, 31)
    raw = SequenceDataset.from_sequences(
        [rng.normal(3.0, 2.0, size=(n, 2)) * np.linspace(0.2, 3, n)[:, None] for n in lengths],
        labels=list("ababab"),
    )
    y = np.array([0, 1, 0, 1, 0, 1])
    got = diagnose(tm, raw, y, gates=False)["by_step"]
    model_steps = tm.prepare(raw).lengths
    for k, prefix in enumerate(prefix_lengths(model_steps)):
        cut = [raw.sequence(i)[: min(n, p * 6)] for i, (n, p) in enumerate(zip(lengths, prefix))]
        part = SequenceDataset.from_sequences(cut, labels=list("ababab"))
        report = evaluate_dataset(tm, part)[0]
        assert got["accuracy"][k] == pytest.approx(report["accuracy"], abs=1e-12)
        assert got["loss"][k] == pytest.approx(report["loss"], rel=1e-12)
        assert got["mean_steps"][k] == pytest.approx(prefix.mean())


def test_by_step_with_unknown_labels_of_a_transforming_model(tmp_path):
    """lstm-eval --by-step --gates --allow-unknown of a model with input transforms: the
    sequences with a known label give the by-step (as the file without the others would),
    every sequence the gates, no traceback."""
    rng = np.random.default_rng(0)
    rows = [{"x": rng.normal(y, 1.0, (3 + n % 5, 2)).round(3).tolist(), "y": ["a", "b"][y]}
            for n, y in enumerate([0, 1] * 12)]  # fmt: skip
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": str(train_file), "valid_fraction": 0.25,
                 "normalize_per_sequence": True, "frame": 2},
        "model": {"hidden_size": 4}, "train": {"epochs": 1, "batch_size": 8},
        "output": {"dir": str(tmp_path / "run")},
    }))  # fmt: skip
    fit(load_config(cfg), progress=False, log=lambda *_: None)
    ckpt = str(tmp_path / "run" / "best.npz")
    odd = tmp_path / "odd.jsonl"
    odd.write_text("".join(json.dumps(dict(r, y="zz") if n == 3 else r) + "\n"
                           for n, r in enumerate(rows)))  # fmt: skip
    known = tmp_path / "known.jsonl"
    known.write_text("".join(json.dumps(r) + "\n" for n, r in enumerate(rows) if n != 3))
    reports = []
    for path, extra in ((odd, ["--allow-unknown"]), (known, [])):
        args = [ckpt, "--data", str(path), "--by-step", "--gates", "--json", "-", *extra]
        r = CliRunner().invoke(evaluate, args)
        assert r.exit_code == 0, r.output
        reports.append(json.loads(r.stdout))
    assert reports[0]["by_step"] == reports[1]["by_step"] and reports[0]["by_step"]["n"] == 23


def test_gates_of_a_framed_model_transform_the_data_once(tmp_path, monkeypatch):
    """lstm-eval --by-step --gates of a model that does not z-score each sequence reads
    the prepared data: it transformed the file a second time (diagnose of the data as
    read), holding both copies (547 against 448 MB in the review's run)."""
    import lstm_cli.inference as inference

    rows = [{"x": [[float(n + t), 1.0] for t in range(4 + n % 3)], "y": ["a", "b"][n % 2]}
            for n in range(16)]  # fmt: skip
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"train": str(data), "valid_fraction": 0.25, "frame": 2},
        "model": {"hidden_size": 4}, "train": {"epochs": 1, "batch_size": 8},
        "output": {"dir": str(tmp_path / "run")},
    }))  # fmt: skip
    fit(load_config(cfg), progress=False, log=lambda *_: None)
    calls, real = [], inference.transform_dataset
    monkeypatch.setattr(
        inference, "transform_dataset", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    args = [str(tmp_path / "run" / "best.npz"), "--data", str(data), "--by-step", "--gates"]
    r = CliRunner().invoke(evaluate, [*args, "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 1


def test_the_api_refuses_a_csv_whose_columns_are_in_another_order(
    write_config, pattern_files, tmp_path
):
    """evaluate_dataset(tm, load_dataset(csv)), python-api.md's recipe, read a test CSV
    whose header put the features in another order by position: other accuracies, no
    error (lstm-eval reads by the training file's column names). Now a DataError saying
    how to read it; read with the model's csv_options it gives lstm-eval's numbers."""
    from lstm_cli.data import load_dataset
    from lstm_cli.data.csvfile import write_csv
    from lstm_cli.inference import evaluate_dataset

    names = ["f0", "f1", "f2"]
    for split in ("train", "test"):
        write_csv(
            load_dataset(pattern_files[split]), tmp_path / f"{split}.csv", feature_names=names
        )
    test = load_dataset(pattern_files["test"])
    write_csv(  # the same features under the same names, the columns in another order
        SequenceDataset(test.x[:, [2, 0, 1]], test.offsets, test.labels, "r"),
        tmp_path / "reordered.csv",
        feature_names=["f2", "f0", "f1"],
    )
    data = {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")}
    cfg = load_config(write_config(data=data, train={"epochs": 2}))
    tm = fit(cfg, progress=False, log=lambda m: None).trained
    want = evaluate_dataset(tm, load_dataset(tmp_path / "test.csv"))[0]
    with pytest.raises(DataError, match=r"reordered.csv: its features are the columns \['f2'"):
        evaluate_dataset(tm, load_dataset(tmp_path / "reordered.csv"))
    by_name = load_dataset(tmp_path / "reordered.csv", csv_options=tm.csv_options)
    got = evaluate_dataset(tm, by_name)[0]
    assert (got["accuracy"], got["loss"]) == (want["accuracy"], want["loss"])

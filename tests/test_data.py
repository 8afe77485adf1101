"""Tests of lstm_cli.data: readers, writers, validation messages, labels, splits, batching."""

import importlib.util
import io
import json
import os
import shutil
import string
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lstm_cli import data as D
from lstm_cli.data import SequenceDataset
from lstm_cli.data import npz as npz_mod
from lstm_cli.data.common import check_finite_chunked
from lstm_cli.data.labels import labels_to_array
from lstm_cli.errors import DataError, LstmCliError

REPO = Path(__file__).resolve().parents[1]
JV = REPO / "data" / "japanese_vowels"


# ---------------------------------------------------------------------------
# helpers


def make_ds(lengths=(3, 1, 4), F=2, labels=("a", "b", "a"), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(t, F)).astype(dtype) for t in lengths]
    return SequenceDataset.from_sequences(
        seqs, None if labels is None else list(labels), dtype=dtype
    )


def assert_same(a, b, labels_as_str=False):
    assert len(a) == len(b)
    assert a.num_features == b.num_features
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))  # exact
    if a.labels is None:
        assert b.labels is None
    elif labels_as_str:
        np.testing.assert_array_equal(a.labels.astype(str), b.labels)
    else:
        assert a.labels.dtype.kind == b.labels.dtype.kind
        np.testing.assert_array_equal(a.labels, b.labels)


WRITERS = {
    "jsonl": ("d.jsonl", D.write_jsonl),
    "npz": ("d.npz", D.write_npz),
    "npy": ("d_dir", D.write_npy_dir),
    "csv": ("d.csv", D.write_csv),
    "ts": ("d.ts", D.write_ts),
}


def roundtrip(ds, fmt, folder, require_labels=True):
    name, writer = WRITERS[fmt]
    path = os.path.join(folder, name)
    writer(ds, path)
    csv_options = None
    if fmt == "csv" and ds.labels is not None and ds.labels.dtype.kind == "U":
        csv_options = {"label_type": "str"}
    return D.load_dataset(path, require_labels=require_labels, csv_options=csv_options)


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def expect_error(fn, path, *fragments):
    """fn() raises DataError whose one-line message names ``path`` and holds every fragment."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------
# SequenceDataset


def test_dataset_basics():
    ds = make_ds(lengths=(3, 1, 4))
    assert len(ds) == 3 and ds.num_features == 2
    np.testing.assert_array_equal(ds.lengths, [3, 1, 4])
    assert ds.lengths.dtype == np.int64 and ds.offsets.dtype == np.int64
    seq = ds.sequence(2)
    assert seq.shape == (4, 2) and np.shares_memory(seq, ds.x)
    np.testing.assert_array_equal(ds.sequence(-1), seq)
    with pytest.raises(IndexError):
        ds.sequence(3)


def test_subset_copies_only_those_rows_in_order():
    ds = make_ds(lengths=(3, 1, 4, 2), labels=[0, 1, 2, 3])
    sub = ds.subset([3, 0])
    np.testing.assert_array_equal(sub.lengths, [2, 3])
    np.testing.assert_array_equal(sub.labels, [3, 0])
    np.testing.assert_array_equal(sub.sequence(0), ds.sequence(3))
    np.testing.assert_array_equal(sub.sequence(1), ds.sequence(0))
    assert sub.x.shape == (5, 2) and not np.shares_memory(sub.x, ds.x)


def test_subset_of_memmap(tmp_path):
    ds = make_ds(lengths=(2, 5, 3), labels=[1, 2, 3])
    D.write_npy_dir(ds, tmp_path / "d")
    mm = D.read_npy_dir(tmp_path / "d")
    assert isinstance(mm.x, np.memmap)
    sub = mm.subset([1])
    assert not isinstance(sub.x, np.memmap)
    np.testing.assert_array_equal(sub.x, ds.sequence(1))


@pytest.mark.parametrize(
    "x, offsets",
    [
        (np.zeros(4), [0, 4]),
        (np.zeros((4, 2)), [0, 5]),
        (np.zeros((4, 2)), [0, 2, 2, 4]),
        (np.zeros((4, 2), int), [0, 4]),
    ],
)
def test_dataset_rejects_inconsistent_arrays(x, offsets):
    with pytest.raises(DataError):
        SequenceDataset(x, np.array(offsets), None, "s")


# ---------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("labels", [("a", "bb", "a"), (3, -1, 3), None])
def test_roundtrip_each_format(tmp_path, fmt, labels):
    ds = make_ds(labels=labels)
    back = roundtrip(ds, fmt, tmp_path, require_labels=labels is not None)
    assert_same(ds, back, labels_as_str=fmt == "ts")
    if labels is not None and fmt != "ts":
        assert D.class_list(back.labels) == D.class_list(ds.labels)


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_binary_formats_keep_float32(tmp_path, fmt):
    ds = make_ds(dtype=np.float32, labels=[1, 2, 3])
    back = roundtrip(ds, fmt, tmp_path)
    assert back.x.dtype == np.float32
    assert_same(ds, back)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "ts"])
def test_text_formats_keep_float32_values(tmp_path, fmt):
    ds = make_ds(dtype=np.float32, labels=["p", "q", "p"])
    back = roundtrip(ds, fmt, tmp_path)
    assert back.x.dtype == np.float64
    np.testing.assert_array_equal(back.x, ds.x.astype(np.float64))


def test_write_npz_exact_name(tmp_path):
    D.write_npz(make_ds(), tmp_path / "data.bin")
    assert (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.npz").exists()
    assert len(D.read_npz(tmp_path / "data.bin")) == 3


def test_write_npy_dir_removes_stale_labels(tmp_path):
    D.write_npy_dir(make_ds(labels=[1, 2, 3]), tmp_path / "d")
    D.write_npy_dir(make_ds(labels=None), tmp_path / "d")
    assert D.read_npy_dir(tmp_path / "d", require_labels=False).labels is None


def test_write_ts_refuses_unwritable_labels(tmp_path):
    with pytest.raises(DataError, match="cannot be written"):
        D.write_ts(make_ds(labels=["a b", "c", "d"]), tmp_path / "x.ts")


# ---------------------------------------------------------------------------
# load_dataset dispatch


def test_load_dataset_dispatch(tmp_path):
    ds = make_ds(labels=[5, 6, 5])
    for fmt, (name, writer) in WRITERS.items():
        writer(ds, tmp_path / name)
        assert_same(ds, D.load_dataset(tmp_path / name), labels_as_str=fmt == "ts")
    D.write_jsonl(ds, tmp_path / "d.json-lines")
    assert len(D.load_dataset(tmp_path / "d.json-lines")) == 3
    D.write_jsonl(ds, tmp_path / "d.txt")
    assert len(D.load_dataset(tmp_path / "d.txt", format="jsonl")) == 3
    expect_error(lambda: D.load_dataset(tmp_path / "d.txt"), tmp_path / "d.txt", "format")
    with pytest.raises(DataError, match="unknown data format"):
        D.load_dataset(tmp_path / "d.txt", format="parquet")


@pytest.mark.parametrize("fmt", ["auto", "jsonl", "npz", "npy", "csv", "ts"])
def test_missing_file_is_data_error(tmp_path, fmt):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=f"data file not found: {path}"):
        D.load_dataset(path, format=fmt)


def test_directory_given_as_file(tmp_path):
    expect_error(lambda: D.read_jsonl(tmp_path), tmp_path, "directory")


def test_csv_options(tmp_path):
    path = write(tmp_path, "c.csv", "seq,t,a,b,cls\ns1,0,1,2,x\ns1,1,3,4,x\ns2,0,5,6,y\n")
    ds = D.load_dataset(
        path, csv_options={"id_column": "seq", "label_column": "cls", "feature_columns": ["a", "b"]}
    )
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ds.labels, ["x", "y"])
    ds = D.load_dataset(path, csv_options={"id_column": "seq", "label_column": "cls"})
    assert ds.num_features == 3  # t, a, b in file order
    np.testing.assert_array_equal(ds.x[:, 0], [0, 1, 0])
    expect_error(
        lambda: D.load_dataset(path, csv_options={"idcol": "seq"}), path, "unknown csv option"
    )
    # options for other formats are ignored
    D.write_jsonl(make_ds(), tmp_path / "d.jsonl")
    assert len(D.load_dataset(tmp_path / "d.jsonl", csv_options={"id_column": "seq"})) == 3


# ---------------------------------------------------------------------------
# JSONL

GOOD = '{"x": [[1, 2], [3, 4]], "y": "a"}\n'


@pytest.mark.parametrize(
    "content, fragments",
    [
        (GOOD + '{"x": [[1, 2]], "y": "a"\n' + GOOD, ["line 2", "invalid JSON"]),
        (GOOD + '{"y": "a"}\n', ["line 2", "missing key 'x'"]),
        (GOOD + '{"x": [[1, 2]]}\n', ["line 2", "missing label"]),
        ('{"x": 5, "y": "a"}\n', ["line 1", "'x' is a number"]),
        ('{"x": [], "y": "a"}\n', ["line 1", "empty list", "at least 1 step"]),
        ('{"x": [1, 2], "y": "a"}\n', ["line 1", "step 1 is a number", "expected a list"]),
        ('{"x": [[]], "y": "a"}\n', ["line 1", "no features"]),
        ('{"x": [[1, 2], [3]], "y": "a"}\n', ["line 1", "step 2 has 1 features, step 1 has 2"]),
        ('{"x": [[1, 2], [3, 4, 5]], "y": "a"}\n', ["line 1", "step 2 has 3 features"]),
        (
            GOOD * 11 + '{"x": [[1, 2, 3]], "y": "a"}\n',
            ["line 12: 'x' has 3 features per step, expected 2"],
        ),
        ('{"x": [[1, NaN]], "y": "a"}\n', ["line 1", "step 1, feature 2 is nan", "NaN and Inf"]),
        ('{"x": [[1, 2], [-Infinity, 0]], "y": "a"}\n', ["line 1", "step 2, feature 1 is -inf"]),
        ('{"x": [[1, 1e999]], "y": "a"}\n', ["line 1", "feature 2 is inf"]),
        (
            '{"x": [[1, 2], [3, -1e300]], "y": "a"}\n',
            ["line 1", "step 2, feature 2 is -1e+300", "float32's range"],
        ),
        (
            '{"x": [[1, ' + str(10**39) + ']], "y": "a"}\n',
            ["line 1", "feature 2 is 1e+39", "float32's range"],
        ),
        (
            '{"x": [[1, "2"]], "y": "a"}\n',
            ["line 1", "feature 2 is a string ('2')", "expected a number"],
        ),
        ('{"x": [[1, true]], "y": "a"}\n', ["line 1", "feature 2 is a boolean (true)"]),
        ('{"x": [[false]], "y": "a"}\n', ["line 1", "feature 1 is a boolean (false)"]),
        ('{"x": [[1, null]], "y": "a"}\n', ["line 1", "feature 2 is null"]),
        ('{"x": [[1, [2]]], "y": "a"}\n', ["line 1", "feature 2 is a list"]),
        ('{"x": [[1, 2]], "y": 2.5}\n', ["line 1", "'y' is 2.5", "strings or integers"]),
        ('{"x": [[1, 2]], "y": true}\n', ["line 1", "'y' is a boolean"]),
        ('{"x": [[1, 2]], "y": null}\n', ["line 1", "'y' is null"]),
        ('{"x": [[1, 2]], "y": [1]}\n', ["line 1", "'y' is a list"]),
        ('{"x": [[1, 2]], "y": ""}\n', ["line 1", "empty string"]),
        (
            GOOD + '{"x": [[1, 2]], "y": "\\ud800x"}\n',
            ["line 2", "'y' is a string ('\\ud800x')", "U+D800", "lone surrogate", "valid Unicode"],
        ),
        (GOOD + '{"x": [[1, 2]], "y": "ok\\udfff"}\n', ["line 2", "U+DFFF", "lone surrogate"]),
        ('{"x": [[1, 2]], "y": 99999999999999999999}\n', ["line 1", "64-bit"]),
        (
            GOOD + '\n\n{"x": [[1, 2]], "y": 3}\n',
            ["line 4", "label 3 is an integer", "strings", "line 1"],
        ),
        ("[1, 2]\n", ["line 1", "expected a JSON object"]),
        ("", ["no sequences"]),
        ("\n  \n\n", ["no sequences"]),
        (GOOD + '{"x": [[1, 2]], "y": "a', ["line 2", "invalid JSON", "truncated"]),
        (GOOD.encode() + b'{"x": [[1, 2]], "y": "\xff"}\n', ["line 2", "not valid UTF-8"]),
        ('{"x": ' + "[" * 5000 + "]" * 5000 + ', "y": "a"}\n', ["line 1"]),
    ],
)
def test_jsonl_malformed(tmp_path, content, fragments):
    path = write(tmp_path, "train.jsonl", content)
    expect_error(lambda: D.read_jsonl(path), path, *fragments)


def test_jsonl_cr_only_line_endings(tmp_path):
    """CR-only line endings make the file one line: say so, not 'the last line looks truncated'."""
    path = write(tmp_path, "cr.jsonl", GOOD.replace("\n", "\r") * 3)
    msg = expect_error(
        lambda: D.read_jsonl(path),
        path,
        "line 1",
        "invalid JSON",
        "carriage return",
        "CR-only line endings",
    )
    assert "truncated" not in msg
    # CR as whitespace inside an object is valid JSON; CRLF endings load
    ds = D.read_jsonl(
        write(tmp_path, "ok.jsonl", '{"x": [[1, 2]],\r "y": "a"}\r\n' + GOOD.replace("\n", "\r\n"))
    )
    assert len(ds) == 2


def test_jsonl_partial_labels_when_not_required(tmp_path):
    path = write(tmp_path, "p.jsonl", GOOD + '{"x": [[1, 2]]}\n')
    expect_error(
        lambda: D.read_jsonl(path, require_labels=False), path, "line 2", "missing label", "line 1"
    )
    path = write(tmp_path, "q.jsonl", '{"x": [[1, 2]]}\n' + GOOD)
    expect_error(lambda: D.read_jsonl(path, require_labels=False), path, "line 2", "has a label")


def test_jsonl_valid_details(tmp_path):
    content = (
        "\ufeff"  # a BOM is tolerated
        '{"x": [[1, 2.5]], "y": 3.0, "id": "s1"}\r\n'
        "\n"
        "   \n"
        '{"x": [[-1e-3, 4], [5, 6]], "y": 7}'  # no final newline, but complete
    )
    path = write(tmp_path, "v.jsonl", content)
    ds = D.read_jsonl(path)
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [3, 7])
    np.testing.assert_array_equal(ds.x, [[1, 2.5], [-1e-3, 4], [5, 6]])
    assert ds.x.dtype == np.float64 and ds.source == str(path)
    unlabeled = write(tmp_path, "u.jsonl", '{"x": [[1]]}\n{"x": [[2], [3]]}\n')
    assert D.read_jsonl(unlabeled, require_labels=False).labels is None
    # an integer beyond int64 is still a number (np.array alone would make an object array of it)
    ds = D.read_jsonl(write(tmp_path, "i.jsonl", '{"x": [[1, ' + str(10**20) + ']], "y": 1}\n'))
    np.testing.assert_array_equal(ds.x, [[1.0, 1e20]])
    # a surrogate pair is one character (U+1F600), not a lone surrogate
    ds = D.read_jsonl(write(tmp_path, "e.jsonl", '{"x": [[1, 2]], "y": "smile \\ud83d\\ude00"}\n'))
    np.testing.assert_array_equal(ds.labels, ["smile \U0001f600"])
    # a string label that happens to read "true" does not confuse the boolean check
    ds = D.read_jsonl(write(tmp_path, "t.jsonl", '{"x": [[1, 2]], "y": "true"}\n'))
    np.testing.assert_array_equal(ds.labels, ["true"])


# ---------------------------------------------------------------------------
# NPZ / NPY folder


def save_npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


X = np.arange(10.0).reshape(5, 2)
LEN = np.array([2, 3])
Y = np.array([0, 1])


@pytest.mark.parametrize(
    "arrays, fragments",
    [
        (dict(lengths=LEN, y=Y), ["missing array 'x'", "found: lengths, y"]),
        (dict(x=X, y=Y), ["missing array 'lengths'"]),
        (dict(x=X, lengths=LEN), ["missing array 'y'"]),
        (dict(x=X.ravel(), lengths=LEN, y=Y), ["array 'x' has 1 dimension(s)", "expected 2"]),
        (dict(x=X[None], lengths=LEN, y=Y), ["array 'x' has 3 dimension(s)"]),
        (dict(x=np.zeros((5, 0)), lengths=LEN, y=Y), ["at least 1 feature"]),
        (dict(x=X, lengths=np.array([2, 2]), y=Y), ["array 'lengths' sums to 4", "5 rows"]),
        (dict(x=X, lengths=np.array([5, 0]), y=Y), ["array 'lengths'[1] is 0", "at least 1 step"]),
        (dict(x=X, lengths=np.array([6, 1]), y=Y), ["more than the 5 rows"]),
        (
            dict(x=X, lengths=np.array([2.0, 3.0]), y=Y),
            ["array 'lengths' has dtype float64", "integers"],
        ),
        (dict(x=X, lengths=LEN[None], y=Y), ["array 'lengths' has 2 dimension(s)"]),
        (dict(x=X, lengths=np.array([], dtype=int), y=Y), ["no sequences"]),
        (dict(x=X.astype(str), lengths=LEN, y=Y), ["array 'x' has non-numeric dtype"]),
        (dict(x=X > 3, lengths=LEN, y=Y), ["array 'x' has boolean dtype"]),
        (dict(x=np.where(X == 7, np.nan, X), lengths=LEN, y=Y), ["array 'x'[3, 1] is nan"]),
        (
            dict(x=np.where(X == 7, 1e300, X), lengths=LEN, y=Y),
            ["array 'x'[3, 1] is 1e+300", "float32's range"],
        ),
        (
            dict(x=np.where(X == 4, -1e39, X), lengths=LEN, y=Y),
            ["array 'x'[2, 0] is -1e+39", "float32's range"],
        ),
        (
            dict(x=X, lengths=LEN, y=np.array([0, 1, 2])),
            ["array 'y' has shape (3,), expected (2,)"],
        ),
        (dict(x=X, lengths=LEN, y=np.array([0.5, 1])), ["array 'y'[0] is 0.5"]),
        (dict(x=X, lengths=LEN, y=np.array(["a", ""])), ["array 'y'[1] is the empty string"]),
        (
            dict(x=X, lengths=LEN, y=np.array(["a", "b\udc80"])),
            ["array 'y'[1]", "U+DC80", "lone surrogate"],
        ),
        (
            dict(
                x=X,
                lengths=LEN,
                y=np.array([[97, 0], [98, 0x110000]], dtype=np.uint32).view("<U2").ravel(),
            ),
            ["array 'y'[1]", "0x110000", "beyond U+10FFFF"],
        ),
        (dict(x=X, lengths=LEN, y=np.array([b"a", b"b"])), ["array 'y' has dtype |S1", "bytes"]),
        (dict(x=X, lengths=LEN, y=np.array([True, False])), ["array 'y' has dtype bool"]),
        (
            dict(x=X, lengths=LEN, y=np.array(["a", 1], dtype=object)),
            ["array 'y' is an object array"],
        ),
        (dict(x=X.astype(object), lengths=LEN, y=Y), ["array 'x' is an object array"]),
    ],
)
def test_npz_malformed(tmp_path, arrays, fragments):
    path = save_npz(tmp_path / "d.npz", **arrays)
    expect_error(lambda: D.read_npz(path), path, *fragments)


def test_npz_not_an_archive(tmp_path):
    path = write(tmp_path, "d.npz", b"hello, not a zip")
    expect_error(lambda: D.read_npz(path), path, "not a valid .npz")
    # "PK" alone is not a zip signature: numpy would try to unpickle the rest (refused), and
    # its message about pickled data and allow_pickle must not reach the user
    path = write(tmp_path, "pk.npz", b"PK" + bytes(range(200, 256)))
    msg = expect_error(
        lambda: D.read_npz(path), path, "not a valid .npz archive", "no zip signature"
    )
    assert "pickle" not in msg
    np.save(tmp_path / "a.npy", X)
    shutil.move(tmp_path / "a.npy", tmp_path / "e.npz")
    expect_error(lambda: D.read_npz(tmp_path / "e.npz"), tmp_path / "e.npz", "single .npy array")


@pytest.mark.parametrize("member", ["x", "lengths", "y", "x.npy", "y.npy"])
def test_npz_member_that_is_not_a_npy_array(tmp_path, member):
    """np.load returns raw bytes for a member without a .npy header: named, no AttributeError."""
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in (("x", X), ("lengths", LEN), ("y", Y)):
            if member.removesuffix(".npy") == key:
                zf.writestr(member, b"raw bytes, no .npy header")
            else:
                buf = io.BytesIO()
                np.save(buf, arr)
                zf.writestr(f"{key}.npy", buf.getvalue())
    key = member.removesuffix(".npy")
    expect_error(
        lambda: D.read_npz(path),
        path,
        f"array '{key}'",
        f"zip member '{member}'",
        "not a .npy array",
    )


def test_npz_valid_details(tmp_path):
    path = save_npz(
        tmp_path / "d.npz",
        x=X.astype(np.int32),
        lengths=LEN.astype(np.uint8),
        y=np.array([1.0, 2.0]),
    )
    ds = D.read_npz(path)
    assert ds.x.dtype == np.float64 and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [1, 2])
    ds = D.read_npz(
        save_npz(tmp_path / "e.npz", x=X, lengths=LEN, extra=np.zeros(3)), require_labels=False
    )
    assert ds.labels is None


_spec = importlib.util.spec_from_file_location(
    "bad_inputs_make_npz", REPO / "tests" / "bad_inputs" / "make_npz.py"
)
make_npz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_npz)


def peak_traced_bytes(fn):
    """Peak bytes allocated (Python and NumPy, as tracemalloc sees them) while fn() runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "case, fragments",
    [
        (
            "declares_huge_x",
            ["array 'x'", "zip member 'x.npy'", "declares shape", "12.0 GiB", "holds 64.0 MiB"],
        ),
        ("many_lengths", ["array 'lengths' has 4000000 entries", "more than the 9 rows"]),
        ("many_labels", ["array 'y' has shape (4000000,), expected (3,)"]),
    ],
)
def test_npz_declared_size_refused_before_decompressing(tmp_path, case, fragments):
    """A small archive whose .npy headers declare more data than it can hold, or than the
    other arrays allow, is refused from the headers: memory stays small, not the declared
    size (the unchecked read allocated the declared 12 GiB, or decompressed 32 MB)."""
    path = make_npz.NPZ_SIZE_CASES[case](str(tmp_path))
    assert os.path.getsize(path) < 200_000
    errors = []

    def load():
        with pytest.raises(DataError) as info:
            D.load_dataset(path)
        errors.append(str(info.value))

    assert peak_traced_bytes(load) < 8 << 20
    assert errors[0].startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in errors[0]


def test_npz_bigger_than_memory_refused(tmp_path, monkeypatch):
    path = save_npz(tmp_path / "d.npz", x=X, lengths=LEN, y=Y)
    monkeypatch.setattr(npz_mod, "_memory_ceiling", lambda: 64)
    expect_error(
        lambda: D.read_npz(path), path, "array 'x'", "(80 bytes), more than this machine's memory"
    )
    monkeypatch.setattr(npz_mod, "_memory_ceiling", lambda: 80)
    assert len(D.read_npz(path)) == 2


def test_npz_headers_checked_for_normal_archives(tmp_path):
    """Compressed, uncompressed, zip64 and .npy version 2.0 members still load as before."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 3))
    lengths = np.full(300, 10)
    y = np.array([f"c{k % 4}" for k in range(300)])
    expected = SequenceDataset(x, np.concatenate([[0], np.cumsum(lengths)]), y)
    for name, save in (("plain", np.savez), ("compressed", np.savez_compressed)):
        path = tmp_path / f"{name}.npz"
        with open(path, "wb") as fh:
            save(fh, x=x, lengths=lengths, y=y)
        assert_same(D.read_npz(path), expected)
    path = tmp_path / "v2.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in (("x", x), ("lengths", lengths), ("y", y)):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, version=(2, 0))
    assert_same(D.read_npz(path), expected)


def test_npy_dir(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    np.save(folder / "x.npy", X.astype(np.float32))
    np.save(folder / "lengths.npy", LEN)
    expect_error(lambda: D.read_npy_dir(folder), folder, "missing y.npy")
    ds = D.read_npy_dir(folder, require_labels=False)
    assert isinstance(ds.x, np.memmap) and ds.labels is None
    np.save(folder / "y.npy", np.array(["u", "v"]))
    ds = D.load_dataset(folder)
    assert isinstance(ds.x, np.memmap)
    np.testing.assert_array_equal(ds.labels, ["u", "v"])
    np.save(folder / "x.npy", X.astype(np.int64))
    expect_error(lambda: D.read_npy_dir(folder), folder, "x.npy has", "int64", "float32 or float64")
    assert D.read_npy_dir(folder, mmap=False).x.dtype == np.float64
    np.save(folder / "x.npy", np.where(X == 9, np.inf, X))
    expect_error(lambda: D.read_npy_dir(folder), folder, "x.npy[4, 1] is inf")
    np.save(folder / "x.npy", np.where(X == 9, 1e300, X))
    expect_error(lambda: D.read_npy_dir(folder), folder, "x.npy[4, 1] is 1e+300", "float32's range")
    expect_error(lambda: D.read_npy_dir(folder, mmap=False), folder, "x.npy[4, 1] is 1e+300")
    np.save(folder / "x.npy", X)
    np.save(folder / "lengths.npy", np.array([1, 1]))
    expect_error(lambda: D.read_npy_dir(folder), folder, "lengths.npy sums to 2")
    (folder / "lengths.npy").unlink()
    expect_error(lambda: D.read_npy_dir(folder), folder, "missing lengths.npy")
    expect_error(lambda: D.read_npy_dir(folder / "x.npy"), folder / "x.npy", "expected a directory")


def test_npy_dir_object_and_garbage(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "lengths.npy", LEN)
    np.save(folder / "y.npy", Y)
    np.save(folder / "x.npy", X.astype(object), allow_pickle=True)
    expect_error(lambda: D.read_npy_dir(folder), folder, "x.npy is an object array")
    expect_error(lambda: D.read_npy_dir(folder, mmap=False), folder, "x.npy is an object array")
    (folder / "x.npy").write_bytes(b"\x93NUMPY garbage")
    expect_error(lambda: D.read_npy_dir(folder), folder, "x.npy")


@pytest.mark.parametrize("name", ["x", "lengths", "y"])
def test_npy_dir_member_without_npy_header(tmp_path, name):
    """Random bytes (no .npy header) are 'not a .npy file', not 'an object array or pickle'."""
    folder = tmp_path / "d"
    D.write_npy_dir(SequenceDataset(X, np.array([0, 2, 5]), Y), folder)
    (folder / f"{name}.npy").write_bytes(bytes(range(256)) * 2)
    for mmap in (True, False):
        msg = expect_error(
            lambda mmap=mmap: D.read_npy_dir(folder, mmap=mmap),
            folder,
            f"{name}.npy is not a .npy file",
            "no .npy header",
        )
        assert "pickle" not in msg and "object array" not in msg


def test_directory_named_like_a_data_file(tmp_path):
    """A directory x.jsonl is read as an .npy folder; the message says it is a directory."""
    for name in ("x.jsonl", "x.csv", "x.npz"):
        folder = tmp_path / name
        folder.mkdir()
        msg = expect_error(
            lambda folder=folder: D.load_dataset(folder),
            folder,
            "is a directory",
            f"expected a {name[1:]} file",
            "missing x.npy",
        )
    # a real .npy folder keeps working whatever its name
    D.write_npy_dir(SequenceDataset(X, np.array([0, 2, 5]), Y), tmp_path / "data.csv")
    assert len(D.load_dataset(tmp_path / "data.csv")) == 2
    expect_error(lambda: D.load_dataset(tmp_path / "plain"), tmp_path / "plain", "not found")
    (tmp_path / "plain").mkdir()
    msg = expect_error(
        lambda: D.load_dataset(tmp_path / "plain"),
        tmp_path / "plain",
        "missing x.npy",
        "read as an .npy folder",
        "name the file",
    )
    assert "is a directory" not in msg


def test_chunked_finite_check_reports_global_row(tmp_path, monkeypatch):
    x = np.zeros((7, 2))
    x[5, 1] = np.nan
    with pytest.raises(DataError, match=r"x.npy\[5, 1\] is nan"):
        check_finite_chunked(x, "x.npy", "src", chunk_rows=2)


# ---------------------------------------------------------------------------
# CSV

CSV_OK = "id,label,a,b\ns1,x,1,2\ns1,x,3,4\ns2,y,5,6\n"


@pytest.mark.parametrize(
    "content, fragments",
    [
        ("", ["file is empty", "header"]),
        ("\n\n", ["file is empty"]),
        ("1,x,1,2\n1,x,3,4\n", ["missing id column 'id'", "header"]),
        ("id,a,b\n1,1,2\n", ["missing label column 'label'"]),
        ("id,label\n1,x\n", ["no feature columns"]),
        ("id,label,a,a\n1,x,1,2\n", ["line 1", "column 'a' twice"]),
        ("id,label,,b\n1,x,1,2\n", ["line 1", "header column 3 is empty"]),
        (
            CSV_OK + "s1,x,7,8\n",
            ["line 5", "'s1' reappears after sequence 's2'", "line 2", "contiguous"],
        ),
        (
            "id,label,a,b\ns1,x,1,2\ns1,z,3,4\n",
            ["line 3", "label 'z' differs from label 'x'", "sequence 's1'"],
        ),
        ("id,label,a,b\ns1,x,1,2\ns1,x,3,abc\n", ["line 3, column 'b'", "'abc', not a number"]),
        ("id,label,a,b\ns1,x,1,2\ns1,x,,4\n", ["line 3, column 'a'", "empty cell"]),
        ("id,label,a,b\ns1,x,1,2\ns1,x,true,4\n", ["line 3, column 'a'", "'true'"]),
        # float() and numpy read these as 1000 and 12: a typo or another locale's digits
        ("id,label,a,b\ns1,x,1,2\ns1,x,3,1_000\n", ["line 3, column 'b'", "'1_000', not a"]),
        ("id,label,a,b\ns1,x,1,2\ns1,x,\u0661\u0662,4\n", ["line 3, column 'a'", "not a number"]),
        ("id,label,a,b\ns1,x,1,2\ns1,x,3\n", ["line 3", "3 cells, expected 4"]),
        ("id,label,a,b\ns1,x,1,2\ns1,x,3,4,5\n", ["line 3", "5 cells, expected 4"]),
        ("id,label,a,b\ns1,x,1,nan\n", ["line 2, column 'b'", "value is nan"]),
        ("id,label,a,b\ns1,x,1,2\n\ns2,x,inf,2\n", ["line 4, column 'a'", "inf"]),
        (
            "id,label,a,b\ns1,x,1,2\ns1,x,3,4e38\n",
            ["line 3, column 'b'", "4e+38", "float32's range"],
        ),
        ("id,label,a,b\n", ["no sequences", "no data rows"]),
        ("id,label,a,b\n,x,1,2\n", ["line 2", "empty id"]),
        ("id,label,a,b\ns1,,1,2\n", ["line 2", "empty label"]),
        ('id,label,a,b\ns1,"x,1,2\n', ["malformed CSV"]),
        (b"id,label,a,b\ns1,\xe9,1,2\n", ["line 2", "not valid UTF-8"]),
        (
            b"id,label,a,b\ns1,x,1,2\ns2,\xed\xa0\x80,1,2\n",
            ["line 3", "not valid UTF-8", "0xed"],
        ),  # a surrogate
    ],
)
def test_csv_malformed(tmp_path, content, fragments):
    path = write(tmp_path, "long.csv", content)
    expect_error(lambda: D.read_csv(path), path, *fragments)


@pytest.mark.parametrize("rows_after", [5, 40_000], ids=["end_of_data", "field_limit"])
def test_csv_unclosed_quote_names_the_line_it_opened(tmp_path, rows_after):
    """A quote opened on line 5001 and never closed swallows the rest of the file (to its end,
    or until csv's 128 KB field limit): the message names line 5001, not where csv gave up."""
    lines = ["id,label,a,b"] + [f"s{k // 5},x,{k},1" for k in range(4999)]
    lines.append('s999,x,"4999,1')  # line 5001
    lines += [f"t{k},x,{k},1" for k in range(rows_after)]
    path = write(tmp_path, "q.csv", "\n".join(lines) + "\n")
    msg = expect_error(
        lambda: D.read_csv(path),
        path,
        "line 5001: malformed CSV",
        "runs on to line",
        "quote left open",
    )
    assert msg.startswith(f"{path} line 5001: ")


def test_csv_valid_details(tmp_path):
    ds = D.read_csv(
        write(tmp_path, "a.csv", "id,label,a,b\r\n\r\ns1,x,1,2\r\ns1,x,3,4\r\n\r\ns2,y,5,6\r\n")
    )
    np.testing.assert_array_equal(ds.lengths, [2, 1])
    np.testing.assert_array_equal(ds.labels, ["x", "y"])
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])
    # label column position is free; features keep file order
    ds = D.read_csv(write(tmp_path, "b.csv", "b,id,a,label\n1,s,2,-3\n3,s,4,-3\n5,t,6,10\n"))
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [-3, 10])


@pytest.mark.parametrize(
    "cells, label_type, expected",
    [
        (["1", "2", "10"], "auto", [1, 2, 10]),
        (["1", "02", "10"], "auto", ["1", "02", "10"]),  # not canonical: stays text
        (["1", "+2"], "auto", ["1", "+2"]),
        (["1", "1.0"], "auto", ["1", "1.0"]),
        (["1", "2"], "str", ["1", "2"]),
        (["1", "02"], "int", [1, 2]),
    ],
)
def test_csv_label_typing(tmp_path, cells, label_type, expected):
    body = "".join(f"s{k},{c},0.5\n" for k, c in enumerate(cells))
    path = write(tmp_path, "l.csv", "id,label,f\n" + body)
    ds = D.read_csv(path, label_type=label_type)
    assert ds.labels.tolist() == expected


@pytest.mark.parametrize("label", ["a", "1_0", "\u0661"])
def test_csv_label_type_int_rejects_text(tmp_path, label):
    path = write(tmp_path, "l.csv", f"id,label,f\ns0,1,1\ns1,{label},1\n")
    expect_error(lambda: D.read_csv(path, label_type="int"), path, "line 3", "not an integer")


def test_csv_without_labels(tmp_path):
    path = write(tmp_path, "n.csv", "id,a\ns,1\ns,2\nt,3\n")
    ds = D.read_csv(path, require_labels=False)
    assert ds.labels is None and ds.num_features == 1
    path = write(tmp_path, "m.csv", "id,label,a\ns,,1\nt,,2\n")
    assert D.read_csv(path, require_labels=False).labels is None
    path = write(tmp_path, "o.csv", "id,label,a\ns,,1\nt,q,2\n")
    expect_error(lambda: D.read_csv(path, require_labels=False), path, "line 2", "empty label")


def test_csv_feature_columns_errors(tmp_path):
    path = write(tmp_path, "c.csv", CSV_OK)
    expect_error(
        lambda: D.read_csv(path, feature_columns=["a", "zz"]), path, "missing feature column 'zz'"
    )
    expect_error(
        lambda: D.read_csv(path, feature_columns=["a", "label"]), path, "'label'", "both a feature"
    )
    ds = D.read_csv(path, feature_columns=["b"])
    np.testing.assert_array_equal(ds.x[:, 0], [2, 4, 6])


# ---------------------------------------------------------------------------
# .ts

TS_HEAD = (
    "# comment\n\n@problemName toy\n@timeStamps false\n@missing false\n@univariate false\n"
    "@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n"
)


@pytest.mark.parametrize(
    "content, fragments",
    [
        (TS_HEAD.replace("@data\n", "") + "1,2:3,4:a\n", ["line 10", "missing @data"]),
        (TS_HEAD.replace("@data\n", ""), ["missing @data line"]),
        (
            TS_HEAD + "1,2:3,4:a\n1,2:b\n",
            ["line 12", "1 dimensions, expected 2 (@dimensions 2)", "label missing"],
        ),
        (TS_HEAD + "1,2:3,4:5,6:a\n", ["line 11", "3 dimensions, expected 2"]),
        (
            TS_HEAD.replace("true a b", "false") + "1,2:3,4:a\n",
            ["@classLabel false", "labels are required"],
        ),
        (
            TS_HEAD + "1,2:3,4:c\n",
            ["line 11", "label 'c' is not in the declared @classLabel list (a b)"],
        ),
        (
            TS_HEAD + "1,2:3,?:a\n",
            ["line 11", "dimension 2, value 2 is '?'", "missing values are not supported"],
        ),
        (TS_HEAD + "1,2:3,4,5:a\n", ["line 11", "dimension 2 has 3 values, dimension 1 has 2"]),
        (  # without @seriesLength the header still says every case has one length
            TS_HEAD.replace("@equalLength false", "@equalLength true") + "1,2:3,4:a\n\n1:2:b\n",
            ["line 13", "1 steps, but @equalLength true and the case on line 11 has 2"],
        ),
        (TS_HEAD + "1,2:3,x:a\n", ["line 11", "dimension 2, value 2 is 'x', not a number"]),
        (TS_HEAD + "1,2:3,4_0:a\n", ["line 11", "dimension 2, value 2 is '4_0', not a number"]),
        (TS_HEAD + "1,2:\uff13,4:a\n", ["line 11", "dimension 2, value 1 is", "not a number"]),
        (TS_HEAD + "1,:3,4:a\n", ["line 11", "dimension 1, value 2 is empty"]),
        (TS_HEAD + ":3:a\n", ["line 11", "no values"]),
        (TS_HEAD + "1,2:3,nan:a\n", ["line 11", "dimension 2, value 2 is nan"]),
        (
            TS_HEAD + "1,2:3,4:a\n1e300,2:3,4:b\n",
            ["line 12", "dimension 1, value 1 is 1e+300", "float32's range"],
        ),
        (TS_HEAD + "\n\n", ["no cases after @data"]),
        (
            (TS_HEAD.replace("true a b", "true a \udfff") + "1,2:3,4:a\n1:2:\udfff\n").encode(
                "utf-8", "surrogatepass"
            ),
            ["line 9", "not valid UTF-8", "0xed"],
        ),  # a surrogate, in the header and a label
        (
            TS_HEAD.replace("@dimensions 2", "@dimensions two"),
            ["line 7", "@dimensions must be a positive integer"],
        ),
        (
            TS_HEAD.replace("@univariate false", "@univariate true"),
            ["@dimensions 2 contradicts @univariate true"],
        ),
        (
            TS_HEAD.replace("@timeStamps false", "@timeStamps true") + "1,2:3,4:a\n",
            ["@timeStamps true", "not supported"],
        ),
        (
            TS_HEAD.replace("@missing false", "@missing maybe"),
            ["line 5", "@missing must be true or false"],
        ),
        (
            TS_HEAD.replace("@classLabel true a b", "@classLabel true"),
            ["line 9", "lists no class labels"],
        ),
        (
            TS_HEAD.replace("@classLabel true a b", "@targetLabel true"),
            ["line 9", "@targetLabel", "not supported"],
        ),
        (TS_HEAD.replace("@classLabel true a b\n", ""), ["missing @classLabel"]),
        (
            TS_HEAD.replace("@problemName toy", "@problemNmae toy"),
            ["line 3", "unknown header @problemnmae"],
        ),
        (
            TS_HEAD.replace("@missing false", "@dimensions 2"),
            ["line 7", "duplicate @dimensions", "line 5"],
        ),
        (
            TS_HEAD.replace("@equalLength false", "@equalLength true\n@seriesLength 2")
            + "1,2,3:3,4,5:a\n",
            ["line 12", "3 steps", "@seriesLength 2"],
        ),
        (
            TS_HEAD + "1,2:3,4:a\n1,2:3,4:a",
            [],
        ),  # no final newline is fine: checked below not to raise
    ],
)
def test_ts_malformed(tmp_path, content, fragments):
    path = write(tmp_path, "toy.ts", content)
    if not fragments:
        assert len(D.read_ts(path)) == 2
        return
    expect_error(lambda: D.read_ts(path), path, *fragments)


def test_ts_classlabel_false(tmp_path):
    head = TS_HEAD.replace("@classLabel true a b", "@classLabel false")
    ds = D.read_ts(write(tmp_path, "u.ts", head + "1,2:3,4\n5:6\n"), require_labels=False)
    assert ds.labels is None
    np.testing.assert_array_equal(ds.x, [[1, 3], [2, 4], [5, 6]])
    path = write(tmp_path, "v.ts", head + "1,2:3,4:a\n")
    expect_error(
        lambda: D.read_ts(path, require_labels=False),
        path,
        "line 11",
        "3 dimensions",
        "@classLabel is false, so no label is expected",
    )


def test_ts_valid_details(tmp_path):
    content = "@ProblemName\ttoy\n@classlabel TRUE 1 2\n@DATA\n 1.5,2 : 3,4 : 2 \r\n\n7:8:1\n"
    ds = D.read_ts(write(tmp_path, "ok.ts", content))
    np.testing.assert_array_equal(ds.x, [[1.5, 3], [2, 4], [7, 8]])
    np.testing.assert_array_equal(ds.labels, ["2", "1"])
    assert ds.labels.dtype.kind == "U"


# ---------------------------------------------------------------------------
# property-based: round trips and garbage input

LABEL_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=6)
_F32_MAX = float(np.finfo(np.float32).max)
FINITE = st.floats(-_F32_MAX, _F32_MAX, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 5))
    F = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    x = draw(arrays(np.float64, (sum(lengths), F), elements=FINITE))
    kind = draw(st.sampled_from(["int", "str", "none"]))
    if kind == "int":
        labels = draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n))
    elif kind == "str":
        labels = draw(st.lists(LABEL_TEXT, min_size=n, max_size=n))
    else:
        labels = None
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    lab = None if labels is None else labels_to_array(labels, "<h>")
    return SequenceDataset(x, offsets, lab, "<hypothesis>")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=datasets())
def test_property_roundtrip_every_format(ds):
    with tempfile.TemporaryDirectory() as folder:
        for fmt in WRITERS:
            back = roundtrip(ds, fmt, folder, require_labels=ds.labels is not None)
            assert_same(ds, back, labels_as_str=fmt == "ts")


JSONISH = st.text(alphabet='[]{}",:0123456789.eE-+ \ntruefalsnxyNI\\', max_size=120)
CSVISH = st.text(alphabet='id,label"ab0123456789.-\n\r xyz', max_size=120)
TSISH = st.text(alphabet="@#:,?0123456789.-\n abcdefilmnrstu", max_size=120)

GARBAGE = st.one_of(
    st.binary(max_size=200),
    JSONISH.map(str.encode),
    CSVISH.map(lambda s: ("id,label,a,b\n" + s).encode()),
    TSISH.map(lambda s: ("@classLabel true a b\n@dimensions 2\n@data\n" + s).encode()),
    TSISH.map(str.encode),
)


def _corrupt_npz(data, positions, values):
    buf = bytearray(data)
    for p, v in zip(positions, values):
        buf[p % len(buf)] = v
    return bytes(buf)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=GARBAGE)
def test_property_garbage_text_readers(content):
    with tempfile.TemporaryDirectory() as folder:
        for name in ("g.jsonl", "g.csv", "g.ts", "g.npz"):
            path = os.path.join(folder, name)
            with open(path, "wb") as fh:
                fh.write(content)
            try:
                ds = D.load_dataset(path, require_labels=name != "g.ts")
            except DataError as exc:
                assert "\n" not in str(exc) or name == "g.csv"  # csv may quote a newline cell
                continue
            assert len(ds) >= 1 and np.isfinite(np.asarray(ds.x)).all()


_VALID_NPZ = None


def _valid_npz_bytes():
    global _VALID_NPZ
    if _VALID_NPZ is None:
        with tempfile.TemporaryDirectory() as folder:
            D.write_npz(make_ds(labels=[1, 2, 1]), os.path.join(folder, "v.npz"))
            _VALID_NPZ = Path(folder, "v.npz").read_bytes()
    return _VALID_NPZ


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    positions=st.lists(st.integers(0, 10**6), min_size=1, max_size=4),
    values=st.lists(st.integers(0, 255), min_size=4, max_size=4),
    truncate=st.one_of(st.none(), st.integers(0, 2000)),
)
def test_property_corrupt_binary_readers(positions, values, truncate):
    data = _corrupt_npz(_valid_npz_bytes(), positions, values)
    if truncate is not None:
        data = data[:truncate]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "c.npz")
        Path(path).write_bytes(data)
        try:
            D.read_npz(path)
        except DataError:
            pass
        folder_npy = os.path.join(folder, "d")
        D.write_npy_dir(make_ds(lengths=(2, 3), labels=[1, 2]), folder_npy)
        x_path = os.path.join(folder_npy, "x.npy")
        raw = _corrupt_npz(Path(x_path).read_bytes(), positions, values)
        Path(x_path).write_bytes(raw if truncate is None else raw[:truncate])
        for mmap in (True, False):
            try:
                D.read_npy_dir(folder_npy, mmap=mmap)
            except DataError:
                pass


# ---------------------------------------------------------------------------
# labels


def test_class_list_plain_python_types():
    assert D.class_list(np.array([3, 1, 3, 2])) == [1, 2, 3]
    assert all(type(c) is int for c in D.class_list(np.array([3, 1])))
    assert D.class_list(np.array(["b", "a", "b"])) == ["a", "b"]
    assert all(type(c) is str for c in D.class_list(np.array(["b", "a"])))
    json.dumps(D.class_list(np.array([5, 7], dtype=np.int64)))
    with pytest.raises(DataError):
        D.class_list(None)


def test_encode_labels():
    np.testing.assert_array_equal(
        D.encode_labels(np.array(["b", "a", "c"]), ["a", "b", "c"]), [1, 0, 2]
    )
    out = D.encode_labels(np.array([10, -1, 10]), [-1, 10])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [1, 0, 1])
    # classes need not be sorted: the index is the position in the given list
    np.testing.assert_array_equal(D.encode_labels(np.array(["x", "y"]), ["y", "x"]), [1, 0])
    with pytest.raises(
        DataError, match=r"test.jsonl: label 'z' \(sequence 2\) is not one of the 2 classes"
    ):
        D.encode_labels(np.array(["a", "b", "z", "q"]), ["a", "b"], source="test.jsonl")
    with pytest.raises(DataError, match="labels are strings but the classes are integers"):
        D.encode_labels(np.array(["1", "2"]), [1, 2])
    with pytest.raises(DataError, match="duplicates"):
        D.encode_labels(np.array([1]), [1, 1])
    with pytest.raises(DataError, match="no labels"):
        D.encode_labels(None, [1])


def test_label_type_mix_rejected_in_memory():
    with pytest.raises(DataError):
        SequenceDataset.from_sequences([np.zeros((1, 1))] * 2, [1, "a"])
    with pytest.raises(DataError):
        SequenceDataset.from_sequences([np.zeros((1, 1))], [True])


# ---------------------------------------------------------------------------
# stratified split


def test_stratified_split_proportions_and_seed():
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 10 + ["d"] * 2 + ["e"])
    tr, va = D.stratified_split(labels, 0.2, np.random.default_rng(0))
    assert tr.dtype == np.int64 and va.dtype == np.int64
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == labels.size
    counts = {c: int((labels[va] == c).sum()) for c in "abcde"}
    assert counts == {"a": 10, "b": 6, "c": 2, "d": 1, "e": 0}
    assert set(labels[tr]) == set("abcde")  # training keeps every class
    tr2, va2 = D.stratified_split(labels, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(va, va2)
    _, va3 = D.stratified_split(labels, 0.2, np.random.default_rng(1))
    assert not np.array_equal(va, va3)


def test_stratified_split_edges():
    labels = np.array([0, 0, 1, 1, 1])
    tr, va = D.stratified_split(labels, 0.0, np.random.default_rng(0))
    assert va.size == 0 and tr.size == 5
    tr, va = D.stratified_split(labels, 0.95, np.random.default_rng(0))
    assert sorted(labels[tr].tolist()) == [0, 1]  # at most count - 1 per class
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(LstmCliError):
            D.stratified_split(labels, bad, np.random.default_rng(0))


@pytest.mark.parametrize(
    "fraction, count, take", [(0.35, 90, 32), (0.7, 45, 32), (0.29, 50, 15), (0.15, 30, 5)]
)
def test_stratified_split_rounds_the_decimal_s_halves_up(fraction, count, take):
    """0.35 * 90 is 31.499999999999996 in binary: the half of the decimal given rounded
    down (31, where the docs promise 32)."""
    labels = np.repeat([0, 1], count)
    _, va = D.stratified_split(labels, fraction, np.random.default_rng(0))
    assert va.size == 2 * take


# ---------------------------------------------------------------------------
# feature stats, padding, batching


def test_fingerprint_covers_lengths_labels_and_values():
    """The resume digest changes when the labels change and nothing else does (relabelled
    sequences with the same set of classes, or int labels read back as strings)."""
    ds = make_ds(lengths=(3, 1, 4, 2), labels=("a", "b", "a", "b"))
    digest = D.fingerprint(ds)
    copy = SequenceDataset(ds.x.copy(), ds.offsets.copy(), ds.labels.copy(), "elsewhere")
    assert D.fingerprint(copy) == digest  # the content, not the object or the file name
    relabelled = SequenceDataset(ds.x, ds.offsets, np.array(["b", "a", "a", "b"]), ds.source)
    assert D.class_list(relabelled.labels) == D.class_list(ds.labels)
    assert D.fingerprint(relabelled) != digest
    assert D.fingerprint(SequenceDataset(ds.x, ds.offsets, None, ds.source)) != digest
    ints = SequenceDataset(ds.x, ds.offsets, np.array([0, 1, 0, 1]), ds.source)
    as_text = SequenceDataset(ds.x, ds.offsets, np.array(["0", "1", "0", "1"]), ds.source)
    assert D.fingerprint(ints) != D.fingerprint(as_text)
    regrouped = SequenceDataset(ds.x, np.array([0, 2, 4, 8, 10]), ds.labels, ds.source)
    assert D.fingerprint(regrouped) != digest
    edited = ds.x.copy()
    edited[0, 0] += 1.0
    assert D.fingerprint(SequenceDataset(edited, ds.offsets, ds.labels, ds.source)) != digest


def test_feature_stats_chunked_and_floor(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, size=(1003, 3))
    x[:, 2] = 7.0  # constant feature
    ds = SequenceDataset(x, np.array([0, 500, 1003]), None)
    for chunk in (1, 7, 1000, 10**6):
        mean, std = D.feature_stats(ds, chunk_rows=chunk)
        np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(std[:2], x[:, :2].std(axis=0), rtol=1e-10)
        assert std[2] == 1.0 and mean.dtype == np.float64  # constant: centred only
        _, _, lo, hi = D.feature_summary(ds, chunk_rows=chunk)  # the same pass, with the range
        np.testing.assert_array_equal(lo, x.min(axis=0))
        np.testing.assert_array_equal(hi, x.max(axis=0))
    D.write_npy_dir(
        SequenceDataset(x.astype(np.float32), np.array([0, 1003]), None), tmp_path / "m"
    )
    mm = D.read_npy_dir(tmp_path / "m", require_labels=False)
    mean, std = D.feature_stats(mm, chunk_rows=100)
    np.testing.assert_allclose(
        mean, x.astype(np.float32).astype(np.float64).mean(axis=0), rtol=1e-12
    )


def test_values_up_to_float32_max_load_and_give_finite_stats(tmp_path):
    """The largest float32 loads; statistics (float64) and batches stay finite, without warnings."""
    big = float(np.finfo(np.float32).max)
    rows = [[big, -big], [1e30, 0.5], [-1e30, 2.0]]
    ds = D.read_jsonl(write(tmp_path, "edge.jsonl", json.dumps({"x": rows, "y": "a"}) + "\n"))
    np.testing.assert_array_equal(ds.x, rows)
    folder = tmp_path / "f32"
    D.write_npy_dir(
        SequenceDataset(np.array(rows, dtype=np.float32), np.array([0, 3]), None), folder
    )
    mapped = D.read_npy_dir(folder, require_labels=False)
    assert mapped.x.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in a square or a cast would raise here
        for d in (ds, mapped):
            mean, std = D.feature_stats(d)
            assert np.isfinite(mean).all() and np.isfinite(std).all()
            np.testing.assert_allclose(std, np.asarray(rows).std(axis=0), rtol=1e-6)
            for stats in ((None, None), (mean, std)):
                xb, _ = D.pad_batch(d, [0], np.float32, *stats)
                assert np.isfinite(xb).all()


def test_pad_batch():
    ds = make_ds(lengths=(3, 1, 4, 2), F=2, labels=[0, 1, 2, 3])
    xb, lens = D.pad_batch(ds, [2, 1, 0])
    assert xb.shape == (3, 4, 2) and xb.dtype == np.float32 and lens.dtype == np.int64
    np.testing.assert_array_equal(lens, [4, 1, 3])
    for b, n in enumerate([2, 1, 0]):
        np.testing.assert_array_equal(xb[b, : lens[b]], ds.sequence(n).astype(np.float32))
        assert np.all(xb[b, lens[b] :] == 0)
    mean, std = np.array([1.0, -2.0]), np.array([2.0, 0.5])
    xn, _ = D.pad_batch(ds, np.array([1, 3]), dtype=np.float64, mean=mean, std=std)
    np.testing.assert_allclose(xn[0, :1], (ds.sequence(1) - mean) / std)
    np.testing.assert_allclose(xn[1, :2], (ds.sequence(3) - mean) / std)
    assert np.all(xn[0, 1:] == 0)  # padding stays zero after normalisation
    xm, _ = D.pad_batch(ds, [0], dtype=np.float64, mean=mean)
    np.testing.assert_allclose(xm[0], ds.sequence(0) - mean)
    empty, elens = D.pad_batch(ds, [])
    assert empty.shape == (0, 0, 2) and elens.size == 0
    with pytest.raises(DataError, match="mean has shape"):
        D.pad_batch(ds, [0], mean=np.zeros(3))


def test_pad_batch_memmap(tmp_path):
    ds = make_ds(lengths=(2, 5, 3), labels=[1, 2, 3])
    D.write_npy_dir(ds, tmp_path / "d")
    xb, _ = D.pad_batch(D.read_npy_dir(tmp_path / "d"), [1, 2], dtype=np.float64)
    np.testing.assert_array_equal(xb[0], ds.sequence(1))


def _spread_lengths(n=400, seed=0):
    return np.random.default_rng(seed).integers(1, 200, size=n)


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_make_batches_covers_every_index_once(bucket, shuffle, batch_size):
    lengths = _spread_lengths(101)
    batches = D.make_batches(
        lengths, batch_size, rng=np.random.default_rng(0), shuffle=shuffle, bucket=bucket
    )
    allidx = np.concatenate(batches)
    assert allidx.dtype == np.int64
    np.testing.assert_array_equal(np.sort(allidx), np.arange(101))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(batches) == -(-101 // batch_size)


def test_make_batches_bucketing_reduces_padding():
    lengths = _spread_lengths()
    rng = np.random.default_rng(0)
    bucketed = D.make_batches(lengths, 32, rng=rng, bucket=True)
    plain = D.make_batches(lengths, 32, rng=rng, bucket=False)
    assert D.padded_fraction(bucketed, lengths) < 0.1 < 0.3 < D.padded_fraction(plain, lengths)
    assert all(np.ptp(lengths[b]) <= 40 for b in bucketed)


def test_make_batches_deterministic_and_shuffled():
    lengths = np.repeat([5, 10, 20], 40)  # many ties: the rng breaks them
    a = D.make_batches(lengths, 8, rng=np.random.default_rng(42))
    b = D.make_batches(lengths, 8, rng=np.random.default_rng(42))
    c = D.make_batches(lengths, 8, rng=np.random.default_rng(43))
    assert all(np.array_equal(p, q) for p, q in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))
    fixed = D.make_batches(lengths, 8, shuffle=False)
    again = D.make_batches(lengths, 8, shuffle=False)
    assert all(np.array_equal(p, q) for p, q in zip(fixed, again))
    assert [int(lengths[f].max()) for f in fixed] == sorted(int(lengths[f].max()) for f in fixed)
    plain = D.make_batches(lengths, 8, shuffle=False, bucket=False)
    np.testing.assert_array_equal(np.concatenate(plain), np.arange(lengths.size))


def test_make_batches_validation():
    with pytest.raises(LstmCliError, match="rng"):
        D.make_batches([1, 2], 2)
    for bad in (0, 2.5, True):
        with pytest.raises(LstmCliError, match="batch_size"):
            D.make_batches([1, 2], bad, shuffle=False)
    assert D.make_batches([], 4, shuffle=False) == []


def test_padded_fraction_by_hand():
    lengths = np.array([1, 3, 2, 2])
    # batch [0, 1]: 2 x 3 = 6 slots, 4 real; batch [2, 3]: 4 slots, 4 real -> 2 / 10
    assert D.padded_fraction([np.array([0, 1]), np.array([2, 3])], lengths) == pytest.approx(0.2)
    assert D.padded_fraction([], lengths) == 0.0


# ---------------------------------------------------------------------------
# JapaneseVowels


@pytest.mark.parametrize("split, n, max_len", [("train", 270, 26), ("test", 370, 29)])
def test_japanese_vowels_ts_and_jsonl_agree(split, n, max_len):
    start = time.perf_counter()
    ts = D.load_dataset(JV / f"JapaneseVowels_{split.upper()}.ts")
    js = D.load_dataset(JV / f"{split}.jsonl")
    assert time.perf_counter() - start < 1.0
    assert_same(ts, js)
    assert len(ts) == n and ts.num_features == 12
    assert ts.lengths.min() == 7 and ts.lengths.max() == max_len
    assert D.class_list(ts.labels) == [str(k) for k in range(1, 10)]
    meta = json.loads((JV / "meta.json").read_text(encoding="utf-8"))
    counts = dict(zip(*np.unique(ts.labels, return_counts=True)))
    assert {k: int(v) for k, v in counts.items()} == meta[f"class_counts_{split}"]


def test_japanese_vowels_files_are_byte_copies():
    import hashlib

    meta = json.loads((JV / "meta.json").read_text(encoding="utf-8"))
    for name, digest in meta["source_sha256"].items():
        assert hashlib.sha256((JV / name).read_bytes()).hexdigest() == digest
    shared = Path("/work/shared/datasets/JapaneseVowels")
    if shared.is_dir():
        for f in shared.iterdir():
            assert (JV / f.name).read_bytes() == f.read_bytes()


def test_make_batches_pools_change_membership_between_epochs():
    """Bucketing in pools: little padding, yet the batches are not the same every epoch."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 501, size=20000)
    first = D.make_batches(lengths, 64, rng=rng)
    second = D.make_batches(lengths, 64, rng=rng)
    assert D.padded_fraction(first, lengths) < 0.05

    def as_sets(batches):
        return {frozenset(b.tolist()) for b in batches}

    assert len(as_sets(first) & as_sets(second)) < len(first) // 10


def test_views_copy_nothing_and_match_subsets():
    rng = np.random.default_rng(3)
    ds = make_ds(
        lengths=tuple(rng.integers(1, 9, size=40)), F=3, labels=tuple(rng.integers(0, 4, size=40))
    )
    idx = np.array([5, 0, 17, 33, 2])
    view, sub = ds.view(idx), ds.subset(idx)
    assert view.x is ds.x and len(view) == 5
    np.testing.assert_array_equal(view.lengths, sub.lengths)
    np.testing.assert_array_equal(view.labels, sub.labels)
    for got, want in zip(D.pad_batch(view, [4, 1, 0]), D.pad_batch(sub, [4, 1, 0])):
        np.testing.assert_array_equal(got, want)
    for chunk in (1, 7, 10_000):
        for got, want in zip(D.feature_stats(view, chunk_rows=chunk), D.feature_stats(sub)):
            np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(view.view([1, 2]).lengths, sub.lengths[[1, 2]])


def test_pad_batch_reads_memory_mapped_rows_exactly(tmp_path):
    """Batches from a memory-mapped .npy folder (read with positioned reads) equal the
    same batches from memory, for the dataset and for a view of it."""
    rng = np.random.default_rng(0)
    ds = make_ds(
        lengths=tuple(rng.integers(1, 30, size=50)),
        F=5,
        labels=tuple(rng.integers(0, 3, size=50)),
        dtype=np.float32,
    )
    D.write_npy_dir(ds, str(tmp_path / "npy"))
    mm = D.read_npy_dir(str(tmp_path / "npy"))
    assert isinstance(mm.x, np.memmap)
    for idx in (np.array([3, 1, 40]), np.arange(50)):
        for got, want in zip(
            D.pad_batch(mm, idx, mean=np.ones(5), std=np.full(5, 2.0)),
            D.pad_batch(ds, idx, mean=np.ones(5), std=np.full(5, 2.0)),
        ):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        D.pad_batch(mm.view([5, 9, 2]), [0, 2])[0], D.pad_batch(ds, [5, 2])[0]
    )


def test_jsonl_duplicate_key_is_an_error(tmp_path):
    p = tmp_path / "dup.jsonl"
    p.write_text('{"x": [[1.0]], "y": 0}\n{"x": [[2.0]], "y": 1, "y": 0}\n')
    with pytest.raises(D.DataError, match=r"dup.jsonl line 2: key 'y' appears twice"):
        D.read_jsonl(str(p))


def test_float16_data_loads_without_numpy_warnings(tmp_path):
    """The range check compares float16 limits as Python floats: numpy 2 warned "overflow
    encountered in cast" on every float16 file."""
    path = tmp_path / "half.npz"
    x = np.arange(12, dtype=np.float16).reshape(6, 2)
    np.savez(path, x=x, lengths=np.array([2, 4]), y=np.array([0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = D.load_dataset(str(path))
    np.testing.assert_array_equal(np.asarray(ds.x, np.float64), x.astype(np.float64))

"""Tests for lstm_cli.store.checkpoint: bit-exact round trips, atomic writes, refusing bad files."""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from lstm_cli.errors import CheckpointError
from lstm_cli.nn.optim import make_optimizer
from lstm_cli.store import checkpoint as ckpt_mod
from lstm_cli.store.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    load_checkpoint,
    looks_like_checkpoint,
    read_meta,
    save_checkpoint,
)


def make_params(rng, dtype=np.float64, I=2, H=3, K=2):
    return {
        "lstm.0.W": rng.standard_normal((I + H, 4 * H)).astype(dtype),
        "lstm.0.b": rng.standard_normal(4 * H).astype(dtype),
        "head.W": rng.standard_normal((H, K)).astype(dtype),
        "head.b": rng.standard_normal(K).astype(dtype),
    }


def make_meta():
    return {
        "config": {
            "model": {"hidden_size": 3, "head": "last"},
            "optim": {"name": "adam", "lr": 0.1},
        },
        "classes": ["négatif", "positif", 7],
        "normalisation": {"mean": [0.1, -2.5e-7], "std": [1.0, 3.0000000000000004]},
        "epoch": 3,
        "step": 120,
        "metrics": {"val_loss": 0.41234567890123456, "val_acc": 0.912},
        "rng": np.random.default_rng(5).bit_generator.state,  # 128-bit ints
        "nothing": None,
    }


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def saved(tmp_path, rng):
    """A valid checkpoint on disk: (path, params, optim arrays, meta)."""
    path = tmp_path / "last.npz"
    params = make_params(rng)
    optim = {"m.head.W": rng.standard_normal((3, 2)), "v.head.W": rng.random((3, 2))}
    meta = make_meta()
    save_checkpoint(path, params, meta, optim)
    return path, params, optim, meta


def assert_bit_identical(got, want):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert got[k].tobytes() == np.ascontiguousarray(want[k]).tobytes(), k


def rewrite(src, dst, edit):
    """Re-save an npz (as a *valid* zip) after ``edit(arrays, doc)`` changed its content."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    doc = json.loads(str(arrays.pop("meta")))
    edit(arrays, doc)
    if doc is not None:
        arrays["meta"] = np.array(json.dumps(doc))
    np.savez(dst, **arrays)
    return dst


class CreatesFileWhenUnpickled:
    """Unpickling this calls open(path, "w"): proof of whether anything was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, rng, dtype):
    params = make_params(rng, dtype)
    params["lstm.0.b"][:3] = [np.nan, -0.0, np.inf]  # bit patterns, not just values
    params["head.W"] = np.asfortranarray(params["head.W"])
    optim = {
        "m.lstm.0.W": rng.standard_normal((5, 12)).astype(dtype),
        "step_marker": np.arange(3, dtype=np.int64),
    }
    meta = make_meta()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, params, meta, optim)
    ck = load_checkpoint(path)
    assert isinstance(ck, Checkpoint)
    assert_bit_identical(ck.params, params)
    assert_bit_identical(ck.optim_arrays, optim)
    assert ck.meta == meta
    assert ck.format_version == FORMAT_VERSION and len(ck.sha256) == 64
    assert read_meta(str(path)) == meta
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temp file left behind


def test_file_layout_matches_design(saved):
    path, params, optim, meta = saved
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        doc = json.loads(str(z["meta"][()]))
        assert z["meta"].shape == () and z["meta"].dtype.kind == "U"
    assert names == set(params) | {"optim." + k for k in optim} | {"meta"}
    assert doc["format_version"] == 1 and doc["meta"] == meta
    assert [r["name"] for r in doc["params"]] == list(params)
    assert doc["params"][0] == {"name": "lstm.0.W", "shape": [5, 12], "dtype": "<f8"}
    assert len(doc["sha256"]) == 64


def test_meta_goes_through_json_and_rng_state_restores(tmp_path, rng):
    gen = np.random.default_rng(123)
    gen.random(10)
    meta = {"rng": gen.bit_generator.state, "betas": (0.9, 0.999), "f64": np.float64(0.1)}
    path = tmp_path / "c.npz"
    save_checkpoint(path, make_params(rng), meta)
    back = load_checkpoint(path).meta
    assert back["betas"] == [0.9, 0.999]  # tuples come back as lists (documented)
    assert back["f64"] == 0.1
    restored = np.random.default_rng()
    restored.bit_generator.state = back["rng"]
    assert np.array_equal(restored.random(5), gen.random(5))


def test_meta_dict_mixing_int_and_str_keys(tmp_path, rng):
    # e.g. train.class_weights {0: 2.0, "cat": 0.5}: json's sort_keys alone cannot order
    # int against str, so keys are written as the str json makes of them.
    meta = {"weights": {10: 1.0, "cat": 0.5, 2: 2.0}, "flags": {True: 1, None: 2}}
    path = tmp_path / "c.npz"
    save_checkpoint(path, make_params(rng), meta)
    back = load_checkpoint(path).meta
    assert back == {"weights": {"10": 1.0, "cat": 0.5, "2": 2.0}, "flags": {"true": 1, "null": 2}}
    assert read_meta(path) == back


def test_overwrite_replaces_previous_checkpoint(saved, rng):
    path, *_ = saved
    new = make_params(rng, np.float32)
    save_checkpoint(path, new, {"epoch": 4})
    ck = load_checkpoint(path)
    assert_bit_identical(ck.params, new)
    assert ck.optim_arrays == {} and ck.meta == {"epoch": 4}
    assert sorted(os.listdir(path.parent)) == ["last.npz"]


def test_optimizer_state_through_checkpoint_continues_bit_identically(tmp_path, rng):
    params = make_params(rng, np.float32)
    target = make_params(rng, np.float32)

    def grads(p):
        return {k: (v - target[k]) ** 3 + 0.1 * v for k, v in p.items()}

    opt = make_optimizer("adamw", params, 0.01, weight_decay=0.01)
    for _ in range(3):
        opt.step(params, grads(params))
    arrays, optim_meta = opt.state_dict()
    save_checkpoint(tmp_path / "c.npz", params, {"optimizer": optim_meta}, arrays)

    ck = load_checkpoint(tmp_path / "c.npz")
    opt2 = make_optimizer("adamw", ck.params, 0.5, weight_decay=0.01)
    opt2.load_state_dict(ck.optim_arrays, ck.meta["optimizer"])
    for _ in range(4):
        opt.step(params, grads(params))
        opt2.step(ck.params, grads(ck.params))
    assert_bit_identical(ck.params, params)


# ------------------------------------------------------------------ atomic writes


def test_crash_in_os_replace_keeps_old_checkpoint(saved, monkeypatch, rng):
    path, params, optim, meta = saved
    original = path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {path}.*No space left"):
        save_checkpoint(path, make_params(rng), {"epoch": 99})
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert os.listdir(path.parent) == ["last.npz"]
    assert load_checkpoint(path).meta == meta


def test_crash_inside_savez_keeps_old_checkpoint(saved, monkeypatch, rng):
    path, _, _, meta = saved
    original = path.read_bytes()
    seen = {}

    def half_write(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        seen["tmp"] = file.name
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(CheckpointError, match="cannot write checkpoint.*Input/output error"):
        save_checkpoint(path, make_params(rng), {"epoch": 99})
    monkeypatch.undo()
    assert os.path.dirname(os.path.abspath(seen["tmp"])) == str(path.parent)  # same folder
    assert not os.path.exists(seen["tmp"])
    assert path.read_bytes() == original
    assert os.listdir(path.parent) == ["last.npz"]


def test_interrupt_mid_write_propagates_and_cleans_up(saved, monkeypatch, rng):
    path, *_ = saved
    original = path.read_bytes()

    def interrupted(file, *args, **kwargs):
        file.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_params(rng), {})
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert os.listdir(path.parent) == ["last.npz"]


def test_first_save_that_fails_leaves_nothing(tmp_path, monkeypatch, rng):
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("nope")))
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "new.npz", make_params(rng), {})
    assert os.listdir(tmp_path) == []


def test_save_into_missing_folder(tmp_path, rng):
    path = tmp_path / "no" / "such" / "c.npz"
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {path}"):
        save_checkpoint(path, make_params(rng), {})


@pytest.mark.parametrize(
    "params, meta, extra, match",
    [
        ({"meta": np.zeros(2)}, {}, None, "'meta' is reserved"),
        ({"file": np.zeros(2)}, {}, None, "'file' is reserved"),
        ({"optim.x": np.zeros(2)}, {}, None, "'optim.x' is reserved"),
        ({"w": np.array([object()])}, {}, None, "object dtype"),
        ({"w": np.zeros(2)}, {}, {"m": np.array([None], dtype=object)}, "object dtype"),
        ({"w": np.zeros(2)}, {"epoch": np.int64(3)}, None, "not JSON-serialisable"),
        ({"w": np.zeros(2)}, {"m": {1: 0.5, "1": 2.0}}, None, "both be written as '1'"),
        ({"w": np.zeros(2)}, [1], None, "meta must be a dict"),
        ({}, {}, None, "non-empty dict"),
    ],
)
def test_save_rejects_bad_input(tmp_path, params, meta, extra, match):
    with pytest.raises(CheckpointError, match=match):
        save_checkpoint(tmp_path / "c.npz", params, meta, extra)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ refusing bad files


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_looks_like_checkpoint_by_form_not_name(saved, tmp_path):
    """A checkpoint under any name is one; a zip without the meta entry, text, a truncated
    archive, one behind other bytes, a folder or a missing file are not (none raises)."""
    path, *_ = saved
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(path.read_bytes())
    assert looks_like_checkpoint(path) and looks_like_checkpoint(renamed)
    np.savez(tmp_path / "arrays.npz", a=np.zeros(2))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:200])  # the zip magic, no directory
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    (tmp_path / "prefixed.npz").write_bytes(b"x,y\n" + path.read_bytes())  # zipfile reads it
    for other in ("arrays.npz", "cut.npz", "text.npz", "prefixed.npz", "missing.npz", "."):
        assert not looks_like_checkpoint(tmp_path / other), other


@pytest.mark.parametrize("keep", [0, 2, 30, 0.5, -22, -1])
def test_truncated_file(saved, tmp_path, keep):
    path, *_ = saved
    data = path.read_bytes()
    n = (
        int(len(data) * keep)
        if isinstance(keep, float)
        else (keep if keep >= 0 else len(data) + keep)
    )
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="empty|not a valid .npz|not an .npz|damaged") as exc:
        load_checkpoint(bad)
    assert str(bad) in str(exc.value)


def test_bit_flip_in_array_data_is_caught(saved, tmp_path):
    path, params, *_ = saved
    data = bytearray(path.read_bytes())
    at = bytes(data).find(params["head.W"].tobytes())
    assert at > 0
    data[at + 5] ^= 0x10
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged.*'head.W'.*CRC"):
        load_checkpoint(bad)


def test_single_bit_flips_are_refused_or_harmless(tmp_path, rng):
    """Flip one bit at every third byte offset (all of them is ~3x slower and finds
    nothing new): loading raises CheckpointError or (for bytes nobody reads, such as the
    local zip header's timestamps) returns exactly the original content."""
    path = tmp_path / "small.npz"
    params = {"head.W": rng.standard_normal((2, 2)), "head.b": rng.standard_normal(2)}
    save_checkpoint(path, params, {"epoch": 1}, {"m.head.b": rng.standard_normal(2)})
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    refused = 0
    offsets = range(0, len(data), 3)
    for i in offsets:
        flipped = bytearray(data)
        flipped[i] ^= 0x04
        bad.write_bytes(bytes(flipped))
        try:
            ck = load_checkpoint(bad)
        except CheckpointError:
            refused += 1
            continue
        assert_bit_identical(ck.params, params)
        assert ck.meta == {"epoch": 1}
    assert refused > 0.8 * len(offsets)


def test_hand_edited_meta_number_is_refused(saved, tmp_path):
    path, *_ = saved

    def edit(arrays, doc):
        doc["meta"]["epoch"] = 4

    bad = rewrite(path, tmp_path / "edited.npz", edit)
    with pytest.raises(CheckpointError, match="checksum mismatch: the file was damaged or edited"):
        load_checkpoint(bad)
    assert read_meta(bad)["epoch"] == 4  # documented: read_meta does not verify the checksum


def test_edited_array_value_is_refused(saved, tmp_path):
    path, *_ = saved

    def edit(arrays, doc):
        arrays["head.b"] = arrays["head.b"] + 1e-12

    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(rewrite(path, tmp_path / "edited.npz", edit))


def test_object_array_is_refused_without_unpickling(saved, tmp_path):
    path, *_ = saved
    marker = tmp_path / "pwned"

    def edit(arrays, doc):
        arrays["head.b"] = np.array([CreatesFileWhenUnpickled(marker)], dtype=object)

    bad = rewrite(path, tmp_path / "objects.npz", edit)
    with pytest.raises(CheckpointError, match="'head.b' holds Python objects.*pickle"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="Python objects"):
        read_meta(bad)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_pickle_renamed_npz_is_refused_without_unpickling(tmp_path, protocol):
    marker = tmp_path / "pwned"
    # Sanity check that the payload is live: unpickling it does create a file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(CreatesFileWhenUnpickled(probe), protocol=protocol)).close()
    assert probe.exists()

    bad = tmp_path / "model.npz"
    bad.write_bytes(pickle.dumps({"lstm.0.W": CreatesFileWhenUnpickled(marker)}, protocol=protocol))
    match = "pickle file.*never unpickles" if protocol >= 2 else "not an .npz checkpoint"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError):
        read_meta(bad)
    assert not marker.exists()


def test_plain_npy_and_foreign_zip_are_refused(tmp_path):
    npy = tmp_path / "x.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(CheckpointError, match="not an .npz checkpoint"):
        load_checkpoint(npy)
    zpath = tmp_path / "z.npz"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="'readme.txt' \\(not an .npy array\\)"):
        load_checkpoint(zpath)


def test_newer_format_version_is_refused(saved, tmp_path):
    path, *_ = saved

    def edit(arrays, doc):
        doc["format_version"] = FORMAT_VERSION + 1

    bad = rewrite(path, tmp_path / "future.npz", edit)
    for load in (load_checkpoint, read_meta):
        with pytest.raises(
            CheckpointError, match="newer lstm_cli \\(format_version 2; .*reads up to 1"
        ):
            load(bad)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda a, d: d.pop("format_version"), "no format_version"),
        (lambda a, d: d.update(format_version="1"), "unsupported format_version '1'"),
        (lambda a, d: d.pop("sha256"), "missing or bad 'sha256'"),
        (
            lambda a, d: d["params"][0].update(shape=[5, 13]),
            r"parameter 'lstm.0.W' has shape \(5, 12\) dtype <f8, "
            r"but the meta records shape \(5, 13\)",
        ),
        (
            lambda a, d: a.update({"head.W": a["head.W"].astype(np.float32)}),
            r"parameter 'head.W' has shape \(3, 2\) dtype <f4, but the meta records .* dtype <f8",
        ),
        (
            lambda a, d: a.update({"head.b": a["head.b"][:1]}),
            r"parameter 'head.b' has shape \(1,\)",
        ),
        (lambda a, d: a.pop("head.b"), "missing parameter 'head.b'"),
        (lambda a, d: a.pop("optim.v.head.W"), "missing optimizer array 'optim.v.head.W'"),
        (lambda a, d: a.update(extra=np.zeros(1)), r"unexpected arrays \['extra'\]"),
        (lambda a, d: d.update(params=[]), "no parameters recorded"),
        (lambda a, d: d.update(params="lstm"), "'params' is not a list"),
        (lambda a, d: d.update(meta=[1]), "'meta' is not an object"),
    ],
)
def test_inconsistent_files_are_refused(saved, tmp_path, edit, match):
    path, *_ = saved
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(rewrite(path, tmp_path / "bad.npz", edit))


def test_missing_or_malformed_meta_entry(saved, tmp_path):
    path, *_ = saved
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    no_meta = dict(arrays)
    del no_meta["meta"]
    np.savez(tmp_path / "a.npz", **no_meta)
    with pytest.raises(CheckpointError, match="no 'meta' entry"):
        load_checkpoint(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", **dict(arrays, meta=np.array("{not json")))
    with pytest.raises(CheckpointError, match="meta is not valid JSON"):
        load_checkpoint(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", **dict(arrays, meta=np.zeros(3)))
    with pytest.raises(CheckpointError, match="'meta' must be a 0-d unicode string"):
        load_checkpoint(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", **dict(arrays, meta=np.array("[1, 2]")))
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_meta(tmp_path / "d.npz")


def test_loader_uses_allow_pickle_false(saved, monkeypatch):
    path, *_ = saved
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    load_checkpoint(path)
    read_meta(path)
    assert calls == [False, False]
    assert ckpt_mod.np is np

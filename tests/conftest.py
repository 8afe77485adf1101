"""Shared fixtures: small synthetic datasets on disk and config files in tmp_path."""

import os

import numpy as np
import pytest
import yaml

from lstm_cli.data import write_jsonl
from lstm_cli.data.synthetic import make_pattern_task


@pytest.fixture
def pattern_files(tmp_path):
    """A small, easy pattern task (short sequences) as train/test JSONL files."""
    rng = np.random.default_rng(0)
    train = make_pattern_task(240, 3, 8, 3, 3, rng)
    test = make_pattern_task(90, 3, 8, 3, 3, rng)
    paths = {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")}
    write_jsonl(train, paths["train"])
    write_jsonl(test, paths["test"])
    return paths


@pytest.fixture
def write_config(tmp_path, pattern_files):
    """write_config(**sections) -> path of a YAML config on the pattern task, sections merged."""

    def _write(name="config.yaml", **sections):
        cfg = {
            "data": {
                "train": pattern_files["train"],
                "test": pattern_files["test"],
                "valid_fraction": 0.2,
            },
            "model": {"hidden_size": 16},
            "train": {"epochs": 12, "batch_size": 16, "seed": 0, "optimizer": {"lr": 0.01}},
            "output": {"dir": str(tmp_path / "run")},
        }
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    return _write


def file_bytes(folder):
    """{name: bytes} of every file in folder (to prove nothing was touched)."""
    out = {}
    for n in sorted(os.listdir(folder)):
        if os.path.isdir(os.path.join(folder, n)):
            continue  # a member folder: compare it on its own
        with open(os.path.join(folder, n), "rb") as fh:
            out[n] = fh.read()
    return out

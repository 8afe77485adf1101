"""The run folder: create or reuse it, retire an earlier run's files, and write the
metrics and summary.

Every file is replaced atomically (store.atomic), so a crash leaves the last complete
version under each name.
"""

from __future__ import annotations

import csv
import io
import json
import os

from ..config import Config, dump_config
from ..errors import CheckpointError, ConfigError, LstmCliError
from ..store.atomic import write_text

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
    "seconds",
    "padded_fraction",
    "sequences_per_second",
]
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "last.npz", "best.npz", "summary.json")


def resume_checkpoint_path(run_dir) -> str:
    """run_dir/last.npz, or a CheckpointError saying a resume is impossible without it."""
    path = os.path.join(run_dir, "last.npz")
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot resume: {path} does not exist")
    return path


def open_run_dir(run_dir, overwrite=False, resume=False) -> list:
    """Create the run folder if needed, and refuse a non-empty folder unless
    overwrite/resume. Returns the earlier run's files (names in RUN_FILES) when a new run
    starts in a folder that holds them (--overwrite)."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"output.dir {run_dir!r} exists and is not a folder")
    if resume:
        resume_checkpoint_path(run_dir)
    else:
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create run folder {run_dir!r}: {err.strerror}") from None
    if resume:
        return []
    if os.listdir(run_dir) and not overwrite:
        raise ConfigError(
            f"run folder {run_dir!r} is not empty; pass --overwrite to replace its "
            f"files, --resume to continue it, or choose another --output"
        )
    return [n for n in RUN_FILES if os.path.lexists(os.path.join(run_dir, n))]


def remove_run_file(path, what="a file of the earlier run") -> None:
    try:
        if os.path.lexists(path):
            os.unlink(path)
    except OSError as err:
        raise LstmCliError(f"cannot remove {path} ({what}): {err.strerror or err}") from None


def retire_earlier_run(run_dir, names) -> None:
    """Remove the earlier run's files, all but config.yaml (rewritten by the caller)."""
    for name in names:
        if name != "config.yaml":
            remove_run_file(os.path.join(run_dir, name))


def write_config(run_dir, cfg: Config) -> None:
    """The run folder's config.yaml: this run's resolved config."""
    write_text(os.path.join(run_dir, "config.yaml"), dump_config(cfg))


def write_metrics(run_dir, history) -> None:
    """Rewrite metrics.jsonl and metrics.csv (small: one row per epoch) atomically."""
    write_text(
        os.path.join(run_dir, "metrics.jsonl"), "".join(json.dumps(row) + "\n" for row in history)
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else row[c] for c in METRIC_COLUMNS])
    write_text(os.path.join(run_dir, "metrics.csv"), buf.getvalue())


def write_summary(run_dir, summary: dict) -> None:
    write_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")

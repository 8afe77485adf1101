"""Readers for the files the pictures are drawn from: metrics.jsonl, gradflow.jsonl, an
eval report, an ensemble's summary.json.

Each reader checks what it returns, so a figure never meets a surprise: a missing file or
a malformed line is one DataError naming the file (and line), exit 4 from the CLI.
Unknown extra keys are allowed (newer writers may add some).
"""

from __future__ import annotations

import json
import math
import os

from ..data.labels import INT64_MAX
from ..diagnostics import DIRECTIONS
from ..errors import CheckpointError, DataError
from ..store.checkpoint import read_meta
from ..validate import is_int

METRICS_FILE = "metrics.jsonl"
GRADFLOW_FILE = "gradflow.jsonl"
SUMMARY_FILE = "summary.json"
_STEP_LISTS = ("dh_norm", "dc_norm")
_FRACTION_LISTS = ("dh_norm_by_fraction", "dc_norm_by_fraction")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _jsonl(path, what):
    """(line number, object) for each non-blank line of a JSON-lines file."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected one JSON object per line")
        out.append((n, obj))
    if not out:
        raise DataError(f"{path}: holds no records")
    return out


def read_metrics(path) -> list:
    """The epoch rows of a run's metrics.jsonl; the last row wins when an epoch repeats
    (a resumed run). Every row needs an int ``epoch`` >= 1; the other values must be
    numbers or null (lstm-train writes a non-finite value as null; NaN and Infinity, as
    older versions wrote them, are drawn as gaps too)."""
    rows = {}
    for n, obj in _jsonl(path, "not a run folder written by lstm-train?"):
        epoch = obj.get("epoch")
        if not (is_int(epoch) and epoch >= 1):
            raise DataError(f"{path}:{n}: 'epoch' is {epoch!r}; expected an int >= 1")
        for key, value in obj.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise DataError(f"{path}:{n}: {key!r} is {value!r}; expected a number or null")
        rows[epoch] = obj
    return [rows[e] for e in sorted(rows)]


def best_epoch(run_dir, rows):
    """(epoch, metric) of the run's best.npz, as its meta records them (also for a run
    stopped before its end); without a readable best.npz, summary.json's; else the
    lowest val_loss (train_loss without validation); (None, None) when the rows have
    neither."""
    try:
        state = read_meta(os.path.join(run_dir, "best.npz")).get("train_state") or {}
    except (CheckpointError, AttributeError):
        state = {}
    if not isinstance(state, dict) or not is_int(state.get("best_epoch")):
        try:
            with open(os.path.join(run_dir, SUMMARY_FILE), encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            state = {}
    if isinstance(state, dict):
        epoch, metric = state.get("best_epoch"), state.get("best_metric")
        if is_int(epoch) and epoch >= 1 and isinstance(metric, str):
            return epoch, metric
    for key in ("val_loss", "train_loss"):
        have = [r for r in rows if r.get(key) is not None]
        if have:
            return min(have, key=lambda r: r[key])["epoch"], key
    return None, None


def read_summary(run_dir) -> dict:
    """RUN_DIR/summary.json of a train.folds ensemble, with its out-of-fold report."""
    path = os.path.join(run_dir, SUMMARY_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such file (the ensemble has not finished; lstm-train --resume "
            f"{run_dir} finishes it)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(summary, dict) or "out_of_fold" not in summary:
        raise DataError(f"{path}: no 'out_of_fold' report (not an ensemble's summary)")
    return summary


def _number_list(obj, key, where, allow_null):
    value = obj.get(key)
    ok = isinstance(value, list) and all(
        (v is None and allow_null) or (_is_number(v) and v >= 0) for v in value
    )
    if not ok:
        kind = "non-negative numbers or null" if allow_null else "non-negative numbers"
        raise DataError(f"{where}: {key!r} must be a list of {kind}")
    return value


def check_gradflow_record(obj, where) -> dict:
    """One gradflow.jsonl record (docs/diagnostics.md), checked; DataError naming ``where``."""
    for key in ("epoch", "layer"):
        if not (is_int(obj.get(key)) and obj[key] >= (1 if key == "epoch" else 0)):
            low = 1 if key == "epoch" else 0
            raise DataError(f"{where}: {key!r} is {obj.get(key)!r}; expected an int >= {low}")
    if "direction" in obj and obj["direction"] not in DIRECTIONS:
        raise DataError(
            f"{where}: 'direction' is {obj['direction']!r}; expected one of {list(DIRECTIONS)}"
        )
    step = obj.get("step")
    if not (isinstance(step, list) and step and all(is_int(s) and s >= 1 for s in step)):
        raise DataError(f"{where}: 'step' must be a non-empty list of ints >= 1")
    fraction = _number_list(obj, "fraction", where, allow_null=False)
    if not fraction or any(not 0 < f <= 1 for f in fraction):
        raise DataError(f"{where}: 'fraction' must be a non-empty list of numbers in (0, 1]")
    for keys, ref, name in ((_STEP_LISTS, step, "step"), (_FRACTION_LISTS, fraction, "fraction")):
        for key in keys:
            if len(_number_list(obj, key, where, allow_null=True)) != len(ref):
                raise DataError(
                    f"{where}: {key!r} has {len(obj[key])} values but {name!r} has {len(ref)}"
                )
    return obj


def read_gradflow(path) -> list:
    """The records of a gradflow.jsonl file, each checked (``check_gradflow_record``)."""
    return [
        check_gradflow_record(obj, f"{path}:{n}") for n, obj in _jsonl(path, "gradient flow log")
    ]


def read_report(path) -> dict:
    """An eval report written by ``lstm-eval --json``: labels and a square confusion matrix,
    and optionally ``by_step`` and ``gates`` (docs/diagnostics.md)."""
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (an eval report from lstm-eval --json)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    check_report(report, path)
    return report


def check_report(report, where) -> dict:
    """The parts of an eval report the figures use, checked; DataError naming ``where``."""
    labels = report.get("labels") if isinstance(report, dict) else None
    if not (isinstance(labels, list) and labels):
        raise DataError(f"{where}: not an lstm-eval report (no non-empty 'labels' list)")
    k = len(labels)
    cm = report.get("confusion_matrix")

    def count(v) -> bool:  # an int64, as the figure's array holds it
        return is_int(v) and 0 <= v <= INT64_MAX

    if not (
        isinstance(cm, list)
        and len(cm) == k
        and all(isinstance(r, list) and len(r) == k and all(count(v) for v in r) for r in cm)
    ):
        raise DataError(f"{where}: 'confusion_matrix' must be {k} rows of {k} counts")
    by_step = report.get("by_step")
    if by_step is not None:
        pct = by_step.get("percent") if isinstance(by_step, dict) else None
        if not (isinstance(pct, list) and pct):
            raise DataError(f"{where}: 'by_step.percent' must be a non-empty list")
        optional = ("mean_steps",) if "mean_steps" in by_step else ()  # the title's, if there
        for key in ("percent", "accuracy", "loss", *optional):
            values = _number_list(by_step, key, f"{where}: by_step", allow_null=False)
            if len(values) != len(pct):
                raise DataError(
                    f"{where}: 'by_step.{key}' has {len(values)} values, not {len(pct)}"
                )
    gates = report.get("gates")
    if gates is not None:
        layers = gates.get("layers") if isinstance(gates, dict) else None
        if not (isinstance(layers, list) and layers):
            raise DataError(f"{where}: 'gates.layers' must be a non-empty list")
        for key in ("high", "low"):
            if key in gates and not _is_number(gates[key]):
                raise DataError(f"{where}: 'gates.{key}' must be a number")
        for n, layer in enumerate(layers):
            index = layer.get("layer", 0) if isinstance(layer, dict) else 0
            if not (is_int(index) and 0 <= index < 2**31):
                raise DataError(f"{where}: 'gates.layers'[{n}].layer must be a layer index >= 0")
            for gate in ("input", "forget", "output"):
                g = layer.get(gate) if isinstance(layer, dict) else None
                if not isinstance(g, dict) or not all(
                    _is_number(g.get(key)) for key in ("mean", "above_0.95", "below_0.05")
                ):
                    raise DataError(
                        f"{where}: 'gates.layers'[{n}].{gate} needs numbers 'mean', "
                        "'above_0.95' and 'below_0.05'"
                    )
                _number_list(g, "histogram", f"{where}: gates.layers[{n}].{gate}", False)
    return report

"""Pictures of a run and of an evaluation (optional extra ``plot``: matplotlib, Agg backend).

``plot_run(run_dir, out_dir)`` draws what a run folder holds (learning curves from
metrics.jsonl; gradient flow from gradflow.jsonl when present); ``plot_ensemble(run_dir,
out_dir)`` a train.folds ensemble's folder (each member's figures in a subfolder, the
members' curves side by side, the out-of-fold confusion matrix under a name of its own);
``plot_report(report, out_dir)`` the figures of one ``lstm-eval`` report (confusion
matrix; accuracy by step and gate saturation when the report has ``by_step`` /
``gates``). Each returns the written paths.
The readers in ``runfiles`` need no matplotlib.
"""

from __future__ import annotations

import os

from ..errors import LstmCliError
from . import figures
from .runfiles import (
    GRADFLOW_FILE,
    METRICS_FILE,
    best_epoch,
    check_gradflow_record,
    check_report,
    read_gradflow,
    read_metrics,
    read_report,
    read_summary,
)

# figure file names (docs/diagnostics.md)
LEARNING_CURVES = "learning_curves.png"
GRADIENT_FLOW = "gradient_flow.png"
CONFUSION_MATRIX = "confusion_matrix.png"
OUT_OF_FOLD_MATRIX = "out_of_fold_confusion_matrix.png"  # beside a report's, not over it
ACCURACY_BY_STEP = "accuracy_by_step.png"
GATE_SATURATION = "gate_saturation.png"
MEMBER_CURVES = "member_curves.png"
REPORT_FIGURES = (CONFUSION_MATRIX, ACCURACY_BY_STEP, GATE_SATURATION)  # plot_report's
RUN_FIGURES = (LEARNING_CURVES, GRADIENT_FLOW, MEMBER_CURVES, OUT_OF_FOLD_MATRIX)


def plot_run(run_dir, out_dir) -> list:
    """PNGs of a training run folder into out_dir (created); DataError for a bad input file."""
    figures.pyplot()  # a missing extra fails before any file is read or folder made
    rows = read_metrics(os.path.join(run_dir, METRICS_FILE))
    flow_path = os.path.join(run_dir, GRADFLOW_FILE)
    flow = read_gradflow(flow_path) if os.path.exists(flow_path) else None
    _make_folder(out_dir)
    name = os.path.basename(os.path.normpath(run_dir)) or "run"
    paths = [
        figures.learning_curves(
            rows, best_epoch(run_dir, rows), os.path.join(out_dir, LEARNING_CURVES), f"Run {name}"
        )
    ]
    if flow:
        paths.append(figures.gradient_flow(flow, os.path.join(out_dir, GRADIENT_FLOW)))
    return paths


def plot_ensemble(run_dir, out_dir, members) -> list:
    """PNGs of a train.folds ensemble's folder into out_dir: every member's plot_run in
    out_dir/<member folder>, member_curves.png and the confusion matrix of the out-of-fold
    report (RUN_DIR/summary.json). members: the members' run folders."""
    figures.pyplot()
    summary = read_summary(run_dir)
    runs = []
    for member in members:
        rows = read_metrics(os.path.join(member, METRICS_FILE))
        runs.append((os.path.basename(member), rows, best_epoch(member, rows)[0]))
    check_report(summary["out_of_fold"], f"{run_dir}/summary.json 'out_of_fold'")
    paths = []
    for member in members:
        paths += plot_run(member, os.path.join(out_dir, os.path.basename(member)))
    name = os.path.basename(os.path.normpath(run_dir)) or "run"
    paths.append(
        figures.member_curves(runs, os.path.join(out_dir, MEMBER_CURVES), f"Ensemble {name}")
    )
    oof = os.path.join(out_dir, OUT_OF_FOLD_MATRIX)
    paths.append(
        figures.confusion_matrix(summary["out_of_fold"], oof, "Out-of-fold confusion matrix")
    )
    return paths


def _make_folder(path) -> None:
    """The folder for the figures, created with its parents; LstmCliError naming it."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise LstmCliError(f"cannot create the folder {path}: {err.strerror or err}") from None


def plot_report(report, out_dir, where="report") -> list:
    """PNGs of one eval report (a dict as ``lstm-eval --json`` writes) into out_dir."""
    figures.pyplot("lstm-eval --plot / lstm-plot --report")
    check_report(report, where)
    _make_folder(out_dir)
    paths = [figures.confusion_matrix(report, os.path.join(out_dir, CONFUSION_MATRIX))]
    if report.get("by_step"):
        paths.append(figures.accuracy_by_step(report, os.path.join(out_dir, ACCURACY_BY_STEP)))
    if report.get("gates"):
        paths.append(figures.gate_saturation(report, os.path.join(out_dir, GATE_SATURATION)))
    return paths


__all__ = [
    "ACCURACY_BY_STEP",
    "CONFUSION_MATRIX",
    "GATE_SATURATION",
    "GRADIENT_FLOW",
    "LEARNING_CURVES",
    "MEMBER_CURVES",
    "OUT_OF_FOLD_MATRIX",
    "REPORT_FIGURES",
    "RUN_FIGURES",
    "best_epoch",
    "check_gradflow_record",
    "check_report",
    "plot_ensemble",
    "plot_report",
    "plot_run",
    "read_gradflow",
    "read_metrics",
    "read_report",
]

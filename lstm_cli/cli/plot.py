"""lstm-plot: PNG figures of a training run folder (and of an eval report)."""

from __future__ import annotations

import os

import click

from .common import CONTEXT, Command, handles_errors, refuse_output_folder


@click.command(
    name="lstm-plot",
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: lstm-plot runs/japanese_vowels --report report.json --out figures/",
)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the PNGs (created; default: RUN_DIR/plots).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="An eval report (lstm-eval --json, best with --by-step --gates): also draw the "
    "confusion matrix, accuracy by fraction of sequence and gate saturation.",
)
@click.option("--quiet", is_flag=True, help="Do not list the written files.")
@handles_errors
def plot(run_dir, out_dir, report_path, quiet):
    """Draw learning curves (metrics.jsonl) and gradient flow (gradflow.jsonl) of RUN_DIR.

    For a train.folds ensemble's folder: each member's figures in a subfolder, the
    members' learning curves side by side and the out-of-fold confusion matrix.
    Needs the optional extra 'plot' (pip install 'lstm_cli[plot]'); exit 7 without it,
    exit 4 when a run file or the report is missing or malformed.
    """
    from ..plot import (
        REPORT_FIGURES,
        RUN_FIGURES,
        plot_ensemble,
        plot_report,
        plot_run,
        read_report,
    )
    from ..plot.figures import pyplot
    from ..training.folds import is_ensemble_folder

    pyplot()  # a missing extra is exit 7 before any file is read
    out_dir = out_dir or os.path.join(run_dir, "plots")
    files = [("--report", report_path)]
    refuse_output_folder("--out", out_dir, RUN_FIGURES + REPORT_FIGURES, files)
    members = _members(run_dir) if is_ensemble_folder(run_dir) else None
    if members:  # each member's run figures, in its subfolder of --out
        names = [os.path.join(os.path.basename(m), n) for m in members for n in RUN_FIGURES]
        refuse_output_folder("--out", out_dir, names, files)
    report = read_report(report_path) if report_path else None
    if members is not None:
        paths = plot_ensemble(run_dir, out_dir, members)
    else:
        paths = plot_run(run_dir, out_dir)
    if report is not None:
        paths += plot_report(report, out_dir, report_path)
    if not quiet:
        for path in paths:
            click.echo(f"wrote {path}")


def _members(run_dir) -> list[str]:
    """The run folders of the members RUN_DIR/summary.json lists (as lstm-eval reads them);
    a missing or malformed summary is the plot reader's error (exit 4)."""
    from ..errors import CheckpointError, DataError
    from ..training.folds import run_checkpoints

    try:
        return [os.path.dirname(path) for path in run_checkpoints(run_dir)]
    except CheckpointError as err:
        raise DataError(str(err)) from None


if __name__ == "__main__":  # python -m lstm_cli.cli.plot: as the console script
    plot()

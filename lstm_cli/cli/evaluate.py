"""lstm-eval and lstm-predict: use a trained checkpoint on a data file."""

from __future__ import annotations

import json

import click

from ..data import FORMATS
from ..store.jsontext import json_text
from .common import (
    CONTEXT,
    Command,
    format_table,
    handles_errors,
    refuse_output_folder,
    refuse_output_over_input,
    write_output,
    writes_to_stdout,
)


def read_data_for(tm, data_path, fmt, require_labels):
    """The data file as ``tm`` reads it (its CSV options), before its input transforms."""
    from ..data import load_dataset

    return load_dataset(data_path, fmt, require_labels=require_labels, csv_options=tm.csv_options)


def load_data_for(tm, data_path, fmt, require_labels):
    """The data file as ``tm`` reads and transforms it (the training run's per-sequence
    z-score, pooling and framing)."""
    return tm.prepare(read_data_for(tm, data_path, fmt, require_labels))


def checkpoint_files(paths) -> list[str]:
    """CHECKPOINT... as files: a run folder is its best.npz, an ensemble's folder its
    members' (training.folds.run_checkpoints)."""
    from ..training.folds import run_checkpoints

    return [c for p in paths for c in run_checkpoints(p)]


def _members_raw(checkpoints, data_path, fmt, require_labels):
    """(TrainedModel, the data as it reads it, before its transforms) per checkpoint;
    several must share their labels (ensemble.check_members). The file is read once per
    distinct set of CSV options (the members of one run share theirs), not per member."""
    from ..ensemble import check_members
    from ..inference import load_trained

    tms = [load_trained(c) for c in checkpoints]
    check_members(tms, list(checkpoints))
    read: dict[str, object] = {}  # json of the CSV options -> the file as they read it
    out = []
    for tm in tms:
        key = json.dumps(tm.csv_options, sort_keys=True)
        if key not in read:
            read[key] = read_data_for(tm, data_path, fmt, require_labels)
        out.append((tm, read[key]))
    return out


def _render_report(report) -> str:
    labels = [str(lbl) for lbl in report["labels"]]
    lines = [
        f"sequences {report['n']}  accuracy {report['accuracy']:.4f}  loss {report['loss']:.4f}  "
        f"macro F1 {report['macro_f1']:.4f}  weighted F1 {report['weighted_f1']:.4f}"
    ]
    if report.get("unknown_labels"):
        lines.append(
            f"({report['unknown_labels']} sequences with labels unknown to the model left out)"
        )
    lines.append("")
    rows = [
        [
            str(c["label"]),
            f"{c['precision']:.4f}",
            f"{c['recall']:.4f}",
            f"{c['f1']:.4f}",
            c["support"],
        ]
        for c in report["per_class"]
    ]
    lines.append(format_table(["label", "precision", "recall", "f1", "support"], rows, "lrrrr"))
    lines.append("")
    lines.append("confusion matrix (rows: true label, columns: predicted label)")
    cm_rows = [[labels[i]] + row for i, row in enumerate(report["confusion_matrix"])]
    lines.append(format_table(["true \\ pred"] + labels, cm_rows, "l" + "r" * len(labels)))
    return "\n".join(lines)


def _predictions_csv(classes, probs, true_labels=None) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["index"] + (["true_label"] if true_labels is not None else []) + ["predicted_label"]
    w.writerow(header + [f"prob_{c}" for c in classes])
    pred = probs.argmax(1)
    for n in range(len(probs)):
        row = [n] + ([true_labels[n]] if true_labels is not None else []) + [classes[pred[n]]]
        w.writerow(row + [f"{p:.6g}" for p in probs[n]])
    return buf.getvalue()


def _diagnostics(tm, ds, y, by_step, gates, batch_size) -> dict:
    """by_step (sequences with known labels) and gates (every sequence) of the report."""
    import numpy as np

    from ..diagnostics import diagnose

    if not by_step or (y >= 0).all():  # one pass over the data
        return diagnose(tm, ds, y, by_step=by_step, gates=gates, batch_size=batch_size)
    known = np.flatnonzero(y >= 0)
    out = diagnose(tm, ds.view(known), y[known], gates=False, batch_size=batch_size)
    if gates:
        out.update(diagnose(tm, ds, by_step=False, batch_size=batch_size))
    return out


def _render_by_step(bs) -> str:
    rows = [
        [f"{p} %", f"{s:.1f}", f"{a:.4f}", f"{v:.4f}"]
        for p, s, a, v in zip(bs["percent"], bs["mean_steps"], bs["accuracy"], bs["loss"])
    ]
    from ..diagnostics import by_step_subject, by_step_unit

    title = f"accuracy by part of each sequence seen ({by_step_subject(bs)}, {bs['n']} sequences)"
    header = ["seen", f"mean {by_step_unit(bs)}", "accuracy", "loss"]
    return title + "\n" + format_table(header, rows, "rrrr")


def _render_gates(gates) -> str:
    from ..diagnostics import layer_label

    rows = []
    for layer in gates["layers"]:
        for name in ("input", "forget", "output"):
            g = layer[name]
            rows.append(
                [
                    layer_label(layer).removeprefix("layer "),
                    name,
                    f"{g['mean']:.3f}",
                    f"{g['above_0.95']:.3f}",
                    f"{g['below_0.05']:.3f}",
                ]
            )
    headers = ["layer", "gate", "mean", f"> {gates['high']}", f"< {gates['low']}"]
    return "gate values over valid steps\n" + format_table(headers, rows, "rlrrr")


_FORMATS = click.Choice(FORMATS)


def _checkpoint_and_data(data_help):
    """CHECKPOINT... and the --data/--format/--batch-size options eval and predict share.
    Several checkpoints are one ensemble: the mean of their probabilities (lstm_cli.ensemble);
    a run folder stands for its best.npz, a train.folds ensemble's folder for its members'."""

    def decorate(fn):
        fn = click.option(
            "--batch-size",
            type=click.IntRange(1, None),
            default=256,
            show_default=True,
            help="Sequences per forward pass (speed and memory only).",
        )(fn)
        fn = click.option(
            "--format",
            "fmt",
            type=_FORMATS,
            default="auto",
            show_default=True,
            help="The data's format (auto: from the extension).",
        )(fn)
        fn = click.option(
            "--data", "data_path", required=True, type=click.Path(exists=True), help=data_help
        )(fn)
        return click.argument(
            "checkpoints",
            metavar="CHECKPOINT...",
            nargs=-1,
            required=True,
            type=click.Path(exists=True),
        )(fn)

    return decorate


@click.command(
    name="lstm-eval",
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: lstm-eval runs/japanese_vowels "
    "--data data/japanese_vowels/test.jsonl --json report.json",
)
@_checkpoint_and_data("Labelled data in any supported format.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the report as JSON to this file ('-' for stdout).",
)
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write one CSV row per sequence: index, true and predicted label, probabilities "
    "('-' for stdout; add --quiet to get only the CSV).",
)
@click.option(
    "--allow-unknown",
    is_flag=True,
    help="Leave sequences whose label the model never saw out of the metrics (counted) "
    "instead of failing.",
)
@click.option(
    "--by-step",
    is_flag=True,
    help="Also report accuracy and loss when each sequence is cut at 10 %, 20 %, ..., 100 % "
    "of its own length (key by_step).",
)
@click.option(
    "--gates",
    is_flag=True,
    help="Also report per-layer statistics of the input/forget/output gate values "
    "(mean, share above 0.95 and below 0.05; key gates). One checkpoint only.",
)
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the eval figures (confusion matrix, accuracy by step, gate saturation) as "
    "PNGs into this folder; implies --by-step and (one checkpoint) --gates; needs the extra "
    "'plot'.",
)
@click.option("--quiet", is_flag=True, help="Do not print the tables.")
@handles_errors
def evaluate(
    checkpoints,
    data_path,
    fmt,
    json_out,
    predictions,
    allow_unknown,
    by_step,
    gates,
    plot_dir,
    batch_size,
    quiet,
):
    """Evaluate a checkpoint on labelled data: accuracy, loss, per-class P/R/F1, confusions.

    Several checkpoints are evaluated as one ensemble (the mean of their probabilities).
    A run folder stands for its best.npz; a train.folds ensemble's folder for its members'.
    """
    from ..ensemble import prepare_members
    from ..inference import evaluate_dataset

    checkpoints = checkpoint_files(checkpoints)
    refuse_output_over_input(
        [("--json", json_out), ("--predictions", predictions)],
        [*(("checkpoint", c) for c in checkpoints), ("data file", data_path)],
    )
    if len(checkpoints) > 1 and gates:
        raise click.UsageError(
            "--gates describes one model; give one checkpoint (of an ensemble: one "
            "member's). --by-step and --plot take an ensemble"
        )
    if plot_dir:
        from ..plot.figures import pyplot

        pyplot("lstm-eval --plot")  # a missing extra fails before the evaluation runs
        from ..plot import REPORT_FIGURES

        files = [("--json", json_out), ("--predictions", predictions)]
        refuse_output_folder("--plot", plot_dir, REPORT_FIGURES, files)
        by_step, gates = True, len(checkpoints) == 1
    raws = _members_raw(checkpoints, data_path, fmt, require_labels=True)
    members = prepare_members(raws)
    tm, ds = members[0]
    if len(members) == 1:
        report, probs, y = evaluate_dataset(tm, ds, batch_size, allow_unknown)
        report["checkpoint"] = checkpoints[0]
    else:
        from ..ensemble import evaluate_ensemble

        report, probs, y = evaluate_ensemble(members, batch_size, allow_unknown)
        report["checkpoints"] = list(checkpoints)
    if len(members) > 1 and by_step:
        from ..diagnostics import ensemble_by_step

        report["by_step"] = ensemble_by_step(raws, y, batch_size)  # each file read once
    elif by_step or gates:  # by-step z-scoring each prefix reads the data as read
        as_read = by_step and tm.transforms["per_sequence"]
        report.update(
            _diagnostics(tm, raws[0][1] if as_read else ds, y, by_step, gates, batch_size)
        )
    tables = not quiet and not writes_to_stdout(json_out)  # stdout holds the JSON only
    if tables:
        click.echo(_render_report(report))
        if report.get("by_step"):
            click.echo("\n" + _render_by_step(report["by_step"]))
        if report.get("gates"):
            click.echo("\n" + _render_gates(report["gates"]))
    if json_out:
        write_output(json_out, json_text(report, indent=2) + "\n")
    if predictions:
        true = [lbl.item() if hasattr(lbl, "item") else lbl for lbl in ds.labels]
        write_output(predictions, _predictions_csv(tm.classes, probs, true))
    if plot_dir:  # last: a folder that cannot be made costs the figures only
        from ..plot import plot_report

        for path in plot_report(report, plot_dir):
            if tables:
                click.echo(f"wrote {path}")


@click.command(
    name="lstm-predict",
    cls=Command,
    context_settings=CONTEXT,
    epilog="Example: lstm-predict runs/japanese_vowels/best.npz "
    "--data data/japanese_vowels/test.jsonl --output predictions.csv",
)
@_checkpoint_and_data("Data in any supported format; labels are optional (not used).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV file to write (default, or '-': stdout).",
)
@click.option("--quiet", is_flag=True, help="No summary line on stderr.")
@handles_errors
def predict(checkpoints, data_path, fmt, output, batch_size, quiet):
    """Predict labels and class probabilities; CSV with index, predicted_label, prob_<label>...

    Several checkpoints predict as one ensemble (the mean of their probabilities).
    A run folder stands for its best.npz; a train.folds ensemble's folder for its members'.
    """
    from ..ensemble import ensemble_probs, prepare_members

    checkpoints = checkpoint_files(checkpoints)
    refuse_output_over_input(
        [("--output", output)],
        [*(("checkpoint", c) for c in checkpoints), ("data file", data_path)],
    )
    members = prepare_members(_members_raw(checkpoints, data_path, fmt, require_labels=False))
    tm, ds = members[0]
    probs = ensemble_probs(members, batch_size)  # one member: its own probabilities
    write_output(output or "-", _predictions_csv(tm.classes, probs))
    if output and output != "-" and not quiet:
        click.echo(f"wrote {len(ds)} predictions to {output}", err=True)


if __name__ == "__main__":  # python -m lstm_cli.cli.evaluate: as the console script
    evaluate()

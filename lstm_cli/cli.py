"""Command-line entry points: thin wrappers over the library API.

Each command parses its options, calls the library, renders the result, and maps the
project's own errors (``LstmCliError`` and subclasses) to one line on stderr and the
exit code documented in README.md. ``--debug`` also shows the full traceback (the exit code stays the same).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys

import click

from . import __version__
from .errors import ConfigError, LstmCliError


def _common(fn):
    """Add --debug / --version to a command and map LstmCliError to a clean exit."""

    @click.option("--debug", is_flag=True, help="Show the full traceback on error.")
    @click.version_option(__version__, prog_name="lstm_cli", message="%(prog)s %(version)s")
    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LstmCliError as err:
            _traceback_if(debug)
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except MemoryError as err:  # numpy's "Unable to allocate 74.5 GiB for an array ..."
            _traceback_if(debug)
            detail = f": {err}" if str(err) else ""
            click.echo(
                f"Error: out of memory{detail}. Use a smaller model, batch or sequence length.",
                err=True,
            )
            sys.exit(1)
        except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C elsewhere
            _traceback_if(debug)
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def _traceback_if(debug) -> None:
    """--debug: the full traceback on stderr; the exit code stays the documented one."""
    if debug:
        import traceback

        traceback.print_exc()


def _refuse_output_over_input(outputs, inputs) -> None:
    """An output file (--json, --predictions, --output) must not be one of the inputs."""
    from .data import NPY_FOLDER_ARRAYS

    arrays = [f"{k}.npy" for k in NPY_FOLDER_ARRAYS]
    for opt, out in outputs:
        if not out or out == "-" or not os.path.exists(out):
            continue
        for what, path in inputs:
            try:  # a data folder: none of its arrays either (other files in it are fine)
                same = os.path.samefile(out, path) or (
                    os.path.isdir(path)
                    and os.path.basename(out) in arrays
                    and os.path.samefile(os.path.dirname(os.path.abspath(out)), path)
                )
            except OSError:
                continue
            if same:
                raise click.UsageError(f"{opt} {out} is the {what}; writing it would destroy it")


def _format_table(headers, rows, align=None) -> str:
    """Aligned plain-text table; align is a string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" * len(headers)
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- gradcheck


class _FiniteFloat(click.ParamType):
    """A finite float, optionally > 0 (click's FloatRange lets nan and inf through)."""

    name = "float"

    def __init__(self, positive=False):
        self.positive = positive

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if not math.isfinite(v) or (self.positive and v <= 0):
            self.fail(
                f"{value!r} is not a {'positive ' if self.positive else ''}finite number.",
                param,
                ctx,
            )
        return v


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Examples:\n\n  lstm-gradcheck\n\n"
    "  lstm-gradcheck --head all --layers 3 --hidden-size 5 --json\n\n"
    "  lstm-gradcheck --config configs/japanese_vowels.yaml",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Check the architecture a training config describes (input size and classes "
    "from its training data; dropout off) instead of the default matrix.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --config: override a config key (repeatable).",
)
@click.option(
    "--head",
    type=click.Choice(["last", "all", "both"]),
    default="both",
    show_default=True,
    help="Which head(s) to check.",
)
@click.option(
    "--layers",
    "layers",
    type=click.IntRange(1, None),
    multiple=True,
    default=(1, 2),
    show_default=True,
    help="Number of stacked layers; repeat to check several.",
)
@click.option("--hidden-size", type=click.IntRange(1, None), default=4, show_default=True)
@click.option("--input-size", type=click.IntRange(1, None), default=3, show_default=True)
@click.option("--classes", type=click.IntRange(2, None), default=3, show_default=True)
@click.option("--batch", type=click.IntRange(1, None), default=4, show_default=True)
@click.option("--max-len", type=click.IntRange(1, None), default=5, show_default=True)
@click.option("--forget-bias", type=_FiniteFloat(), default=1.0, show_default=True)
@click.option("--seed", type=click.IntRange(0, None), default=0, show_default=True)
@click.option(
    "--order",
    type=click.Choice(["2", "4"]),
    default="4",
    show_default=True,
    help="Central-difference stencil: 2-point or 5-point (fourth order).",
)
@click.option(
    "--eps",
    type=_FiniteFloat(positive=True),
    default=None,
    help="Finite-difference step [default: 1e-3 for order 4, 1e-5 for order 2].",
)
@click.option(
    "--tol",
    type=_FiniteFloat(positive=True),
    default=1e-6,
    show_default=True,
    help="Largest relative error that passes (entries below the finite differences' "
    "round-off floor are judged against that floor instead).",
)
@click.option(
    "--max-entries",
    type=click.IntRange(0, None),
    default=500,
    show_default=True,
    help="Check every entry of a parameter up to this size, a seeded sample above it (0: all).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table."
)
@click.option("--quiet", is_flag=True, help="Print only failures and the verdict.")
@_common
@click.pass_context
def gradcheck(
    ctx,
    config_path,
    overrides,
    head,
    layers,
    hidden_size,
    input_size,
    classes,
    batch,
    max_len,
    forget_bias,
    seed,
    order,
    eps,
    tol,
    max_entries,
    as_json,
    quiet,
):
    """Check the hand-written BPTT against central finite differences (float64).

    Builds a small random model (every parameter randomised, biases included) and a
    random right-padded batch with mixed lengths (including 1), then compares the
    analytic gradient of every parameter and of the input with finite differences.
    Exits 0 when every parameter passes, 1 when any fails, 2 on bad usage; with --config,
    3 or 4 for a bad config or data file (as lstm-train).
    """
    from .nn.gradcheck import check_model, random_problem

    if config_path is not None:
        from click.core import ParameterSource

        arch = ("head", "layers", "hidden_size", "input_size", "classes", "forget_bias")
        given = [
            f"--{n.replace('_', '-')}"
            for n in arch
            if ctx.get_parameter_source(n) is not ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(
                f"{', '.join(given)} cannot be combined with --config (the config "
                f"describes the architecture)"
            )
        head, layers, hidden_size, input_size, classes, forget_bias = _architecture_from_config(
            config_path, overrides
        )
        layers = (layers,)
    elif overrides:
        raise click.UsageError("--set needs --config")
    heads = ["last", "all"] if head == "both" else [head]
    reports = []
    for h in heads:
        for n_layers in layers:
            try:
                model, x, lengths, y = random_problem(
                    input_size=input_size,
                    hidden_size=hidden_size,
                    num_classes=classes,
                    num_layers=n_layers,
                    head=h,
                    batch=batch,
                    max_len=max_len,
                    forget_bias=forget_bias,
                    seed=seed,
                )
            except LstmCliError as err:  # a model too large for this machine: not a failed gradient
                if config_path is not None:
                    raise ConfigError(f"{config_path}: model: {err}") from None
                raise click.UsageError(str(err)) from None
            reports.append(
                check_model(
                    model,
                    x,
                    lengths,
                    y,
                    eps=eps,
                    order=int(order),
                    tol=tol,
                    max_entries=max_entries or None,
                    seed=seed,
                )
            )
    passed = all(r.passed for r in reports)
    if as_json:
        click.echo(
            json.dumps({"passed": passed, "checks": [r.to_dict() for r in reports]}, indent=2)
        )
    else:
        rows = []
        for r in reports:
            for p in r.rows:
                if quiet and p.passed:
                    continue
                rows.append(
                    [
                        f"{r.head}/{r.num_layers}",
                        p.name,
                        "x".join(map(str, p.shape)),
                        p.checked,
                        f"{p.max_rel_error:.2e}",
                        "pass" if p.passed else "FAIL",
                    ]
                )
        if rows:
            click.echo(
                _format_table(
                    ["head/layers", "parameter", "shape", "checked", "max rel error", "result"],
                    rows,
                    "llllrl",
                )
            )
        r0 = reports[0]
        click.echo(
            f"{'PASSED' if passed else 'FAILED'}: {sum(len(r.rows) for r in reports)} gradients "
            f"checked, order-{r0.order} central differences, eps={r0.eps:g}, tol={tol:g}, "
            f"round-off floor {max(r.noise for r in reports):.1e}"
        )
    sys.exit(0 if passed else 1)


def _architecture_from_config(config_path, overrides):
    """(head, num_layers, hidden_size, input_size, num_classes, forget_bias) of a training config."""
    from .config import load_config
    from .training import _load

    cfg = load_config(config_path, overrides)
    ds = _load(cfg.data.train, cfg)
    num_classes = max(2, len(set(ds.labels.tolist())))
    m = cfg.model
    return m.head, m.num_layers, m.hidden_size, ds.num_features, num_classes, m.forget_bias


# --------------------------------------------------------------------------- train


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Examples:\n\n  lstm-train --config configs/japanese_vowels.yaml\n\n"
    "  lstm-train --config configs/synthetic.yaml --set model.head=all "
    "--set train.optimizer.lr=0.003 --output runs/try2\n\n"
    "  lstm-train --resume runs/japanese_vowels --set train.epochs=80",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config (see configs/reference.yaml).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.optimizer.lr=0.01 (repeatable).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (overrides output.dir).",
)
@click.option("--overwrite", is_flag=True, help="Replace the files of a non-empty run folder.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Continue the run in this folder from its last.npz.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
@_common
def train(config_path, overrides, output, overwrite, resume_dir, print_config, quiet):
    """Train an LSTM sequence classifier as a YAML config describes.

    Writes config.yaml, metrics.jsonl, metrics.csv, last.npz, best.npz and summary.json
    to the run folder (output.dir, or --output).
    """
    import dataclasses

    from .config import OutputConfig, dump_config, load_config, value_origin
    from .training import config_for_resume, fit, fmt_metric

    if config_path is None and resume_dir is None:
        raise click.UsageError("give --config FILE (or --resume RUN_DIR)")
    if resume_dir is not None and output is not None:
        raise click.UsageError("--resume RUN_DIR already names the run folder; drop --output")
    if resume_dir is not None and overwrite:
        raise click.UsageError("--resume and --overwrite cannot be used together")
    if config_path is not None:
        cfg = load_config(config_path, overrides)
    else:
        cfg = config_for_resume(resume_dir, overrides)
    out_dir = resume_dir or output
    if out_dir is not None:
        cfg = dataclasses.replace(cfg, output=OutputConfig(dir=out_dir))
    if print_config:
        click.echo(dump_config(cfg), nl=False)
        return
    source = config_path or os.path.join(resume_dir, "last.npz")
    result = fit(
        cfg,
        overwrite=overwrite,
        resume=resume_dir is not None,
        progress=not quiet,
        log=(lambda *_: None) if quiet else click.echo,
        source=value_origin("train.class_weights", source, overrides),
    )
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    if best is not None:
        click.echo(
            f"best epoch {result.best_epoch}: val loss {fmt_metric(best['val_loss'])} "
            f"val acc {fmt_metric(best['val_accuracy'], '.4f')}; checkpoints in {result.run_dir}"
        )


# --------------------------------------------------------------------------- eval / predict


def _load_data_for(tm, data_path, fmt, require_labels):
    from .data import load_dataset

    csv_cfg = tm.meta.get("config", {}).get("data", {}).get("csv", {}) or {}
    csv_opts = {
        k: csv_cfg.get(k)
        for k in ("id_column", "label_column", "feature_columns", "label_type")
        if csv_cfg.get(k) is not None
    }
    return load_dataset(data_path, fmt, require_labels=require_labels, csv_options=csv_opts or None)


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
    lines.append(_format_table(["label", "precision", "recall", "f1", "support"], rows, "lrrrr"))
    lines.append("")
    lines.append("confusion matrix (rows: true label, columns: predicted label)")
    cm_rows = [[labels[i]] + row for i, row in enumerate(report["confusion_matrix"])]
    lines.append(_format_table(["true \\ pred"] + labels, cm_rows, "l" + "r" * len(labels)))
    return "\n".join(lines)


def _write_output(path, text):
    """An output option's text: '-' is stdout, anything else a file replaced atomically."""
    if path == "-":
        click.echo(text, nl=False)
        return
    from .store.atomic import write_text

    write_text(path, text)


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


_FORMATS = click.Choice(["auto", "jsonl", "npz", "npy", "csv", "ts"])


def _checkpoint_and_data(data_help):
    """The CHECKPOINT argument and the --data/--format/--batch-size options eval and predict share."""

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
        return click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))(fn)

    return decorate


@click.command(
    name="lstm-eval",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: lstm-eval runs/japanese_vowels/best.npz "
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
@click.option("--quiet", is_flag=True, help="Do not print the tables.")
@_common
def evaluate(checkpoint, data_path, fmt, json_out, predictions, allow_unknown, batch_size, quiet):
    """Evaluate a checkpoint on labelled data: accuracy, loss, per-class P/R/F1, confusion matrix."""
    from .inference import evaluate_dataset, load_trained

    _refuse_output_over_input(
        [("--json", json_out), ("--predictions", predictions)],
        [("checkpoint", checkpoint), ("data file", data_path)],
    )
    tm = load_trained(checkpoint)
    ds = _load_data_for(tm, data_path, fmt, require_labels=True)
    report, probs, _ = evaluate_dataset(tm, ds, batch_size=batch_size, allow_unknown=allow_unknown)
    report["checkpoint"] = checkpoint
    if not quiet and json_out != "-":
        click.echo(_render_report(report))
    if json_out:
        _write_output(json_out, json.dumps(report, indent=2) + "\n")
    if predictions:
        true = [lbl.item() if hasattr(lbl, "item") else lbl for lbl in ds.labels]
        _write_output(predictions, _predictions_csv(tm.classes, probs, true))


@click.command(
    name="lstm-predict",
    context_settings={"help_option_names": ["-h", "--help"]},
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
@_common
def predict(checkpoint, data_path, fmt, output, batch_size, quiet):
    """Predict labels and class probabilities; CSV with index, predicted_label, prob_<label>..."""
    from .inference import check_features, load_trained, predict_dataset

    _refuse_output_over_input(
        [("--output", output)], [("checkpoint", checkpoint), ("data file", data_path)]
    )
    tm = load_trained(checkpoint)
    ds = _load_data_for(tm, data_path, fmt, require_labels=False)
    check_features(ds, tm)
    probs = predict_dataset(tm.model, ds, tm.mean, tm.std, batch_size)
    _write_output(output or "-", _predictions_csv(tm.classes, probs))
    if output and output != "-" and not quiet:
        click.echo(f"wrote {len(ds)} predictions to {output}", err=True)

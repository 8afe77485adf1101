"""lstm-gradcheck: the hand-written BPTT against finite differences."""

from __future__ import annotations

import math
import sys

import click

from ..errors import ConfigError, LstmCliError
from ..nn.spec import HEADS
from ..store.jsontext import json_text
from .common import (
    CONTEXT,
    Command,
    FiniteFloat,
    format_table,
    handles_errors,
    refuse_output_over_input,
    write_output,
    writes_to_stdout,
)


@click.command(
    cls=Command,
    context_settings=CONTEXT,
    epilog="Examples:\n\n  lstm-gradcheck\n\n"
    "  lstm-gradcheck --head all --layers 3 --hidden-size 5 --json\n\n"
    "  lstm-gradcheck --head mean --bidirectional --layers 2\n\n"
    "  lstm-gradcheck --config configs/japanese_vowels.yaml",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Check the architecture a training config describes (input size and classes "
    "from its training data, after data.pool and data.frame / frame_to, as lstm-train "
    "builds it; dropout off) instead of the default matrix.",
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
    type=click.Choice([*HEADS, "both", "every"]),
    default="every",
    show_default=True,
    help=f"Which head(s) to check: one, both (last and all) or every ({', '.join(HEADS)}).",
)
@click.option(
    "--bidirectional/--unidirectional",
    "bidirectional",
    default=None,
    help="Check only bidirectional or only unidirectional models [default: unidirectional "
    "for every --layers value, and bidirectional for the largest].",
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
@click.option("--forget-bias", type=FiniteFloat(), default=1.0, show_default=True)
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
    type=FiniteFloat(positive=True),
    default=None,
    help="Finite-difference step [default: 1e-3 for order 4, 1e-5 for order 2].",
)
@click.option(
    "--tol",
    type=FiniteFloat(positive=True),
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
@click.option(
    "--quiet", is_flag=True, help="Print only failures and the verdict (with --flow: nothing)."
)
@click.option(
    "--flow",
    "flow_checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Instead: the gradient flow through time of this checkpoint on --data (mean norms of "
    "dL/dh_t and dL/dc_t by fraction of sequence length, per layer); --output writes the "
    "gradflow.jsonl records.",
)
@click.option(
    "--data", "data_path", type=click.Path(exists=True), default=None, help="With --flow."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --flow: write the records here ('-': stdout).",
)
@handles_errors
@click.pass_context
def gradcheck(
    ctx,
    config_path,
    overrides,
    head,
    bidirectional,
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
    flow_checkpoint,
    data_path,
    output,
):
    """Check the hand-written BPTT against central finite differences (float64).

    Builds a small random model (every parameter randomised, biases included) and a
    random right-padded batch with mixed lengths (including 1), then compares the
    analytic gradient of every parameter and of the input with finite differences.
    Exits 0 when every parameter passes, 1 when any fails, 2 on bad usage; with --config,
    3 or 4 for a bad config or data file (as lstm-train).
    """
    from ..nn.gradcheck import DEFAULT_EPS, check_model, random_problem

    if flow_checkpoint is not None or data_path is not None or output is not None:
        options = ("config_path", "overrides", *_ARCHITECTURE_OPTIONS, *_CHECK_OPTIONS)
        given = _given(ctx, options)
        if given and flow_checkpoint is not None:  # else --data/--output lack their --flow
            raise click.UsageError(
                f"{', '.join(given)} cannot be combined with --flow (they set the gradient "
                "check; --flow runs the checkpoint's own backward pass)"
            )
        _gradient_flow(flow_checkpoint, data_path, output, as_json, quiet)
        return

    if config_path is not None:
        given = _given(ctx, _ARCHITECTURE_OPTIONS)
        if given:
            raise click.UsageError(
                f"{', '.join(given)} cannot be combined with --config (the config "
                f"describes the architecture)"
            )
        arch = _architecture_from_config(config_path, overrides)
        head, bidirectional, n_layers, hidden_size, input_size, classes, forget_bias = arch
        cases = [(head, n_layers, bidirectional)]
    else:
        if overrides:
            raise click.UsageError("--set needs --config")
        heads = {"both": ["last", "all"], "every": list(HEADS)}.get(head, [head])
        cases = [
            (h, n, bi)
            for h in heads
            for bi in ((False, True) if bidirectional is None else (bidirectional,))
            for n in (layers if bidirectional is not None or not bi else (max(layers),))
        ]
    reports = []
    for h, n_layers, bi in cases:
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
                bidirectional=bi,
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
            json_text({"passed": passed, "checks": [r.to_dict() for r in reports]}, indent=2)
        )
    else:
        rows = []
        for r in reports:
            for p in r.rows:
                if quiet and p.passed:
                    continue
                rows.append(
                    [
                        f"{r.head}/{r.num_layers}{' bi' if r.bidirectional else ''}",
                        p.name,
                        "x".join(map(str, p.shape)),
                        p.checked,
                        f"{p.max_rel_error:.2e}",
                        "pass" if p.passed else "FAIL",
                    ]
                )
        if rows:
            click.echo(
                format_table(
                    ["model", "parameter", "shape", "checked", "max rel error", "result"],
                    rows,
                    "llllrl",
                )
            )
        r0 = reports[0]
        for r in reports:
            if not r.resolved:
                click.echo(
                    f"UNRESOLVED {r.head}/{r.num_layers}{' bi' if r.bidirectional else ''}: "
                    f"the round-off floor {r.noise:.1e} is above tol x the largest gradient "
                    f"entry ({r.largest:.1e}), so a wrong gradient would pass; use a larger "
                    f"--eps (default {DEFAULT_EPS[r.order]:g} for order {r.order})"
                )
        at_kink = sum(p.at_kink for r in reports for p in r.rows)
        # entries at a kink are checked too, and left out of the verdict only: not sampled
        sampled = sum(p.checked + p.at_kink < math.prod(p.shape) for r in reports for p in r.rows)
        click.echo(
            f"{'PASSED' if passed else 'FAILED'}: {sum(len(r.rows) for r in reports)} gradients "
            f"checked, order-{r0.order} central differences, eps={r0.eps:g}, tol={tol:g}, "
            f"round-off floor {max(r.noise for r in reports):.1e}"
            + (f"; {at_kink} entries at a kink of the max head left out" if at_kink else "")
            + (
                f"; {sampled} sampled, {max_entries} entries each (--max-entries 0: every entry)"
                if sampled
                else ""
            )
        )
    sys.exit(0 if passed else 1)


def _architecture_from_config(config_path, overrides):
    """(head, bidirectional, num_layers, hidden_size, input_size, num_classes, forget_bias) of
    a config: input_size is what lstm-train gives the model, the training file's features
    per step times the frame (pooling keeps the features; data.frame_to resolved on that
    file as training resolves it)."""
    from ..config import load_config
    from ..training import load
    from ..training.prepare import resolve_frame, training_classes

    cfg = load_config(config_path, overrides)
    ds = load(cfg.data.train, cfg)
    cfg, _ = resolve_frame(cfg, ds)
    num_classes = len(training_classes(ds.labels, cfg.data.train))  # as lstm-train: >= 2
    m = cfg.model
    return (
        m.head,
        m.bidirectional,
        m.num_layers,
        m.hidden_size,
        ds.num_features * cfg.data.frame,  # data.framing.frame_steps: k steps of F -> k*F
        num_classes,
        m.forget_bias,
    )


# the random model's architecture (what --config states instead) and the check's settings
_ARCHITECTURE_OPTIONS = (
    "head",
    "bidirectional",
    "layers",
    "hidden_size",
    "input_size",
    "classes",
    "forget_bias",
)
_CHECK_OPTIONS = ("batch", "max_len", "seed", "order", "eps", "tol", "max_entries")
_FLAGS = {"bidirectional": "--(uni|bi)directional", "config_path": "--config", "overrides": "--set"}


def _given(ctx, names) -> list:
    """The options among ``names`` (parameter names) given on the command line, as flags."""
    from click.core import ParameterSource

    return [
        _FLAGS.get(n, f"--{n.replace('_', '-')}")
        for n in names
        if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT, None)
    ]


def _gradient_flow(checkpoint, data_path, output, as_json, quiet) -> None:
    """--flow CHECKPOINT --data FILE: gradient-flow records of the checkpoint on the data,
    to --output; then, unless --quiet or --output is stdout, the table (or --json)."""
    from ..diagnostics import checkpoint_gradient_flow, layer_label
    from ..inference import encode_dataset_labels, load_trained
    from .evaluate import load_data_for

    if checkpoint is None or data_path is None:
        raise click.UsageError("--flow CHECKPOINT and --data FILE go together (--output too)")
    refuse_output_over_input(
        [("--output", output)], [("checkpoint", checkpoint), ("data", data_path)]
    )
    if as_json and writes_to_stdout(output):
        raise click.UsageError(
            f"--json and --output {output} would both write to stdout; give one a file"
        )
    tm = load_trained(checkpoint)
    ds = load_data_for(tm, data_path, "auto", require_labels=True)
    records = checkpoint_gradient_flow(
        tm, ds, encode_dataset_labels(ds, tm.classes), tm.meta.get("epoch") or 1
    )
    if output:
        write_output(output, "".join(json_text(r) + "\n" for r in records))
    if quiet or writes_to_stdout(output):
        return
    if as_json:
        click.echo(json_text(records, indent=2))
        return
    rows = []
    for r in records:
        for name in ("dh", "dc"):
            values = r[f"{name}_norm_by_fraction"]
            rows.append(
                [layer_label(r).removeprefix("layer "), f"dL/{name[1]}_t"]
                + ["-" if v is None else f"{v:.2e}" for v in values]
            )
    bins = [f"{int(100 * f)}%" for f in records[0]["fraction"]]
    click.echo(
        f"gradient flow of {checkpoint} on {data_path} (epoch {records[0]['epoch']}): mean norm "
        "per sequence by fraction of its length"
    )
    click.echo(format_table(["layer", "of"] + bins, rows, "ll" + "r" * len(bins)))


if __name__ == "__main__":  # python -m lstm_cli.cli.gradcheck: as the console script
    gradcheck()

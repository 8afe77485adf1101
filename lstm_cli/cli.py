"""Command-line entry points: thin wrappers over the library API.

Each command parses its options, calls the library, renders the result, and maps the
project's own errors (``LstmCliError`` and subclasses) to one line on stderr and the
exit code documented in README.md. ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from . import __version__
from .errors import LstmCliError


def _common(fn):
    """Add --debug / --version to a command and map LstmCliError to a clean exit."""

    @click.option("--debug", is_flag=True, help="Show the full traceback on error.")
    @click.version_option(__version__, prog_name="lstm_cli", message="%(prog)s %(version)s")
    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LstmCliError as err:
            if debug:
                raise
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)

    return wrapper


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

@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Example: lstm-gradcheck --head all --layers 3 --hidden-size 5 --json")
@click.option("--head", type=click.Choice(["last", "all", "both"]), default="both", show_default=True,
              help="Which head(s) to check.")
@click.option("--layers", "layers", type=click.IntRange(1, None), multiple=True, default=(1, 2),
              show_default=True, help="Number of stacked layers; repeat to check several.")
@click.option("--hidden-size", type=click.IntRange(1, None), default=4, show_default=True)
@click.option("--input-size", type=click.IntRange(1, None), default=3, show_default=True)
@click.option("--classes", type=click.IntRange(2, None), default=3, show_default=True)
@click.option("--batch", type=click.IntRange(1, None), default=4, show_default=True)
@click.option("--max-len", type=click.IntRange(1, None), default=5, show_default=True)
@click.option("--forget-bias", type=float, default=1.0, show_default=True)
@click.option("--seed", type=click.IntRange(0, None), default=0, show_default=True)
@click.option("--order", type=click.Choice(["2", "4"]), default="4", show_default=True,
              help="Central-difference stencil: 2-point or 5-point (fourth order).")
@click.option("--eps", type=click.FloatRange(0.0, None, min_open=True), default=None,
              help="Finite-difference step [default: 3e-3 for order 4, 1e-5 for order 2].")
@click.option("--tol", type=click.FloatRange(0.0, None, min_open=True), default=1e-6, show_default=True,
              help="Largest relative error that passes.")
@click.option("--max-entries", type=click.IntRange(0, None), default=500, show_default=True,
              help="Check every entry of a parameter up to this size, a seeded sample above it (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("--quiet", is_flag=True, help="Print only failures and the verdict.")
@_common
def gradcheck(head, layers, hidden_size, input_size, classes, batch, max_len, forget_bias, seed,
              order, eps, tol, max_entries, as_json, quiet):
    """Check the hand-written BPTT against central finite differences (float64).

    Builds a small random model (every parameter randomised, biases included) and a
    random right-padded batch with mixed lengths (including 1), then compares the
    analytic gradient of every parameter and of the input with finite differences.
    Exits 0 when every parameter passes, 1 when any fails, 2 on bad usage.
    """
    from .gradcheck import check_model, random_problem

    heads = ["last", "all"] if head == "both" else [head]
    reports = []
    for h in heads:
        for n_layers in layers:
            model, x, lengths, y = random_problem(
                input_size=input_size, hidden_size=hidden_size, num_classes=classes,
                num_layers=n_layers, head=h, batch=batch, max_len=max_len,
                forget_bias=forget_bias, seed=seed)
            reports.append(check_model(model, x, lengths, y, eps=eps, order=int(order), tol=tol,
                                       max_entries=max_entries or None, seed=seed))
    passed = all(r.passed for r in reports)
    if as_json:
        click.echo(json.dumps({"passed": passed, "checks": [r.to_dict() for r in reports]}, indent=2))
    else:
        rows = []
        for r in reports:
            for p in r.rows:
                if quiet and p.passed:
                    continue
                rows.append([f"{r.head}/{r.num_layers}", p.name, "x".join(map(str, p.shape)),
                             p.checked, f"{p.max_rel_error:.2e}", "pass" if p.passed else "FAIL"])
        if rows:
            click.echo(_format_table(["head/layers", "parameter", "shape", "checked",
                                      "max rel error", "result"], rows, "llllrl"))
        r0 = reports[0]
        click.echo(f"{'PASSED' if passed else 'FAILED'}: {sum(len(r.rows) for r in reports)} gradients "
                   f"checked, order-{r0.order} central differences, eps={r0.eps:g}, tol={tol:g}")
    sys.exit(0 if passed else 1)

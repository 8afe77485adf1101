"""What every command shares: the error-to-exit-code mapping, tables, output files."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import signal
import stat
import sys
import threading

import click

from .. import __version__
from ..errors import Interrupted, LstmCliError, Terminated
from ..store.atomic import names_a_stream, names_stdout


def handles_errors(fn):
    """Add --debug / --version to a command and map LstmCliError to a clean exit."""

    @click.option("--debug", is_flag=True, help="Show the full traceback on error.")
    @click.version_option(__version__, prog_name="lstm_cli", message="%(prog)s %(version)s")
    @functools.wraps(fn)
    def wrapper(*args, debug=False, **kwargs):
        try:
            with _sigterm_raises():
                return fn(*args, **kwargs)
        except Interrupted as err:  # under MPI every rank stops here together
            _fail(err.exit_code, f"Error: {err}", debug, agreed=True)
        except LstmCliError as err:
            _fail(err.exit_code, f"Error: {err}", debug)
        except MemoryError as err:  # numpy's "Unable to allocate 74.5 GiB for an array ..."
            detail = f": {err}" if str(err) else ""
            _fail(
                1,
                f"Error: out of memory{detail}. Use a smaller model, batch or sequence length.",
                debug,
            )
        except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C elsewhere
            _fail(130, "Interrupted.", debug)
        except Terminated:  # a second SIGTERM in training; outside its guard, the first
            _fail(128 + signal.SIGTERM, "Terminated.", debug)
        except click.exceptions.ClickException as err:
            exit_off_rank_0(err)
            raise
        except Exception:
            from ..training.distributed import launched_size

            if launched_size() > 1:
                _fail(1, "", True)  # a bug under MPI: its traceback, and no rank left waiting
            raise

    return wrapper


@contextlib.contextmanager
def _sigterm_raises():
    ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # as whoever started us said
    if ignored or threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Terminated

    old = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:  # unless the command set its own (an idle MPI rank ignores it to the end)
        if signal.getsignal(signal.SIGTERM) is terminated:
            signal.signal(signal.SIGTERM, old)


def _fail(exit_code: int, message: str, debug: bool, agreed: bool = False):
    """Print ``message`` (with the traceback under --debug) and exit with ``exit_code``;
    under MPI, end the whole job with it (training.distributed.end_job_on_error)."""
    from ..training.distributed import end_job_on_error, launched_rank, launched_size

    message = one_line(message)  # a file name may hold a line break
    if message and launched_size() > 1 and launched_rank() != 0:
        message = f"[rank {launched_rank()}] {message}"

    def report():
        _traceback_if(debug)
        if message:
            click.echo(message, err=True)

    end_job_on_error(exit_code, report, agreed)
    sys.exit(exit_code)


class FiniteFloat(click.ParamType):
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


def exit_off_rank_0(err: click.ClickException) -> None:
    """Under mpiexec a usage error is the same on every rank: rank 0 reports it, every
    other rank exits with its code and says nothing."""
    from ..training.distributed import launched_rank, launched_size

    if launched_size() > 1 and launched_rank() != 0:
        sys.exit(err.exit_code)


class Command(click.Command):
    """click's command, whose errors in parsing the command line (before handles_errors
    runs) rank 0 alone reports under mpiexec, as it alone prints --help and --version
    (which print while the command line is parsed)."""

    def parse_args(self, ctx, args):
        from ..training.distributed import launched_rank, launched_size

        off_rank_0 = launched_size() > 1 and launched_rank() != 0
        quiet = (
            contextlib.redirect_stdout(io.StringIO()) if off_rank_0 else contextlib.nullcontext()
        )
        try:
            with quiet:
                return super().parse_args(ctx, args)
        except click.ClickException as err:
            exit_off_rank_0(err)
            raise


def _traceback_if(debug) -> None:
    """--debug: the full traceback on stderr; the exit code stays the documented one."""
    if debug:
        import traceback

        traceback.print_exc()


def refuse_output_over_input(outputs, inputs, overwrite=None) -> None:
    """The rule for every file a command writes (docs/cli.md, "Output files"): an output
    (--json, --predictions, --output, OUT) is not another output's file, not a run file
    (RUN_FILES, or its lock) of a run folder, not an array name of an input data folder,
    and, when it exists, not one of the inputs and not a .npz file or, by any name, an
    lstm_cli checkpoint unless ``overwrite`` is True; its folder must exist. Each is
    judged by the path the write replaces (store.atomic: the real path, so a symlink's
    target, with '..' and a trailing '/' resolved); a stream (/dev/stdout) is written to,
    not replaced, and is not judged. overwrite: None for a command that never writes
    checkpoints, else its --overwrite flag (lstm-import). '-' is stdout. Else a click
    usage error (exit 2) naming the option and the file, before anything is read or
    written."""
    claimed = {}
    for opt, out in outputs:
        if writes_to_stdout(out):  # one output only, or they would run into one another
            if "-" in claimed:
                raise click.UsageError(
                    f"{claimed['-'][0]} {claimed['-'][1]} and {opt} {out} would both write "
                    f"to stdout; give one a file"
                )
            claimed["-"] = (opt, out)
        if not out or out == "-" or names_a_stream(out):  # stdout, written to as a stream
            continue
        real = os.path.realpath(out)
        folder = os.path.dirname(real)
        if not os.path.isdir(folder):  # found now, not when the work is done and written
            there = _nearest_existing(folder)
            if os.path.isdir(there):
                what = "does not exist; create it"
            else:
                what = "is not a folder" if there == folder else f"cannot be: {there} is a file"
            raise click.UsageError(f"{opt} {out}: its folder {folder} {what}")
        key = _file_key(real)
        if key in claimed:
            raise click.UsageError(
                f"{opt} {out} is also the {claimed[key]} file; one would overwrite the other"
            )
        if key is not None:
            claimed[key] = opt
        what = _protected(real, inputs, overwrite is True)
        if what:
            hint = (
                "; pass --overwrite to replace it"
                if what in _CHECKPOINTS and overwrite is False
                else ""
            )
            raise click.UsageError(f"{opt} {out} is {what}; writing it would destroy it{hint}")


def writes_to_stdout(out) -> bool:
    """Whether an output option's value is stdout: '-', or a name of file descriptor 1
    (store.atomic.names_stdout: /dev/stdout, /proc/self/fd/1, ...)."""
    return out == "-" or (bool(out) and names_stdout(out))


def refuse_output_folder(opt, path, figures=(), files=()) -> None:
    """A folder a command creates for its files (--plot, --out): a usage error (exit 2)
    before any work when the nearest part of its path that exists is a file, or when one
    of ``files`` ((option, path): another output, an input) is one of the ``figures``
    (names) it writes there."""
    there = _nearest_existing(os.path.realpath(path))
    if not os.path.isdir(there):
        raise click.UsageError(f"{opt} {path}: the folder cannot be created: {there} is a file")
    # a link at a figure's name is replaced by the figure, not written through; a link to
    # a folder on its way (OUT/fold-0) is followed
    drawn = set()
    for name in figures:
        folder, base = os.path.split(os.path.join(path, name))
        drawn.add(os.path.join(os.path.realpath(folder), base))
    for file_opt, file in files:
        if file and file != "-" and os.path.realpath(file) in drawn:
            raise click.UsageError(
                f"{file_opt} {file} is a figure {opt} {path} gets; one would overwrite the other"
            )


def _nearest_existing(path):
    """The nearest part of ``path`` (a real path) that exists: itself or a parent."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _file_key(real):
    """What makes two real paths one file: device and inode when it exists, else the
    path; None for a device or FIFO (/dev/stdout), written to directly, not replaced."""
    try:
        st = os.stat(real)
    except OSError:
        return real
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


# what an existing checkpoint is called: by its name, or by its form under another name
_CHECKPOINTS = ("an existing .npz file (a checkpoint)", "an lstm_cli checkpoint (by its content)")


def _protected(real, inputs, replace_checkpoint) -> str | None:
    """What the file at real path ``real`` is that no output may replace, or None."""
    from ..data import NPY_FOLDER_ARRAYS
    from ..store.checkpoint import looks_like_checkpoint
    from ..training.rundir import LOCK_NAME, RUN_FILES, is_run_folder

    arrays = [f"{k}.npy" for k in NPY_FOLDER_ARRAYS]
    folder, name = os.path.split(real)
    for what, path in inputs:
        if name in arrays and os.path.isdir(path) and _same_file(folder, path):
            return f"an array of the {what}"  # also an optional one it lacks (y.npy)
        if _same_file(real, path):
            return f"the {what}"
    if name in (*RUN_FILES, LOCK_NAME) and is_run_folder(folder):  # written or not yet
        return f"a file of the run folder {folder}"
    if not replace_checkpoint and os.path.isfile(real):
        if name.lower().endswith(".npz"):
            return _CHECKPOINTS[0]
        if looks_like_checkpoint(real):  # lstm-eval reads a checkpoint by any name
            return _CHECKPOINTS[1]
    return None


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return False


def one_line(text) -> str:
    """str(text) with line breaks and tabs shown escaped, so it prints as one line (an
    error, or a table cell: a class label or file name may hold any character)."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def format_table(headers, rows, align=None) -> str:
    """Aligned plain-text table, a line per row; align is a string of 'l'/'r' per column."""
    cells = [[one_line(h) for h in headers]] + [[one_line(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" * len(headers)
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_output(path, text):
    """An output option's text: '-' is stdout, anything else a file replaced atomically
    (a stream such as /dev/stdout is written to, after what was printed before it)."""
    if path == "-":
        click.echo(text, nl=False)
        return
    from ..store.atomic import write_text

    sys.stdout.flush()
    sys.stderr.flush()
    write_text(path, text)


CONTEXT = {"help_option_names": ["-h", "--help"]}

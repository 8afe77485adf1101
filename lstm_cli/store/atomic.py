"""Atomic file replacement: the one way lstm_cli writes a file it may overwrite.

The new content goes to ``<name>.tmp-<random>`` in the same folder (created exclusively,
so it never clobbers anything), is flushed and fsynced, then renamed onto the real name
with ``os.replace``, and the folder is fsynced. A crash or an exception at any moment
leaves either the old file or the new one under the real name, never a mixture; the temp
file is removed on failure (also on KeyboardInterrupt).

A symlink is followed (its target is replaced; the link stays a link), unless the caller
owns the name (``follow_symlinks=False``: figures in a folder, where a link is replaced
by the file). A path that exists but is not a regular file (a FIFO, a terminal), and a
path naming one of the process's streams (``/dev/stdout`` even when the shell sent it to
a file), is opened for appending and written directly: renaming onto those would replace
the device node, or the file the shell redirected into, instead of writing to it.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat

from ..errors import LstmCliError

_TEMP_INFIX = ".tmp-"
_TEMP_TOKEN_BYTES = 6  # the random part: 12 hex digits


def temp_path(path: str) -> str:
    """A fresh temporary name for replacing ``path``: ``<path>.tmp-<12 hex digits>``."""
    return f"{path}{_TEMP_INFIX}{secrets.token_hex(_TEMP_TOKEN_BYTES)}"


def is_temp_of(name: str, target: str) -> bool:
    """True if the file name ``name`` is one temp_path made for the file name ``target``."""
    pattern = re.escape(target + _TEMP_INFIX) + f"[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}"
    return re.fullmatch(pattern, name) is not None


def atomic_write(path, write, follow_symlinks=True) -> None:
    """Replace ``path`` with what ``write(fileobj)`` writes to a binary file object.

    OSError propagates (callers turn it into their own error type).
    """
    path = os.fspath(path)
    try:
        mode = (os.stat if follow_symlinks else os.lstat)(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError:  # e.g. a path through a non-folder: let open() below report it
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if mode is not None and stat.S_ISLNK(mode):  # not followed: the link itself is replaced
        mode = None
    if mode is not None and (not stat.S_ISREG(mode) or names_a_stream(path)):
        with open(path, "ab") as fh:  # a device, FIFO or stream: written to, no rename
            write(fh)
        return
    # a symlink's target (also a dangling link's), or the name itself
    _replace(os.path.realpath(path) if follow_symlinks else path, write)


# groups: stdout, stderr, N of /dev/fd/N, the pid (or self) and N of /proc/PID/fd/N
_STREAM = re.compile(
    r"/dev/(?:(stdout)|(stderr)|fd/([0-9]+))|/proc/(self|thread-self|[0-9]+)/fd/([0-9]+)"
)


def _stream_match(path):
    # absolute, with one leading slash: POSIX abspath keeps the two of //dev/stdout
    return _STREAM.fullmatch("/" + os.path.abspath(path).lstrip("/"))


def names_a_stream(path) -> bool:
    """True for a path that names one of the process's open streams as given
    (/dev/stdout, /proc/self/fd/1): written to, never replaced, even when the shell sent
    the stream to a regular file."""
    return _stream_match(path) is not None


def names_stdout(path) -> bool:
    """True for a name of this process's file descriptor 1 (/dev/stdout, /dev/fd/1,
    /proc/self/fd/1, /proc/thread-self/fd/1, /proc/PID/fd/1 with our pid); not
    /dev/stderr, even where both streams go to one terminal."""
    m = _stream_match(path)
    if m is None:
        return False
    stdout, _, fd, pid, proc_fd = m.groups()
    if pid is not None:
        return pid in ("self", "thread-self", str(os.getpid())) and int(proc_fd) == 1
    return stdout is not None or (fd is not None and int(fd) == 1)


def _replace(path, write) -> None:
    """Write to a temp file beside ``path`` and rename it onto ``path`` (never followed)."""
    directory = os.path.dirname(path)
    tmp = temp_path(path)
    fh = open(tmp, "xb")
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def atomic_write_text(path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text``."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_text(path, text: str) -> None:
    """atomic_write_text for the commands' own files (run files, reports, predictions): an
    OSError (disk full, permissions, a folder in the way) becomes one LstmCliError naming
    ``path``."""
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise LstmCliError(f"cannot write {path}: {err.strerror or err}") from None


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX). Best effort: failures here are ignored."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""lstm_cli.store.atomic: replace a regular file atomically; follow symlinks; never rename over
a FIFO (or device) or folder. (No test writes to a real device: a regression would
replace the device node when the tests run as root.)"""

import os
import threading

import pytest

from lstm_cli.store.atomic import atomic_write_text


def _read(path):
    with open(path) as fh:
        return fh.read()


def test_new_and_replaced_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "one\n")
    atomic_write_text(path, "two\n")
    assert path.read_text() == "two\n"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temp file left


def test_failed_write_keeps_the_old_file(tmp_path):
    from lstm_cli.store.atomic import atomic_write

    path = tmp_path / "a.txt"
    path.write_text("old\n")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["a.txt"]


def test_symlink_is_followed_and_kept(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to("real.csv")
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to("target.csv")
    atomic_write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "target.csv").read_text() == "made\n"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_written_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(_read(fifo)), daemon=True)
    reader.start()
    atomic_write_text(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert got == ["through the pipe\n"]
    assert fifo.exists() and not fifo.is_file()  # still a FIFO


def test_folder_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "out", "x")
    assert os.listdir(tmp_path / "out") == []


def test_is_temp_of_matches_the_writer_s_own_temporaries_only(tmp_path, monkeypatch):
    from lstm_cli.store import atomic as atomic_mod

    seen = []

    def replace_fails(src, dst):
        seen.append(os.path.basename(src))
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(atomic_mod.os, "replace", replace_fails)
    with pytest.raises(OSError):
        atomic_mod.atomic_write_text(tmp_path / "last.npz", "x")
    monkeypatch.undo()
    assert len(seen) == 1 and atomic_mod.is_temp_of(seen[0], "last.npz")
    assert not atomic_mod.is_temp_of(seen[0], "best.npz")
    for name in (
        "last.npz",
        "last.npz.tmp-",
        "last.npz.tmp-notmine",
        "last.npz.tmp-0123456789AB",
        "last.npz.tmp-0123456789abc",
        "xlast.npz.tmp-0123456789ab",
        "last.npz.tmp-0123456789ab.bak",
    ):
        assert not atomic_mod.is_temp_of(name, "last.npz"), name
    assert atomic_mod.is_temp_of("last.npz.tmp-0123456789ab", "last.npz")


def test_a_stream_sent_to_a_file_is_written_to_not_replaced(tmp_path):
    """/dev/fd/N (as /dev/stdout is, when the shell sends stdout to a file) follows to a
    regular file; replacing it would drop what the stream held before (`>> log` lost its
    earlier lines). It is appended to, like the stream."""
    from lstm_cli.store.atomic import names_a_stream

    path = tmp_path / "out.log"
    with open(path, "a") as fh:
        fh.write("earlier line\n")
        fh.flush()
        stream = f"/dev/fd/{fh.fileno()}"
        assert names_a_stream(stream) and names_a_stream("/proc/self/fd/1")
        atomic_write_text(stream, "new line\n")
    assert path.read_text() == "earlier line\nnew line\n"
    assert not names_a_stream(str(path)) and not names_a_stream("/dev/shm/report.json")


def test_stdout_is_known_by_each_of_its_names():
    """//dev/stdout (POSIX keeps the two slashes) was not a stream: replaced, not written."""
    from lstm_cli.store.atomic import names_a_stream, names_stdout

    pid = os.getpid()
    for name in (
        "/dev/stdout",
        "//dev/stdout",
        "/dev/fd/1",
        "/proc/self/fd/1",
        f"/proc/{pid}/fd/1",
        "/proc/thread-self/fd/1",
    ):
        assert names_stdout(name) and names_a_stream(name), name
    for name in ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/12", f"/proc/{pid + 1}/fd/1", "out"):
        assert not names_stdout(name), name
    assert names_a_stream("//dev/stderr") and not names_a_stream("/dev/stdout2")


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_name_of_ours_is_replaced_not_written_through(tmp_path, link):
    """follow_symlinks=False (figures): a link at the name is replaced by the new file,
    and the file it pointed to is untouched."""
    from lstm_cli.store.atomic import atomic_write

    target, name = tmp_path / "checkpoint.npz", tmp_path / "figure.png"
    target.write_text("keep me\n")
    (name.symlink_to if link == "symlink" else name.hardlink_to)(target)
    atomic_write(name, lambda fh: fh.write(b"png\n"), follow_symlinks=False)
    assert target.read_text() == "keep me\n" and name.read_text() == "png\n"
    assert not name.is_symlink()

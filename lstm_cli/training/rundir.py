"""The run folder: create or reuse it, lock it for one training at a time, retire an
earlier run's files, remove orphaned temporaries, and write the metrics and summary.

Every file is replaced atomically (store.atomic), so a crash leaves the last complete
version under each name.
"""

from __future__ import annotations

import csv
import io
import json
import os

from ..config import Config, dump_config, load_config
from ..errors import CheckpointError, ConfigError, DataError, LstmCliError
from ..store.atomic import is_temp_of, write_text
from ..store.jsontext import json_text
from ..validate import is_int

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "grad_norm",
    "seconds",
    "padded_fraction",
    "sequences_per_second",
]
MEMBER_DIR = "fold-{}"  # a train.folds member's run folder inside the ensemble's
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "metrics.csv",
    "gradflow.jsonl",
    "last.npz",
    "best.npz",
    "summary.json",
)
LOCK_NAME = ".lstm-train.lock"  # not a run file: an earlier run's leftover lock is no run


def is_run_folder(path) -> bool:
    """True for a folder lstm-train writes a run (or a train.folds ensemble) into: it holds
    the run's config.yaml or a training's lock."""
    return any(os.path.isfile(os.path.join(path, n)) for n in ("config.yaml", LOCK_NAME))


class RunLock:
    """An exclusive flock on ``run_dir/.lstm-train.lock`` (holding the owner's pid), so one
    training at a time uses a run folder. The kernel drops the lock when its process dies,
    so a lock file left by a killed run blocks nothing. release() removes the file while
    still holding the lock; acquire() therefore retries when the file it locked was
    removed meanwhile."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fd = None

    def acquire(self) -> None:
        """Take the lock (a no-op when held); a folder another training holds is a
        ConfigError naming it."""
        if self._fd is not None or fcntl is None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as err:
                raise LstmCliError(f"cannot write {self.path}: {err.strerror or err}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(fd)
                os.close(fd)
                raise in_use(self.run_dir, owner) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # released and removed between our open and flock: try again
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _owner(fd) -> str:
    """The text of an open lock file: the pid its holder wrote (RunLock.acquire)."""
    return os.read(fd, 32).decode("ascii", "replace").strip()


def _same_file(fd, path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def resume_checkpoint_path(run_dir) -> str:
    """run_dir/last.npz, or a CheckpointError saying a resume is impossible without it."""
    path = os.path.join(run_dir, "last.npz")
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot resume: {path} does not exist")
    return path


def _dangling_link_in(path) -> str | None:
    """Why ``path`` cannot be created when it or a folder on the way to it is a symbolic
    link to something missing (makedirs then says only "File exists"); else None."""
    path = os.path.abspath(path)
    while True:
        if os.path.islink(path) and not os.path.exists(path):
            return f"{path!r} is a symbolic link to {os.readlink(path)!r}, which does not exist"
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def open_run_dir(run_dir, lock: RunLock, overwrite=False, resume=False) -> list:
    """Create the run folder if needed, take ``lock``, remove orphaned temporaries, and
    refuse a non-empty folder unless overwrite/resume. Returns the earlier run's files
    (names in RUN_FILES, then the member folders of an earlier ensemble: earlier_members)
    when a new run starts in a folder that holds them (--overwrite); a member folder
    another training holds is a ConfigError."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"output.dir {run_dir!r} exists and is not a folder")
    if resume:
        resume_checkpoint_path(run_dir)
    else:
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as err:
            why = _dangling_link_in(run_dir) or err.strerror
            raise ConfigError(f"cannot create run folder {run_dir!r}: {why}") from None
    lock.acquire()
    remove_orphaned_temporaries(run_dir)
    if resume:
        return []
    if files_beside_a_lock(run_dir) and not overwrite:
        raise ConfigError(
            f"run folder {run_dir!r} is not empty; pass --overwrite to replace its "
            f"files, --resume to continue it, or choose another --output"
        )
    files = [n for n in RUN_FILES if os.path.lexists(os.path.join(run_dir, n))]
    members = earlier_members(run_dir)
    for name in members:  # in use: refused now, before any training
        refuse_if_in_use(os.path.join(run_dir, name))
    return files + members


def in_use(run_dir, owner="") -> ConfigError:
    """The error of a run folder another training holds (``owner``: its pid, if known)."""
    pid = f" (pid {owner})" if str(owner).isdigit() else ""
    return ConfigError(
        f"run folder {run_dir!r} is in use by another training{pid}; wait for it to end "
        f"or choose another folder"
    )


def refuse_if_held_by_other(run_dir, pid) -> None:
    """in_use() when a training other than process ``pid`` holds run_dir's lock. The pid
    its lock file names is read first: ``pid``'s own, none, or that of a process no longer
    alive (the file a killed run left) mean no other holds it, with no lock probe that
    could make ``pid``'s own acquire fail; only a live other pid is probed."""
    if fcntl is None:
        return
    try:
        fd = os.open(os.path.join(run_dir, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        text = _owner(fd)
        if not text.isdigit() or int(text) == pid:
            return
        try:
            os.kill(int(text), 0)
        except ProcessLookupError:
            return
        except PermissionError:  # alive, another user's
            pass
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise in_use(run_dir, text) from None
    finally:
        os.close(fd)  # drops a probe's shared lock too


def refuse_if_in_use(run_dir) -> None:
    """RunLock's ConfigError when another training holds run_dir; else nothing (a lock
    file a killed run left is taken and, released, removed)."""
    probe = RunLock(run_dir)
    probe.acquire()
    probe.release()


def remove_orphaned_temporaries(run_dir) -> None:
    """Remove the temporaries an atomic write of a run file left when its process was
    killed (``last.npz.tmp-<hex>``...); only names of that exact pattern. Call with the
    run's lock held, so no live writer owns them."""
    for name in os.listdir(run_dir):
        if any(is_temp_of(name, run_file) for run_file in RUN_FILES):
            remove_run_file(os.path.join(run_dir, name), "an orphaned temporary file")


def remove_run_file(path, what="a file of the earlier run") -> None:
    try:
        if os.path.lexists(path):
            os.unlink(path)
    except OSError as err:
        raise LstmCliError(f"cannot remove {path} ({what}): {err.strerror or err}") from None


def retire_earlier_run(run_dir, names) -> None:
    """Remove the earlier run's files (``names``, as open_run_dir gives them), all but a
    regular config.yaml (rewritten by the caller; a symlink goes as the others do, so the
    new one is not written through it over the file it links to); its member folders go
    with their run files, once each is locked (a ConfigError, before anything is removed,
    when another training holds one)."""
    members = [os.path.join(run_dir, n) for n in names if is_member_dir_name(n)]
    locks = []
    try:
        for d in members:
            locks.append(RunLock(d))
            locks[-1].acquire()
        for name in names:
            path = os.path.join(run_dir, name)
            if not is_member_dir_name(name) and (name != "config.yaml" or os.path.islink(path)):
                remove_run_file(path)
        for d, lock in zip(members, locks):
            retire_member(d, lock)
    finally:
        for lock in locks:
            lock.release()


def member_index(name) -> int | None:
    """i for a member folder's name (MEMBER_DIR: fold-0, fold-1, ...; not fold-01), else
    None."""
    prefix = MEMBER_DIR.format("")
    digits = name[len(prefix) :]
    if not (name.startswith(prefix) and digits.isdigit()):
        return None
    return int(digits) if MEMBER_DIR.format(int(digits)) == name else None


def is_member_dir_name(name) -> bool:
    """Whether ``name`` is a member folder's (MEMBER_DIR: fold-0, fold-1, ...)."""
    return member_index(name) is not None


def earlier_members(run_dir) -> list:
    """The member folders (names) of the train.folds ensemble whose folder run_dir is, by
    its config.yaml: fold-0 .. fold-(K-1) that exist. [] when run_dir holds no ensemble
    (a single run's folder, or a config that does not read as one): folders named fold-i
    beside a single run are not its own, and stay."""
    if os.path.lexists(os.path.join(run_dir, "metrics.jsonl")):  # a single run's folder
        return []
    try:
        folds = load_config(os.path.join(run_dir, "config.yaml")).train.folds
    except LstmCliError:  # none, or not one this version reads: no members of ours
        return []
    found = {member_index(n): n for n in os.listdir(run_dir)}  # not range(folds): any size
    return [
        found[i]
        for i in sorted(i for i in found if i is not None and i < folds)
        if os.path.isdir(os.path.join(run_dir, found[i]))
    ]


def files_beside_a_lock(d) -> bool:
    """Whether folder d holds anything but a run lock's file."""
    return any(name != LOCK_NAME for name in os.listdir(d))


def remove_member_run_files(member_dir) -> None:
    """Remove the run files an earlier ensemble's member left in member_dir."""
    for name in RUN_FILES:
        remove_run_file(os.path.join(member_dir, name), "a member of the earlier ensemble")


def retire_member(member_dir, lock: RunLock) -> None:
    """Empty and remove an earlier ensemble's member folder, its ``lock`` held (only its
    run files and, as the lock is released, the lock file go: a folder holding anything
    else stays)."""
    remove_member_run_files(member_dir)
    lock.release()
    try:
        os.rmdir(member_dir)
    except OSError:
        pass


def write_config(run_dir, cfg: Config) -> None:
    """The run folder's config.yaml: this run's resolved config."""
    write_text(os.path.join(run_dir, "config.yaml"), dump_config(cfg))


def write_metrics(run_dir, history) -> None:
    """Rewrite metrics.jsonl and metrics.csv (small: one row per epoch) atomically."""
    write_text(
        os.path.join(run_dir, "metrics.jsonl"), "".join(json_text(row) + "\n" for row in history)
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else row[c] for c in METRIC_COLUMNS])
    write_text(os.path.join(run_dir, "metrics.csv"), buf.getvalue())


def gradflow_lines(run_dir) -> list:
    """(epoch, line) of each record in run_dir's gradflow.jsonl ([] without one); a
    DataError naming the line of one that is not a JSON object with an int epoch >= 1,
    which --resume, appending to the file, would otherwise meet at its first record."""
    path = os.path.join(run_dir, "gradflow.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as err:  # a folder in the way, permissions
        raise LstmCliError(f"cannot read {path}: {err.strerror or err}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                epoch = json.loads(line).get("epoch")
            except (ValueError, AttributeError):
                epoch = None
            if not (is_int(epoch) and epoch >= 1):
                raise DataError(
                    f"{path}:{n}: not a gradient-flow record of lstm-train (a JSON object "
                    "with an int epoch); move the file away to continue the run without it"
                )
            out.append((epoch, line))
    return out


def append_gradflow(run_dir, records) -> None:
    """Add one epoch's gradient-flow records to gradflow.jsonl (rewritten atomically).
    Records of that epoch or later already in the file (an epoch re-run after a resume)
    are replaced, so the file holds each epoch once."""
    epoch = records[0]["epoch"]
    kept = [line for e, line in gradflow_lines(run_dir) if e < epoch]
    path = os.path.join(run_dir, "gradflow.jsonl")
    write_text(path, "".join(kept) + "".join(json_text(r) + "\n" for r in records))


def forget_summary(run_dir) -> None:
    """A run (or ensemble) that --resume continues is unfinished again: its summary.json,
    which reports the run as it ended before, goes until the end writes it anew."""
    remove_run_file(os.path.join(run_dir, "summary.json"), "the continued run's summary")


def write_summary(run_dir, summary: dict) -> None:
    write_text(os.path.join(run_dir, "summary.json"), json_text(summary, indent=2) + "\n")

"""training.members: the parallel members' processes, apart from what lstm-train shows
(tests/test_folds.py trains real ensembles with --jobs)."""

import signal
from dataclasses import dataclass
from pathlib import Path

from lstm_cli import errors
from lstm_cli.training import members
from lstm_cli.training.members import MemberTask, run_members


@dataclass(frozen=True)
class _Recording(MemberTask):
    """A member that trains nothing: it writes, into the folder ``source``, whether it was
    given a hook to ask for (spawned: it must be importable, so at module level)."""

    def fit(self, *, progress, log, comm, before_first_checkpoint=None):
        Path(self.source, str(self.fold)).write_text(str(before_first_checkpoint is not None))


class _Hook:
    def __init__(self, done):
        self.done = done

    def __call__(self, training):
        self.done = True


def test_members_started_after_the_hook_ran_do_not_ask(tmp_path):
    """They asked all the same: until their first checkpoint they kept the earlier run's
    rules, so a Ctrl-C made them save nothing (a member of its own saves last.npz)."""
    for done, asked in ((False, "True"), (True, "False")):
        tasks = [_Recording(i, None, False, False, str(tmp_path)) for i in range(2)]
        assert run_members(tasks, 2, print, _Hook(done)) == [None, None]
        assert [(tmp_path / str(i)).read_text() for i in range(2)] == [asked] * 2


class _GoneParent:
    def send(self, message):
        raise BrokenPipeError(32, "Broken pipe")

    def close(self):
        pass


@dataclass(frozen=True)
class _Stopped(MemberTask):
    def fit(self, **kwargs):
        raise errors.Interrupted("SIGINT: training stopped in epoch 1", 2)


def test_a_member_whose_parent_is_gone_ends_without_a_traceback(monkeypatch):
    """After a second Ctrl-C the parent gives up at once; each member's report then raised
    BrokenPipeError, a traceback on the terminal under the Error: line."""
    monkeypatch.setattr(members.os, "setpgrp", lambda: None)  # in this process: keep ours
    monkeypatch.setattr(members.signal, "signal", lambda *a: signal.SIG_DFL)
    monkeypatch.setattr("tqdm.tqdm.set_lock", lambda lock: None)  # tqdm's, for pytest
    members._child(_Stopped(0, None, False, False), _GoneParent(), False)  # no exception

"""Train the members of a train.folds ensemble in parallel processes (``lstm-train --jobs``).

Each member is one ``fit`` in a process of its own (started with ``spawn``, so no BLAS
state is forked), on its own generator and run folder, so the members come out exactly
as they would one after another. The children run in their own process group: a Ctrl-C
at the terminal reaches only this process, which passes each signal on once to every
running member. A member saves its last.npz after its current batch and stops, no
further member starts, and ``Interrupted`` says which members saved one. A
member's log lines come back through a pipe and go to ``log`` prefixed with its folder;
a member about to write its first checkpoint asks through it for the caller's hook (an
--overwrite's take-over, run once, here) and waits until it has run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import wait

from .. import errors
from ..config import Config
from .env import THREAD_VARIABLES
from .rundir import MEMBER_DIR
from .signals import STOP_SIGNALS, SignalGuard, signal_name


@dataclass(frozen=True)
class MemberTask:
    """One member to train: its config (OUT/fold-i) and how fit treats its folder."""

    fold: int
    cfg: Config
    overwrite: bool
    resume: bool
    source: str | None = None

    def fit(self, *, progress, log, comm, before_first_checkpoint=None):
        """Train this member (training.fit) in this process."""
        from .fit import fit

        return fit(
            self.cfg,
            overwrite=self.overwrite,
            resume=self.resume,
            progress=progress,
            log=log,
            source=self.source,
            comm=comm,
            before_first_checkpoint=before_first_checkpoint,
        )


def run_members(
    tasks: list[MemberTask], jobs: int, log, before_first_checkpoint=None
) -> list[Exception | None]:
    """Train ``tasks`` with up to ``jobs`` at a time. Returns each task's error (an
    LstmCliError rebuilt from the child's, or RuntimeError with a bug's traceback) or
    None, in task order. Raises Interrupted when a signal stopped the members.
    before_first_checkpoint: run here, with {fold: pid} of the members running, when a
    member is about to write its first checkpoint (each asks, and waits for it: once run,
    it must do nothing; a member started once its ``done`` is true does not ask).
    No further member starts once a signal has come, here or to a member (which stopped
    or died by it), once a member has failed, or once the hook has refused a member; a
    task never started has no entry (None). After a member's failure the hook is not run
    for another (it is refused with that failure), so the run's folder stays as the
    failure left it, as when the members train one after the other."""
    ctx = multiprocessing.get_context("spawn")
    waiting, running, outcome = list(tasks), {}, {}
    taken = ctx.RawValue("b", 0)  # the hook's done, for the members waiting to ask
    halted = False  # a member stopped (or killed) by a signal of its own, failed or refused
    failure = None  # the first member's failure, as the hook's refusal for the others
    with SignalGuard() as guard, _blas_threads_each(jobs):
        forwarded = False  # a second signal does not come here: SignalGuard gives up at once
        signalled = []  # the folds of the members running when the signal came

        def may_start():
            return waiting and guard.signum is None and not halted

        while running or may_start():
            while len(running) < jobs and may_start():
                task = waiting.pop(0)
                parent_end, child_end = ctx.Pipe()  # duplex: a member asks, then waits
                # once the hook has run (its `done`), a member starting has nothing to ask,
                # and saves on a signal as a run of its own would
                hook = before_first_checkpoint
                asks = hook is not None and not getattr(hook, "done", False)
                args = (task, child_end, taken if asks else None)
                proc = ctx.Process(target=_child, args=args, daemon=True)
                _start_with_stop_signals_blocked(proc)
                child_end.close()
                running[parent_end] = (task, proc)
            if guard.signum is not None and not forwarded:
                forwarded = True
                signalled = _folds(running)
                for _, proc in running.values():
                    _signal(proc, guard.signum)
            for conn in wait(list(running), timeout=0.2):
                task, proc = running[conn]
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):  # it died without a word (killed; a reset)
                    kind, value = _death(task, proc)
                if kind == "log":
                    log(f"{MEMBER_DIR.format(task.fold)}: {value}")
                    continue
                if kind == "first checkpoint":
                    pids = {t.fold: p.pid for t, p in running.values()}
                    reply = failure or _reply_to(before_first_checkpoint, pids)
                    taken.value = bool(getattr(before_first_checkpoint, "done", False))
                    halted = halted or reply is not None
                    try:
                        conn.send(reply)
                    except OSError:  # it died waiting: its EOF comes next, as for any death
                        pass
                    continue
                outcome[task.fold] = err = _error_of(kind, value)
                halted = halted or err is not None
                if failure is None and isinstance(err, errors.LstmCliError):
                    failure = "error", (type(err).__name__, str(err), err.exit_code)
                del running[conn]
                conn.close()
                proc.join()
        if guard.signum is not None:
            raise _stopped(guard.signum, _stopped_members(outcome, signalled))
    return [outcome.get(t.fold) for t in tasks]


def _stopped_members(outcome, signalled) -> dict:
    """{fold: outcome} of the members a signal stopped: those running when it was passed
    on (``signalled``), and those a signal of their own stopped or killed before (sent to
    every process), whose outcome had come in by then."""
    own = [f for f, e in outcome.items() if isinstance(e, (errors.Interrupted, MemberDied))]
    return {f: outcome[f] for f in sorted({*signalled, *own})}


def _folds(running) -> list:
    return sorted(task.fold for task, _ in running.values())


def _stopped(signum, members) -> errors.Interrupted:
    """The Interrupted of a signal that stopped ``members`` ({fold: its outcome}): which
    of them saved a last.npz to resume from. A member stopped before its first checkpoint
    over an earlier run, or before it could catch the signal, saved nothing; one that
    finished meanwhile (None) is not among them."""
    stopped = {f: e for f, e in members.items() if e is not None}
    saved = [f for f, e in stopped.items() if isinstance(e, errors.Interrupted) and e.resume]
    unsaved = [f for f in stopped if f not in saved]
    said = [f"{', '.join(MEMBER_DIR.format(f) for f in folds)} saved {what}"
            for folds, what in ((saved, "last.npz"), (unsaved, "nothing")) if folds]  # fmt: skip
    said = ", ".join(said) or "no member was training"
    return errors.Interrupted(f"{signal_name(signum)}: training stopped; {said}", signum)


@contextlib.contextmanager
def _blas_threads_each(jobs):
    """While the members start: unless the user set the thread variables, give each
    child an equal share of the CPUs for its BLAS (a spawned child reads them when it
    imports numpy). jobs BLAS pools of all CPUs each would oversubscribe them: on 2 CPUs,
    2 members were 2x slower than 1 after the other (benchmarks/NOTES.md)."""
    if any(v in os.environ for v in THREAD_VARIABLES):
        yield
        return
    share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    os.environ.update({v: share for v in THREAD_VARIABLES})
    try:
        yield
    finally:
        for v in THREAD_VARIABLES:
            os.environ.pop(v, None)


def _start_with_stop_signals_blocked(proc) -> None:
    """Start ``proc`` with the stop signals blocked in it (the mask is inherited): until
    _child has left the terminal's process group and set its handlers, a Ctrl-C there
    stays pending instead of raising KeyboardInterrupt in its imports (a traceback). In
    this process one that comes meanwhile is delivered as the mask is restored. The
    resource tracker is started first: starting it unblocks them (its own start)."""
    resource_tracker.ensure_running()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _signal(proc, signum) -> None:
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:  # it has just finished
        pass


class MemberDied(errors.LstmCliError):
    """The process training a member ended without a word (a kill, out of memory). Its
    message says what ended; the caller, which knows what a resume would continue, ends
    it (errors.resume_hint)."""


def _death(task, proc) -> tuple:
    """The report of the process training ``task``, which ended without a word: a stop
    signal's default action (as it started, before it set its handlers, or outside its
    training loop) is a stop that saved nothing on it; anything else a death."""
    proc.join()
    code = proc.exitcode
    if code is not None and -code in STOP_SIGNALS:
        where = f"{task.cfg.output.dir} ended by it outside its training loop"
        return "stopped", (f"{signal_name(-code)}: {where}, saving nothing on it", -code)
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return "died", f"{task.cfg.output.dir}: the process training it died ({how})"


def _reply_to(hook, training):
    """Run ``hook(training)`` for a member: None, or its error as the member will raise it."""
    try:
        hook(training)
    except errors.LstmCliError as err:
        return "error", (type(err).__name__, str(err), err.exit_code)
    return None


def _error_of(kind, value):
    """The child's report as the exception it stands for (None: the member finished)."""
    if kind == "ok":
        return None
    if kind == "stopped":
        return errors.Interrupted(*value)
    if kind == "died":  # not a bug here: the system (or a user) ended it
        return MemberDied(value)
    if kind == "error":
        name, message, exit_code = value
        cls = getattr(errors, name, errors.LstmCliError)
        err = cls(message)
        err.exit_code = exit_code
        return err
    return RuntimeError(value)


def _outside_fit(signum, frame) -> None:
    """A member's stop signal outside fit's SignalGuard: the default (the process ends),
    except for a repeat of the signal that stopped it, which reached it twice (as sent and
    forwarded) and must not cut short its report of how it stopped."""
    if signum != SignalGuard.caught:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


class _AskParent:
    """A member's before_first_checkpoint: asks the parent to run its hook (the take-over)
    and waits until it has. ``done``: the hook has run, maybe for another member, so the
    earlier run's files in this member's folder are gone."""

    def __init__(self, conn, taken):
        self.conn, self.taken = conn, taken

    @property
    def done(self) -> bool:
        return bool(self.taken.value)

    def __call__(self):
        self.conn.send(("first checkpoint", None))
        failed = self.conn.recv()
        if failed is not None:
            raise _error_of(*failed)


def _child(task: MemberTask, conn, taken) -> None:
    """Process entry point: fit one member, report through ``conn``; taken (the parent's
    flag of its hook's done, or None: nothing to ask): before its first checkpoint, ask
    the parent to run its hook and wait until it has."""
    os.setpgrp()  # a terminal's Ctrl-C goes to the parent, which passes it on once
    # a signal sent to every process (scancel, systemd) comes twice: as sent and forwarded
    SignalGuard.repeat_gives_up = False
    for sig in STOP_SIGNALS:
        signal.signal(sig, _outside_fit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one pending ends it now
    from tqdm import tqdm

    from .distributed import SingleProcess

    # a member shows no bar; tqdm's default lock between processes is a semaphore, which
    # the parent's resource tracker reports as leaked after the Error: line of a kill
    tqdm.set_lock(threading.RLock())

    def tell(message):
        try:
            conn.send(message)
        except OSError:  # the parent is gone (a second Ctrl-C gives up at once): no one to tell
            pass

    try:
        task.fit(
            progress=False,
            log=lambda msg: tell(("log", str(msg))),
            comm=SingleProcess(),
            before_first_checkpoint=None if taken is None else _AskParent(conn, taken),
        )
        tell(("ok", None))
    except errors.Interrupted as err:
        tell(("stopped", (err.stopped, err.signum, err.resume)))
    except (KeyboardInterrupt, errors.Terminated) as err:  # a second, other signal: at once
        signum = signal.SIGINT if isinstance(err, KeyboardInterrupt) else signal.SIGTERM
        tell(("stopped", (f"{signal_name(signum)}: stopped at once, saving nothing", signum)))
    except errors.LstmCliError as err:
        tell(("error", (type(err).__name__, str(err), err.exit_code)))
    except BaseException:  # a bug: its traceback, for the parent to raise
        tell(("bug", traceback.format_exc()))
    finally:
        conn.close()

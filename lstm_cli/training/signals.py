"""SIGINT/SIGTERM during training: finish the current batch, save, then stop."""

from __future__ import annotations

import signal
import threading

from ..errors import Terminated

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalGuard:
    """While active, SIGINT/SIGTERM only set ``signum`` (the loop saves and stops after the
    current batch); a second signal restores the default behaviour and interrupts at once.
    Only installed in the main thread (signal handlers cannot be set elsewhere)."""

    repeat_gives_up = True  # process-wide; False: the first signal again is not a second
    caught = None  # process-wide: the first signal a guard took in this process

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signum and not self.repeat_gives_up:
            return
        if self.signum is not None:  # second signal: give up at once
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Terminated
        self.signum = SignalGuard.caught = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def signal_name(signum) -> str:
    """'SIGINT' / 'SIGTERM' for the stop signals, else the number."""
    return {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(signum, str(signum))

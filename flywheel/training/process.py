"""The training child's plumbing: its event pipe to the daemon, and stop requests.

Its own module, not child.py: `python -m flywheel.training.child` runs child.py as
`__main__`, and a second copy of `STOP` imported from `flywheel.training.child` would never
see the signal the first one was installed for.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import Any, TextIO

from flywheel.core.events import BatchProgress, TrainingEvent, encode


class Reporter:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self._last_progress = 0.0

    def send(self, event: TrainingEvent) -> None:
        try:
            self.stream.write(encode(event) + "\n")
            self.stream.flush()
        except BrokenPipeError:  # the daemon is gone: nobody will use this run's result
            STOP.requested = "the process that started this run is gone (its pipe is closed)"
            raise Cancelled(STOP.requested) from None

    def progress(self, event: BatchProgress) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.send(event)


class Cancelled(Exception):
    """The run was asked to stop (SIGTERM, or the daemon that started it is gone)."""


class _Stop:
    """SIGTERM: stop after the current batch while training, at once otherwise."""

    def __init__(self) -> None:
        self.requested = ""
        self.in_loop = False
        self.parent = os.getppid()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        _term_with_parent()
        if os.getppid() != self.parent:  # the parent died before the kernel could be told
            self.requested = "the process that started this run is gone"

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if os.getppid() != self.parent:  # the kernel's PR_SET_PDEATHSIG signal: say what it means
            self.requested = "the process that started this run is gone"
        else:
            self.requested = f"stopped by {signal.Signals(signum).name}"
        if not self.in_loop:
            raise Cancelled(self.requested)

    def check(self) -> None:
        if not self.requested and os.getppid() != self.parent:
            self.requested = "the process that started this run is gone"
        if self.requested:
            raise Cancelled(self.requested)


STOP = _Stop()


def _term_with_parent() -> None:
    """Ask Linux for a SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG), so a SIGKILLed
    daemon leaves no training behind it for long; elsewhere, `check()`'s ppid test does it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

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
            STOP.requested = f"{PARENT_GONE_REASON} (its pipe is closed)"
            raise Cancelled(STOP.requested) from None

    def progress(self, event: BatchProgress) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.send(event)


class Cancelled(Exception):
    """The run was asked to stop (SIGTERM, or the daemon that started it is gone)."""


# The signal the kernel sends this child when its parent dies: its own, so that a dead daemon
# is never read as a request to stop (SIGTERM: `flywheel train --cancel`, a shutdown, Ray).
PARENT_GONE = signal.SIGHUP
PARENT_GONE_REASON = "the process that started this run is gone"


class _Stop:
    """SIGTERM or PARENT_GONE: stop after the current batch while training, at once otherwise."""

    def __init__(self) -> None:
        self.requested = ""
        self.in_loop = False
        self.parent = os.getppid()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(PARENT_GONE, self._on_parent_gone)
        _signal_when_parent_dies()
        if os.getppid() != self.parent:  # the parent died before the kernel could be told
            self.requested = PARENT_GONE_REASON

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if os.getppid() != self.parent:
            self._stop(PARENT_GONE_REASON)
        else:
            self._stop(f"stopped by {signal.Signals(signum).name}")

    def _on_parent_gone(self, _signum: int, _frame: Any) -> None:
        # Not read off getppid(): a SIGKILLed daemon's threads die one by one, and the kernel
        # signals when the one that started this child exits, while the process still holds
        # the pid (seen in CI: "stopped by SIGTERM" for a killed daemon).
        self._stop(PARENT_GONE_REASON)

    def _stop(self, reason: str) -> None:
        if not self.requested.startswith(PARENT_GONE_REASON):  # a dead parent outranks a request
            self.requested = reason
        if not self.in_loop:
            raise Cancelled(self.requested)

    def check(self) -> None:
        if not self.requested and os.getppid() != self.parent:
            self.requested = PARENT_GONE_REASON
        if self.requested:
            raise Cancelled(self.requested)


STOP = _Stop()


def _signal_when_parent_dies() -> None:
    """Ask Linux for PARENT_GONE when the parent dies (prctl PR_SET_PDEATHSIG), so a SIGKILLed
    daemon leaves no training behind it for long; elsewhere, `check()`'s ppid test does it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, PARENT_GONE, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

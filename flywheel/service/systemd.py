"""systemd's service notification protocol (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

Under `Type=notify` systemd passes a datagram socket in `NOTIFY_SOCKET` and, with
`WatchdogSec=`, the watchdog period in `WATCHDOG_USEC` (for the process `WATCHDOG_PID`). Outside
systemd (a terminal, a container) `NOTIFY_SOCKET` is unset and every call here does nothing.

The datagrams are sent by `sdnotify` (PyPI, MIT): one pure-Python file with no dependencies,
whose `notify(state)` sends any message (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1) and
handles abstract socket names (`@...`); it is old (2017), but so is the protocol, which has
not changed. Compared: `systemd-python` binds libsystemd and needs its headers and a compiler to
install; `cysystemd` is a Cython build as well; `systemd-watchdog` is typed but has no public
call for STOPPING=1, and its current release needs Python 3.12; `notify2` is for desktop
notifications over D-Bus, not systemd at all.

`StatusObserver` turns what the work loop does into STATUS lines ("training r0003 epoch 2/20")
and heartbeats, and passes every call on to the metrics observer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from sdnotify import SystemdNotifier

from flywheel.core.domain import RunState, StartKind, run_name
from flywheel.core.events import EpochEnded, Evaluated, Trained, TrainingEvent
from flywheel.core.ports import Observer
from flywheel.service.health import Heartbeat

log = logging.getLogger(__name__)

SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog period systemd set for this process (sd_watchdog_enabled), or None."""
    usec = environ.get(WATCHDOG_USEC_ENV, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get(WATCHDOG_PID_ENV, "")
    if owner and owner != str(pid):  # meant for another process (e.g. our parent)
        return None
    return int(usec) / 1_000_000


class ServiceNotifier:
    """Tells systemd how the service is doing; a no-op when not started by systemd.

    `from_environment` takes the variables out of the environment (as sd_notify's
    `unset_environment` does), so the training child processes never see them.
    """

    def __init__(self, notifier: SystemdNotifier | None = None, watchdog: float | None = None, address: str = ""):
        self._notifier = notifier
        self.watchdog_seconds = watchdog if notifier is not None else None
        self.address = address
        self._warned = False

    @classmethod
    def from_environment(cls) -> ServiceNotifier:
        address = os.environ.get(SOCKET_ENV, "")
        notifier = None
        if address:
            try:
                notifier = SystemdNotifier(debug=True)  # connects to $NOTIFY_SOCKET
            except OSError as exc:
                log.warning("systemd notification socket %s unusable: %s", address, exc)
        watchdog = watchdog_seconds(os.environ, os.getpid())
        for name in (SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV):
            os.environ.pop(name, None)
        return cls(notifier, watchdog, address)

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self, status: str) -> None:
        self._send("STOPPING=1", f"STATUS={status}")

    def _send(self, *assignments: str) -> None:
        if self._notifier is None:
            return
        # One datagram per call; a STATUS text must be a single line. systemd reads UTF-8 while
        # sdnotify encodes as latin-1, so hand it the UTF-8 bytes spelled as latin-1 characters.
        message = "\n".join(a.replace("\n", " ") for a in assignments) + "\n"
        try:
            self._notifier.notify(message.encode("utf-8").decode("latin-1"))
        except OSError as exc:  # systemd gone or restarting: never let this stop the daemon
            if not self._warned:
                log.warning("cannot notify systemd on %s: %s", self.address, exc)
                self._warned = True


class StatusObserver:
    """An `Observer` that reports training progress to systemd and the heartbeat, then
    passes each call on to `inner` (the metrics)."""

    def __init__(self, inner: Observer, notifier: ServiceNotifier, heartbeat: Heartbeat):
        self.inner = inner
        self.notifier = notifier
        self.heartbeat = heartbeat
        self._run = ""
        self._epochs = 0
        self._status = ""
        self._unhealthy = False

    def ready(self, status: str) -> None:
        """Start-up is done: READY=1 with the first STATUS line."""
        self.heartbeat.beat(status)
        self._status = status
        self.notifier.ready(status)

    def step(self, status: str) -> None:
        """The work loop starts a step (or goes idle): a beat, and a STATUS line if it changed."""
        self.heartbeat.beat(status)
        self._say(status)

    def watchdog(self) -> None:
        """A scheduler job, every half watchdog period: WATCHDOG=1 while the work loop is alive.
        When it has stalled the pings stop, and systemd kills and restarts the daemon."""
        check = self.heartbeat.check()
        if check.ok:
            self.notifier.watchdog()
            self._unhealthy = False
        elif not self._unhealthy:
            self._unhealthy = True
            log.error("%s: no more watchdog pings", check.detail)
            self.notifier.status(f"unhealthy: {check.detail}")

    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None:
        self.heartbeat.beat()
        self.inner.batch_processed(seconds, quarantined_reasons)

    def training_started(self, run_id: int, start_kind: StartKind, epochs: int) -> None:
        self._run, self._epochs = run_name(run_id), epochs
        self._training(True, f"training {self._run} ({start_kind}) epoch 0/{epochs}")
        self.inner.training_started(run_id, start_kind, epochs)

    def training_event(self, event: TrainingEvent) -> None:
        if isinstance(event, EpochEnded):
            self._training(True, f"training {self._run} epoch {event.epoch}/{event.epochs}")
        elif isinstance(event, Trained):
            self._training(True, f"evaluating {self._run}")
        elif isinstance(event, Evaluated):
            self._training(True, f"evaluated {self._run} ({event.role})")
        else:
            self.heartbeat.beat()
        self.inner.training_event(event)

    def training_finished(self, outcome: RunState, seconds: float) -> None:
        self._training(False, f"training {self._run} {outcome} after {seconds:.0f}s")
        self.inner.training_finished(outcome, seconds)

    def _training(self, running: bool, status: str) -> None:
        self.heartbeat.training(running, status)
        self._say(status)

    def _say(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self.notifier.status(status)

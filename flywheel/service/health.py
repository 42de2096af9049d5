"""Liveness and readiness: what /healthz, /readyz and the systemd watchdog report.

Liveness: the daemon's work loop is alive. It beats when it wakes (at least every few seconds
while idle), at each step and at each training event. It is stalled when no beat came for
`health.stall_seconds` outside a training; a training is guarded by `training.timeout_seconds`
instead, since a long validation sends no event for a while and restarting the daemon for it
would only start the training again.

Readiness: start-up is done and the daemon is not stopping, the database answers, the data
root takes a write, and the last step met no storage problem (Degraded). Each check runs with a
time limit, so a hung database cannot hang /readyz.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from flywheel.core.errors import IntegrityError, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class Heartbeat:
    """The work loop's pulse and what it is doing (thread-safe)."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._lock = threading.RLock()  # re-entrant: a signal handler may ask while a beat holds it
        self._last = clock()
        self._activity = "starting"
        self._training = False
        self._stopped = False

    def beat(self, activity: str | None = None) -> None:
        with self._lock:
            self._last = self._clock()
            if activity is not None:
                self._activity = activity

    def training(self, running: bool, activity: str) -> None:
        with self._lock:
            self._training = running
            self._last = self._clock()
            self._activity = activity

    def stopped(self) -> None:
        with self._lock:
            self._stopped = True
            self._activity = "stopped"

    @property
    def activity(self) -> str:
        with self._lock:
            return self._activity

    def check(self) -> Check:
        with self._lock:
            age = self._clock() - self._last
            activity, training, stopped = self._activity, self._training, self._stopped
        if stopped:
            return Check("work_loop", False, "the work loop has stopped")
        if self.stall_seconds and not training and age > self.stall_seconds:
            return Check(
                "work_loop",
                False,
                f"the work loop is stalled: no progress for {age:.0f}s (health.stall_seconds = "
                f"{self.stall_seconds:g}) while {activity}",
            )
        return Check("work_loop", True, f"{activity}; last beat {age:.1f}s ago")


def database_check(engine: Engine) -> Check:
    url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        return Check("database", False, f"database {url} unreachable: {first}")
    return Check("database", True, f"{url} answers")


def data_root_check(root: Path) -> Check:
    """Create, write, fsync and delete a small file in the data root."""
    probe = root / f".readyz-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        return Check("data_root", False, f"data root {root} is not writable: {exc.strerror or exc}")
    return Check("data_root", True, f"{root} writable, {free // 2**20} MiB free")


class _Flight:
    """One run of a check in a daemon thread, which any number of callers may wait on."""

    def __init__(self, name: str, check: Callable[[], Check]) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result: Check | None = None

        def target() -> None:
            try:
                self.result = check()
            except Exception as exc:  # a check must report, never raise into the HTTP handler
                self.result = Check(name, False, f"{name} check failed: {exc!r}")
            self.done.set()

        threading.Thread(target=target, name=f"readyz-{name}", daemon=True).start()


class TimedCheck:
    """Runs a check in a daemon thread with a time limit. Callers that arrive while a check is
    in flight share its answer (overlapping probes must not fail each other: 30 of 100 did
    when each one wanted its own); one that hangs past the limit is reported failing and not
    started again, so hung checks never pile up."""

    def __init__(self, name: str, check: Callable[[], Check], timeout: float):
        self.name = name
        self.check = check
        self.timeout = timeout
        self._flight: _Flight | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Check:
        with self._lock:
            flight = self._flight
            if flight is None or flight.done.is_set():
                flight = self._flight = _Flight(self.name, self.check)
        remaining = flight.started + self.timeout - time.monotonic()
        if flight.done.wait(max(remaining, 0.0)) and flight.result is not None:
            return flight.result
        if remaining <= 0:
            age = time.monotonic() - flight.started
            return Check(self.name, False, f"{self.name} check still hangs ({age:.0f}s, limit {self.timeout:g}s)")
        return Check(self.name, False, f"{self.name} check did not answer within {self.timeout:g}s")


class Health:
    """Liveness and readiness of one daemon, as the HTTP endpoints and the watchdog ask."""

    def __init__(
        self,
        heartbeat: Heartbeat,
        engine: Engine,
        root: Path,
        started: threading.Event,
        stopping: threading.Event,
        timeout: float = 5.0,
        degraded: Degraded | None = None,
    ):
        self.heartbeat = heartbeat
        self.degraded = degraded or Degraded()
        self.started = started
        self.stopping = stopping
        self._database = TimedCheck("database", lambda: database_check(engine), timeout)
        self._data_root = TimedCheck("data_root", lambda: data_root_check(root), timeout)

    def liveness(self) -> list[Check]:
        return [self.heartbeat.check()]

    def readiness(self) -> list[Check]:
        if self.stopping.is_set():
            state = Check("daemon", False, "stopping")
        elif not self.started.is_set():
            state = Check("daemon", False, "starting")
        else:
            state = Check("daemon", True, self.heartbeat.activity)
        return [state, self.heartbeat.check(), self.degraded.check(), self._database(), self._data_root()]


# errno values that say the data root cannot take writes: the daemon degrades, never dies of them
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def storage_problem(exc: BaseException) -> bool:
    """A full or read-only disk, as the store reports it (StoreError) or the OS does."""
    if isinstance(exc, StoreError):
        return not isinstance(exc, IntegrityError)  # a changed file is not a disk condition
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_message(exc: OSError) -> str:
    where = f" at {exc.filename}" if exc.filename else ""
    return (
        f"cannot write{where}: {exc.strerror or exc}. Free space on the data root's disk, or make it writable; "
        "the daemon retries by itself"
    )


class Degraded:
    """The daemon is alive but cannot do its work (disk full, read-only data root, database
    refusing writes, a Ray cluster that cannot be reached), or a part of it (`source`: a Label
    Studio that cannot be reached stops the pulls, not ingest and training): /readyz says why,
    the `flywheel_degraded` gauge is 1, the reason is logged once (not at every retry), and the
    first step of that source that works again clears it."""

    def __init__(self, gauge: Callable[[bool], None] | None = None):
        self._gauge = gauge or (lambda on: None)
        self._lock = threading.Lock()
        self._reasons: dict[str, str] = {}

    @property
    def reason(self) -> str:
        with self._lock:
            return "; ".join(self._reasons.values())

    def set(self, reason: str, source: str = "work") -> None:
        with self._lock:
            changed = reason != self._reasons.get(source)
            self._reasons[source] = reason
        if changed:
            log.error("degraded, still serving /metrics and retrying: %s", reason)
        self._gauge(True)

    def clear(self, source: str = "work") -> None:
        with self._lock:
            was = self._reasons.pop(source, "")
            still = bool(self._reasons)
        if was:
            log.info("recovered: no longer degraded (it was: %s)", was.splitlines()[0])
        self._gauge(still)

    def check(self) -> Check:
        reason = self.reason
        return Check("work", not reason, f"degraded: {reason}" if reason else "no storage problem")

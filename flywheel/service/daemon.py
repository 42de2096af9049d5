"""The daemon: watch the inbox, ingest complete batches, train on each new version, serve
/metrics. Runs in the foreground, as systemd or a container expects.

Threads: watchdog's observer notes file events; APScheduler's interval jobs wake the worker
when a batch has settled and, as a safety net, every `rescan_seconds`; one worker thread does
all ingest and training in order, so there is never more than one training at a time.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from flywheel.core.config import LABEL_STUDIO_HOOK
from flywheel.core.domain import batch_name, run_name, version_name
from flywheel.core.errors import (
    DataRootError,
    ExecutorUnavailable,
    ExitCode,
    FlywheelError,
    IntegrityError,
    TrainingCancelled,
)
from flywheel.core.ports import RemoteTrainer
from flywheel.flow.recovery import mark_interrupted
from flywheel.service import label_pull, train_queue
from flywheel.service.backoff import Backoff
from flywheel.service.cron import cron_trigger
from flywheel.service.daemon_parts import DaemonAdapters, DaemonWork
from flywheel.service.health import storage_message, storage_problem
from flywheel.service.label_pull import LabelPullJob
from flywheel.service.trigger import Trigger

log = logging.getLogger(__name__)

IDLE_BEAT_SECONDS = 5.0  # an idle work loop still wakes this often to show it is alive


class Daemon:
    """The work loop and its start and stop; its work and every adapter it runs on come built,
    from flywheel.app.build_daemon, which also made the flows' observer the systemd/metrics chain."""

    def __init__(self, work: DaemonWork, adapters: DaemonAdapters):
        self.work = work
        self.adapters = adapters
        self.metrics_registry = adapters.metrics_registry  # Prometheus's; the model registry is work.registry
        self.live = adapters.live
        self.degraded = adapters.degraded
        self.tracker = adapters.tracker
        self.stopping = adapters.stopping
        self._wake = threading.Event()
        self.metrics_port = 0
        self.ready = adapters.ready
        self.trigger = Trigger(work, self.wake)
        # systemd's notify protocol, the work loop's heartbeat, STATUS lines (flywheel.service.systemd)
        self.notifier = adapters.notifier
        self.heartbeat = adapters.heartbeat
        self.status = adapters.status
        self._executor_where = ""
        self.backoff = Backoff()
        self._retrying: set[str] = set()  # inbox batches whose ingest failed for a storage reason
        self._gc_due = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing the current step")
            self.notifier.stopping(f"stopping: finishing {self.heartbeat.activity}")
        self.stopping.set()
        self._wake.set()
        self.work.trainer.cancel()

    def run(self) -> None:
        """Serve until `stop()` (or SIGTERM/SIGINT when run from the main thread)."""
        work, config = self.work, self.work.config
        with self.adapters.lock():
            try:
                self._check_production()  # before publish, which needs the registry's copy intact
                work.registry.publish()  # heal a crash between a production commit and its swap
            except IntegrityError as exc:  # serve, say so on /readyz, train from nothing damaged
                self.degraded.set(str(exc))
            for r in mark_interrupted(work.store, work.registry):  # a run a dead daemon left "running"
                policy = config.training.on_interrupt
                log.warning("run %s was interrupted (on_interrupt: %s)", run_name(r.id or 0), policy)
            train_queue.drop_taken(work.data_root)
            pull = None
            hooks: dict[str, Callable[[], None]] = {}
            if work.pull_labels is not None:  # beside the loop: Label Studio away degrades, blocks nothing
                pull = LabelPullJob(work.pull_labels, self.degraded, self.wake, work.register_label_hook)
                if work.register_label_hook is not None:  # [labelstudio] webhook_url: its posts pull at once
                    hooks[LABEL_STUDIO_HOOK] = pull.request
            server = self.adapters.http_server(hooks)
            self.metrics_port = server.port
            log.info("metrics on http://%s:%d/metrics", config.metrics.host, self.metrics_port)
            watcher = self.adapters.inbox_watcher(self.wake)
            watcher.start()
            scheduler = self.adapters.scheduler
            settle = max(0.2, min(1.0, config.inbox.settle_seconds / 4))
            scheduler.add_job(self._check_settled, "interval", seconds=settle, id="settle")
            scheduler.add_job(self.wake, "interval", seconds=config.inbox.rescan_seconds, id="rescan")
            if config.schedule.cron:
                trigger = cron_trigger(config.schedule.cron)
                scheduler.add_job(self.trigger.cron_fired, trigger, id="cron")
            if config.retention.gc_interval_hours > 0:  # gc runs in the work loop, between trainings
                hours = config.retention.gc_interval_hours
                scheduler.add_job(self._gc_due.set, "interval", hours=hours, id="gc")
            if pull is not None:
                label_pull.schedule(scheduler, pull, config.labelstudio.poll_seconds)
            if self.notifier.watchdog_seconds:  # WatchdogSec=: ping at half the period, however late
                interval = self.notifier.watchdog_seconds / 2
                scheduler.add_job(
                    self.status.watchdog, "interval", seconds=interval, id="watchdog", misfire_grace_time=None
                )
            scheduler.start()
            self.ready.set()
            self.status.ready(self._idle)
            log.info("flywheel running on %s", work.data_root)
            try:
                self._work_loop()
            finally:
                scheduler.shutdown(wait=False)
                watcher.stop()
                self.heartbeat.stopped()
                self.notifier.stopping("stopped")
                server.stop()
                log.info("stopped")

    @property
    def _idle(self) -> str:
        note = f"; {self.trigger.note}" if self.trigger.note else ""
        return f"idle: watching {self.work.inbox}{note}"

    def _check_settled(self) -> None:
        if self.tracker.complete():
            self.wake()

    def _work_loop(self) -> None:
        self._wake.set()  # look at the inbox once at start-up
        while not self.stopping.is_set():
            pause = self.backoff.remaining()
            if pause > 0:  # a step failed for an outside reason: file events and ticks wait it out
                if self.stopping.wait(min(pause, IDLE_BEAT_SECONDS)):
                    break
                self.heartbeat.beat()
                if self.backoff.remaining() == 0:
                    self._wake.set()
                continue
            if not self._wake.wait(IDLE_BEAT_SECONDS):
                self.heartbeat.beat()
                continue
            self._wake.clear()
            if self.stopping.is_set():
                break
            try:
                self._step()
            except TrainingCancelled as exc:
                log.info("%s", exc)
            except ExecutorUnavailable as exc:  # the cluster: said once, trainings wait, retried after a pause
                self.live.executor_up.labels(self.work.config.training.executor).set(0)
                self._retry_later("executor", str(exc))
            except IntegrityError as exc:  # said once (Degraded logs changes only), on /readyz and the gauge
                self._retry_later("integrity", str(exc))
            except (FlywheelError, OSError) as exc:
                if storage_problem(exc):  # disk full, read-only, database away: alive, retried after a pause
                    self._retry_later("storage", str(exc) if isinstance(exc, FlywheelError) else storage_message(exc))
                elif isinstance(exc, FlywheelError):
                    log.error("%s", exc)  # logged; the daemon goes on with the next work
                else:
                    raise  # an OSError that is no storage condition is a bug: let it show
            else:
                self.backoff.succeeded()
                self.degraded.clear()
            if not self.stopping.is_set():
                self.status.step(self._idle)

    def _retry_later(self, reason: str, why: str) -> None:
        """Degraded with `why` (logged once per change), and the next try after a pause that
        doubles with each failure in a row: an outage costs a few log lines, not a hot loop."""
        self.degraded.set(why)
        self.live.retries.labels(reason).inc()
        pause = self.backoff.failed()
        log.debug("retrying in %.1fs (%s, %d in a row)", pause, reason, self.backoff.failures)

    def _check_production(self) -> None:
        """Production's two copies against its sha256, at start and before each step that may
        train from it: one damaged copy is restored from the other; both: IntegrityError."""
        restored = self.work.registry.heal_production()
        if restored:
            log.warning("production model restored: %s", restored)

    def _check_executor(self) -> None:
        """Before trainings: the place they run takes them (a Ray cluster answers and, once, a
        trainer node sees the data root at its path); else ExecutorUnavailable, and nothing
        trains this step: the waiting versions and interrupted runs stay as they are."""
        trainer, executor = self.work.trainer, self.work.config.training.executor
        if isinstance(trainer, RemoteTrainer):
            try:
                where = trainer.check(self.work.data_root)
            except DataRootError as exc:  # the shared file system is not mounted right: the same wait
                raise ExecutorUnavailable(str(exc)) from None
            if where != self._executor_where:
                self._executor_where = where
                log.info("trainings run on the %s", where)
        self.live.executor_up.labels(executor).set(1)

    def _step(self) -> None:
        # A training whose recording failed for good (the database away past its wait) is left
        # "running" with nobody running it; that only happens in a step that failed, so only then
        # (not at every wake) is it recorded interrupted, to resume now rather than at a restart.
        # Between steps this worker thread runs no training.
        if self.backoff.failures:
            for r in mark_interrupted(self.work.store, self.work.registry):
                log.warning("run %s was left running with nobody running it: interrupted", run_name(r.id))
        for batch_dir in self.tracker.complete():  # ingest needs no production model: it goes on
            if self.stopping.is_set():
                return
            self._ingest(batch_dir)
        if self._gc_due.is_set() and not self.stopping.is_set():
            self._gc_due.clear()
            freed = self.work.cases.collect_garbage("flywheel")
            if freed.removals:  # the ledger has the details; nothing freed is not news
                log.info("gc: freed %d bytes in %d paths (retention policy)", freed.freed, len(freed.removals))
        self._check_production()  # a damaged production model: degraded, nothing trains from it
        self._check_executor()  # a cluster that cannot be reached: degraded, the versions wait
        if not self.stopping.is_set():
            self.work.cases.resume_interrupted()  # resume or restart per training.on_interrupt
        self.trigger.asked(self.stopping)  # `flywheel train` while the daemon runs, then the schedule
        if not self.stopping.is_set():
            self.trigger.scheduled()
        if not self.stopping.is_set():  # [mlflow]: what waits goes up; while it is down, after a backoff
            self.work.cases.sync_mirror()

    def _ingest(self, batch_dir: Path) -> None:
        # once per batch, not at every retry of a database or disk outage (also when the outage
        # began before the batch came: then its first try is a retry of the step)
        retry = batch_dir.name in self._retrying
        log.log(logging.DEBUG if retry else logging.INFO, "batch %s complete, ingesting", batch_dir.name)
        self.status.step(f"ingesting batch {batch_dir.name}")
        try:
            result = self.work.cases.ingest(batch_dir, move=True)
        except FlywheelError as exc:
            if storage_problem(exc):
                self._retrying.add(batch_dir.name)
                raise  # not the batch's fault: retried at each rescan until the disk takes writes again
            self._retrying.discard(batch_dir.name)
            self.tracker.hold(batch_dir.name)
            log.error(
                "batch %s left in the inbox, to be retried when it changes or on restart: %s", batch_dir.name, exc
            )
            return
        self._retrying.discard(batch_dir.name)
        b = result.batch
        if result.left_in_inbox:  # done, but it may not be moved: not looked at again until it changes
            self.tracker.hold(batch_dir.name)
            self.live.inbox_left.labels(batch_dir.name).set(1)
        else:
            self.tracker.forget(batch_dir.name)
        if b.state == "rejected":
            return  # the ingest service logged why, and where the files went
        if result.already:
            log.info("batch %s: same content as %s, ingested already", batch_dir.name, batch_name(b.id or 0))
            return
        log.info(
            "batch %s ingested: %d images accepted (%d new, %d relabelled), %d files quarantined%s, %s",
            batch_name(b.id or 0),
            result.accepted,
            result.new_images,
            result.relabelled,
            len(result.quarantined),
            f" to {b.quarantine_dir}" if result.quarantined else "",
            f"new version {version_name(result.version.id or 0)}" if result.version else "no new version",
        )
        if result.version and self.work.config.screen.enabled:
            self._screen(b.id)

    def _screen(self, batch_id: int) -> None:
        """Before the version can train (flywheel/flow/screening.py); a screening that fails is
        logged and the batch goes on as if reported: a broken model must not stop the data."""
        self.status.step(f"screening batch {batch_name(batch_id)}")
        try:
            self.work.cases.screen(batch_id)
        except FlywheelError as exc:
            log.error("screening of %s failed, the batch goes on unscreened: %s", batch_name(batch_id), exc)


def serve(daemon: Daemon) -> None:
    """Run the daemon (flywheel.app.build_daemon) in the foreground until SIGTERM or SIGINT; a
    second signal, or a stop that outlasts `daemon.shutdown_timeout`, exits at once."""
    timeout = daemon.work.config.daemon.shutdown_timeout

    def overdue() -> None:
        log.error(
            "still stopping %.0fs after the signal (daemon.shutdown_timeout, now %s): exiting now",
            timeout,
            daemon.heartbeat.activity,
        )
        logging.shutdown()
        os._exit(ExitCode.SHUTDOWN_TIMEOUT)  # not SystemExit: a thread stuck in I/O must not hold the exit

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if daemon.stopping.is_set():
            log.warning("second signal: exiting now")
            raise SystemExit(ExitCode.SIGNALLED + signum)
        log.info("received %s: stopping within %.0fs", signal.Signals(signum).name, timeout)
        timer = threading.Timer(timeout, overdue)
        timer.daemon = True
        timer.start()
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    daemon.run()
    log.info("ran for %.0fs", time.monotonic() - started)

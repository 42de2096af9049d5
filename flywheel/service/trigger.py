"""The daemon's trainings: the ones people ask for (`flywheel train`, flywheel.service.train_queue) and the
ones the schedule calls for (flywheel.core.schedule). Called by the daemon's one worker, so never
two trainings at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flywheel.core import schedule
from flywheel.core.domain import version_name
from flywheel.flow.cycle import trainable
from flywheel.flow.screen_release import holding
from flywheel.flow.waiting import waiting
from flywheel.service import train_queue
from flywheel.service.daemon_parts import DaemonWork

log = logging.getLogger(__name__)


class Trigger:
    def __init__(self, work: DaemonWork, wake: Callable[[], None]):
        self.work = work
        self.wake = wake
        self.note = ""  # why the newest version is not training yet, for STATUS lines
        self.cron_due = False  # the cron schedule came: train whatever waits
        self._timer: threading.Timer | None = None
        self._told: set[int] = set()

    def asked(self, stopping: threading.Event) -> None:
        """Serve the train requests, oldest first: a person asked, before the schedule."""
        for request in train_queue.pending(self.work.data_root):
            if stopping.is_set():
                return
            self._serve(request)

    def scheduled(self) -> None:
        """Train if the schedule says so; else note why not, and when to look again."""
        work, cfg = self.work, self.work.config.schedule
        what = waiting(work.store, datetime.now(UTC))
        policy = schedule.SchedulePolicy(cfg.debounce_seconds, cfg.min_new_images, cfg.cron)
        verdict = schedule.decide_schedule(what, policy, self.cron_due)
        self.note = "" if what.version_id is None else verdict.why
        if what.version_id is None:
            self.cron_due = False  # the schedule came and nothing waited: until next time
        if verdict.retry_in is not None:
            self._wake_in(verdict.retry_in)
        if not verdict.train or what.version_id is None:
            return
        blocked = trainable(work.store, what.version_id) or holding(
            work.store, what.version_id, work.config.screen.hold_timeout_hours
        )
        if blocked:
            self.note = blocked  # on STATUS lines: why the newest version waits (a hold: what to run)
            if what.version_id not in self._told:  # once per version, not at every rescan
                self._told.add(what.version_id)
                log.info("%s", blocked)
            return
        self.cron_due = False
        self.note = ""
        log.info("training on %s: %s", version_name(what.version_id), verdict.why)
        work.cases.train(what.version_id)

    def cron_fired(self) -> None:
        """APScheduler's cron job."""
        log.info("the training schedule (%s) came", self.work.config.schedule.cron)
        self.cron_due = True
        self.wake()

    def _serve(self, request: train_queue.TrainRequest) -> None:
        runs = self.work.store.runs()
        newest = (runs[-1].id or 0) if runs else 0
        taken = train_queue.take(self.work.data_root, request, newest)
        try:
            latest = self.work.store.latest_version()
            version_id = request.version_id or (latest.id if latest else None)
            if version_id is None:
                log.error("train request %s from %s: there is no dataset version yet", request.id, request.actor)
                return
            name = version_name(version_id)
            log.info("training on %s as %s asked (flywheel train, %s)", name, request.actor, request.id)
            self.work.cases.train(version_id, start_from=request.start_from)
        finally:
            train_queue.finish(taken, [r.id or 0 for r in self.work.store.runs() if (r.id or 0) > newest])

    def _wake_in(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(seconds + 0.05, self.wake)
        self._timer.daemon = True
        self._timer.start()

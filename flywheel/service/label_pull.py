"""The daemon's Label Studio pull, an APScheduler job every `labelstudio.poll_seconds` and, with
`labelstudio.webhook_url`, at once when Label Studio's webhook posts to /hooks/labelstudio
(flywheel/flow/labeling.py does the pull). It runs beside the work loop, never in it: the batch
it drops is ingested by the loop like any other, and a Label Studio that cannot be reached makes
the daemon degraded with the reason (source "labelstudio") while ingest and training go on.

The webhook's body is not read: it only says "pull now", and the pull reads what was finished
from Label Studio's API, each annotation once, so a forged or repeated post cannot add a label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler

from flywheel.core.errors import FlywheelError, LabelingToolUnavailable
from flywheel.core.labeling import PullResult
from flywheel.service.health import Degraded

log = logging.getLogger(__name__)
SOURCE = "labelstudio"


class LabelPullJob:
    """One pull at a time (the poll and the webhook may come together); `register`, when
    given, makes sure the project's webhook exists, tried at each run until it is."""

    def __init__(
        self,
        pull: Callable[[], PullResult],
        degraded: Degraded,
        wake: Callable[[], None],
        register: Callable[[], bool] | None = None,
    ):
        self._pull = pull
        self._degraded = degraded
        self._wake = wake
        self._register = register
        self._one = threading.Lock()  # held by the pull that runs
        self._state = threading.Lock()  # guards the two flags below
        self._asked = False  # a webhook post came since the last pull began
        self._draining = False  # a thread runs the pulls the webhook asked for

    def request(self) -> None:
        """The webhook's "pull now": at once, or right after the pull that runs (which may have
        read the tasks before this annotation was made). Many posts meanwhile make one pull."""
        with self._state:
            self._asked = True
            if self._draining:
                return
            self._draining = True
        threading.Thread(target=self._drain, name="label-pull-hook", daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._state:
                if not self._asked:
                    self._draining = False
                    return
                self._asked = False
            self()

    def __call__(self) -> None:
        with self._one:
            try:
                if self._register is not None:
                    if self._register():
                        log.info("Label Studio: the project's webhook now posts to this daemon")
                    self._register = None
                result = self._pull()
            except LabelingToolUnavailable as exc:
                self._degraded.set(f"{exc}; pulls wait, ingest and training go on", SOURCE)
                return
            except FlywheelError as exc:  # the database away: the same wait, retried at the next poll
                self._degraded.set(f"Label Studio pull: {exc}", SOURCE)
                return
        self._degraded.clear(SOURCE)
        if result.batch is None:
            return
        log.info(
            "Label Studio: pulled %d new and %d relabelled tasks into inbox/%s",
            len(result.tasks),
            len(result.relabels),
            result.batch,
        )
        for task, labels in result.unknown_labels.items():
            log.warning("Label Studio task %d: %s is no class of the project (quarantined at ingest)", task, labels)
        self._wake()


SAFETY_POLL_SECONDS = 300.0  # with the webhook alone: a post missed, or a webhook not registered yet


def schedule(scheduler: BaseScheduler, job: LabelPullJob, poll_seconds: float) -> None:
    """Add the pull, first now (what was finished while the daemon was away), then every
    `poll_seconds`; with the webhook alone (0), every SAFETY_POLL_SECONDS as a safety net."""
    seconds = poll_seconds or SAFETY_POLL_SECONDS
    scheduler.add_job(job, "interval", seconds=seconds, id="label-pull", next_run_time=datetime.now(UTC))

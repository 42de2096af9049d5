"""The daemon's Label Studio pull, an APScheduler job every `labelstudio.poll_seconds`
(flywheel/flow/labeling.py does the pull). It runs beside the work loop, never in it: the batch
it drops is ingested by the loop like any other, and a Label Studio that cannot be reached makes
the daemon degraded with the reason (source "labelstudio") while ingest and training go on."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flywheel.core.errors import FlywheelError, LabelingToolUnavailable
from flywheel.core.labeling import PullResult
from flywheel.service.health import Degraded

log = logging.getLogger(__name__)
SOURCE = "labelstudio"


class LabelPullJob:
    def __init__(self, pull: Callable[[], PullResult], degraded: Degraded, wake: Callable[[], None]):
        self._pull = pull
        self._degraded = degraded
        self._wake = wake

    def __call__(self) -> None:
        try:
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

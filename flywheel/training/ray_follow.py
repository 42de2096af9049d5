"""Following a run's Ray job to its end, whether it was just submitted or is found running by a
daemon that restarted: poll its status (riding out a job API that is briefly unreachable),
say where it was placed, tail runs/<run>/events.jsonl by byte offset, whole lines only, and stop
the job when cancel(), the CANCEL file or the timeout asks.

`JobFollowing` is the following half of flywheel.training.ray_jobs.RayJobTrainer, which sets
the settings and the stop request it reads; ray_submit.py is the submitting half, and
ray_errors.py turns the job's end into its outcome."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.core.domain import run_name
from flywheel.core.errors import EventError, ExecutorUnavailable
from flywheel.core.events import Placed, TrainingEvent, parse_event
from flywheel.core.spec import TrainSpec
from flywheel.training.local_trainer import CANCEL_FILE
from flywheel.training.ray_client import EVENTS_FILE, TERMINAL, RayJob, job_record
from flywheel.training.ray_errors import job_outcome

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)


class JobFollowing:
    """Follows one Ray job at a time to its outcome, and stops it when asked."""

    # set by RayJobTrainer.__init__
    address: str
    timeout_seconds: float
    poll_seconds: float
    lost_after_seconds: float
    job: RayJob | None
    _cancelled: threading.Event
    _wake: threading.Event
    _reason: str

    def _follow(
        self, client: JobSubmissionClient, spec: TrainSpec, job: RayJob, on_event: Callable[[TrainingEvent], None]
    ) -> list[TrainingEvent]:
        out = Path(spec.out_dir)
        name = run_name(spec.run_id)
        events: list[TrainingEvent] = []
        offset = 0
        started = time.monotonic()
        lost_since: float | None = None
        stop_sent = False
        placed = False
        self.job = job
        while True:
            try:
                details = client.get_job_info(job.submission_id)
                lost_since = None
            except (ConnectionError, OSError, RuntimeError) as exc:
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since > self.lost_after_seconds:
                    raise ExecutorUnavailable(
                        f"lost the Ray job API at {self.address} for {self.lost_after_seconds:.0f}s while "
                        f"following run {name} (job {job.submission_id}): {exc}. The job may still be "
                        "running; a restarted daemon attaches to it"
                    ) from None
                details = None
            if details is not None:
                job = job_record(details, job.attempt)
                self.job = job
                if job.node_id and not placed:  # the node is known once the job's entrypoint runs
                    placed = True
                    place = Placed("ray", job.node_id, job.submission_id)
                    events.append(place)
                    on_event(place)
            try:
                offset = _read_events(out / EVENTS_FILE, offset, events, on_event)
            except EventError as exc:  # the child and this daemon disagree on the format: stop it
                self._stop_quietly(client, job)
                raise EventError(f"training run {name} stopped: {exc}. Full log: {out / 'train.log'}") from None
            if not self._cancelled.is_set() and (reason := self._stop_reason(out, started)):
                self._reason = reason
                self._cancelled.set()
            if self._cancelled.is_set() and not stop_sent and job.status not in TERMINAL:
                log.info("run %s: stopping Ray job %s (%s)", name, job.submission_id, self._reason or "cancel")
                stop_sent = True
                try:
                    client.stop_job(job.submission_id)
                except (ConnectionError, OSError, RuntimeError) as exc:
                    log.warning("run %s: could not stop Ray job %s: %s", name, job.submission_id, exc)
                    stop_sent = False
            if job.status in TERMINAL:
                offset = _read_events(out / EVENTS_FILE, offset, events, on_event)
                break
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
        return job_outcome(client, spec, job, events, cancelled=self._cancelled.is_set(), reason=self._reason)

    def _stop_quietly(self, client: JobSubmissionClient, job: RayJob) -> None:
        try:
            client.stop_job(job.submission_id)
        except (ConnectionError, OSError, RuntimeError) as exc:
            log.warning("could not stop Ray job %s: %s", job.submission_id, exc)

    def _stop_reason(self, out: Path, started: float) -> str:
        cancel_file = out / CANCEL_FILE
        if cancel_file.exists():
            reason = cancel_file.read_text().strip() or f"asked by {cancel_file}"
            log.info("%s asks to stop the run: %s", cancel_file, reason)
            return reason
        if self.timeout_seconds and time.monotonic() - started > self.timeout_seconds:
            return f"timed out after {self.timeout_seconds:.0f}s"
        return ""


def _read_events(
    path: Path, offset: int, events: list[TrainingEvent], on_event: Callable[[TrainingEvent], None]
) -> int:
    """Hand on the whole lines written to `path` after byte `offset`; the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    for line in data[:end].splitlines():
        event = parse_event(line)  # EventError for a line that is not an event this daemon knows
        events.append(event)
        on_event(event)
    return offset + end

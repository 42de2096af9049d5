"""Train where the GPUs are: each training is a Ray Job on a cluster (Ray's own submit,
status, logs and stop, by submission id; no scheduler or queue of flywheel's own).

The job runs the same child as `SubprocessTrainer` (`python -m flywheel.training.child
runs/<run>/spec.json`) on a node that has the configured resources. The data root is on a
shared file system, mounted at the same path on every node (`check_shared_root` proves it),
so the child reads its spec and data and writes its checkpoints where the daemon expects
them. Its events go to `runs/<run>/events.jsonl` (file descriptor 3, one JSON object per
line) and its output to `runs/<run>/train.log`; the daemon follows the job's status and
tails events.jsonl by byte offset, whole lines only.

Submission ids: the run's name (`r0007`) for its first attempt, `r0007-2`, `r0007-3`, ... for
the attempts after it (a run resumed after an interruption), with an optional prefix when
several data roots share one cluster. Ray refuses a second job with an id it already holds,
so a run attempt can never be submitted twice; a daemon that restarts finds its runs' jobs
again by run id (`attach`, and `run` when the newest attempt is still going).

Stopping: `cancel()` and the file `runs/<run>/CANCEL` call Ray's stop, which sends the
entrypoint SIGTERM (the entrypoint `exec`s the child, so the child gets it: it stops after
the current batch, writes a `cancelled` event and exits) and SIGKILL
`RAY_JOB_STOP_WAIT_TIME_S` seconds later (Ray's default 3 s; set here to
`stop_wait_seconds`, through the job's runtime_env, which its supervisor actor reads).

Over 300 lines on purpose: one class, one job's whole life (submit, follow, stop, outcome),
whose steps share the client and the follow loop's state; the connection, ids and the
start-up check live in flywheel.training.ray_client.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.core.domain import run_name
from flywheel.core.errors import (
    EventError,
    ExecutorUnavailable,
    NotFound,
    TrainingCancelled,
    TrainingError,
)
from flywheel.core.events import ChildCancelled, ChildFailed, Placed, TrainingEvent, parse_event
from flywheel.core.spec import TrainSpec
from flywheel.training.runner import CANCEL_FILE, KILL_AFTER_SECONDS

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

from flywheel.training.ray_client import (
    EVENT_FD,
    EVENTS_FILE,
    LOG_TAIL_LINES,
    POLL_SECONDS,
    TERMINAL,
    RayJob,
    check_shared_root,
    connect,
    submission_id,
)

log = logging.getLogger("flywheel.training")

ADOPTED = {"PENDING", "RUNNING", "SUCCEEDED"}  # a run's newest job in these states is followed, not resubmitted


class RayJobTrainer:
    """Runs the training child as a Ray job for a spec; one run at a time (the interface of
    `SubprocessTrainer`, plus `attach` for a daemon that restarted while its job ran)."""

    def __init__(
        self,
        address: str,
        config_dir: Path,
        python: str = sys.executable,
        timeout_seconds: float = 0,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: Mapping[str, float] | None = None,
        env: Mapping[str, str] | None = None,
        prefix: str = "",
        stop_wait_seconds: float = KILL_AFTER_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        connect_timeout: float = 5.0,
        lost_after_seconds: float = 60.0,
    ):
        self.address = address
        self.config_dir = config_dir  # YOLO_CONFIG_DIR, in the (shared) data root
        self.python = python  # the child's interpreter: the same path on every trainer node
        self.timeout_seconds = timeout_seconds
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.resources = dict(resources or {})  # e.g. {"flywheel-trainer": 1}: only nodes meant for trainings
        self.env = dict(env or {})  # more environment for the child (e.g. PYTHONPATH, CUDA settings)
        self.prefix = prefix
        self.stop_wait_seconds = stop_wait_seconds
        self.poll_seconds = poll_seconds
        self.connect_timeout = connect_timeout
        self.lost_after_seconds = lost_after_seconds  # job API unreachable this long while following: give up
        self.job: RayJob | None = None  # the job of the current (or last) run: id, attempt, node
        self._client: JobSubmissionClient | None = None
        self._lock = threading.Lock()
        self._active = False
        self._cancelled = threading.Event()
        self._wake = threading.Event()
        self._reason = ""
        self._root_node: str | None = None  # a node that passed the shared data root check

    # -- the Trainer interface ---------------------------------------------------------------

    def run(self, spec: TrainSpec, on_event: Callable[[TrainingEvent], None]) -> list[TrainingEvent]:
        """Submit the run's next attempt and follow it to the end; every event goes to
        `on_event` and is returned in order. When the run's newest attempt is still going, or
        succeeded (a daemon that died while its job ran, restarted and resumes the run), that
        job is followed instead, its events replayed from the start: never a second training
        for one the cluster ran or runs. Only a failed or stopped attempt gets a next one."""
        client = self._connect()
        self._begin()
        try:
            latest = self._latest(client, spec.run_id)
            if latest is not None and latest.status in ADOPTED:
                log.warning(
                    "run %s already has Ray job %s %s: following it instead of submitting another",
                    run_name(spec.run_id),
                    latest.submission_id,
                    latest.status,
                )
                return self._follow(client, spec, latest, on_event)
            attempt = latest.attempt + 1 if latest is not None else 1
            job = self._submit(client, spec, attempt)
            return self._follow(client, spec, job, on_event)
        finally:
            self._end()

    def attach(self, spec: TrainSpec, on_event: Callable[[TrainingEvent], None]) -> list[TrainingEvent]:
        """Follow the newest job of `spec.run_id` from the start of its events.jsonl (the events
        already written are replayed), as `run` would have; one that finished meanwhile returns
        or raises its outcome at once. Nothing is submitted. NotFound when the run has no job."""
        client = self._connect()
        self._begin()
        try:
            latest = self._latest(client, spec.run_id)
            if latest is None:
                raise NotFound(
                    f"run {run_name(spec.run_id)} has no job on the Ray cluster at {self.address}: "
                    "it was never submitted there, or the cluster was restarted (its job history is gone)"
                )
            return self._follow(client, spec, latest, on_event)
        finally:
            self._end()

    def adopts(self, run_id: int) -> bool:
        """Whether `run` would follow the run's newest job rather than submit one (it runs, or it
        succeeded): the run's folder must then be kept as that job left it."""
        latest = self._latest(self._connect(), run_id)
        return latest is not None and latest.status in ADOPTED

    def check(self, data_root: Path) -> str:
        """Before trainings: the job API answers (a fresh probe each call), and once per trainer a
        trainer node sees `data_root` at the same path (ray_client.check_shared_root). Returns a
        line saying where trainings go; ExecutorUnavailable or DataRootError when they cannot."""
        self._client = None
        client = self._connect()
        if self._root_node is None:
            self._root_node = check_shared_root(
                client, data_root, self.resources, python=self.python, num_cpus=self.num_cpus, env=self.env
            )
        return f"Ray cluster at {self.address} (data root seen by node {self._root_node})"

    def cancel(self) -> None:
        """Stop the running job (the child stops after its current batch); `run` then raises
        TrainingCancelled. A no-op when nothing runs."""
        with self._lock:
            if not self._active:
                return
            self._cancelled.set()
        self._wake.set()

    # -- Ray ---------------------------------------------------------------------------------

    def _connect(self) -> JobSubmissionClient:
        if self._client is None:
            self._client = connect(self.address, self.connect_timeout)
        return self._client

    def _begin(self) -> None:
        with self._lock:
            self._active = True
            self._cancelled.clear()
            self._wake.clear()
            self._reason = ""
            self.job = None

    def _end(self) -> None:
        with self._lock:
            self._active = False

    def attempts(self, client: JobSubmissionClient, run_id: int) -> list[RayJob]:
        """The run's jobs on the cluster, oldest attempt first."""
        first = submission_id(run_id, 1, self.prefix)
        later = re.compile(re.escape(first) + r"-(\d+)")
        found = []
        for details in self._call(client.list_jobs, "list jobs"):
            sid = details.submission_id or ""
            match = later.fullmatch(sid)
            if sid == first or match:
                found.append(self._job(details, int(match.group(1)) if match else 1))
        return sorted(found, key=lambda j: j.attempt)

    def _latest(self, client: JobSubmissionClient, run_id: int) -> RayJob | None:
        jobs = self.attempts(client, run_id)
        return jobs[-1] if jobs else None

    @staticmethod
    def _job(details: Any, attempt: int) -> RayJob:
        return RayJob(
            details.submission_id or "",
            attempt,
            str(details.status.value if hasattr(details.status, "value") else details.status),
            details.driver_node_id or "",
            details.message or "",
        )

    def _call(self, fn: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConnectionError, OSError) as exc:
            raise ExecutorUnavailable(
                f"the Ray job API at {self.address} failed to {what} ({exc}): is the cluster's head running?"
            ) from None

    def entrypoint(self, spec_path: Path) -> str:
        """The shell command Ray runs: `exec` so that Ray's SIGTERM reaches the child itself."""
        out = spec_path.parent
        q = shlex.quote
        return (
            f"exec {q(self.python)} -m flywheel.training.child {q(str(spec_path))} "
            f"{EVENT_FD}>>{q(str(out / EVENTS_FILE))} >>{q(str(out / 'train.log'))} 2>&1"
        )

    def environment(self, spec: TrainSpec) -> dict[str, str]:
        """The child's environment (runner.py's), plus Ray's stop grace period for the supervisor."""
        return {
            "FLYWHEEL_EVENT_FD": str(EVENT_FD),
            "YOLO_CONFIG_DIR": str(self.config_dir),
            "MPLCONFIGDIR": str(self.config_dir / "matplotlib"),
            "YOLO_OFFLINE": "true",
            "YOLO_AUTOINSTALL": "false",
            "OMP_NUM_THREADS": str(spec.threads),
            "PYTHONUNBUFFERED": "1",
            "RAY_JOB_STOP_WAIT_TIME_S": str(max(1, round(self.stop_wait_seconds))),
            **self.env,
        }

    def _submit(self, client: JobSubmissionClient, spec: TrainSpec, attempt: int) -> RayJob:
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec_path = out / "spec.json"
        spec.write(spec_path)
        (out / CANCEL_FILE).unlink(missing_ok=True)  # a request from an earlier attempt of this run
        (out / EVENTS_FILE).write_bytes(b"")  # this attempt's events only (no earlier attempt's job runs)
        sid = submission_id(spec.run_id, attempt, self.prefix)
        self._call(
            client.submit_job,
            f"submit job {sid}",
            entrypoint=self.entrypoint(spec_path),
            submission_id=sid,
            runtime_env={"env_vars": self.environment(spec)},
            metadata={"flywheel_run": run_name(spec.run_id), "attempt": str(attempt), "spec": str(spec_path)},
            entrypoint_num_cpus=self.num_cpus,
            entrypoint_num_gpus=self.num_gpus or None,
            entrypoint_resources=self.resources or None,
        )
        log.info("run %s: submitted Ray job %s to %s", run_name(spec.run_id), sid, self.address)
        return RayJob(sid, attempt, "PENDING")

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
                job = self._job(details, job.attempt)
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
        return self._outcome(client, spec, job, events)

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

    def _outcome(
        self, client: JobSubmissionClient, spec: TrainSpec, job: RayJob, events: list[TrainingEvent]
    ) -> list[TrainingEvent]:
        name = run_name(spec.run_id)
        log_path = Path(spec.out_dir) / "train.log"
        stopped = next((e.reason for e in events if isinstance(e, ChildCancelled)), None)
        if self._cancelled.is_set() or stopped is not None or job.status == "STOPPED":
            why = self._reason or stopped or f"its Ray job {job.submission_id} was stopped"
            raise TrainingCancelled(f"training run {name} was stopped before it finished ({why}); log: {log_path}")
        if job.status == "SUCCEEDED":
            return events
        reason = next((e.error for e in events if isinstance(e, ChildFailed)), job.message or "no reason given")
        tail = self._log_tail(client, job, log_path)
        raise TrainingError(
            f"training run {name} failed (Ray job {job.submission_id} on node {job.node_id or '?'}): {reason}\n"
            f"--- last lines of its log\n{tail}\n--- full log: {log_path}"
        )

    def _log_tail(self, client: JobSubmissionClient, job: RayJob, log_path: Path) -> str:
        """The last lines of train.log, or of Ray's own log of the job when the child never
        wrote one (the entrypoint failed before it: no interpreter, data root not mounted)."""
        text = ""
        if log_path.is_file():
            text = log_path.read_text(errors="replace")
        if not text.strip():
            try:
                text = str(client.get_job_logs(job.submission_id))
            except (ConnectionError, OSError, RuntimeError) as exc:
                text = f"(Ray's log of job {job.submission_id} is not available: {exc})"
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


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

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

This module holds RayJobTrainer: the Trainer interface and the state one run shares (the
client, the current job, the stop request). Its two halves are ray_submit.py (submitting a
run's attempt, finding its earlier jobs) and ray_follow.py (following a job to its end and
stopping it); ray_errors.py puts Ray's failures in flywheel's terms, and ray_client.py holds
the connection, the ids and the start-up check.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.core.domain import run_name
from flywheel.core.errors import NotFound
from flywheel.core.events import TrainingEvent
from flywheel.core.spec import TrainSpec
from flywheel.training.local_trainer import KILL_AFTER_SECONDS
from flywheel.training.ray_client import POLL_SECONDS, RayJob, check_shared_root, connect
from flywheel.training.ray_follow import JobFollowing
from flywheel.training.ray_submit import JobSubmission

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

ADOPTED = {"PENDING", "RUNNING", "SUCCEEDED"}  # a run's newest job in these states is followed, not resubmitted


class RayJobTrainer(JobSubmission, JobFollowing):
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

    # -- the connection, and the state of the run in progress --------------------------------

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

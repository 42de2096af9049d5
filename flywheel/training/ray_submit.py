"""Putting a run's attempt on the Ray cluster: finding the run's earlier jobs by submission id
(which attempt comes next), the entrypoint and environment of the training child, and the
submission itself, with the resources that place it on a trainer node.

`JobSubmission` is the submitting half of flywheel.training.ray_jobs.RayJobTrainer, which sets
the settings it reads; ray_follow.py is the following half."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.core.domain import run_name
from flywheel.core.spec import TrainSpec
from flywheel.training.child_process import child_environment
from flywheel.training.local_trainer import CANCEL_FILE
from flywheel.training.ray_client import EVENT_FD, EVENTS_FILE, RayJob, job_record, submission_id
from flywheel.training.ray_errors import call_job_api

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)


class JobSubmission:
    """Submits a run's attempts as Ray jobs and finds them again by submission id."""

    # set by RayJobTrainer.__init__
    address: str
    config_dir: Path
    python: str
    num_cpus: float
    num_gpus: float
    resources: dict[str, float]
    env: dict[str, str]
    prefix: str
    stop_wait_seconds: float

    def attempts(self, client: JobSubmissionClient, run_id: int) -> list[RayJob]:
        """The run's jobs on the cluster, oldest attempt first."""
        first = submission_id(run_id, 1, self.prefix)
        later = re.compile(re.escape(first) + r"-(\d+)")
        found = []
        for details in call_job_api(self.address, client.list_jobs, "list jobs"):
            sid = details.submission_id or ""
            match = later.fullmatch(sid)
            if sid == first or match:
                found.append(job_record(details, int(match.group(1)) if match else 1))
        return sorted(found, key=lambda j: j.attempt)

    def _latest(self, client: JobSubmissionClient, run_id: int) -> RayJob | None:
        jobs = self.attempts(client, run_id)
        return jobs[-1] if jobs else None

    def entrypoint(self, spec_path: Path) -> str:
        """The shell command Ray runs: `exec` so that Ray's SIGTERM reaches the child itself."""
        out = spec_path.parent
        q = shlex.quote
        return (
            f"exec {q(self.python)} -m flywheel.training.child {q(str(spec_path))} "
            f"{EVENT_FD}>>{q(str(out / EVENTS_FILE))} >>{q(str(out / 'train.log'))} 2>&1"
        )

    def environment(self, spec: TrainSpec) -> dict[str, str]:
        """The child's environment (child_process.py's), plus Ray's stop grace period for the supervisor."""
        return {
            **child_environment(EVENT_FD, self.config_dir, spec.threads),
            "RAY_JOB_STOP_WAIT_TIME_S": str(max(1, round(self.stop_wait_seconds))),
            **self.env,
        }

    def _submit(self, client: JobSubmissionClient, spec: TrainSpec, attempt: int) -> RayJob:
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec_path = out / "spec.json"
        spec_path.write_text(spec.to_json())
        (out / CANCEL_FILE).unlink(missing_ok=True)  # a request from an earlier attempt of this run
        (out / EVENTS_FILE).write_bytes(b"")  # this attempt's events only (no earlier attempt's job runs)
        sid = submission_id(spec.run_id, attempt, self.prefix)
        call_job_api(
            self.address,
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

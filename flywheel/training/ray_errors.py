"""Ray's failures in flywheel's terms: a job API call that fails is ExecutorUnavailable (the
cluster, not the training, is the problem), and a job that ended stopped or failed is
TrainingCancelled or TrainingError with the tail of its log (train.log, or Ray's own log of the
job when the child never wrote one). flywheel.training.ray_jobs runs the jobs these come from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.core.domain import run_name
from flywheel.core.errors import ExecutorUnavailable, TrainingCancelled, TrainingError
from flywheel.core.events import ChildCancelled, ChildFailed, TrainingEvent
from flywheel.core.spec import TrainSpec
from flywheel.training.ray_client import LOG_TAIL_LINES, RayJob

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


def call_job_api(address: str, fn: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, a call of the job API at `address`; ExecutorUnavailable when it
    cannot be reached (`what` says what the call was for)."""
    try:
        return fn(*args, **kwargs)
    except (ConnectionError, OSError) as exc:
        raise ExecutorUnavailable(
            f"the Ray job API at {address} failed to {what} ({exc}): is the cluster's head running?"
        ) from None


def job_outcome(
    client: JobSubmissionClient,
    spec: TrainSpec,
    job: RayJob,
    events: list[TrainingEvent],
    *,
    cancelled: bool,
    reason: str,
) -> list[TrainingEvent]:
    """The events of a job that succeeded; TrainingCancelled when it was stopped (`cancelled`:
    flywheel asked, for `reason`), TrainingError with its log's tail when it failed."""
    name = run_name(spec.run_id)
    log_path = Path(spec.out_dir) / "train.log"
    stopped = next((e.reason for e in events if isinstance(e, ChildCancelled)), None)
    if cancelled or stopped is not None or job.status == "STOPPED":
        why = reason or stopped or f"its Ray job {job.submission_id} was stopped"
        raise TrainingCancelled(f"training run {name} was stopped before it finished ({why}); log: {log_path}")
    if job.status == "SUCCEEDED":
        return events
    failure = next((e.error for e in events if isinstance(e, ChildFailed)), job.message or "no reason given")
    tail = log_tail(client, job, log_path)
    raise TrainingError(
        f"training run {name} failed (Ray job {job.submission_id} on node {job.node_id or '?'}): {failure}\n"
        f"--- last lines of its log\n{tail}\n--- full log: {log_path}"
    )


def log_tail(client: JobSubmissionClient, job: RayJob, log_path: Path) -> str:
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

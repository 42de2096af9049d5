"""The Ray job API as flywheel uses it: submission ids, the job record, a connection that fails
fast and clearly when the cluster cannot be reached, and the start-up check that a trainer node
sees the data root at the same path (flywheel.training.ray_jobs runs the jobs: ray_submit.py
submits them, ray_follow.py follows them)."""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flywheel.core.domain import run_name
from flywheel.core.errors import (
    DataRootError,
    ExecutorUnavailable,
)

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)


EVENTS_FILE = "events.jsonl"
EVENT_FD = 3
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 20
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submission_id(run_id: int, attempt: int, prefix: str = "") -> str:
    """`r0007` for a run's first attempt, `r0007-2` for its second, ..."""
    name = prefix + run_name(run_id)
    return name if attempt == 1 else f"{name}-{attempt}"


@dataclass(frozen=True)
class RayJob:
    """The Ray job of one run attempt, as last seen."""

    submission_id: str
    attempt: int
    status: str = ""
    node_id: str = ""  # the node the entrypoint (the training child) ran on: JobDetails.driver_node_id
    message: str = ""


def job_record(details: Any, attempt: int) -> RayJob:
    """The record of one attempt's job from Ray's JobDetails (its status is an enum or a string)."""
    return RayJob(
        details.submission_id or "",
        attempt,
        str(details.status.value if hasattr(details.status, "value") else details.status),
        details.driver_node_id or "",
        details.message or "",
    )


def connect(address: str, timeout: float = 5.0) -> JobSubmissionClient:
    """A job client for the cluster at `address` (http://host:dashboard-port), or
    ExecutorUnavailable saying what to do. The port is probed first with a short timeout:
    Ray's client itself would wait as long as the operating system lets a connect hang."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise ExecutorUnavailable(
            f"training on a Ray cluster needs Ray's job client, which is not installed ({exc}): "
            "pip install 'ray[default]' (the same version as the cluster's)"
        ) from None
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    what = (
        "Start the cluster (`ray start --head --dashboard-host <ip>` on its head node) or set the "
        "Ray job API address (the head's dashboard, http://<head>:8265 by default) in the config"
    )
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 8265), timeout=timeout):
            pass
    except OSError as exc:
        raise ExecutorUnavailable(f"cannot reach the Ray cluster's job API at {address} ({exc}). {what}.") from None
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, OSError) as exc:
        raise ExecutorUnavailable(f"the Ray job API at {address} does not answer ({exc}). {what}.") from None


_CHECK_CODE = """\
import pathlib, sys
import flywheel
folder, token = pathlib.Path(sys.argv[1]), sys.argv[2]
ours = folder / (token + ".daemon")
if not ours.is_file() or ours.read_text() != token:
    sys.exit(f"{folder}: the token file the daemon wrote is not there")
(folder / (token + ".node")).write_text(token)
print("data root ok on this node")
"""


def check_shared_root(
    client: JobSubmissionClient,
    data_root: Path,
    resources: Mapping[str, float] | None = None,
    *,
    python: str = sys.executable,
    num_cpus: float = 1,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> str:
    """Prove that a trainer node sees the daemon's data root at the same path, writable, and
    can import flywheel with `python`: a tiny job reads a token file the daemon wrote there and
    writes one back that the daemon reads. Returns the node id; DataRootError naming the path
    and what to mount when not; ExecutorUnavailable when no node took the job in `timeout`."""
    token = secrets.token_hex(8)
    folder = data_root / ".flywheel-node-check"
    ours, theirs = folder / f"{token}.daemon", folder / f"{token}.node"
    q = shlex.quote
    sid = f"flywheel-check-{token}"
    mount = (
        f"Mount the data root's shared file system at {data_root} on every node with the resources "
        f"{dict(resources or {})}, writable by the user Ray runs as, and install flywheel there for {python}"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ours.write_text(token)
        client.submit_job(
            entrypoint=f"{q(python)} -c {q(_CHECK_CODE)} {q(str(folder))} {token}",
            submission_id=sid,
            runtime_env={"env_vars": dict(env or {})},
            entrypoint_num_cpus=num_cpus,
            entrypoint_resources=dict(resources) if resources else None,
        )
        deadline = time.monotonic() + timeout
        while True:
            details = client.get_job_info(sid)
            status = str(getattr(details.status, "value", details.status))
            if status in TERMINAL:
                break
            if time.monotonic() > deadline:
                client.stop_job(sid)
                raise ExecutorUnavailable(
                    f"no Ray node with the resources {dict(resources or {})} ran the data root check within "
                    f"{timeout:.0f}s (job {sid}, {status}): start a trainer node with "
                    f"`ray start --address <head> --resources '{json.dumps(dict(resources or {}))}'`"
                )
            time.sleep(POLL_SECONDS)
        node = str(details.driver_node_id or "?")
        if status != "SUCCEEDED":
            tail = "\n".join(str(client.get_job_logs(sid)).splitlines()[-LOG_TAIL_LINES:])
            raise DataRootError(f"Ray node {node} cannot use the data root {data_root} ({status}):\n{tail}\n{mount}.")
        if not (theirs.exists() and theirs.read_text() == token):
            raise DataRootError(
                f"Ray node {node} wrote to {folder}, but not to the daemon's file system: the path is a "
                f"different (local) folder there. {mount}."
            )
        return node
    except (ConnectionError, OSError, RuntimeError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError) and exc.filename:
            raise DataRootError(f"cannot write the data root check files in {folder}: {exc}") from None
        raise ExecutorUnavailable(f"the Ray job API failed during the data root check (job {sid}): {exc}") from None
    finally:
        ours.unlink(missing_ok=True)
        theirs.unlink(missing_ok=True)

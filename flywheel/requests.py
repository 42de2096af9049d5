"""`flywheel train` while the daemon runs: a request in the daemon's one queue.

The daemon holds the data root, so the CLI cannot train itself; it writes a request file
(`<data_root>/queue/<id>.json`, written beside and renamed: never read half-written) and the
daemon's worker takes the requests in order at its next step, after the ingest of complete
batches, one training at a time. Taking a request renames it `<id>.taken`; it is deleted once
its training ended. A daemon that dies mid-training leaves `<id>.taken`: its run is
interrupted and resumed per `training.on_interrupt`, so the next start only drops the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.errors import UsageError

log = logging.getLogger("flywheel.requests")


@dataclass(frozen=True)
class TrainRequest:
    id: str
    version_id: int | None  # None: the newest version when the daemon takes it
    start_from: str | None  # as `flywheel train --from`
    actor: str
    requested_at: float  # time.time()


def queue_dir(root: Path) -> Path:
    return root / "queue"


def submit(root: Path, version_id: int | None, start_from: str | None, actor: str) -> TrainRequest:
    now = time.time()
    request = TrainRequest(f"train-{time.time_ns()}-{os.getpid()}", version_id, start_from, actor, now)
    folder = queue_dir(root)
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{request.id}.tmp"
    tmp.write_text(json.dumps(asdict(request)) + "\n")
    os.replace(tmp, folder / f"{request.id}.json")
    return request


def pending(root: Path) -> list[TrainRequest]:
    """Requests not yet taken, oldest first. One that cannot be read is set aside as `.bad`."""
    folder = queue_dir(root)
    if not folder.is_dir():
        return []
    requests = []
    for path in sorted(folder.glob("train-*.json")):
        try:
            requests.append(TrainRequest(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            log.error("train request %s cannot be read (%s): set aside as %s.bad", path, exc, path.name)
            path.replace(path.with_name(path.name + ".bad"))
    return requests


def take(root: Path, request: TrainRequest) -> Path:
    path = queue_dir(root) / f"{request.id}.json"
    taken = path.with_suffix(".taken")
    try:
        os.replace(path, taken)
    except FileNotFoundError:
        raise UsageError(f"train request {request.id} is gone from {path.parent}") from None
    return taken


def finish(taken: Path) -> None:
    taken.unlink(missing_ok=True)


def drop_taken(root: Path) -> list[str]:
    """At start-up: requests a dead daemon was serving (their runs resume on their own)."""
    folder = queue_dir(root)
    dropped = []
    for path in sorted(folder.glob("train-*.taken")) if folder.is_dir() else []:
        log.warning("train request %s was being served when the daemon stopped; its run resumes on its own", path.stem)
        path.unlink(missing_ok=True)
        dropped.append(path.stem)
    return dropped

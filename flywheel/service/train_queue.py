"""`flywheel train` while the daemon runs: a request in the daemon's one queue.

The daemon holds the data root, so the CLI cannot train itself; it writes a request file
(`<data_root>/queue/<id>.json`, written beside and renamed: never read half-written) and the
daemon's worker takes the requests in order at its next step, after the ingest of complete
batches, one training at a time. Taking a request turns it into `<id>.taken`, which records
the newest run id at that moment: the worker makes no other run while it serves the request,
so the request's runs are exactly the ones after it (`flywheel train` follows the first).
When the training ended it becomes `<id>.done`, listing its runs, for the CLI that waits on it
to read and delete (left-over ones are deleted after a day). A daemon that dies mid-training
leaves `<id>.taken`: its run is interrupted and resumed per `training.on_interrupt`, so the
next start only drops the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.core.errors import UsageError

log = logging.getLogger(__name__)
DONE_KEPT_SECONDS = 24 * 3600


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


def take(root: Path, request: TrainRequest, newest_run_id: int) -> Path:
    """Mark the request as being served; its runs will be the ones after `newest_run_id`."""
    path = queue_dir(root) / f"{request.id}.json"
    if not path.is_file():
        raise UsageError(f"train request {request.id} is gone from {path.parent}")
    taken = path.with_suffix(".taken")
    _write(taken, {**asdict(request), "after_run": newest_run_id})
    path.unlink()
    return taken


def finish(taken: Path, run_ids: list[int]) -> None:
    """The request was served: `<id>.done` lists the runs it made (none if it could not train)."""
    _write(taken.with_suffix(".done"), {"runs": run_ids})
    taken.unlink(missing_ok=True)


@dataclass(frozen=True)
class Progress:
    state: str  # "queued" | "taken" | "done" | "gone"
    after_run: int | None = None  # taken: the request's runs have larger ids
    runs: tuple[int, ...] = ()  # done: the runs it made


def progress(root: Path, request_id: str) -> Progress:
    """Where a request stands, for the CLI that waits on it."""
    path = queue_dir(root) / f"{request_id}.json"
    for state in ("done", "taken"):  # in the order a request leaves them behind
        try:
            data = json.loads(path.with_suffix(f".{state}").read_text())
        except (OSError, ValueError):
            continue
        if state == "done":
            return Progress("done", runs=tuple(int(r) for r in data.get("runs", [])))
        return Progress("taken", after_run=int(data.get("after_run", 0)))
    return Progress("queued") if path.is_file() else Progress("gone")


def forget(root: Path, request_id: str) -> None:
    (queue_dir(root) / f"{request_id}.done").unlink(missing_ok=True)


def _write(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


def drop_taken(root: Path) -> list[str]:
    """At start-up: requests a dead daemon was serving (their runs resume on their own), and
    `.done` files no CLI came back for within a day."""
    folder = queue_dir(root)
    for path in sorted(folder.glob("train-*.done")) if folder.is_dir() else []:
        if time.time() - path.stat().st_mtime > DONE_KEPT_SECONDS:
            path.unlink(missing_ok=True)
    dropped = []
    for path in sorted(folder.glob("train-*.taken")) if folder.is_dir() else []:
        log.warning("train request %s was being served when the daemon stopped; its run resumes on its own", path.stem)
        path.unlink(missing_ok=True)
        dropped.append(path.stem)
    return dropped

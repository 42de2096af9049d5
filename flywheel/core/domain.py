"""The pure core: record states, their allowed transitions, and the rules that must hold
across dataset versions (stable splits, stable class ids).

Nothing here does I/O. The store persists these states; every state change goes through
`check_transition`, so an impossible change (a rejected model put into production, a
finished run restarted) fails loudly in one place, whatever edge asked for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from flywheel.core.errors import BatchRejected, InvalidTransition, UsageError


class BatchState(StrEnum):
    RECEIVED = "received"  # seen complete in the inbox, not yet read
    INGESTING = "ingesting"
    INGESTED = "ingested"  # its good pairs are in the store (maybe in a new version)
    REJECTED = "rejected"  # nothing from it could be used; all files are in quarantine


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the daemon died under it; may be queued again


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    PRODUCTION = "production"
    REJECTED = "rejected"
    RETIRED = "retired"  # was production; rollback can make it production again


class StartKind(StrEnum):
    SCRATCH = "scratch"  # from model.base (a YAML, or a .pt the user supplied)
    WARM = "warm"  # from the production model's checkpoint


_TRANSITIONS: dict[type[StrEnum], dict[StrEnum, frozenset[StrEnum]]] = {
    BatchState: {
        BatchState.RECEIVED: frozenset({BatchState.INGESTING, BatchState.REJECTED}),
        BatchState.INGESTING: frozenset({BatchState.INGESTED, BatchState.REJECTED}),
        BatchState.INGESTED: frozenset(),
        BatchState.REJECTED: frozenset(),
    },
    RunState: {
        RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
        RunState.RUNNING: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED}),
        RunState.INTERRUPTED: frozenset({RunState.QUEUED, RunState.CANCELLED}),
        RunState.SUCCEEDED: frozenset(),
        RunState.FAILED: frozenset(),
        RunState.CANCELLED: frozenset(),
    },
    ModelStatus: {
        ModelStatus.CANDIDATE: frozenset({ModelStatus.PRODUCTION, ModelStatus.REJECTED}),
        ModelStatus.PRODUCTION: frozenset({ModelStatus.RETIRED}),
        ModelStatus.RETIRED: frozenset({ModelStatus.PRODUCTION}),
        ModelStatus.REJECTED: frozenset(),
    },
}


# Only by a person's explicit override (`flywheel promote ID --force`), never by the gate.
_FORCED: dict[StrEnum, frozenset[StrEnum]] = {ModelStatus.REJECTED: frozenset({ModelStatus.PRODUCTION})}


def allowed(current: StrEnum, target: StrEnum, forced: bool = False) -> bool:
    return target in _TRANSITIONS[type(current)][current] or (forced and target in _FORCED.get(current, ()))


def check_transition(what: str, current: StrEnum, target: StrEnum, forced: bool = False) -> None:
    """Raise InvalidTransition unless `current -> target` is allowed; `what` names the record."""
    if type(current) is not type(target):
        raise TypeError(f"{current!r} and {target!r} are states of different records")
    if not allowed(current, target, forced):
        ok = sorted(s.value for s in _TRANSITIONS[type(current)][current]) or ["none (final)"]
        hint = " unless forced (--force)" if target in _FORCED.get(current, ()) else ""
        raise InvalidTransition(
            f"{what} is {current.value}; it cannot become {target.value}{hint} "
            f"(allowed from {current.value}: {', '.join(ok)})"
        )


# --- dataset rules ----------------------------------------------------------------------


def split_of(image_sha256: str, val_fraction: float) -> str:
    """'train' or 'val' for an image, decided by its content hash alone.

    The same bytes always land in the same split, whatever batch or version brings them, so an
    image never moves between train and val and version n's val set stays inside version n+1.
    The first 8 hex digits are uniform over [0, 2^32), which is plenty for a fraction.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return "val" if int(image_sha256[:8], 16) / 2**32 < val_fraction else "train"


def merge_class_map(project: Iterable[str], batch: Iterable[str]) -> tuple[list[str], dict[int, int]]:
    """Fold a batch's class names into the project's class map.

    Returns the new project map and, for each batch class id, the project id it becomes.
    Existing names keep their ids; names the project has not seen are appended in the batch's
    order. So adding a class never renumbers the old ones (the model's head rows stay valid).
    """
    names = list(project)
    index = {name: i for i, name in enumerate(names)}
    remap: dict[int, int] = {}
    seen: set[str] = set()
    for batch_id, raw in enumerate(batch):
        name = raw.strip()
        if not name:
            raise BatchRejected(f"class id {batch_id} has an empty name; give every class a name")
        if name in seen:
            raise BatchRejected(
                f"class name {name!r} appears twice in the batch's class list; each name must be listed once"
            )
        seen.add(name)
        if name not in index:
            index[name] = len(names)
            names.append(name)
        remap[batch_id] = index[name]
    return names, remap


@dataclass(frozen=True)
class ManifestItem:
    """One image of a dataset version: its bytes, its (normalised) label, and its split."""

    image_sha256: str
    label_sha256: str
    ext: str  # image suffix with the dot, e.g. ".jpg": Ultralytics picks files by suffix
    split: str
    boxes: int


def version_name(version_id: int) -> str:
    return f"v{version_id:04d}"


def model_name(model_id: int) -> str:
    return f"m{model_id:04d}"


def run_name(run_id: int) -> str:
    return f"r{run_id:04d}"


def batch_name(batch_id: int) -> str:
    return f"b{batch_id:04d}"


def parse_id(text: str, prefix: str) -> int:
    """'m0003', 'm3' and '3' all name model 3; anything else is a clear error."""
    raw = text.strip().lower()
    if raw.startswith(prefix):
        raw = raw[len(prefix) :]
    if not raw.isdigit():
        raise UsageError(f"{text!r} is not an id like {prefix}0003 or 3")
    return int(raw)

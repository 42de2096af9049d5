"""What the training child tells the daemon, as typed events.

The wire format is one JSON object a line, `{"event": kind, **fields}`, on the pipe named by
FLYWHEEL_EVENT_FD (flywheel/training/child.py). The child builds these classes and writes
them with `encode`; the daemon reads every line with `parse_event`, which checks each key and
its type, so a key renamed on one side fails at once, naming it, instead of as a KeyError deep
in the cycle or a score silently missing. Keys the daemon does not know are ignored: a newer
child may add one.

Events come in this order: started, warm_start (a warm start only), then per epoch phase
(two-phase fine-tune only), progress (a few a second), epoch, plateau (when val fitness
stalls); trained; evaluated per eval target; bootstrap per eval set; or failed / cancelled.

One kind comes from the trainer, not the child: placed, where the training runs (the local
machine or a Ray cluster's node and job), sent once the trainer knows it (before or after
started). It has the same wire format, so a follower replaying a run's events reads it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, ClassVar, TypeAlias, TypeVar, get_args, get_origin, get_type_hints

from flywheel.core.errors import EventError
from flywheel.core.gate import Score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChildStarted:
    """The child runs: which process, which library versions (to reproduce the run)."""

    kind: ClassVar[str] = "started"
    pid: int
    versions: dict[str, str]  # python, flywheel, torch, ultralytics, numpy, cuda
    resumed_from_epoch: int  # the first epoch (1-based) this process trains when it continues a run; 0: a fresh
    #                          run; -1: the run had finished all its epochs before it was interrupted


@dataclass(frozen=True)
class WarmStarted:
    """Conv weights equal to the start checkpoint's; class-head rows kept by name."""

    kind: ClassVar[str] = "warm_start"
    matched: int
    total: int
    head_rows_kept: int
    head_rows_total: int
    head_rows_fixed: int  # rows flywheel copied because Ultralytics did not
    shrink: float
    perturb: float


@dataclass(frozen=True)
class PlateauReached:
    """Val fitness stalled; the final LR decay phase runs to the new total `epochs`
    (flywheel/core/budget.py)."""

    kind: ClassVar[str] = "plateau"
    epoch: int
    best_epoch: int
    best_fitness: float
    epochs: int


@dataclass(frozen=True)
class BackboneUnfrozen:
    """Two-phase fine-tune: the backbone trains again from this epoch on."""

    kind: ClassVar[str] = "phase"
    phase: int  # always 2
    epoch: int
    unfrozen: int
    frozen_unchanged: int  # frozen tensors still equal to their value at train start
    frozen_total: int


@dataclass(frozen=True)
class BatchProgress:
    """Sent at most a few times a second."""

    kind: ClassVar[str] = "progress"
    epoch: int
    epochs: int
    batch: int
    batches: int


@dataclass(frozen=True)
class EpochEnded:
    kind: ClassVar[str] = "epoch"
    epoch: int  # 1-based
    epochs: int
    box_loss: float
    cls_loss: float
    dfl_loss: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    seconds: float


@dataclass(frozen=True)
class Trained:
    kind: ClassVar[str] = "trained"
    best: str  # the run's best.pt
    seconds: float
    resumed: bool


@dataclass(frozen=True)
class Evaluated:
    kind: ClassVar[str] = "evaluated"
    role: str  # "candidate" or "production" (or a compared model's label)
    eval_set: str
    checkpoint: str
    score: Score  # a nested object on the wire
    seconds: float


@dataclass(frozen=True)
class ClassInterval:
    observed: float
    low: float
    high: float


@dataclass(frozen=True)
class BootstrapInterval:
    """Paired bootstrap of candidate - production mAP50-95 on one eval set."""

    kind: ClassVar[str] = "bootstrap"
    eval_set: str
    observed: float
    mean: float
    low: float
    high: float
    samples: int
    confidence: float
    classes: dict[str, ClassInterval]  # by class name


@dataclass(frozen=True)
class ChildFailed:
    kind: ClassVar[str] = "failed"
    error: str


@dataclass(frozen=True)
class ChildCancelled:
    """Stopped by SIGTERM (after the current batch) or orphaned."""

    kind: ClassVar[str] = "cancelled"
    reason: str


@dataclass(frozen=True)
class Placed:
    """Where the training runs, said by the trainer (not the child) once it knows."""

    kind: ClassVar[str] = "placed"
    executor: str  # "local" or "ray"
    node: str  # the local host's name, or the Ray node id the job's entrypoint runs on
    submission_id: str  # the Ray job (r0007, r0007-2, ...); the child's pid for a local one


PLACEMENT = ("executor", "node", "submission_id")  # the run's environment keys a Placed event sets


def placement_text(environment: Mapping[str, object]) -> str:
    """Where a run trained, for a person: "ray job r0007 on node 5f0c2a9e..." or "local, pid 4242
    on host gpu1"; "" when the run has no placement recorded (trained before there was one)."""
    executor, node, sid = (str(environment.get(k, "")) for k in PLACEMENT)
    if not executor:
        return ""
    if executor == "ray":
        return f"ray job {sid or '?'} on node {node or '?'}"
    return f"{executor}, pid {sid or '?'} on host {node or '?'}"


TrainingEvent: TypeAlias = (
    ChildStarted
    | WarmStarted
    | PlateauReached
    | BackboneUnfrozen
    | BatchProgress
    | EpochEnded
    | Trained
    | Evaluated
    | BootstrapInterval
    | ChildFailed
    | ChildCancelled
    | Placed
)

KINDS: dict[str, type[Any]] = {cls.kind: cls for cls in get_args(TrainingEvent)}


def encode(event: TrainingEvent) -> str:
    """One JSON line (without the newline), as `parse_event` reads it."""
    return json.dumps({"event": event.kind, **asdict(event)})


def parse_event(line_or_dict: str | bytes | dict[str, Any]) -> TrainingEvent:
    """The event a line (or its decoded dict) holds; EventError naming the kind and key if it is
    not one this daemon knows, with every key it needs, of the right type."""
    event: TrainingEvent = parse_record(KINDS, line_or_dict, "training event")
    return event


E = TypeVar("E")


def read_stream(
    lines: Iterable[str], parse: Callable[[str], E], on_event: Callable[[E], None], who: str
) -> EventError | None:
    """Hand each line a child wrote to `on_event`, parsed; stop at the first line that is not an
    event and return its EventError (None: the stream ended well). A last line without its
    newline is the child dying mid-write: logged and skipped, its exit code tells the rest.
    Shared by both children's runners (training and prediction)."""
    for line in lines:
        try:
            event = parse(line)
        except EventError as exc:
            if not line.endswith("\n"):
                log.warning("ignored %s's last, unfinished line: %s", who, exc)
                continue
            return exc
        on_event(event)
    return None


def parse_record(kinds: dict[str, type[Any]], line_or_dict: str | bytes | dict[str, Any], what: str) -> Any:
    """The record of `kinds` (by its "event" key) a JSON line or its dict holds, each field checked
    by `build`; EventError starting with `what` ("training event") naming the kind and the key.
    Shared by every child-to-parent stream (flywheel/core/predict_events.py too)."""
    if isinstance(line_or_dict, dict):
        data = line_or_dict
    else:
        try:
            data = json.loads(line_or_dict)
        except ValueError as exc:
            raise EventError(f"{what} is not JSON ({exc}): {_clip(line_or_dict)}") from None
        if not isinstance(data, dict):
            raise EventError(f"{what} is not a JSON object: {_clip(line_or_dict)}")
    kind = data.get("event")
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventError(f"{what} has an unknown kind 'event': {kind!r} (known: {', '.join(kinds)})")
    return build(cls, data, f"{what} '{kind}'")


def build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    """Dataclass `cls` from the JSON object `data`: every field present and of its annotated type
    (bool, int, float, str, dict[K, V], tuple[T, ...], a nested dataclass, or a NamedTuple, which
    is a JSON array); keys it does not name are ignored. EventError naming `where` and the key."""
    hints = get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            raise EventError(f"{where}: missing key '{f.name}' (it has: {', '.join(sorted(data))})")
        values[f.name] = _check(data[f.name], hints[f.name], f"{where}: key '{f.name}'")
    return cls(**values)


def _check(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)  # JSON has one number type: 0 is a float here
    elif hint is str:
        if isinstance(value, str):
            return value
    elif get_origin(hint) is dict:
        key_type, value_type = get_args(hint)
        if isinstance(value, dict):
            return {
                _check(k, key_type, f"{where}[{k!r}] key"): _check(v, value_type, f"{where}[{k!r}]")
                for k, v in value.items()
            }
    elif get_origin(hint) is tuple and get_args(hint)[1:] == (Ellipsis,):
        if isinstance(value, list | tuple):
            return tuple(_check(v, get_args(hint)[0], f"{where}[{i}]") for i, v in enumerate(value))
    elif _is_named_tuple(hint):  # a JSON array, field by field
        if isinstance(value, list | tuple) and len(value) == len(hint._fields):
            hints = get_type_hints(hint)
            return hint(*(_check(v, hints[n], f"{where} '{n}'") for n, v in zip(hint._fields, value, strict=True)))
    elif isinstance(hint, type) and is_dataclass(hint):
        if isinstance(value, dict):
            return build(hint, value, where)
    else:  # pragma: no cover - a field type this module does not check yet
        raise TypeError(f"{where}: unsupported field type {hint!r}")
    return _wrong(value, hint, where)


def _is_named_tuple(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields")


def _wrong(value: Any, hint: Any, where: str) -> Any:
    if _is_named_tuple(hint):
        expected = f"a list [{', '.join(hint._fields)}]"
    else:
        expected = str(hint) if get_origin(hint) else getattr(hint, "__name__", str(hint))
    raise EventError(f"{where} should be {expected}, got {type(value).__name__} {_clip(repr(value))}")


def _clip(text: str | bytes, limit: int = 200) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else text
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."

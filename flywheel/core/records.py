"""The store's records in core terms: what the store port (flywheel.core.ports.StorePort) takes
and gives. Frozen values, read back from the database at the store's edge; no ORM object ever
leaves the store, so the flows are written against these and cannot write a state column
behind `check_transition`'s back.

Field names are the database columns' (flywheel/store/tables.py), so a record reads like the
row it came from. Times are as the database hands them back (SQLite: without a zone);
`as_utc` makes them comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

from flywheel.core.domain import BatchState, ModelStatus, RunState, StartKind
from flywheel.core.gate import GateOutcome, Rule, Score
from flywheel.core.gate_details import GateDetails
from flywheel.core.ledger import Action

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # only for records built by hand (a placeholder, a test)


class _Keep(Enum):
    KEEP = "keep"


# "leave this field as it is" for a field whose None is a value (StorePort.update_run's error)
KEEP: Final = _Keep.KEEP
Keep = _Keep


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; every one flywheel stores is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Batch:
    id: int
    name: str  # the folder name as dropped
    content_sha256: str
    state: BatchState
    received_at: datetime = _EPOCH
    finished_at: datetime | None = None
    files: int = 0
    files_versioned: int = 0
    images_ok: int = 0
    images_new: int = 0
    quarantined: int = 0
    ignored: int = 0
    version_id: int | None = None
    reason: str | None = None
    quarantine_dir: str | None = None
    format: str | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    images_relabelled: int = 0


@dataclass(frozen=True, kw_only=True)
class Version:
    id: int
    parent_id: int | None
    batch_id: int | None
    created_at: datetime
    class_names: list[str]
    train_images: int
    val_images: int
    boxes: int
    val_boxes: int
    manifest_sha256: str
    val_sha256: str  # the eval-set identity of its val split, for the gate
    manifest_form: str  # "delta" or "full" (flywheel/core/manifests.py)
    images_new: int
    images_relabelled: int


@dataclass(frozen=True, kw_only=True)
class Run:
    id: int
    version_id: int
    state: RunState
    start_kind: StartKind
    start_model_id: int | None
    start_checkpoint: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    epochs: int = 0
    epochs_done: int = 0
    warm_tensors_matched: int | None = None
    warm_tensors_total: int | None = None
    model_id: int | None = None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    purpose: str = "candidate"
    challenger_for: int | None = None
    guard: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    batch: int = 0
    batches: int = 0
    resumed: int = 0


@dataclass(frozen=True, kw_only=True)
class Epoch:
    run_id: int
    epoch: int  # 1-based, as Ultralytics prints it
    box_loss: float
    cls_loss: float
    dfl_loss: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Model:
    id: int
    sha256: str
    run_id: int
    version_id: int
    parent_model_id: int | None
    status: ModelStatus
    created_at: datetime
    promoted_at: datetime | None
    class_names: list[str]


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """A model's score on an eval set; (model sha, eval-set sha) is computed once."""

    model_sha256: str
    eval_sha256: str
    version_id: int
    score: Score  # the columns map50_95, map50, precision, recall, per_class, instances


@dataclass(frozen=True, kw_only=True)
class GateRecord:
    """A gate decision as recorded (flywheel.core.gate.GateDecision is the decision itself)."""

    id: int = 0  # 0: not recorded yet
    run_id: int
    version_id: int
    eval_sha256: str
    candidate_model_id: int
    production_model_id: int | None
    candidate_map: float
    production_map: float | None
    margin: float | None
    tolerance: float
    outcome: GateOutcome
    rule: Rule
    held: bool = False  # passed, but production was pinned: left a candidate
    details: GateDetails = field(default_factory=GateDetails)
    created_at: datetime | None = None  # set by the store


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """A production ledger entry (flywheel.core.ledger: its hash chain)."""

    id: int
    at: datetime
    action: Action
    model_id: int | None
    previous_model_id: int | None
    actor: str
    reason: str
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, kw_only=True)
class ProductionChange:
    """What a notifier (flywheel.core.ports.Notifier) is told when production changes."""

    action: Action
    model: str  # its name, m0004
    previous: str | None
    actor: str
    reason: str
    at: datetime
    production: dict[str, Any]  # the model's description, as production/<model>/model.json holds it

    def to_json(self) -> dict[str, Any]:
        """The body sent to the command and the webhook (docs: `[notify]`)."""
        return {
            "action": str(self.action),
            "model": self.model,
            "previous": self.previous,
            "actor": self.actor,
            "reason": self.reason,
            "at": as_utc(self.at).isoformat(),
            "production": self.production,
        }

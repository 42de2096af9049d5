"""SQLModel tables: the durable form of the core's records.

States are stored as the core's enum values; every change of a state column goes through
`flywheel.core.domain.check_transition` in `Store` (never assigned directly elsewhere).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, text
from sqlmodel import Field, SQLModel

from flywheel.core.records import as_utc as as_utc  # defined with the records; still importable here


def utcnow() -> datetime:
    return datetime.now(UTC)


class BatchRow(SQLModel, table=True):
    __tablename__ = "batch"
    id: int | None = Field(default=None, primary_key=True)
    name: str  # the folder name as dropped
    content_sha256: str = Field(index=True)
    state: str
    received_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # Accounting: files == files_versioned + quarantined + ignored, once the batch is ingested.
    files: int = 0
    files_versioned: int = 0
    images_ok: int = 0
    images_new: int = 0  # not already in the parent version with the same label
    quarantined: int = 0
    ignored: int = 0
    version_id: int | None = None
    reason: str | None = None
    quarantine_dir: str | None = None
    # Ingest's details: the batch's format, why files were quarantined (count per
    # flywheel.ingest.reasons.Code value, a bounded set), and re-labelled images.
    format: str | None = None
    quarantine_reasons: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    images_relabelled: int = 0


class VersionRow(SQLModel, table=True):
    __tablename__ = "dataset_version"
    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = None
    batch_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    class_names: list[str] = Field(sa_column=Column(JSON, nullable=False))
    train_images: int = 0
    val_images: int = 0
    boxes: int = 0
    val_boxes: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # of `boxes`, in val
    manifest_sha256: str  # hash of the manifest: equal manifests, equal datasets (flywheel/core/manifests.py)
    val_sha256: str  # hash of the val split alone: the eval-set identity for the gate
    # "delta": its items are its changes over the parent; "full": all of them (made before 0002)
    manifest_form: str = Field(default="delta", sa_column_kwargs={"server_default": "full"})
    images_new: int = 0  # images its batch added
    images_relabelled: int = 0  # images of the parent whose label its batch changed


class VersionItemRow(SQLModel, table=True):
    __tablename__ = "dataset_version_item"
    version_id: int = Field(primary_key=True)
    image_sha256: str = Field(primary_key=True, index=True)
    label_sha256: str
    ext: str
    split: str
    boxes: int


class RunRow(SQLModel, table=True):
    __tablename__ = "training_run"
    id: int | None = Field(default=None, primary_key=True)
    version_id: int
    state: str
    start_kind: str
    start_model_id: int | None = None
    start_checkpoint: str
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    epochs: int = 0
    epochs_done: int = 0
    warm_tensors_matched: int | None = None  # conv weights equal to the start checkpoint's
    warm_tensors_total: int | None = None
    model_id: int | None = None
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Transfer (flywheel/core/plan.py): why the run exists, what it trained on, how to redo it.
    purpose: str = "candidate"  # or "scratch_challenger": the negative-transfer guard's run
    challenger_for: int | None = None  # the warm-started run a scratch challenger was trained beside
    guard: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # reason, winner
    replay: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # empty: all
    environment: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    batch: int = 0  # progress within the current epoch
    batches: int = 0
    resumed: int = 0  # times continued after the daemon died under it


class EpochRow(SQLModel, table=True):
    __tablename__ = "training_epoch"
    run_id: int = Field(primary_key=True)
    epoch: int = Field(primary_key=True)  # 1-based, as Ultralytics prints it
    box_loss: float
    cls_loss: float
    dfl_loss: float
    precision: float
    recall: float
    map50: float
    map50_95: float
    seconds: float


class ModelRow(SQLModel, table=True):
    __tablename__ = "model"
    # At most one production model, enforced by the database itself.
    __table_args__ = (
        Index(
            "one_production",
            "status",
            unique=True,
            sqlite_where=text("status = 'production'"),
            postgresql_where=text("status = 'production'"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(index=True)
    run_id: int
    version_id: int
    parent_model_id: int | None = None
    status: str
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None
    class_names: list[str] = Field(sa_column=Column(JSON, nullable=False))


class EvaluationRow(SQLModel, table=True):
    """A model's score on an eval set; (model sha, eval-set sha) is computed once."""

    __tablename__ = "evaluation"
    model_sha256: str = Field(primary_key=True)
    eval_sha256: str = Field(primary_key=True)
    version_id: int
    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class: dict[str, float] = Field(sa_column=Column(JSON, nullable=False))
    instances: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class GateRow(SQLModel, table=True):
    __tablename__ = "gate_decision"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int
    version_id: int
    eval_sha256: str
    candidate_model_id: int
    production_model_id: int | None
    candidate_map: float
    production_map: float | None
    margin: float | None
    tolerance: float
    outcome: str
    rule: str
    held: bool = False  # passed, but production was pinned: left a candidate
    # Per eval set: both scores overall and per class, the class checks, forgetting.
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class LedgerRow(SQLModel, table=True):
    """Every production change and gate refusal: who, when, why. Append-only, hash-chained
    (see flywheel/core/ledger.py): each entry's hash covers its fields and the previous hash."""

    __tablename__ = "production_ledger"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    action: str  # flywheel.core.ledger.Action
    model_id: int | None  # None for pin / unpin
    previous_model_id: int | None
    actor: str
    reason: str
    prev_hash: str = ""
    entry_hash: str = ""


class ImageHashRow(SQLModel, table=True):
    """Every stored image's difference hash and the split it was put in, for near-copy checks.

    The 64-bit hash is also kept as four 16-bit quarters, each indexed: two hashes at most 3
    bits apart share a quarter, so a near-copy is found with indexed lookups, not a scan."""

    __tablename__ = "image_hash"
    image_sha256: str = Field(primary_key=True)
    dhash: str  # 16 hex digits
    q0: int = Field(index=True)
    q1: int = Field(index=True)
    q2: int = Field(index=True)
    q3: int = Field(index=True)
    split: str


class LabelPullRow(SQLModel, table=True):
    """What was pulled of a labeling project's task: the annotation and its edit time, and the
    inbox batch it went into (flywheel/store/label_pulls.py). One row per (project, task)."""

    __tablename__ = "label_pull"
    project: str = Field(primary_key=True)  # the tool's URL and project, as configured
    task_id: int = Field(primary_key=True)
    annotation_id: int
    updated_at: str  # as the tool wrote it; a newer one is a relabel
    batch: str
    pulled_at: datetime = Field(default_factory=utcnow)


class ScreeningRow(SQLModel, table=True):
    """A batch screened with the production model before it trained (flywheel/core/screening.py):
    the policy's state, each check's summary and every suspect with its reason and score."""

    __tablename__ = "screening"
    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(index=True)
    version_id: int
    model_id: int | None
    state: str  # flywheel.core.screening.ScreenState
    note: str = ""
    images: int = 0
    checks: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    suspects: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    quarantined: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    decided_by: str = ""

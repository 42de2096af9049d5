"""The store's operations on records. Each public method is one transaction, and every state
change is checked against the core's transition table before it is written. Methods that read,
check and then write run exclusive (flywheel/store/db.py `session`), on SQLite as on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from flywheel.core.domain import (
    BatchState,
    ManifestItem,
    ModelStatus,
    RunState,
    batch_name,
    check_transition,
    model_name,
    run_name,
    version_name,
)
from flywheel.core.errors import NotFound, RegistryError
from flywheel.core.ledger import GENESIS, Action, digest
from flywheel.store import versions
from flywheel.store.db import session
from flywheel.store.tables import (
    BatchRow,
    EpochRow,
    EvaluationRow,
    GateRow,
    LedgerRow,
    ModelRow,
    RunRow,
    VersionRow,
    utcnow,
)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- batches --------------------------------------------------------------------------
    def add_batch(self, name: str, content_sha256: str, files: int) -> BatchRow:
        row = BatchRow(name=name, content_sha256=content_sha256, state=BatchState.RECEIVED, files=files)
        with session(self.engine) as s:
            s.add(row)
        return row

    def update_batch(self, batch_id: int, state: BatchState, **fields: Any) -> BatchRow:
        with session(self.engine, exclusive=True) as s:
            row = _get(s, BatchRow, batch_id, batch_name(batch_id))
            check_transition(f"batch {batch_name(batch_id)}", BatchState(row.state), state)
            row.state = state
            if state in (BatchState.INGESTED, BatchState.REJECTED):
                row.finished_at = utcnow()
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)
        return row

    def batches(self) -> list[BatchRow]:
        with session(self.engine) as s:
            return list(s.exec(select(BatchRow).order_by(col(BatchRow.id))))

    # --- dataset versions -----------------------------------------------------------------
    def latest_version(self) -> VersionRow | None:
        with session(self.engine) as s:
            return s.exec(select(VersionRow).order_by(col(VersionRow.id).desc())).first()

    def version(self, version_id: int) -> VersionRow:
        with session(self.engine) as s:
            return _get(s, VersionRow, version_id, version_name(version_id))

    def versions(self) -> list[VersionRow]:
        with session(self.engine) as s:
            return list(s.exec(select(VersionRow).order_by(col(VersionRow.id))))

    def manifest(self, version_id: int) -> dict[str, ManifestItem]:
        with session(self.engine) as s:
            return versions.manifest(s, version_id)

    def items(self, version_id: int, image_shas: Iterable[str]) -> dict[str, ManifestItem]:
        """The version's items for these images (the ones it has), without its whole manifest."""
        with session(self.engine) as s:
            return versions.items(s, version_id, image_shas)

    def create_version(
        self,
        parent: VersionRow | None,
        batch_id: int | None,
        class_names: list[str],
        changed: Sequence[ManifestItem],
        replaced: Mapping[str, ManifestItem] | None = None,
        images_new: int = 0,
        images_relabelled: int = 0,
    ) -> VersionRow:
        """A version made of `parent`'s items plus `changed` (new images, or re-labelled ones
        whose parent items are in `replaced`, by image sha256): stored as that change alone."""
        fields = {
            "batch_id": batch_id,
            "class_names": list(class_names),
            "images_new": images_new,
            "images_relabelled": images_relabelled,
        }
        with session(self.engine) as s:
            return versions.insert_version(s, parent, fields, changed, replaced or {})

    # --- training runs --------------------------------------------------------------------
    def create_run(self, **fields: Any) -> RunRow:
        row = RunRow(state=RunState.QUEUED, **fields)
        with session(self.engine) as s:
            s.add(row)
        return row

    def update_run(self, run_id: int, state: RunState | None = None, **fields: Any) -> RunRow:
        with session(self.engine, exclusive=True) as s:
            row = _get(s, RunRow, run_id, run_name(run_id))
            if state is not None:
                check_transition(f"run {run_name(run_id)}", RunState(row.state), state)
                row.state = state
                if state is RunState.RUNNING:
                    row.started_at = utcnow()
                elif state is not RunState.QUEUED:
                    row.finished_at = utcnow()
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)
        return row

    def run(self, run_id: int) -> RunRow:
        with session(self.engine) as s:
            return _get(s, RunRow, run_id, run_name(run_id))

    def runs(self) -> list[RunRow]:
        with session(self.engine) as s:
            return list(s.exec(select(RunRow).order_by(col(RunRow.id))))

    def runs_for_version(self, version_id: int) -> list[RunRow]:
        with session(self.engine) as s:
            return list(s.exec(select(RunRow).where(RunRow.version_id == version_id)))

    def add_epoch(self, row: EpochRow) -> None:
        with session(self.engine, exclusive=True) as s:
            s.merge(row)

    def epochs(self, run_id: int) -> list[EpochRow]:
        with session(self.engine) as s:
            return list(s.exec(select(EpochRow).where(EpochRow.run_id == run_id).order_by(col(EpochRow.epoch))))

    def delete_epochs(self, run_id: int) -> None:
        with session(self.engine) as s:
            for row in s.exec(select(EpochRow).where(EpochRow.run_id == run_id)):
                s.delete(row)

    # --- models, evaluations, gate decisions ----------------------------------------------
    def add_model(self, **fields: Any) -> ModelRow:
        row = ModelRow(status=ModelStatus.CANDIDATE, **fields)
        with session(self.engine) as s:
            s.add(row)
        return row

    def model(self, model_id: int) -> ModelRow:
        with session(self.engine) as s:
            return _get(s, ModelRow, model_id, model_name(model_id))

    def models(self) -> list[ModelRow]:
        with session(self.engine) as s:
            return list(s.exec(select(ModelRow).order_by(col(ModelRow.id))))

    def production(self) -> ModelRow | None:
        with session(self.engine) as s:
            return s.exec(select(ModelRow).where(ModelRow.status == ModelStatus.PRODUCTION)).first()

    def reject(self, model_id: int, reason: str, actor: str = "flywheel") -> LedgerRow:
        with session(self.engine, exclusive=True) as s:
            row = _get(s, ModelRow, model_id, model_name(model_id))
            check_transition(f"model {model_name(model_id)}", ModelStatus(row.status), ModelStatus.REJECTED)
            row.status = ModelStatus.REJECTED
            s.add(row)
            return _append(s, Action.REJECT, model_id, None, actor, reason)

    def set_production(self, model_id: int, action: Action, actor: str, reason: str, forced: bool = False) -> LedgerRow:
        """Retire the current production model and make `model_id` production, with its ledger
        entry, in one transaction: the pointer and the record can never disagree."""
        with session(self.engine, exclusive=True) as s:
            new = _get(s, ModelRow, model_id, model_name(model_id))
            check_transition(f"model {model_name(model_id)}", ModelStatus(new.status), ModelStatus.PRODUCTION, forced)
            old = s.exec(select(ModelRow).where(ModelRow.status == ModelStatus.PRODUCTION)).first()
            if old is not None:
                old.status = ModelStatus.RETIRED
                s.add(old)
                s.flush()  # the unique index allows one production row at a time
            new.status = ModelStatus.PRODUCTION
            new.promoted_at = utcnow()
            s.add(new)
            return _append(s, action, model_id, old.id if old else None, actor, reason)

    def set_pin(self, pinned: bool, actor: str, reason: str) -> LedgerRow:
        with session(self.engine, exclusive=True) as s:
            current = s.exec(select(ModelRow).where(ModelRow.status == ModelStatus.PRODUCTION)).first()
            return _append(
                s, Action.PIN if pinned else Action.UNPIN, current.id if current else None, None, actor, reason
            )

    def pin(self) -> LedgerRow | None:
        """The pin entry holding promotions, or None when production is not pinned."""
        with session(self.engine) as s:
            last = s.exec(
                select(LedgerRow)
                .where(col(LedgerRow.action).in_([Action.PIN, Action.UNPIN]))
                .order_by(col(LedgerRow.id).desc())
            ).first()
        return last if last is not None and last.action == Action.PIN else None

    def append_ledger(self, action: Action, actor: str, reason: str, model_id: int | None = None) -> LedgerRow:
        with session(self.engine, exclusive=True) as s:
            return _append(s, action, model_id, None, actor, reason)

    def ledger(self) -> list[LedgerRow]:
        with session(self.engine) as s:
            return list(s.exec(select(LedgerRow).order_by(col(LedgerRow.id))))

    def previous_production(self, current_id: int) -> ModelRow:
        """The model that was production before `current_id` (one generation back)."""
        with session(self.engine) as s:
            row = s.exec(
                select(ModelRow)
                .where(ModelRow.status == ModelStatus.RETIRED, col(ModelRow.id) < current_id)
                .order_by(col(ModelRow.id).desc())
            ).first()
        if row is None:
            raise RegistryError(
                f"no model was in production before {model_name(current_id)}: nothing to roll "
                "back to. Name a retired model with `flywheel rollback --to ID`"
            )
        return row

    def evaluation(self, model_sha256: str, eval_sha256: str) -> EvaluationRow | None:
        with session(self.engine) as s:
            return s.get(EvaluationRow, (model_sha256, eval_sha256))

    def put_evaluation(self, row: EvaluationRow) -> None:
        with session(self.engine, exclusive=True) as s:
            s.merge(row)

    def add_gate_decision(self, row: GateRow) -> GateRow:
        with session(self.engine) as s:
            s.add(row)
        return row

    def gate_decisions(self) -> list[GateRow]:
        with session(self.engine) as s:
            return list(s.exec(select(GateRow).order_by(col(GateRow.id))))

    # --- aggregates for metrics and status ------------------------------------------------
    def counts(self) -> dict[str, Any]:
        with session(self.engine) as s:

            def grouped(column: Any, model: Any) -> dict[str, int]:
                return {k: int(v) for k, v in s.exec(select(column, func.count()).select_from(model).group_by(column))}

            totals = s.exec(
                select(func.coalesce(func.sum(BatchRow.images_ok), 0), func.coalesce(func.sum(BatchRow.quarantined), 0))
            ).one()
            return {
                "runs": grouped(RunRow.state, RunRow),
                "ledger": grouped(LedgerRow.action, LedgerRow),
                "gate": grouped(GateRow.outcome, GateRow),
                "batches": grouped(BatchRow.state, BatchRow),
                "images_ingested": int(totals[0]),
                "images_quarantined": int(totals[1]),
            }


def _append(
    s: Session, action: Action, model_id: int | None, previous: int | None, actor: str, reason: str
) -> LedgerRow:
    """Add a ledger entry chained to the last one. Callers hold an exclusive transaction
    (`session(..., exclusive=True)`: SQLite's write lock, PostgreSQL's advisory lock), so two
    processes cannot both chain onto the same predecessor."""
    last = s.exec(select(LedgerRow).order_by(col(LedgerRow.id).desc())).first()
    entry = LedgerRow(
        action=action,
        model_id=model_id,
        previous_model_id=previous,
        actor=actor,
        reason=reason,
        prev_hash=last.entry_hash if last else GENESIS,
    )
    s.add(entry)
    s.flush()  # assigns the id, which the hash covers
    entry.entry_hash = digest(entry, entry.prev_hash)
    s.add(entry)
    return entry


_LISTING: dict[type, str] = {ModelRow: "flywheel models", VersionRow: "flywheel versions", RunRow: "flywheel status"}


Row = TypeVar("Row", BatchRow, VersionRow, RunRow, ModelRow)


def _get(s: Session, table: type[Row], key: int, name: str) -> Row:
    row = s.get(table, key)
    if row is None:
        listing = _LISTING.get(table, "flywheel status")
        raise NotFound(f"{name} does not exist; list the ones that do with `{listing}`")
    return row


def to_json(row: Any) -> str:
    def default(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    return json.dumps(row.model_dump(), default=default, indent=2)

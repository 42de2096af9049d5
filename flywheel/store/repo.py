"""The store's operations on records: the store port (flywheel.core.ports.StorePort) on SQLModel.
Each public method is one transaction, and every state change is checked against the core's
transition table before it is written. Methods that read, check and then write run exclusive
(flywheel/store/db.py `session`), on SQLite as on PostgreSQL. Rows never leave: every result is
a flywheel.core.records value, converted here (flywheel/store/convert.py), and SQLAlchemy's
errors become StoreError in `session`.

Over 300 lines on purpose: it is the port's one implementation, a short method per port query,
and splitting it by record would scatter the transactions that touch several records at once
(a promotion writes the model, the ledger and the pin together)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from flywheel.core.domain import (
    BatchState,
    ManifestItem,
    ModelStatus,
    RunState,
    StartKind,
    batch_name,
    check_transition,
    model_name,
    run_name,
    version_name,
)
from flywheel.core.errors import NotFound, RegistryError
from flywheel.core.ledger import GENESIS, Action, digest
from flywheel.core.records import (
    KEEP,
    Batch,
    Epoch,
    Evaluation,
    GateRecord,
    Keep,
    LedgerEntry,
    Model,
    Run,
    Version,
)
from flywheel.core.screening import Hashed, Screening, ScreenState
from flywheel.store import versions
from flywheel.store.convert import epoch_row, evaluation_record, evaluation_row, gate_row, maybe, record, records
from flywheel.store.db import session
from flywheel.store.image_hashes import ImageHashes
from flywheel.store.screenings import Screenings
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
        self.image_hashes = ImageHashes(engine)  # ingest's near-copy lookups (flywheel/ingest/dedupe.py)
        self._screenings = Screenings(engine)  # flywheel/store/screenings.py

    # --- batches --------------------------------------------------------------------------
    def add_batch(self, name: str, content_sha256: str, files: int) -> Batch:
        row = BatchRow(name=name, content_sha256=content_sha256, state=BatchState.RECEIVED, files=files)
        with session(self.engine) as s:
            s.add(row)
        return record(Batch, row)

    def update_batch(self, batch_id: int, state: BatchState, **fields: Any) -> Batch:
        with session(self.engine, exclusive=True) as s:
            row = _get(s, BatchRow, batch_id, batch_name(batch_id))
            check_transition(f"batch {batch_name(batch_id)}", BatchState(row.state), state)
            row.state = state
            if state in (BatchState.INGESTED, BatchState.REJECTED):
                row.finished_at = utcnow()
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)
        return record(Batch, row)

    def batches(self) -> list[Batch]:
        with session(self.engine) as s:
            return records(Batch, s.exec(select(BatchRow).order_by(col(BatchRow.id))))

    # --- dataset versions -----------------------------------------------------------------
    def latest_version(self) -> Version | None:
        with session(self.engine) as s:
            return maybe(Version, s.exec(select(VersionRow).order_by(col(VersionRow.id).desc())).first())

    def version(self, version_id: int) -> Version:
        with session(self.engine) as s:
            return record(Version, _get(s, VersionRow, version_id, version_name(version_id)))

    def versions(self) -> list[Version]:
        with session(self.engine) as s:
            return records(Version, s.exec(select(VersionRow).order_by(col(VersionRow.id))))

    def manifest(self, version_id: int) -> dict[str, ManifestItem]:
        with session(self.engine) as s:
            return versions.manifest(s, version_id)

    def items(self, version_id: int, image_shas: Iterable[str]) -> dict[str, ManifestItem]:
        """The version's items for these images (the ones it has), without its whole manifest."""
        with session(self.engine) as s:
            return versions.items(s, version_id, image_shas)

    def create_version(
        self,
        parent: Version | None,
        batch_id: int | None,
        class_names: list[str],
        changed: Sequence[ManifestItem],
        replaced: Mapping[str, ManifestItem] | None = None,
        images_new: int = 0,
        images_relabelled: int = 0,
    ) -> Version:
        """A version made of `parent`'s items plus `changed` (new images, or re-labelled ones
        whose parent items are in `replaced`, by image sha256): stored as that change alone."""
        fields = {
            "batch_id": batch_id,
            "class_names": list(class_names),
            "images_new": images_new,
            "images_relabelled": images_relabelled,
        }
        with session(self.engine) as s:
            row = versions.insert_version(s, parent, fields, changed, replaced or {})
        return record(Version, row)

    # --- training runs --------------------------------------------------------------------
    def create_run(
        self,
        version_id: int,
        start_kind: StartKind,
        start_checkpoint: str,
        start_model_id: int | None = None,
        epochs: int = 0,
        params: dict[str, Any] | None = None,
        purpose: str = "candidate",
        challenger_for: int | None = None,
        replay: dict[str, Any] | None = None,
    ) -> Run:
        row = RunRow(
            state=RunState.QUEUED,
            version_id=version_id,
            start_kind=start_kind,
            start_checkpoint=start_checkpoint,
            start_model_id=start_model_id,
            epochs=epochs,
            params=params or {},
            purpose=purpose,
            challenger_for=challenger_for,
            replay=replay or {},
        )
        with session(self.engine) as s:
            s.add(row)
        return record(Run, row)

    def update_run(
        self,
        run_id: int,
        state: RunState | None = None,
        *,
        error: str | Keep | None = KEEP,
        model_id: int | None = None,
        epochs_done: int | None = None,
        resumed: int | None = None,
        batch: int | None = None,
        batches: int | None = None,
        warm_tensors_matched: int | None = None,
        warm_tensors_total: int | None = None,
        params: dict[str, Any] | None = None,
        guard: dict[str, Any] | None = None,
        environment: dict[str, Any] | None = None,
    ) -> Run:
        given = {
            "model_id": model_id,
            "epochs_done": epochs_done,
            "resumed": resumed,
            "batch": batch,
            "batches": batches,
            "warm_tensors_matched": warm_tensors_matched,
            "warm_tensors_total": warm_tensors_total,
            "params": params,
            "guard": guard,
            "environment": environment,
        }
        with session(self.engine, exclusive=True) as s:
            row = _get(s, RunRow, run_id, run_name(run_id))
            if state is not None:
                check_transition(f"run {run_name(run_id)}", RunState(row.state), state)
                row.state = state
                if state is RunState.RUNNING:
                    row.started_at = utcnow()
                elif state is not RunState.QUEUED:
                    row.finished_at = utcnow()
            if error is not KEEP:
                row.error = error
            for key, value in given.items():
                if value is not None:
                    setattr(row, key, value)
            s.add(row)
        return record(Run, row)

    def run(self, run_id: int) -> Run:
        with session(self.engine) as s:
            return record(Run, _get(s, RunRow, run_id, run_name(run_id)))

    def runs(self) -> list[Run]:
        with session(self.engine) as s:
            return records(Run, s.exec(select(RunRow).order_by(col(RunRow.id))))

    def runs_for_version(self, version_id: int) -> list[Run]:
        with session(self.engine) as s:
            return records(Run, s.exec(select(RunRow).where(RunRow.version_id == version_id)))

    def add_epoch(self, epoch: Epoch) -> None:
        """Record an epoch; one already recorded under its (run, epoch) is replaced."""
        with session(self.engine, exclusive=True) as s:
            s.merge(epoch_row(epoch))

    def epochs(self, run_id: int) -> list[Epoch]:
        with session(self.engine) as s:
            query = select(EpochRow).where(EpochRow.run_id == run_id).order_by(col(EpochRow.epoch))
            return records(Epoch, s.exec(query))

    def delete_epochs(self, run_id: int) -> None:
        with session(self.engine) as s:
            for row in s.exec(select(EpochRow).where(EpochRow.run_id == run_id)):
                s.delete(row)

    # --- models, evaluations, gate decisions ----------------------------------------------
    def add_model(
        self, sha256: str, run_id: int, version_id: int, class_names: list[str], parent_model_id: int | None = None
    ) -> Model:
        row = ModelRow(
            status=ModelStatus.CANDIDATE,
            sha256=sha256,
            run_id=run_id,
            version_id=version_id,
            class_names=list(class_names),
            parent_model_id=parent_model_id,
        )
        with session(self.engine) as s:
            s.add(row)
        return record(Model, row)

    def model(self, model_id: int) -> Model:
        with session(self.engine) as s:
            return record(Model, _get(s, ModelRow, model_id, model_name(model_id)))

    def models(self) -> list[Model]:
        with session(self.engine) as s:
            return records(Model, s.exec(select(ModelRow).order_by(col(ModelRow.id))))

    def production(self) -> Model | None:
        with session(self.engine) as s:
            return maybe(Model, s.exec(select(ModelRow).where(ModelRow.status == ModelStatus.PRODUCTION)).first())

    def reject(self, model_id: int, reason: str, actor: str = "flywheel") -> LedgerEntry:
        with session(self.engine, exclusive=True) as s:
            row = _get(s, ModelRow, model_id, model_name(model_id))
            check_transition(f"model {model_name(model_id)}", ModelStatus(row.status), ModelStatus.REJECTED)
            row.status = ModelStatus.REJECTED
            s.add(row)
            return _append(s, Action.REJECT, model_id, None, actor, reason)

    def set_production(
        self, model_id: int, action: Action, actor: str, reason: str, forced: bool = False
    ) -> LedgerEntry:
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

    def set_pin(self, pinned: bool, actor: str, reason: str) -> LedgerEntry:
        with session(self.engine, exclusive=True) as s:
            current = s.exec(select(ModelRow).where(ModelRow.status == ModelStatus.PRODUCTION)).first()
            return _append(
                s, Action.PIN if pinned else Action.UNPIN, current.id if current else None, None, actor, reason
            )

    def pin(self) -> LedgerEntry | None:
        """The pin entry holding promotions, or None when production is not pinned."""
        with session(self.engine) as s:
            last = s.exec(
                select(LedgerRow)
                .where(col(LedgerRow.action).in_([Action.PIN, Action.UNPIN]))
                .order_by(col(LedgerRow.id).desc())
            ).first()
        return record(LedgerEntry, last) if last is not None and last.action == Action.PIN else None

    def append_ledger(self, action: Action, actor: str, reason: str, model_id: int | None = None) -> LedgerEntry:
        with session(self.engine, exclusive=True) as s:
            return _append(s, action, model_id, None, actor, reason)

    def ledger(self) -> list[LedgerEntry]:
        with session(self.engine) as s:
            return records(LedgerEntry, s.exec(select(LedgerRow).order_by(col(LedgerRow.id))))

    def previous_production(self, current_id: int) -> Model:
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
        return record(Model, row)

    def evaluation(self, model_sha256: str, eval_sha256: str) -> Evaluation | None:
        with session(self.engine) as s:
            return evaluation_record(s.get(EvaluationRow, (model_sha256, eval_sha256)))

    def put_evaluation(self, evaluation: Evaluation) -> None:
        """Cache a score; one already cached under the same (model, eval set) is replaced."""
        with session(self.engine, exclusive=True) as s:
            s.merge(evaluation_row(evaluation))

    def add_gate_decision(self, gate: GateRecord) -> GateRecord:
        row = gate_row(gate)
        with session(self.engine) as s:
            s.add(row)
        return record(GateRecord, row)

    def gate_decisions(self) -> list[GateRecord]:
        with session(self.engine) as s:
            return records(GateRecord, s.exec(select(GateRow).order_by(col(GateRow.id))))

    # --- screenings (the data engine) -----------------------------------------------------
    def add_screening(self, screening: Screening) -> Screening:
        return self._screenings.add(screening)

    def approve_screening(self, screening_id: int, actor: str) -> Screening:
        return self._screenings.release(screening_id, ScreenState.APPROVED, actor)

    def screenings(self, batch_id: int | None = None) -> list[Screening]:
        return self._screenings.all(batch_id)

    def stored_hashes(self) -> list[Hashed]:
        return self._screenings.hashes()

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
) -> LedgerEntry:
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
    return record(LedgerEntry, entry)


_LISTING: dict[type, str] = {ModelRow: "flywheel models", VersionRow: "flywheel versions", RunRow: "flywheel status"}


Row = TypeVar("Row", BatchRow, VersionRow, RunRow, ModelRow)


def _get(s: Session, table: type[Row], key: int, name: str) -> Row:
    row = s.get(table, key)
    if row is None:
        listing = _LISTING.get(table, "flywheel status")
        raise NotFound(f"{name} does not exist; list the ones that do with `{listing}`")
    return row

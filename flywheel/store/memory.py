"""The store port (flywheel.core.ports.StorePort) in memory: the twin the flows' unit tests run
on, held to the same contract as the database store (tests/test_store_port.py runs both).
It checks every state change against the core's transition table and raises NotFound for a
missing id, as `Store` does; nothing persists beyond the object."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from flywheel.core.domain import (
    ManifestItem,
    ModelStatus,
    RunState,
    StartKind,
    check_transition,
    model_name,
    run_name,
    version_name,
)
from flywheel.core.errors import NotFound, RegistryError
from flywheel.core.ledger import GENESIS, Action, digest
from flywheel.core.manifests import DELTA, Totals
from flywheel.core.records import KEEP, Epoch, Evaluation, GateRecord, Keep, LedgerEntry, Model, Run, Version
from flywheel.core.screening import Hashed, Screening, ScreenState, check_release

R = TypeVar("R")


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # one method, one transaction, as the database's
        self._versions: dict[int, Version] = {}
        self._items: dict[int, dict[str, ManifestItem]] = {}  # each version's whole manifest
        self._runs: dict[int, Run] = {}
        self._epochs: dict[tuple[int, int], Epoch] = {}
        self._models: dict[int, Model] = {}
        self._ledger: list[LedgerEntry] = []
        self._evaluations: dict[tuple[str, str], Evaluation] = {}
        self._gates: list[GateRecord] = []
        self._screenings: dict[int, Screening] = {}
        self.hashes: list[Hashed] = []  # what ingest would have stored (a test sets them)

    # --- dataset versions -----------------------------------------------------------------
    def latest_version(self) -> Version | None:
        return self._versions[max(self._versions)] if self._versions else None

    def version(self, version_id: int) -> Version:
        return _found(self._versions, version_id, version_name(version_id), "flywheel versions")

    def versions(self) -> list[Version]:
        return _by_id(self._versions)

    def manifest(self, version_id: int) -> dict[str, ManifestItem]:
        return dict(self._items.get(version_id, {}))

    def items(self, version_id: int, image_shas: Iterable[str]) -> dict[str, ManifestItem]:
        whole = self._items.get(version_id, {})
        return {sha: whole[sha] for sha in set(image_shas) if sha in whole}

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
        """As `Store.create_version`: `parent`'s items plus `changed`, with the same totals."""
        with self._lock:
            start = Totals.of(self._items[parent.id]) if parent is not None else Totals()
            totals = start.apply(changed, replaced or {})
            version = Version(
                id=len(self._versions) + 1,
                parent_id=parent.id if parent else None,
                batch_id=batch_id,
                created_at=_now(),
                class_names=list(class_names),
                manifest_form=DELTA,
                images_new=images_new,
                images_relabelled=images_relabelled,
                **asdict(totals),
            )
            items = dict(self._items[parent.id]) if parent is not None else {}
            items.update({i.image_sha256: i for i in changed})
            self._versions[version.id], self._items[version.id] = version, items
            return version

    # --- training runs and their epochs ---------------------------------------------------
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
        with self._lock:
            run = Run(
                id=len(self._runs) + 1,
                version_id=version_id,
                state=RunState.QUEUED,
                start_kind=StartKind(start_kind),
                start_model_id=start_model_id,
                start_checkpoint=start_checkpoint,
                created_at=_now(),
                epochs=epochs,
                params=dict(params or {}),
                purpose=purpose,
                challenger_for=challenger_for,
                replay=dict(replay or {}),
            )
            self._runs[run.id] = run
            return run

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
        given: dict[str, Any] = {
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
        changes = {k: v for k, v in given.items() if v is not None}
        if error is not KEEP:
            changes["error"] = error
        with self._lock:
            run = self.run(run_id)
            if state is not None:
                check_transition(f"run {run_name(run_id)}", run.state, state)
                changes["state"] = state
                if state is RunState.RUNNING:
                    changes["started_at"] = _now()
                elif state is not RunState.QUEUED:
                    changes["finished_at"] = _now()
            run = self._runs[run_id] = replace(run, **changes)
            return run

    def run(self, run_id: int) -> Run:
        return _found(self._runs, run_id, run_name(run_id), "flywheel status")

    def runs(self) -> list[Run]:
        return _by_id(self._runs)

    def add_epoch(self, epoch: Epoch) -> None:
        with self._lock:
            self._epochs[(epoch.run_id, epoch.epoch)] = epoch

    def epochs(self, run_id: int) -> list[Epoch]:
        return [self._epochs[key] for key in sorted(self._epochs) if key[0] == run_id]

    def delete_epochs(self, run_id: int) -> None:
        with self._lock:
            for key in [k for k in self._epochs if k[0] == run_id]:
                del self._epochs[key]

    # --- models and the production pointer ------------------------------------------------
    def add_model(
        self, sha256: str, run_id: int, version_id: int, class_names: list[str], parent_model_id: int | None = None
    ) -> Model:
        with self._lock:
            model = Model(
                id=len(self._models) + 1,
                sha256=sha256,
                run_id=run_id,
                version_id=version_id,
                parent_model_id=parent_model_id,
                status=ModelStatus.CANDIDATE,
                created_at=_now(),
                promoted_at=None,
                class_names=list(class_names),
            )
            self._models[model.id] = model
            return model

    def model(self, model_id: int) -> Model:
        return _found(self._models, model_id, model_name(model_id), "flywheel models")

    def models(self) -> list[Model]:
        return _by_id(self._models)

    def production(self) -> Model | None:
        return next((m for m in _by_id(self._models) if m.status is ModelStatus.PRODUCTION), None)

    def previous_production(self, current_id: int) -> Model:
        retired = [m for m in _by_id(self._models) if m.status is ModelStatus.RETIRED and m.id < current_id]
        if not retired:
            raise RegistryError(
                f"no model was in production before {model_name(current_id)}: nothing to roll "
                "back to. Name a retired model with `flywheel rollback --to ID`"
            )
        return retired[-1]

    def reject(self, model_id: int, reason: str, actor: str = "flywheel") -> LedgerEntry:
        with self._lock:
            model = self.model(model_id)
            check_transition(f"model {model_name(model_id)}", model.status, ModelStatus.REJECTED)
            self._models[model_id] = replace(model, status=ModelStatus.REJECTED)
            return self._append(Action.REJECT, model_id, None, actor, reason)

    def set_production(
        self, model_id: int, action: Action, actor: str, reason: str, forced: bool = False
    ) -> LedgerEntry:
        with self._lock:
            new = self.model(model_id)
            check_transition(f"model {model_name(model_id)}", new.status, ModelStatus.PRODUCTION, forced)
            old = self.production()
            if old is not None:
                self._models[old.id] = replace(old, status=ModelStatus.RETIRED)
            self._models[model_id] = replace(new, status=ModelStatus.PRODUCTION, promoted_at=_now())
            return self._append(action, model_id, old.id if old else None, actor, reason)

    # --- the ledger and the pin -----------------------------------------------------------
    def set_pin(self, pinned: bool, actor: str, reason: str) -> LedgerEntry:
        with self._lock:
            current = self.production()
            action = Action.PIN if pinned else Action.UNPIN
            return self._append(action, current.id if current else None, None, actor, reason)

    def pin(self) -> LedgerEntry | None:
        last = next((e for e in reversed(self._ledger) if e.action in (Action.PIN, Action.UNPIN)), None)
        return last if last is not None and last.action is Action.PIN else None

    def append_ledger(self, action: Action, actor: str, reason: str, model_id: int | None = None) -> LedgerEntry:
        with self._lock:
            return self._append(action, model_id, None, actor, reason)

    def ledger(self) -> list[LedgerEntry]:
        return list(self._ledger)

    def _append(
        self, action: Action, model_id: int | None, previous: int | None, actor: str, reason: str
    ) -> LedgerEntry:
        prev_hash = self._ledger[-1].entry_hash if self._ledger else GENESIS
        entry = LedgerEntry(
            id=len(self._ledger) + 1,
            at=_now(),
            action=action,
            model_id=model_id,
            previous_model_id=previous,
            actor=actor,
            reason=reason,
            prev_hash=prev_hash,
            entry_hash="",
        )
        entry = replace(entry, entry_hash=digest(entry, prev_hash))
        self._ledger.append(entry)
        return entry

    # --- scores and gate decisions --------------------------------------------------------
    def evaluation(self, model_sha256: str, eval_sha256: str) -> Evaluation | None:
        return self._evaluations.get((model_sha256, eval_sha256))

    def put_evaluation(self, evaluation: Evaluation) -> None:
        with self._lock:
            self._evaluations[(evaluation.model_sha256, evaluation.eval_sha256)] = evaluation

    def add_gate_decision(self, gate: GateRecord) -> GateRecord:
        with self._lock:
            recorded = replace(gate, id=len(self._gates) + 1, created_at=_now())
            self._gates.append(recorded)
            return recorded

    def gate_decisions(self) -> list[GateRecord]:
        return list(self._gates)

    # --- screenings ------------------------------------------------------------------------
    def add_screening(self, screening: Screening) -> Screening:
        with self._lock:
            recorded = replace(screening, id=len(self._screenings) + 1, created_at=_now())
            self._screenings[recorded.id] = recorded
            return recorded

    def approve_screening(self, screening_id: int, actor: str) -> Screening:
        with self._lock:
            current = _found(self._screenings, screening_id, f"screening {screening_id}", "flywheel screen BATCH")
            check_release(current, ScreenState.APPROVED)
            released = replace(current, state=ScreenState.APPROVED, decided_by=actor, decided_at=_now())
            self._screenings[screening_id] = released
            return released

    def screenings(self, batch_id: int | None = None) -> list[Screening]:
        return [s for s in _by_id(self._screenings) if batch_id is None or s.batch_id == batch_id]

    def stored_hashes(self) -> list[Hashed]:
        return list(self.hashes)


def _found(records: Mapping[int, R], key: int, name: str, listing: str) -> R:
    if key not in records:
        raise NotFound(f"{name} does not exist; list the ones that do with `{listing}`")
    return records[key]


def _by_id(records: Mapping[int, R]) -> list[R]:
    return [records[key] for key in sorted(records)]

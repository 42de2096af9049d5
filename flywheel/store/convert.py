"""Rows to records and back, at the store's edge: the flows see flywheel.core.records only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, TypeVar

from sqlmodel import SQLModel

from flywheel.core.domain import BatchState, ModelStatus, RunState, StartKind
from flywheel.core.gate import GateOutcome, Rule, Score
from flywheel.core.gate_details import GateDetails
from flywheel.core.ledger import Action
from flywheel.core.records import Batch, Epoch, Evaluation, GateRecord, LedgerEntry, Model, Run, Version
from flywheel.store.tables import EpochRow, EvaluationRow, GateRow

R = TypeVar("R", Batch, Version, Run, Epoch, Model, GateRecord, LedgerEntry)

# Columns stored as plain strings or JSON that records carry typed: the core's enums, the
# gate's details (read tolerantly: rows from older releases lack newer keys).
_TYPED: dict[type, dict[str, Callable[[Any], Any]]] = {
    Batch: {"state": BatchState},
    Run: {"state": RunState, "start_kind": StartKind},
    Model: {"status": ModelStatus},
    GateRecord: {"outcome": GateOutcome, "rule": Rule, "details": GateDetails.from_json},
    LedgerEntry: {"action": Action},
}


def record(cls: type[R], row: SQLModel) -> R:
    values: dict[str, Any] = {f.name: getattr(row, f.name) for f in fields(cls)}
    for name, read in _TYPED.get(cls, {}).items():
        values[name] = read(values[name])
    return cls(**values)


def records(cls: type[R], rows: Any) -> list[R]:
    return [record(cls, row) for row in rows]


def maybe(cls: type[R], row: SQLModel | None) -> R | None:
    return None if row is None else record(cls, row)


def epoch_row(epoch: Epoch) -> EpochRow:
    return EpochRow(**asdict(epoch))


def evaluation_row(evaluation: Evaluation) -> EvaluationRow:
    return EvaluationRow(
        model_sha256=evaluation.model_sha256,
        eval_sha256=evaluation.eval_sha256,
        version_id=evaluation.version_id,
        **asdict(evaluation.score),
    )


def evaluation_record(row: EvaluationRow | None) -> Evaluation | None:
    if row is None:
        return None
    return Evaluation(
        model_sha256=row.model_sha256, eval_sha256=row.eval_sha256, version_id=row.version_id, score=score_of(row)
    )


def score_of(row: EvaluationRow) -> Score:
    """The one score shape (flywheel.core.gate.Score) from its columns."""
    return Score(
        map50_95=row.map50_95,
        map50=row.map50,
        precision=row.precision,
        recall=row.recall,
        per_class={str(k): float(v) for k, v in dict(row.per_class).items()},
        instances={str(k): int(v) for k, v in dict(row.instances or {}).items()},
    )


def gate_row(gate: GateRecord) -> GateRow:
    # id and created_at are the database's to assign
    values = {f.name: getattr(gate, f.name) for f in fields(gate) if f.name not in ("id", "created_at")}
    values["details"] = gate.details.to_json()
    return GateRow(**values)

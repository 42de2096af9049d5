"""Rows to records and back, at the store's edge: the flows see flywheel.core.records only."""

from __future__ import annotations

from dataclasses import asdict, fields
from enum import StrEnum
from typing import Any, TypeVar

from sqlmodel import SQLModel

from flywheel.core.domain import BatchState, ModelStatus, RunState
from flywheel.core.records import Batch, Epoch, Evaluation, GateRecord, LedgerEntry, Model, Run, Version
from flywheel.store.tables import EpochRow, EvaluationRow, GateRow

R = TypeVar("R", Batch, Version, Run, Epoch, Model, Evaluation, GateRecord, LedgerEntry)

# The state columns are plain strings in the database; records carry the core's enums.
_STATES: dict[type, tuple[str, type[StrEnum]]] = {
    Batch: ("state", BatchState),
    Run: ("state", RunState),
    Model: ("status", ModelStatus),
}


def record(cls: type[R], row: SQLModel) -> R:
    values: dict[str, Any] = {f.name: getattr(row, f.name) for f in fields(cls)}
    if cls in _STATES:
        name, enum = _STATES[cls]
        values[name] = enum(values[name])
    return cls(**values)


def records(cls: type[R], rows: Any) -> list[R]:
    return [record(cls, row) for row in rows]


def maybe(cls: type[R], row: SQLModel | None) -> R | None:
    return None if row is None else record(cls, row)


def epoch_row(epoch: Epoch) -> EpochRow:
    return EpochRow(**asdict(epoch))


def evaluation_row(evaluation: Evaluation) -> EvaluationRow:
    return EvaluationRow(**asdict(evaluation))


def gate_row(gate: GateRecord) -> GateRow:
    # id and created_at are the database's to assign
    values = {k: v for k, v in asdict(gate).items() if k not in ("id", "created_at")}
    return GateRow(**values)

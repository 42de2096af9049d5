"""The LabelPulls port (flywheel.core.ports) on the database: one row per labeling-project task,
the annotation taken and its edit time (table `label_pull`, migration 0003)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from flywheel.core.labeling import PullMark
from flywheel.store.db import session
from flywheel.store.tables import LabelPullRow, utcnow


class StoredLabelPulls:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def marks(self, project: str) -> dict[int, PullMark]:
        with session(self.engine) as s:
            rows = s.exec(select(LabelPullRow).where(col(LabelPullRow.project) == project)).all()
            return {r.task_id: PullMark(r.task_id, r.annotation_id, r.updated_at, r.batch) for r in rows}

    def record(self, project: str, marks: Sequence[PullMark]) -> None:
        with session(self.engine, exclusive=True) as s:
            for m in marks:
                row = s.get(LabelPullRow, (project, m.task_id))
                if row is None:
                    row = LabelPullRow(project=project, task_id=m.task_id, annotation_id=0, updated_at="", batch="")
                row.annotation_id, row.updated_at, row.batch, row.pulled_at = (
                    m.annotation_id,
                    m.updated_at,
                    m.batch,
                    utcnow(),
                )
                s.add(row)

"""Screenings in the database (the `screening` table) and the stored images' hashes the leakage
check reads: the queries behind Store's screening methods, rows converted to
flywheel.core.screening records here."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from flywheel.core.errors import NotFound
from flywheel.core.records import as_utc
from flywheel.core.screening import Check, Hashed, Screening, ScreenState, Suspect, check_release
from flywheel.store.db import session
from flywheel.store.tables import ImageHashRow, ScreeningRow


def suspect_json(s: Suspect) -> dict[str, Any]:
    return asdict(s) | {"check": str(s.check), "box": list(s.box), "predicted": list(s.predicted)}


def suspect_of(data: dict[str, Any]) -> Suspect:
    tuples = {"box": tuple(data.get("box", ())), "predicted": tuple(data.get("predicted", ()))}
    return Suspect(**(data | {"check": Check(data["check"])} | tuples))


def screening_of(row: ScreeningRow) -> Screening:
    return Screening(
        id=row.id or 0,
        batch_id=row.batch_id,
        version_id=row.version_id,
        model_id=row.model_id,
        state=ScreenState(row.state),
        note=row.note,
        images=row.images,
        checks=dict(row.checks),
        suspects=tuple(suspect_of(s) for s in row.suspects),
        quarantined=tuple(row.quarantined),
        created_at=as_utc(row.created_at),
        decided_at=as_utc(row.decided_at) if row.decided_at else None,
        decided_by=row.decided_by,
    )


class Screenings:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, s: Screening) -> Screening:
        row = ScreeningRow(
            batch_id=s.batch_id,
            version_id=s.version_id,
            model_id=s.model_id,
            state=str(s.state),
            note=s.note,
            images=s.images,
            checks=s.checks,
            suspects=[suspect_json(x) for x in s.suspects],
            quarantined=list(s.quarantined),
        )
        with session(self.engine) as db:
            db.add(row)
            db.flush()
            return screening_of(row)

    def release(self, screening_id: int, state: ScreenState, actor: str) -> Screening:
        with session(self.engine, exclusive=True) as db:
            row = db.get(ScreeningRow, screening_id)
            if row is None:
                raise NotFound(f"screening {screening_id} does not exist; see `flywheel screen BATCH`")
            check_release(screening_of(row), state)
            row.state, row.decided_by, row.decided_at = str(state), actor, datetime.now(UTC)
            db.add(row)
            db.flush()
            return screening_of(row)

    def all(self, batch_id: int | None = None) -> list[Screening]:
        query = select(ScreeningRow).order_by(col(ScreeningRow.id))
        if batch_id is not None:
            query = query.where(ScreeningRow.batch_id == batch_id)
        with session(self.engine) as db:
            return [screening_of(r) for r in db.exec(query)]

    def hashes(self) -> list[Hashed]:
        with session(self.engine) as db:
            rows = db.exec(select(ImageHashRow.image_sha256, ImageHashRow.dhash, ImageHashRow.split))
            return [Hashed(sha, int(h, 16), split) for sha, h, split in rows]

"""The database: one engine, schema creation, and SQLAlchemy errors translated at the edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from flywheel.errors import StoreError
from flywheel.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

DB_NAME = "flywheel.db"


def database_url(data_root: Path, configured: str) -> str:
    return configured or f"sqlite:///{data_root / DB_NAME}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            conn.isolation_level = None  # let SQLAlchemy's "begin" below open the transaction
            # WAL: the CLI can read (and roll back) while the daemon writes.
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Take the write lock when a transaction starts, not when it first writes: two
            # processes changing production (daemon promoting, CLI rolling back) then run one
            # after the other instead of one failing with "database is locked" mid-change.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_schema(engine: Engine) -> None:
    try:
        SQLModel.metadata.create_all(engine)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot create the database schema at {engine.url}: {exc}") from exc


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error, errors translated."""
    try:
        with Session(engine, expire_on_commit=False) as s:
            yield s
            s.commit()
    except SQLAlchemyError as exc:
        raise StoreError(
            f"database error at {engine.url}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}. "
            "If the disk is full or read-only, free space or fix permissions and restart"
        ) from exc

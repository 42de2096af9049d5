"""The database: one engine per URL (SQLite or PostgreSQL), transactions, and SQLAlchemy errors
translated at the edge. The schema itself is Alembic's job (flywheel/store/migrate.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlmodel import Session, create_engine

from flywheel.core.errors import ConfigError, StoreError

DB_NAME = "flywheel.db"
EXAMPLE = "postgresql+psycopg://USER:PASSWORD@HOST:5432/DBNAME"

# PostgreSQL has no BEGIN IMMEDIATE: transactions that read, check and then write (production
# changes, the ledger's hash chain, state transitions) take this transaction-scoped advisory
# lock first, so two processes on any hosts run them one after the other, as on SQLite.
# Any constant will do; it only has to be the same in every flywheel process ("flyw").
LOCK_KEY = 0x666C7977
# SQLite gives up on a held write lock after 30 s ("database is locked"); the same for PostgreSQL.
LOCK_TIMEOUT = "30s"


def database_url(data_root: Path, configured: str) -> str:
    return configured or f"sqlite:///{data_root / DB_NAME}"


def mask(url: str | URL) -> str:
    """The URL fit for a message or a log: the password replaced by ***."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    # Also for what is not a URL at all ("user:secret@host"); a password may itself hold an @.
    return re.sub(r"^([^:/@]*://)?([^:/@]*):.*@", r"\1\2:***@", url)


def make_engine(url: str) -> Engine:
    """An engine for `url`; ConfigError when it is not a URL flywheel can use. Connects lazily."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database.url {mask(url)!r} is not a database URL; write it as {EXAMPLE}, or leave it "
            "empty for SQLite in the data root"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        # psycopg 3 is the driver flywheel installs; SQLAlchemy's default would be psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database.url {mask(parsed)!r}: flywheel stores its records in SQLite or PostgreSQL, "
            f"not {backend}; write it as {EXAMPLE}, or leave it empty for SQLite in the data root"
        )
    try:
        return _sqlite_engine(parsed) if backend == "sqlite" else _postgresql_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"database.url {mask(parsed)!r} cannot be used ({exc.__class__.__name__}: {exc}); "
            f"flywheel ships the psycopg driver: write it as {EXAMPLE}"
        ) from None


def _sqlite_engine(url: URL) -> Engine:
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


def _postgresql_engine(url: URL) -> Engine:
    # A host that drops packets would otherwise hang every CLI command forever; a
    # ?connect_timeout= in the URL wins. (Times need no session setting: SQLModel stores them
    # as TIMESTAMP WITH TIME ZONE and hands them back in UTC.)
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    # pre-ping: the daemon outlives server restarts and idle-connection cuts by firewalls.
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def lock(s: Session) -> None:
    """Serialize this transaction with every other locking one (see LOCK_KEY). On SQLite every
    transaction already holds the write lock from its start (BEGIN IMMEDIATE)."""
    if s.get_bind().dialect.name == "postgresql":  # one round trip; the timeout is set first
        s.execute(
            text("SELECT set_config('lock_timeout', :timeout, true), pg_advisory_xact_lock(:key)"),
            {"timeout": LOCK_TIMEOUT, "key": LOCK_KEY},
        )


def hint(engine: Engine, exc: SQLAlchemyError) -> str:
    """What to do when the database fails: depends on which database it is, and how it failed."""
    if engine.dialect.name != "postgresql":
        return "If the disk is full or read-only, free space or fix permissions and restart"
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03":  # lock_not_available
        return f"Another flywheel process held the database's lock for over {LOCK_TIMEOUT}: try again"
    if isinstance(exc, OperationalError | InterfaceError):  # connecting, or the connection
        return (
            "Check that the PostgreSQL server is running and reachable from this host, and that the "
            "user, password and database in database.url (config.toml) are right"
        )
    return "The PostgreSQL server's log may say more"


@contextmanager
def session(engine: Engine, exclusive: bool = False, consistent: bool = False) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error, errors translated.
    `exclusive`: it reads, checks and writes; no other exclusive transaction runs beside it.
    `consistent`: its reads all see one snapshot (SQLite's transactions always do; PostgreSQL's
    default, READ COMMITTED, lets each statement see what committed since the one before)."""
    # PostgreSQL's snapshot would be taken before the lock is granted: stale for the writes.
    assert not (exclusive and consistent), "an exclusive transaction reads what committed before it"
    try:
        with Session(engine, expire_on_commit=False) as s:
            if consistent and engine.dialect.name == "postgresql":
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            if exclusive:
                lock(s)
            yield s
            s.commit()
    except SQLAlchemyError as exc:
        raise StoreError(
            f"database error at {mask(engine.url)}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}. "
            f"{hint(engine, exc)}"
        ) from exc

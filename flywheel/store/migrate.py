"""The schema, by Alembic: every process that opens a store brings its database to the head
revision first (flywheel/store/migrations/versions/), so a new flywheel on any host upgrades
the database it finds, empty or not.

Databases made before flywheel used Alembic (SQLModel's create_all, no alembic_version table)
hold exactly the schema of the baseline revision: they are stamped with it, then upgraded.

Alembic is imported only when a database needs migrating: importing it costs every CLI command
about a third of a second, and a database at HEAD needs one query to tell.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flywheel import __version__
from flywheel.core.errors import StoreError
from flywheel.store.db import LOCK_KEY, hint, mask

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision in migrations/versions/: bump it with each new revision (a test checks).
HEAD = "0004"
# The revision whose schema the releases before Alembic created with SQLModel's create_all.
BASELINE = "0001"
BASELINE_TABLES = frozenset(
    {
        "batch",
        "dataset_version",
        "dataset_version_item",
        "training_run",
        "training_epoch",
        "model",
        "evaluation",
        "gate_decision",
        "production_ledger",
        "image_hash",
    }
)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the scripts ship inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current(connection: Connection) -> str | None:
    """The database's revision; None for an empty database or one made before Alembic."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def upgrade_schema(engine: Engine) -> None:
    """Create the schema in an empty database, or upgrade it to the head revision.

    StoreError (the URL's password masked) when the database cannot be reached, or when a newer
    flywheel has already migrated it past what this one knows."""
    try:
        with engine.connect() as conn:
            if current(conn) == HEAD:  # the common case
                return
        with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, one process migrates at a time
            _migrate(conn)
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise StoreError(f"cannot open the database {mask(engine.url)}: {first}. {hint(engine, exc)}") from exc


def _migrate(conn: Connection) -> None:
    from alembic import command

    if conn.dialect.name == "postgresql":  # two processes starting on an empty database
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
    revision = current(conn)
    if revision is not None:
        _known(conn, revision)
    else:
        found = set(inspect(conn).get_table_names()) & BASELINE_TABLES
        if found == BASELINE_TABLES:
            log.info("database %s predates migrations: stamping it %s", mask(conn.engine.url), BASELINE)
            command.stamp(alembic_config(conn), BASELINE)
        elif found:
            raise StoreError(
                f"the database {mask(conn.engine.url)} holds some of flywheel's tables but not all "
                f"(missing: {', '.join(sorted(BASELINE_TABLES - found))}): it was not made by flywheel, "
                "or was damaged. Point database.url at an empty database, or restore a backup"
            )
    if revision != HEAD:
        log.info("upgrading the database %s to schema revision %s", mask(conn.engine.url), HEAD)
        command.upgrade(alembic_config(conn), "head")


def _known(conn: Connection, revision: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        raise StoreError(
            f"the database {mask(conn.engine.url)} is at schema revision {revision}, which flywheel "
            f"{__version__} does not know: a newer flywheel has upgraded it. Install that version "
            "here too (every host that opens the database needs the same flywheel)"
        ) from None

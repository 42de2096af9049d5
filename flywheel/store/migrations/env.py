"""Alembic's environment: how a migration reaches the database.

flywheel runs it from `flywheel.store.migrate.upgrade_schema` whenever a store is opened, on
the connection (and inside the transaction) it passes as `config.attributes["connection"]`.
To write a new revision after changing flywheel/store/tables.py, let Alembic compare the
tables with a database at the current head (then read and edit what it wrote):

    .venv/bin/python -c 'from alembic import command; from flywheel.store.migrate import alembic_config; \
        command.revision(alembic_config(url="sqlite:////tmp/head.db"), "what changed", autogenerate=True)'

(/tmp/head.db: any flywheel database opened by the current code, e.g. a data root's flywheel.db;
pass rev_id="0002" and so on), then set HEAD in flywheel/store/migrate.py to the new revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from flywheel.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from flywheel.store.db import make_engine


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite cannot ALTER most things: a revision that changes a table copies it instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("flywheel's migrations run against a database, not as SQL scripts (--sql)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection or set sqlalchemy.url")
    with make_engine(url).begin() as connection:  # Alembic's own command line (new revisions)
        _migrate(connection)


run()

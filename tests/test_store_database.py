"""Issue 5: the schema by Alembic on SQLite and PostgreSQL (new, old and newer databases), and
what the CLI says when database.url is wrong or its server cannot be reached."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.main import app as cli
from flywheel.core import ledger
from flywheel.core.domain import ManifestItem, ModelStatus, StartKind
from flywheel.core.errors import InvalidTransition, StoreError
from flywheel.core.ledger import Action
from flywheel.core.manifests import DELTA, FULL, additive_hash
from flywheel.store import Store, database_url, db, make_engine, upgrade_schema
from flywheel.store.migrate import BASELINE, HEAD, alembic_config, current
from flywheel.store.tables import ModelRow, utcnow
from tests.conftest import TINY_CONFIG, free_port
from tests.pg_server import both_backends

runner = CliRunner()


def _url(tmp_path: Path, db_url: str) -> str:
    return database_url(tmp_path / "root", db_url)


def _config(db_url: str) -> str:
    return TINY_CONFIG.format(port=free_port()) + (f'\n[database]\nurl = "{db_url}"\n' if db_url else "")


def _pre_alembic_schema(engine) -> None:
    """The tables the releases before Alembic made (SQLModel's create_all then, the baseline
    revision now), without the alembic_version table they never had."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.exec_driver_sql("DROP TABLE alembic_version")


def _old_version(engine, batch_id: int, items: dict[str, ManifestItem]) -> int:
    """A version as flywheel wrote it before delta manifests: every item, sorted-list hashes."""

    def sorted_hash(chosen) -> str:
        lines = sorted(f"{i.image_sha256} {i.label_sha256} {i.split}" for i in chosen)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    values = list(items.values())
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dataset_version (parent_id, batch_id, created_at, class_names, train_images, "
                "val_images, boxes, manifest_sha256, val_sha256, images_new, images_relabelled) VALUES "
                "(NULL, :batch, :now, :names, :train, :val, :boxes, :sha, :val_sha, :n, 0)"
            ),
            {
                "batch": batch_id, "now": utcnow(), "names": json.dumps(["red", "blue"]),
                "train": sum(i.split == "train" for i in values), "val": sum(i.split == "val" for i in values),
                "boxes": sum(i.boxes for i in values), "sha": sorted_hash(values),
                "val_sha": sorted_hash(i for i in values if i.split == "val"), "n": len(values),
            },
        )  # fmt: skip
        version_id = conn.execute(text("SELECT MAX(id) FROM dataset_version")).scalar_one()
        for i in values:
            conn.execute(
                text("INSERT INTO dataset_version_item VALUES (:v, :image, :label, :ext, :split, :boxes)"),
                {
                    "v": version_id,
                    "image": i.image_sha256,
                    "label": i.label_sha256,
                    "ext": i.ext,
                    "split": i.split,
                    "boxes": i.boxes,
                },
            )
    return int(version_id)


@both_backends
def test_an_old_database_is_stamped_and_upgraded_keeping_its_rows(tmp_path, db_url):
    """A database as the releases before Alembic left it: its schema, rows, no alembic_version;
    its one version holds every item (the full form) with sorted-list hashes."""
    (tmp_path / "root").mkdir()
    engine = make_engine(_url(tmp_path, db_url))
    _pre_alembic_schema(engine)
    old = Store(engine)
    batch = old.add_batch("b1", "c0ffee", files=2)
    items = {"a": ManifestItem("a", "la", ".jpg", "train", 2), "b": ManifestItem("b", "lb", ".jpg", "val", 1)}
    version_id = _old_version(engine, batch.id, items)
    run = old.create_run(version_id=version_id, start_kind=StartKind.SCRATCH, start_checkpoint="yolov8n.yaml")
    model = old.add_model(sha256="ab" * 32, run_id=run.id, version_id=version_id, class_names=["red", "blue"])
    old.set_production(model.id, Action.PROMOTE, "alice", "first model")
    with engine.connect() as conn:
        assert "alembic_version" not in inspect(conn).get_table_names()
    engine.dispose()

    app = App(init_data_root(tmp_path / "root", _config(db_url)))  # init on an existing database, then open

    with app.engine.connect() as conn:
        assert current(conn) == HEAD
    assert app.store.production().id == model.id
    assert app.store.manifest(version_id) == items
    upgraded = app.store.version(version_id)
    assert (upgraded.manifest_form, upgraded.boxes, upgraded.val_boxes) == (FULL, 3, 1)  # val_boxes filled in
    assert [b.name for b in app.store.batches()] == ["b1"]
    assert ledger.verify(app.store.ledger()) == []
    assert app.store.add_batch("b2", "beef", files=1).id == batch.id + 1  # ids go on where they were
    with Session(app.engine) as s, pytest.raises(SAIntegrityError):  # still one production model at most
        s.add(ModelRow(sha256="cd" * 32, run_id=run.id, version_id=version_id, status=ModelStatus.PRODUCTION,
                       class_names=[]))  # fmt: skip
        s.commit()
    # A new version on top of the full-form one: stored as its change, totals right.
    relabelled, added = ManifestItem("a", "la2", ".jpg", "train", 3), ManifestItem("c", "lc", ".png", "val", 4)
    child = app.store.create_version(
        app.store.version(version_id), None, ["red", "blue"], [relabelled, added], {"a": items["a"]}
    )
    expected = {**items, "a": relabelled, "c": added}
    assert app.store.manifest(child.id) == expected
    assert (child.manifest_form, child.train_images, child.val_images, child.boxes, child.val_boxes) == (
        DELTA,
        1,
        2,
        8,
        5,
    )
    assert (child.manifest_sha256, child.val_sha256) == (
        additive_hash(expected.values()),
        additive_hash(i for i in expected.values() if i.split == "val"),
    )


def test_head_names_the_newest_revision():
    """The quick check on start-up compares with HEAD: it must be the scripts' head."""
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


@both_backends
def test_the_migrations_build_exactly_the_tables(tmp_path, db_url):
    """tables.py and versions/ agree: a change to one without the other fails here."""
    (tmp_path / "root").mkdir()
    engine = make_engine(_url(tmp_path, db_url))
    upgrade_schema(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


@both_backends
def test_processes_starting_together_on_an_empty_database_migrate_it_once(tmp_path, db_url):
    (tmp_path / "root").mkdir()
    url = _url(tmp_path, db_url)
    engines = [make_engine(url) for _ in range(4)]
    errors: list[BaseException] = []

    def start(engine):
        try:
            upgrade_schema(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engines[0].connect() as conn:
        assert current(conn) == HEAD
    for e in engines:
        e.dispose()


@both_backends
def test_a_database_a_newer_flywheel_migrated_is_refused(tmp_path, db_url):
    (tmp_path / "root").mkdir()
    engine = make_engine(_url(tmp_path, db_url))
    upgrade_schema(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match=r"revision 9999.*newer flywheel.*Install that version"):
        upgrade_schema(engine)
    engine.dispose()


@both_backends
def test_production_changes_from_many_connections_at_once_stay_consistent(tmp_path, db_url):
    """Past the registry's lock file (which only holds on one host or a shared data root): the
    database alone keeps one production model and an unbroken ledger chain."""
    (tmp_path / "root").mkdir()
    url = _url(tmp_path, db_url)
    engine = make_engine(url)
    upgrade_schema(engine)
    store = Store(engine)
    version = store.create_version(None, None, ["red"], [])
    run = store.create_run(version_id=version.id, start_kind=StartKind.SCRATCH, start_checkpoint="yolov8n.yaml")
    ids = [store.add_model(sha256=f"{i:064x}", run_id=run.id, version_id=version.id, class_names=["red"]).id
           for i in range(4)]  # fmt: skip
    store.set_production(ids[0], Action.PROMOTE, "setup", "first")
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        own = Store(make_engine(url))  # a connection of its own, as another process would have
        for i in range(8):
            try:
                if i % 3 == 2:
                    own.append_ledger(Action.PIN if worker % 2 else Action.UNPIN, f"w{worker}", "race")
                else:
                    own.set_production(ids[(worker + i) % 4], Action.ROLLBACK, f"w{worker}", "race")
            except InvalidTransition:
                pass  # already production: the other worker got there first
            except BaseException as exc:
                errors.append(exc)
        own.engine.dispose()

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(m.status == ModelStatus.PRODUCTION for m in store.models()) == 1
    entries = store.ledger()
    assert ledger.verify(entries) == [] and len(entries) > 8
    engine.dispose()


def test_a_database_with_some_foreign_tables_is_refused(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE model (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match="some of flywheel's tables but not all"):
        upgrade_schema(engine)


def test_postgres_scheme_and_no_driver_mean_psycopg(pg_server):
    name = pg_server.create_database()
    for driver in ("postgres", "postgresql"):
        engine = make_engine(pg_server.url(name, driver))
        assert engine.dialect.driver == "psycopg"
        upgrade_schema(engine)
        engine.dispose()
    pg_server.drop_database(name)


def test_a_lock_held_too_long_is_an_error_that_says_so(pg_server, monkeypatch):
    """PostgreSQL's counterpart of SQLite giving up on a held write lock after 30 s."""
    monkeypatch.setattr(db, "LOCK_TIMEOUT", "200ms")
    name = pg_server.create_database()
    engine = make_engine(pg_server.url(name))
    upgrade_schema(engine)
    with db.session(engine, exclusive=True), pytest.raises(StoreError, match="held the database's lock for over"):
        Store(engine).append_ledger(Action.PIN, "second", "waits for the first")
    engine.dispose()
    pg_server.drop_database(name)


def _cli_with(tmp_path: Path, url: str) -> tuple[int, str]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "config.toml").write_text(f'[database]\nurl = "{url}"\n')
    result = runner.invoke(cli, ["status", "--root", str(root)])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_an_unreachable_server_is_named_with_the_password_masked(tmp_path):
    port = free_port()  # nothing listens there
    code, output = _cli_with(tmp_path, f"postgresql+psycopg://flywheel:hunter2@127.0.0.1:{port}/flywheel")
    assert code == 1
    assert f"cannot open the database postgresql+psycopg://flywheel:***@127.0.0.1:{port}/flywheel" in output
    assert "PostgreSQL server is running and reachable" in output
    assert "hunter2" not in output


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://flywheel:hunter2@db/flywheel", "SQLite or PostgreSQL, not mysql"),
        ("postgresql+nosuchdriver://flywheel:hunter2@db/flywheel", "cannot be used"),
        ("flywheel:hunter2@db", "is not a database URL"),
    ],
)
def test_a_wrong_url_is_a_config_error_with_the_password_masked(tmp_path, url, expected):
    code, output = _cli_with(tmp_path, url)
    assert code == 2
    assert expected in output and "postgresql+psycopg://USER:PASSWORD@HOST:5432/DBNAME" in output
    assert "hunter2" not in output

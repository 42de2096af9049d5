"""Shared fixtures. Ultralytics' settings go to a temp folder and nothing may touch the network."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_server import PgServer, running_server

os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

# Small enough for a 2-core CPU: a real YOLOv8n training at 64 px takes seconds.
TINY_CONFIG = """\
[inbox]
settle_seconds = 0.5
rescan_seconds = 2.0

[dataset]
val_fraction = 0.25

[schedule]
debounce_seconds = 0.0

[training]
epochs_scratch = 2
epochs_warm = 1
imgsz = 64
batch = 8

[metrics]
port = {port}
"""


@pytest.fixture(autouse=True, scope="session")
def _ultralytics_config_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("yolo-config")
    os.environ["YOLO_CONFIG_DIR"] = str(folder)
    os.environ["MPLCONFIGDIR"] = str(folder / "mpl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server (tests/pg_server.py), started when a test first needs it."""
    with running_server() as server:
        yield server


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database `data_root` uses: SQLite, unless a module runs on both (`both_backends`).
    FLYWHEEL_TEST_BACKEND=postgresql runs the other modules' data roots on PostgreSQL too."""
    return str(getattr(request, "param", os.environ.get("FLYWHEEL_TEST_BACKEND", "sqlite")))


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """database.url for the test's data root: empty (SQLite in the data root), or a fresh
    PostgreSQL database of its own, dropped after the test."""
    if backend == "sqlite":
        yield ""
        return
    server: PgServer = request.getfixturevalue("pg_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def data_root(tmp_path: Path, db_url: str) -> Path:
    """An initialised data root with the tiny test config (and the test's database)."""
    from flywheel.app import init_data_root

    config = TINY_CONFIG.format(port=free_port())
    if db_url:
        config += f'\n[database]\nurl = "{db_url}"\n'
    return init_data_root(tmp_path / "root", config)

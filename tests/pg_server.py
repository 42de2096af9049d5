"""A throwaway PostgreSQL server for the tests: `initdb` into a temp folder, listening on
loopback at a free port only, one fresh database per test, stopped and deleted at the end.

The store's tests run on both backends (`pytestmark = both_backends`). Without PostgreSQL's
server binaries the postgresql half fails with what to install, unless FLYWHEEL_SKIP_POSTGRES=1.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BACKENDS = ["sqlite", "postgresql"]
both_backends = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
SKIP_ENV = "FLYWHEEL_SKIP_POSTGRES"
SUPERUSER = "postgres"
# Durability is worthless for a server that is deleted after the tests, and costs seconds.
SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"


def find_bindir() -> Path | None:
    """The newest installed server's bin folder (Debian's layout first, then PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    initdb = shutil.which("initdb")
    if initdb:
        found.insert(0, Path(initdb).parent)
    usable = [d for d in found if (d / "initdb").is_file() and (d / "pg_ctl").is_file()]
    return usable[-1] if usable else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bindir: Path
    folder: Path
    port: int = 0

    def __post_init__(self) -> None:
        self._names = itertools.count(1)
        # initdb refuses to run as root: the server runs as the postgres account then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # Dropping waits for the test's pooled connections to be killed (about a second on a
        # busy machine): done beside the next tests, not in front of them.
        self._dropper = ThreadPoolExecutor(1, thread_name_prefix="pg-drop")
        self._drops: list[Future[None]] = []

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, check=False)
        if done.returncode:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}{done.stdout}\n{tail}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        for attempt in range(3):  # a free port can be taken between asking and binding
            self.port = _free_port()
            options = f"-k {self.folder} -p {self.port} -h 127.0.0.1 {SETTINGS}"
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"),
                          "-w", "-t", "60", "-o", options, "start")  # fmt: skip
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def pause(self) -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast`); `unpause` brings it back
        on the same port, so the clients' URLs stay right."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def unpause(self) -> None:
        options = f"-k {self.folder} -p {self.port} -h 127.0.0.1 {SETTINGS}"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-w", "-t", "60", "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._dropper.shutdown(wait=True)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        for drop in self._drops:
            drop.result()  # a failed drop is a bug in the tests' set-up: say so

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(SUPERUSER, "postgresql"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # psycopg wants a LiteralString; these are our own names

    def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop it in the background (FORCE: the test's engines still hold pooled connections)."""
        self._drops.append(self._dropper.submit(self._admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def running_server() -> Iterator[PgServer]:
    """A started server, or the test fails (skips with FLYWHEEL_SKIP_POSTGRES=1) saying why."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the postgresql tests are skipped")
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found: the store's tests run against "
            "PostgreSQL too. Install them (Debian: apt-get install -y postgresql), or set "
            f"{SKIP_ENV}=1 to skip the postgresql tests"
        )
        pytest.fail(message, pytrace=False)
    # Not under pytest's tmp folder: that is private to its user, and the server may run as postgres.
    folder = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    server = PgServer(bindir, folder)
    started = False
    try:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")  # KeyError: no such account
            os.chown(folder, account.pw_uid, account.pw_gid)
        server.init()
        server.start()
        started = True
        yield server
    finally:
        if started:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)

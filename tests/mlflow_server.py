"""A real `mlflow server` for the mirror's tests: loopback only, a SQLite backend store and an
artifact root in a temp folder, started in its own process group and stopped by its pid.
`stop()` then `start()` again serves the same stores on the same port, as a restart would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

START_SECONDS = 120.0  # the server imports Flask, FastAPI and SQLAlchemy: ~15 s on a busy CPU


class MlflowServer:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the server's workers stop with it
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.process.returncode}: {self.folder / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not up after {START_SECONDS}s: {self.folder / 'server.log'}")

    def stop(self) -> None:
        """SIGTERM to the group the server leads (by its pid: uvicorn, its job runner and huey
        consumers), then wait until every one of them is gone; SIGKILL after 20 s."""
        if self.process is None:
            return
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(group):
            self.process.poll()  # reap the leader, or the group never empties
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.1)
        self.process.wait()


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def running(home: Path) -> Iterator[MlflowServer]:
    """`mlflow server` on a free loopback port, its SQLite store under `home`, stopped after."""
    from tests.conftest import free_port

    server = MlflowServer(home, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""A real Label Studio on loopback, in its own venv (`make labelstudio`: .labelstudio/), for the
slow tests: started on a port and a data folder, stopped by its pid, and started again on the
same port and folder (its SQLite database and uploads survive, as a restarted server's would).

Label Studio checks predictions against the labeling config only when its flag
`fflag_feat_utc_210_prediction_validation_15082025` is on (off in 1.23.2's flag file), so it
runs with it on: an import that passes was checked, not just stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LABEL_STUDIO = REPO / ".labelstudio" / "bin" / "label-studio"  # `make labelstudio` (test-slow installs it)
TOKEN = "flywheel-test-token-0123456789"
VALIDATE = "fflag_feat_utc_210_prediction_validation_15082025"


@dataclass
class Server:
    port: int
    home: Path  # HOME and the data folder live here
    files: Path  # LOCAL_FILES_DOCUMENT_ROOT
    log: Path
    settings: dict[str, str] = field(default_factory=dict)  # more of Label Studio's environment settings
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, parsed JSON or raw bytes) of an API call; 4xx/5xx are answers, not errors."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Token {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw, kind = response.status, response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers.get_content_type()
        return status, json.loads(raw) if kind == "application/json" else raw

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer!r}"
        return answer

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def start(self) -> None:
        """Start it (again) on its port and folder, and wait until /health says UP."""
        if not LABEL_STUDIO.is_file():
            pytest.fail(f"Label Studio is not installed: run `make labelstudio` ({LABEL_STUDIO})")
        self.files.mkdir(parents=True, exist_ok=True)
        # A clean environment: Label Studio reads bare names too (HOST, PORT, DEBUG, DATABASE_NAME...),
        # so the caller's variables could change the server; HOME keeps it out of the real home.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.home / "data"),
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.files),
            VALIDATE: "true",
            **self.settings,
        }
        command = [
            str(LABEL_STUDIO),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--username",
            "flywheel@localhost",
            "--password",
            "flywheel-test",
            "--user-token",
            TOKEN,
            "--enable-legacy-api-token",  # so `Authorization: Token ...` works: 1.23 turns it off by default
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not healthy(self.port):
            code = self.process.poll()
            assert code is None, f"Label Studio exited with {code}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"Label Studio not up on port {self.port} in 300 s:\n{self.tail()}"
            time.sleep(0.25)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200 and bool(json.loads(response.read()).get("status") == "UP")
    except (OSError, ValueError):  # not listening yet, or not answering yet
        return False


@contextlib.contextmanager
def running(home: Path) -> Iterator[Server]:
    """A Label Studio on a free loopback port whose data lives under `home`, stopped after."""
    from tests.conftest import free_port

    server = Server(free_port(), home, home / "files", home / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()

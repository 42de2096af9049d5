"""A full disk and a read-only data root, for real: the data root lives on a small tmpfs the
test mounts. The daemon stays alive (/healthz 200, /metrics served), says why it cannot work
(/readyz 503, `flywheel_degraded` 1, one log line), loses nothing (the batch waits in the
inbox), and recovers by itself once the disk takes writes again, with an intact database."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from tests.conftest import free_port
from tests.metrics_scrape import scrape, value

FLYWHEEL = [sys.executable, "-m", "flywheel"]

CONFIG = """\
[inbox]
settle_seconds = 3600.0            # a batch is complete only by its READY file here
rescan_seconds = 0.5

[dataset]
val_fraction = 0.25

[schedule]
min_new_images = 100000            # ingest only: no training in this test

[metrics]
port = {port}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError as exc:  # not listening yet
        return 0, str(exc)


def until(what: str, check, daemon: subprocess.Popen[bytes], timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        assert daemon.poll() is None, f"the daemon died while waiting for {what}"
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def fill(disk: Path) -> Path:
    """Write until the disk is full; returns the filler file."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_full_disk_and_read_only_root_degrade_the_daemon_which_recovers_alone(small_disk, tmp_path):
    port = free_port()
    root = init_data_root(small_disk / "root", CONFIG.format(port=port))
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=out, stderr=subprocess.STDOUT)
    try:
        until("ready", lambda: get(port, "/readyz")[0] == 200, daemon)
        batch = shutil.copytree(synthetic_batch(tmp_path / "staging" / "b1", 12, seed=1), root / "inbox" / "b1")
        filler = fill(small_disk)
        (batch / "READY").touch()  # an empty file: an inode, no block

        # -- full: alive, serving, degraded, nothing lost ------------------------------------
        _, body = until("degraded", lambda: (r := get(port, "/readyz"))[0] == 503 and "degraded" in r[1] and r, daemon)
        checks = json.loads(body)["checks"]
        full = f"data root {root} is not writable: No space left on device"
        assert checks["data_root"] == {"ok": False, "detail": full}, body
        # the step that hit the full disk first: the database's write, or a file's copy
        work = checks["work"]["detail"]
        in_database = (
            f"degraded: database error at sqlite:///{root}/flywheel.db: OperationalError: (sqlite3.OperationalError) "
            "database or disk is full. If the disk is full or read-only, free space or fix permissions and restart"
        )
        in_a_file = re.fullmatch(
            rf"degraded: cannot write at {re.escape(str(root))}/\S+: No space left on device\. Free space on the "
            r"data root's disk, or make it writable; the daemon retries by itself",
            work,
        )
        assert not checks["work"]["ok"] and (work == in_database or in_a_file), body
        assert json.loads(body)["reason"] == f"{work}; {full}"
        assert get(port, "/healthz")[0] == 200
        until("the gauge set", lambda: value(scrape(port), "flywheel_degraded") == 1, daemon)
        assert (root / "inbox" / "b1" / "READY").is_file() and App(root).store.versions() == []

        # -- space again: it ingests by itself ------------------------------------------------
        filler.unlink()
        until("recovery", lambda: get(port, "/readyz")[0] == 200, daemon)
        until("the version", lambda: len(App(root).store.versions()) == 1, daemon)
        # /metrics renders at most once a second (metrics.render_seconds): the next render says it
        until("the gauge cleared", lambda: value(scrape(port), "flywheel_degraded") == 0, daemon)
        assert not (root / "inbox" / "b1").exists()

        # -- read-only: the object store bind-mounted read-only over itself (open files still
        # write, every new file is refused with EROFS, as on a disk remounted read-only) ------
        objects = root / "objects"
        subprocess.run(["mount", "--bind", str(objects), str(objects)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(objects)], check=True)
        batch = shutil.copytree(synthetic_batch(tmp_path / "staging" / "b2", 12, seed=2), root / "inbox" / "b2")
        (batch / "READY").touch()
        _, body = until("read-only", lambda: (r := get(port, "/readyz"))[0] == 503 and "degraded" in r[1] and r, daemon)
        assert "Read-only file system" in body, body
        assert get(port, "/healthz")[0] == 200
        until("the gauge set", lambda: value(scrape(port), "flywheel_degraded") == 1, daemon)
        subprocess.run(["umount", str(objects)], check=True)
        until("ready again", lambda: get(port, "/readyz")[0] == 200, daemon)
        until("the second version", lambda: len(App(root).store.versions()) == 2, daemon)
    finally:
        subprocess.run(["umount", str(root / "objects")], check=False, capture_output=True)
        daemon.terminate()
        daemon.wait(60)
    text = log.read_text()
    assert daemon.returncode == 0, text
    assert text.count("degraded, still serving /metrics") == 2 and text.count("recovered:") == 2
    with sqlite3.connect(root / "flywheel.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

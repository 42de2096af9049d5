"""What the database-outage tests of the running daemon share: a daemon in a thread on a fresh
PostgreSQL database, the server stopped from a crash point (flywheel.core.faults) the moment the
daemon reaches it, its log records counted, its retries read, and the invariants checked after."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from flywheel.app import App, build_daemon, init_data_root
from flywheel.cli.main import app as cli
from flywheel.core.domain import BatchState, RunState, model_name
from flywheel.core.spec import TrainSpec
from flywheel.flow import cycle, promotion, registry, run_events
from flywheel.ingest import batchrun, pipeline
from flywheel.service.daemon import Daemon
from tests.conftest import TINY_CONFIG
from tests.fakes import Event, FakeTrainer
from tests.pg_server import PgServer

# every module that calls crash_point by the name it imported
CRASH_POINT_MODULES = (pipeline, batchrun, run_events, cycle, promotion, registry)
CONFIG = TINY_CONFIG.format(port=0)


class LoadableTrainer(FakeTrainer):
    """The fake trainer, but its best.pt is a checkpoint torch loads (as Ultralytics would): the
    tests check that production stays loadable, not only that its bytes match."""

    def events(self, spec: TrainSpec) -> list[Event]:
        events = super().events(spec)
        best = Path(spec.out_dir) / "best.pt"
        if not spec.evaluate_only:
            torch.manual_seed(spec.run_id)
            torch.save({"model": torch.nn.Linear(2, 2), "run": spec.run_id}, best)
        return events


class PauseAt:
    """Stands in for crash_point: once armed, the first time the daemon reaches `point` the
    PostgreSQL server is stopped (pg_ctl stop -m fast) right there, in the daemon's thread."""

    def __init__(self, server: PgServer, point: str):
        self.server, self.point = server, point
        self.armed = False
        self.fired = threading.Event()
        self.at = 0.0  # when the server was stopped (time.time(), as log records' `created`)

    def __call__(self, name: str) -> None:
        if self.armed and name == self.point and not self.fired.is_set():
            self.server.pause()
            self.at = time.time()
            self.fired.set()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for module in CRASH_POINT_MODULES:
            monkeypatch.setattr(module, "crash_point", self)


class Records(logging.Handler):
    """Every record flywheel logs at INFO or above (what an operator's journal shows)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def since(self, at: float = 0.0, until: float = float("inf")) -> list[str]:
        """The records logged from time `at` (time.time()) to `until`, as "LEVEL message"."""
        return [f"{r.levelname} {r.getMessage()}" for r in self.records if at <= r.created <= until]


@contextmanager
def captured_log() -> Iterator[Records]:
    logger = logging.getLogger("flywheel")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def pg_database(server: PgServer) -> Iterator[str]:
    """database.url of a fresh database on `server`; the server running again and the database
    dropped at the end."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        if not _accepting(server):
            server.unpause()
        server.drop_database(name)


@contextmanager
def running_daemon(root: Path, trainer: FakeTrainer) -> Iterator[tuple[Daemon, threading.Thread]]:
    """The daemon of `root` in a thread, stopped at the end."""
    daemon = build_daemon(root, trainer)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.ready.wait(60), "the daemon did not start"
        yield daemon, thread
    finally:
        daemon.stop()
        thread.join(60)
        assert not thread.is_alive(), "the daemon did not stop"


def data_root(root: Path, url: str, config: str = "") -> Path:
    return init_data_root(root, (config or CONFIG) + f'\n[database]\nurl = "{url}"\n')


def _accepting(server: PgServer) -> bool:
    return (server.data / "postmaster.pid").is_file()


def until(what: str, check: Callable[[], Any], thread: threading.Thread, timeout: float = 60) -> Any:
    """Wait for a condition (not for a time): its value, or the test fails at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert thread.is_alive(), f"the daemon stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)
    return result


def retries(daemon: Daemon, reason: str = "storage") -> float:
    """flywheel_daemon_retries_total{reason}, read from the counter itself: the registry's other
    collectors would ask the database, which is away."""
    for family in daemon.live.retries.collect():
        for sample in family.samples:
            if sample.name == "flywheel_daemon_retries_total" and sample.labels == {"reason": reason}:
                return sample.value
    raise AssertionError(f"no flywheel_daemon_retries_total sample for reason {reason}")


def files_of(batch: Path) -> list[str]:
    return sorted(str(p.relative_to(batch)) for p in batch.rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_invariants(root: Path, dropped: dict[str, list[str]], good_images: set[str], bad: set[str]) -> None:
    """What must hold once the daemon stopped: every dropped file in one place (a version or
    quarantine), one version per batch, no run left running, production loadable and what the
    database says, the ledger's chain intact."""
    store = App(root).store
    batches = {b.name: b for b in store.batches()}
    assert set(batches) == set(dropped)
    for name, files in dropped.items():
        row = batches[name]
        assert row.state == BatchState.INGESTED, row
        assert not (root / "inbox" / name).exists(), f"batch {name} still in the inbox"
        assert row.files == len(files) == row.files_versioned + row.quarantined + row.ignored, (row, files)
        if row.quarantined:
            report = json.loads((Path(row.quarantine_dir or "") / "report.json").read_text())
            quarantined = {f["path"] for f in report["files"]}
            assert len(quarantined) == row.quarantined
            assert all((Path(row.quarantine_dir or "") / rel).is_file() for rel in quarantined if rel.endswith(".jpg"))
    versions = store.versions()
    assert sorted(v.batch_id for v in versions) == sorted(b.id for b in batches.values())  # one each
    manifest = store.manifest(versions[-1].id or 0)
    assert good_images <= set(manifest) and not bad & set(manifest)  # versioned xor quarantined
    runs = store.runs()
    assert [r.state for r in runs] == [RunState.SUCCEEDED] * len(runs), runs
    production = store.production()
    assert production is not None and production.run_id == runs[-1].id
    App(root).registry.checkpoint(production)  # verifies its sha256
    shown = json.loads((root / "production" / "model.json").read_text())
    assert shown["id"] == model_name(production.id or 0) and shown["sha256"] == production.sha256
    assert sha256(root / "production" / "model.pt") == production.sha256
    loaded = torch.load(root / "production" / "model.pt", map_location="cpu", weights_only=False)
    assert isinstance(loaded["model"], torch.nn.Module)
    verified = CliRunner().invoke(cli, ["audit", "verify", "--root", str(root)])
    assert verified.exit_code == 0 and "ledger intact" in verified.output, verified.output

"""SIGKILL the daemon again and again, at named points across ingest, versioning, training,
evaluation and promotion (flywheel.core.faults) and at random moments, restart it each time, and
check after every restart what must always hold:

- no file lost: every dropped batch is still in the inbox or recorded, its files accounted for
  (versioned + quarantined + ignored), every versioned image in the object store;
- no duplicate version: one version per batch at most, no two alike from the same parent;
- every run final, or resumable (interrupted), or the one the daemon is running now;
- production loadable and matching its record, on disk and in the database.

At the end a last daemon (no crash point) finishes whatever is left, and every good image that
was dropped is in the final version.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from flywheel.app import App, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.domain import BatchState, RunState, model_name
from flywheel.core.faults import ENV, POINTS
from tests.conftest import TINY_CONFIG

pytestmark = pytest.mark.slow

FLYWHEEL = [sys.executable, "-m", "flywheel"]
KILLS = int(os.environ.get("FLYWHEEL_FAULT_KILLS", "24"))
SEED = int(os.environ.get("FLYWHEEL_FAULT_SEED", "20261123"))
BATCHES = 12  # enough work that every kill lands on some (about two kills a batch)
FINAL_RUNS = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED}

CONFIG = TINY_CONFIG.format(port=0)  # tiny trainings, no debounce, resume interrupted runs (the default)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_batches(staging: Path) -> list[Path]:
    """BATCHES batches of 8 images; the third also holds an unreadable image and a bad label."""
    batches = []
    for i in range(BATCHES):
        batch = synthetic_batch(staging / f"batch{i:02d}", 8, seed=100 + i, size=64)
        if i == 2:
            (batch / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
            (batch / "labels" / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n")
            (batch / "labels" / "img_000.txt").write_text("7 0.5 0.5 0.1\n")  # a bad line: a class too many, 4 fields
        batches.append(batch)
    return batches


def check(root: Path, dropped: dict[str, list[str]], reconciled: bool) -> None:
    app = App(root)
    store = app.store
    batches = {b.name: b for b in store.batches()}
    # no file lost
    for name, files in dropped.items():
        in_inbox = (root / "inbox" / name).is_dir()
        row = batches.get(name)
        if row is None or row.state in (BatchState.RECEIVED, BatchState.INGESTING):
            assert in_inbox, f"batch {name} is neither recorded nor in the inbox"
            continue
        assert row.files == len(files), (name, row.files, len(files))
        assert row.files == row.files_versioned + row.quarantined + row.ignored, (name, row)
        # (recorded and still in the inbox is what a kill just after the commit leaves: the next
        # start sees the same content ingested already and moves it to inbox/.done)
    versions = store.versions()
    for version in versions:
        for item in store.manifest(version.id or 0).values():
            assert app.objects.path(item.image_sha256).is_file(), (version.id, item)
            assert app.objects.path(item.label_sha256).is_file(), (version.id, item)
    # no duplicate version
    made_by = Counter(v.batch_id for v in versions if v.batch_id is not None)
    assert all(n == 1 for n in made_by.values()), made_by
    alike = Counter((v.parent_id, v.manifest_sha256) for v in versions)
    assert all(n == 1 for n in alike.values()), alike
    # every run final or resumable: one training at a time, whether the daemon lives or was
    # just killed (a run it left running is marked interrupted by the next start, see `ready`)
    runs = store.runs()
    assert sum(r.state == RunState.RUNNING for r in runs) <= 1, runs
    assert sum(r.state == RunState.QUEUED for r in runs) <= 1, runs
    # production loadable and matching its record. A kill between the database's commit and
    # the folder's swap leaves production/ on the model before (whole, never torn) until the
    # next start publishes the new one: after a start they agree exactly.
    for model in store.models():
        app.registry.checkpoint(model)  # every checkpoint verifies against its sha256
    production = store.production()
    link = root / "production"
    if production is None or (not reconciled and not link.exists()):
        assert production is not None or not link.exists()
        return  # (killed just after the first model's commit: production/ appears at the next start)
    shown = json.loads((link / "model.json").read_text())
    assert sha256(link / "model.pt") == shown["sha256"]
    assert shown["sha256"] in {m.sha256 for m in store.models()}
    if reconciled:
        assert shown["sha256"] == production.sha256 and shown["id"] == model_name(production.id or 0)
    checkpoint = torch.load(link / "model.pt", map_location="cpu", weights_only=False)
    assert isinstance(checkpoint.get("ema") or checkpoint.get("model"), torch.nn.Module)  # as Ultralytics loads it


def work_left(root: Path) -> bool:
    store = App(root).store
    if any(p.is_dir() and not p.name.startswith(".") for p in (root / "inbox").iterdir()):
        return True
    if any(r.state not in FINAL_RUNS for r in store.runs()):
        return True
    latest = store.latest_version()
    return latest is not None and not store.runs_for_version(latest.id or 0)


class Daemons:
    def __init__(self, root: Path, logs: Path):
        self.root, self.logs, self.started = root, logs, 0

    def start(self, crash_at: str | None) -> tuple[subprocess.Popen[bytes], Path]:
        self.started += 1
        log = self.logs / f"daemon{self.started:02d}.log"
        env = {k: v for k, v in os.environ.items() if k != ENV}
        if crash_at:
            env[ENV] = crash_at
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*FLYWHEEL, "run", "--root", str(self.root)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return proc, log


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> float | None:
    """Seconds until the daemon says it runs (its recovery included); None if it died first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if "flywheel running on" in log.read_text(errors="replace"):
            return time.monotonic() - started
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    pytest.fail(f"daemon not ready after {timeout}s: {log.read_text()}")


def phase_of(root: Path) -> str:
    store = App(root).store
    if any(b.state in (BatchState.RECEIVED, BatchState.INGESTING) for b in store.batches()):
        return "ingest"
    if any(r.state == RunState.RUNNING for r in store.runs()):
        return "training"
    return "idle"


@pytest.mark.timeout(3600)  # 24 kills and restarts, each waiting for its crash point: ~10 min on 2 idle cores
def test_the_daemon_survives_sigkill_at_many_points_with_every_invariant_held(tmp_path):
    rng = random.Random(SEED)
    root = init_data_root(tmp_path / "root", CONFIG)
    logs = tmp_path / "logs"
    logs.mkdir()
    pending = make_batches(tmp_path / "staging")
    dropped: dict[str, list[str]] = {}
    good_images = {sha256(p) for b in pending for p in (b / "images").iterdir() if p.name != "broken.jpg"}
    daemons = Daemons(root, logs)
    kills: Counter[str] = Counter()
    ready_seconds: list[float] = []

    def unfired() -> list[str]:
        return [p for p in POINTS if kills[p] == 0]

    # KILLS kills, and more (up to twice as many) until every named point has fired once
    while sum(kills.values()) < KILLS or (unfired() and sum(kills.values()) < 2 * KILLS):
        reachable = [p for p in POINTS if not p.startswith("ingest.")]  # nothing new in the inbox
        if not work_left(root) and pending:
            batch = pending.pop(0)
            dropped[batch.name] = [*sorted(str(p.relative_to(batch)) for p in batch.rglob("*") if p.is_file()), "READY"]
            drop(batch, root / "inbox")
            reachable = list(POINTS)
        point = "random"
        if work_left(root):  # points not fired yet first, most of the time, so every one is covered
            fresh = [p for p in reachable if p in unfired()]
            point = rng.choice(fresh) if fresh and rng.random() < 0.75 else rng.choice((*reachable, "random", "random"))
        nth = rng.randint(1, 2) if point == "eval.scored" else 1  # a warm run has 1 epoch, two scores
        proc, log = daemons.start(None if point == "random" else f"{point}@{nth}")
        try:
            ready = wait_ready(proc, log)
            if ready is not None:
                ready_seconds.append(ready)
                check(root, dropped, reconciled=True)
            if point == "random":
                time.sleep(rng.uniform(0.3, 6.0))
                what = f"random ({phase_of(root)})"
                proc.send_signal(signal.SIGKILL)
            else:
                try:
                    proc.wait(timeout=60)
                    what = point
                except subprocess.TimeoutExpired:  # nothing left that reaches this point
                    what = f"idle, waiting for {point}"
                    proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, log.read_text())
        finally:
            if proc.poll() is None:
                proc.kill()
        kills[what] += 1
        check(root, dropped, reconciled=False)

    assert not unfired(), f"crash points never reached in {sum(kills.values())} kills: {unfired()} ({dict(kills)})"

    # a last daemon, with no crash point, finishes everything left
    for batch in pending:
        dropped[batch.name] = [*sorted(str(p.relative_to(batch)) for p in batch.rglob("*") if p.is_file()), "READY"]
        drop(batch, root / "inbox")
    proc, log = daemons.start(None)
    try:
        assert wait_ready(proc, log) is not None
        deadline = time.monotonic() + 600
        while work_left(root) and time.monotonic() < deadline:
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    check(root, dropped, reconciled=True)

    store = App(root).store
    final = store.manifest(store.latest_version().id or 0)
    assert good_images <= set(final), "a good image that was dropped is not in the final version"
    assert {b.name for b in store.batches()} == set(dropped)
    broken = next(b for b in store.batches() if b.name == "batch02")
    assert broken.quarantined >= 2 and broken.quarantine_dir and Path(broken.quarantine_dir, "report.json").is_file()
    assert all(r.state in FINAL_RUNS for r in store.runs())
    print(f"\n{sum(kills.values())} kills, {daemons.started} daemon starts; kills by point:")
    for what, n in sorted(kills.items()):
        print(f"  {what:40s} {n}")
    ready_seconds.sort()
    print(
        f"restart to ready (recovery included): median {ready_seconds[len(ready_seconds) // 2]:.2f}s, "
        f"max {ready_seconds[-1]:.2f}s over {len(ready_seconds)} starts"
    )
    print(f"{len(store.versions())} versions, {len(store.runs())} runs, {len(store.models())} models")

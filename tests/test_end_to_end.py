"""The whole loop on real components: `flywheel run` as a child process on a temp data root,
a real watchdog observer, real SQLite, real (tiny) Ultralytics trainings, /metrics scraped
over HTTP, and `flywheel rollback` through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from flywheel.app import App
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.domain import ModelStatus, RunState, StartKind
from tests.conftest import TINY_CONFIG, free_port
from tests.metrics_scrape import scrape, value

T = TypeVar("T")
FLYWHEEL = [sys.executable, "-m", "flywheel"]
# Two-epoch models on 64-pixel images score near 0 and their difference is noise, so the gate
# is set to let any candidate through: the outcome is known, asserted, and the rollback after
# it always has a promoted model to undo. The gate's rules are proven on real scores in
# tests/test_gate_real.py and on fixed scores in tests/test_gate.py.
E2E_CONFIG = TINY_CONFIG + "\n[gate]\ntolerance = 1.0\nmax_class_drop = 1.0\n"


def wait_for(what: str, check: Callable[[], T | None], daemon: subprocess.Popen, timeout: float = 180) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if daemon.poll() is not None:
            pytest.fail(f"daemon exited ({daemon.returncode}) while waiting for {what}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen]]:
    port = free_port()
    root = tmp_path / "root"
    subprocess.run([*FLYWHEEL, "init", str(root)], check=True, capture_output=True)
    (root / "config.toml").write_text(E2E_CONFIG.format(port=port))
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield root, port, daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
        print((tmp_path / "daemon.log").read_text())  # shown by pytest when a test fails


def finished_run(app: App, count: int) -> object | None:
    runs = app.store.runs()
    if len(runs) >= count and runs[count - 1].state not in (RunState.QUEUED, RunState.RUNNING):
        return runs[count - 1]
    return None


def test_two_batches_make_two_models_the_second_warm_started_then_rollback(running, tmp_path):
    root, port, daemon = running
    timings: dict[str, float] = {}
    staging = tmp_path / "staging"

    # -- batch 1: scratch training, first model promoted -------------------------------------
    t0 = time.monotonic()
    drop(synthetic_batch(staging / "batch1", 16, seed=1), root / "inbox")
    app = App(root)
    run1 = wait_for("run 1", lambda: finished_run(app, 1), daemon)
    timings["batch1_to_promotion_s"] = time.monotonic() - t0
    assert run1.state == RunState.SUCCEEDED, run1.error
    assert run1.start_kind == StartKind.SCRATCH and run1.epochs_done == 2
    m1 = app.store.model(run1.model_id)
    assert m1.status == ModelStatus.PRODUCTION and m1.version_id == 1
    assert json.loads((root / "production" / "model.json").read_text())["id"] == "m0001"
    assert not (root / "inbox" / "batch1").exists() and (root / "inbox" / ".done" / "b0001-batch1").is_dir()
    assert len(app.store.epochs(run1.id)) == 2  # per-epoch metrics streamed from the child

    # -- batch 2: warm start from model 1's checkpoint --------------------------------------
    t0 = time.monotonic()
    drop(synthetic_batch(staging / "batch2", 16, seed=2), root / "inbox")
    run2 = wait_for("run 2", lambda: finished_run(app, 2), daemon)
    timings["batch2_to_decision_s"] = time.monotonic() - t0
    assert run2.state == RunState.SUCCEEDED, run2.error
    assert run2.start_kind == StartKind.WARM and run2.start_model_id == m1.id and run2.version_id == 2
    assert run2.start_checkpoint == str(app.registry.checkpoint(m1))
    # the weights were loaded, not initialised: every conv weight equals model 1's at train start
    assert run2.warm_tensors_total and run2.warm_tensors_matched == run2.warm_tensors_total
    m2 = app.store.model(run2.model_id)
    assert m2.parent_model_id == m1.id
    gate = app.store.gate_decisions()[-1]
    assert gate.candidate_model_id == m2.id and gate.production_model_id == m1.id
    assert gate.eval_sha256 == app.store.version(2).val_sha256
    assert gate.margin == pytest.approx(gate.candidate_map - gate.production_map)
    assert (gate.outcome, gate.rule) == ("promote", "map_not_worse"), (gate.margin, gate.details.verdicts)
    assert app.store.production().id == m2.id

    # -- /metrics over HTTP ------------------------------------------------------------------
    s = scrape(port)
    assert value(s, "flywheel_images_ingested_total") == 32
    assert value(s, "flywheel_dataset_version") == 2
    assert value(s, "flywheel_training_runs_total", outcome="succeeded") == 2
    assert value(s, "flywheel_promotions_total") == 2
    assert value(s, "flywheel_rejections_total") == 0
    # the warm run's auto budget: the floor (epochs_warm_min 5) capped at epochs_scratch (2)
    assert value(s, "flywheel_training_epoch") == 2 and value(s, "flywheel_training_epochs") == 2
    assert value(s, "flywheel_training_duration_seconds_count", outcome="succeeded") == 2
    assert value(s, "flywheel_model_score", role="candidate", metric="map50_95") == pytest.approx(gate.candidate_map)

    # -- rollback through the CLI, while the daemon runs ------------------------------------
    t0 = time.monotonic()
    cli = subprocess.run(
        [*FLYWHEEL, "rollback", "--root", str(root), "--reason", "e2e test"], capture_output=True, text=True
    )
    timings["rollback_cli_s"] = time.monotonic() - t0
    assert cli.returncode == 0, cli.stderr
    assert "production is now m0001" in cli.stdout
    assert app.store.production().id == m1.id
    assert json.loads((root / "production" / "model.json").read_text())["id"] == "m0001"
    entry = app.store.ledger()[-1]
    assert entry.action == "rollback" and entry.reason == "e2e test" and entry.actor
    # /metrics renders at most once a second (metrics.render_seconds): a scrape within a
    # second of the last one may still show the render from before the rollback
    wait_for("the rollback counted", lambda: value(scrape(port), "flywheel_rollbacks_total") == 1, daemon)

    # -- batch 3: a corrupt image and a bad label line go to quarantine, the rest is versioned --
    bad = synthetic_batch(staging / "batch3", 10, seed=3)
    (bad / "images" / "s3_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (bad / "labels" / "s3_0001.txt").write_text("0 0.5 0.5 0.2\n")
    t0 = time.monotonic()
    drop(bad, root / "inbox")
    batch3 = wait_for(
        "batch 3",
        lambda: next((b for b in app.store.batches() if b.name == "batch3" and b.state == "ingested"), None),
        daemon,
    )
    timings["batch3_ingest_s"] = time.monotonic() - t0
    assert batch3.images_ok == 8 and batch3.quarantined == 4 and batch3.version_id == 3
    report = json.loads((root / "quarantine" / "b0003-batch3" / "report.json").read_text())
    reasons = {f["path"]: f["reason"] for f in report["files"]}
    assert "does not decode" in reasons["images/s3_0000.png"] or "not an image" in reasons["images/s3_0000.png"]
    assert "expected 5 numbers" in reasons["labels/s3_0001.txt"]
    assert set(reasons) == {"images/s3_0000.png", "labels/s3_0000.txt", "images/s3_0001.png", "labels/s3_0001.txt"}
    for rel in reasons:
        assert (root / "quarantine" / "b0003-batch3" / rel).is_file()
    assert len(app.store.manifest(3)) == 32 + 8

    # -- SIGTERM: a clean stop (the training of version 3, in flight, is cancelled and recorded) -
    run3 = wait_for(
        "run 3 to start",
        lambda: next((r for r in app.store.runs() if r.version_id == 3 and r.state == RunState.RUNNING), None),
        daemon,
    )
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    run3 = app.store.run(run3.id)
    assert run3.state == RunState.CANCELLED and run3.model_id is None, (run3.state, run3.error)
    assert all(r.state not in (RunState.QUEUED, RunState.RUNNING) for r in app.store.runs())
    assert app.store.production().id == m1.id  # the rollback stands; nothing was promoted meanwhile
    print("e2e timings:", json.dumps({k: round(v, 2) for k, v in timings.items()}))


def test_cli_ingest_and_train_by_hand(tmp_path):
    """`flywheel ingest` and `flywheel train` take the same path as the daemon, real training."""
    root = tmp_path / "root"
    env = {**os.environ}
    subprocess.run([*FLYWHEEL, "init", str(root)], check=True, capture_output=True)
    (root / "config.toml").write_text(TINY_CONFIG.format(port=0))
    batch = synthetic_batch(tmp_path / "hand", 12, seed=5)
    before = sorted(p.relative_to(batch) for p in batch.rglob("*"))
    ingest = subprocess.run(
        [*FLYWHEEL, "ingest", str(batch), "--root", str(root)], capture_output=True, text=True, env=env
    )
    assert ingest.returncode == 0, ingest.stderr
    assert "12 images accepted" in ingest.stdout and "v0001" in ingest.stdout
    assert sorted(p.relative_to(batch) for p in batch.rglob("*")) == before  # source left as it was
    train = subprocess.run([*FLYWHEEL, "train", "--root", str(root)], capture_output=True, text=True, env=env)
    assert train.returncode == 0, train.stderr
    assert "m0001 promoted: first model" in train.stdout
    assert (root / "production" / "model.pt").is_file()
    shutil.rmtree(root / "versions")  # a version folder is derived state: training rebuilds it
    again = subprocess.run([*FLYWHEEL, "train", "--root", str(root)], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert "m0002" in again.stdout

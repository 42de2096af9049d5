"""The schedule in a running daemon: a burst of batches is one training on the newest version;
`flywheel train` while the daemon runs goes through the daemon's queue (real child process,
real training); the cron schedule trains what waits (in process, APScheduler's firing stood in
for by the job it calls)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from flywheel.app import App, build_daemon, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.domain import RunState
from flywheel.flow.waiting import waiting
from flywheel.service import train_queue
from tests.fakes import FakeTrainer
from tests.test_disk_full import get
from tests.test_end_to_end import wait_for

FLYWHEEL = [sys.executable, "-m", "flywheel"]

CONFIG = """\
[inbox]
settle_seconds = 0.3
rescan_seconds = {rescan}

[dataset]
val_fraction = 0.25

[schedule]
debounce_seconds = {debounce}
min_new_images = {min_new}
cron = "{cron}"

[training]
epochs_scratch = 1
epochs_warm = 1
imgsz = 64
batch = 8
threads = 2

[metrics]
port = 0
"""


def start(tmp_path: Path, **settings: object) -> tuple[Path, subprocess.Popen[bytes], Path]:
    root = init_data_root(
        tmp_path / "root", CONFIG.format(**{"debounce": 0, "min_new": 1, "cron": "", "rescan": 1.0} | settings)
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=out, stderr=subprocess.STDOUT)
    wait_for("the daemon", lambda: "flywheel running on" in log.read_text(), daemon, timeout=60)
    return root, daemon, log


def stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.terminate()
        daemon.wait(60)


def test_batches_arriving_together_are_one_training_on_the_newest_version(tmp_path):
    root, daemon, _ = start(tmp_path, debounce=4)
    try:
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), root / "inbox")
        app = App(root)
        wait_for("version 1", lambda: len(app.store.versions()) == 1, daemon)
        # version 1 is made and nothing trains on it: the debounce holds it for the next batch
        assert app.store.runs() == []
        drop(synthetic_batch(tmp_path / "s" / "b2", 12, seed=2), root / "inbox")
        run = wait_for(
            "a finished run", lambda: next((r for r in app.store.runs() if r.state == "succeeded"), None), daemon
        )
    finally:
        stop(daemon)
    # would a second training start? No: what each pass of the daemon asks the schedule about
    # (flow/waiting.py) holds nothing once the burst's last version is trained
    assert waiting(app.store, datetime.now(UTC)).version_id is None
    assert [v.id for v in app.store.versions()] == [1, 2]
    assert len(app.store.runs()) == 1 and run.version_id == 2  # one training, on the burst's last version


def test_flywheel_train_while_the_daemon_runs_is_queued_and_served_by_it(tmp_path):
    # no rescan for an hour: only the watch on queue/ can wake the daemon for the request
    root, daemon, log = start(tmp_path, min_new=1000, rescan=3600.0)
    try:
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), root / "inbox")
        app = App(root)
        wait_for("version 1", lambda: len(app.store.versions()) == 1, daemon)
        # the daemon looked at the schedule and said why it does not train (its /healthz detail)
        port = int(re.search(r"metrics on http://127.0.0.1:(\d+)/", log.read_text()).group(1))  # type: ignore[union-attr]
        wait_for(
            "the schedule's answer",
            lambda: "12 of min_new_images 1000 new images waiting" in get(port, "/healthz")[1],
            daemon,
        )
        assert app.store.runs() == []  # 12 of min_new_images 1000: nothing trains by itself
        other = train_queue.submit(root, None, None, "bo")  # someone else's request, queued before ours
        asked = subprocess.run(
            [*FLYWHEEL, "train", "--root", str(root)],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ | {"COLUMNS": "200"},
        )
    finally:
        stop(daemon)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    # bo's request was served first (r0001); the CLI follows and reports its own run, r0002
    assert "asked it to train" in asked.stderr and "run r0002: succeeded, model m0002 " in asked.stdout
    assert "mAP50-95" in asked.stdout and ("promoted:" in asked.stdout or "rejected:" in asked.stdout)
    assert [r.state for r in app.store.runs()] == [RunState.SUCCEEDED, RunState.SUCCEEDED]
    assert app.store.production() is not None
    assert log.read_text().count("asked (flywheel train, train-") == 2
    # ours was read and deleted by the CLI; bo's stays (nobody waited on it) until a day has passed
    assert [p.name for p in (root / "queue").iterdir()] == [f"{other.id}.done"]
    assert train_queue.progress(root, other.id).runs == (1,)


def test_the_cron_schedule_trains_what_waits_and_only_then(tmp_path):
    root = init_data_root(tmp_path / "root", CONFIG.format(debounce=0, min_new=0, cron="0 3 1 1 *", rescan=1.0))
    App(root).ingest(synthetic_batch(tmp_path / "b1", 12, seed=1), move=False)
    trainer = FakeTrainer([0.3])
    daemon = build_daemon(root, trainer)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.ready.wait(60)
        until(
            "the schedule's answer",
            lambda: "12 new images waiting; next chance: the schedule" in daemon.trigger.note,
            thread,
        )
        assert trainer.specs == []
        daemon.trigger.cron_fired()  # what APScheduler's CronTrigger job calls at 03:00 on 1 January
        runs = daemon.work.store.runs
        until("the schedule to train", lambda: bool(runs()) and runs()[0].state == RunState.SUCCEEDED, thread)
        daemon.trigger.cron_fired()  # nothing waits now: no training
        until("the cron state reset", lambda: not daemon.trigger.cron_due, thread)  # came, found nothing
        assert waiting(daemon.work.store, datetime.now(UTC)).version_id is None
    finally:
        daemon.stop()
        thread.join(30)
    assert len(trainer.specs) == 1 and not daemon.trigger.cron_due


def test_a_refresh_trains_after_the_warm_candidate_in_the_running_daemon_and_is_gated(tmp_path):
    """The daemon's own loop: batch 2 grows the data past refresh_growth, so the warm candidate
    is trained and gated first, then a run from model.base on the same version, gated too."""
    config = CONFIG.format(debounce=0, min_new=1, cron="", rescan=1.0)
    config = config.replace("[training]\n", "[training]\nrefresh_growth = 2.0\n")
    root = init_data_root(tmp_path / "root", config)
    daemon = build_daemon(root, trainer := FakeTrainer([0.3, 0.4, 0.5]))  # first, warm, refresh
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    store = daemon.work.store
    try:
        assert daemon.ready.wait(60)
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), root / "inbox")
        until("the first model", lambda: store.production() is not None, thread)
        drop(synthetic_batch(tmp_path / "s" / "b2", 36, seed=2), root / "inbox")
        until("three gate decisions", lambda: len(store.gate_decisions()) == 3, thread)
    finally:
        daemon.stop()
        thread.join(60)
    first, warm, refresh = store.runs()
    assert [r.start_kind for r in (first, warm, refresh)] == ["scratch", "warm", "scratch"]
    assert warm.version_id == refresh.version_id == 2 and refresh.challenger_for == warm.id
    assert refresh.created_at >= warm.finished_at  # after the warm candidate was gated, not beside it
    assert "since the newest training from scratch" in refresh.guard["reason"]
    decisions = {g.run_id: g.outcome for g in store.gate_decisions()}
    assert decisions == {first.id: "promote", warm.id: "promote", refresh.id: "promote"}  # 0.3, 0.4, 0.5
    assert store.production().id == refresh.model_id and refresh.guard["winner"] == "scratch"
    assert [s.start_kind for s in trainer.specs] == ["scratch", "warm", "scratch"]


def until(what: str, check, thread: threading.Thread, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert thread.is_alive(), f"the daemon stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)

"""The training process for real: `flywheel train --cancel` stops a running child after its
current batch and the run is recorded cancelled; a process that dies mid-run (the daemon, or
`flywheel train`) leaves a run that the next start marks interrupted and resumes from last.pt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.domain import RunState
from flywheel.core.errors import TrainingCancelled
from flywheel.store.data_root import DataRootLock

T = TypeVar("T")
FLYWHEEL = [sys.executable, "-m", "flywheel"]

CONFIG = """\
[inbox]
settle_seconds = 0.5
rescan_seconds = 2.0

[dataset]
val_fraction = 0.25

[schedule]
debounce_seconds = 0.0

[training]
epochs_scratch = {epochs}
epochs_warm = 1
imgsz = 32
batch = 4
nbs = 4
threads = 2
on_interrupt = "resume"

[metrics]
port = 0
"""


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 240) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def root_with_version(tmp_path: Path, epochs: int) -> tuple[Path, int]:
    root = init_data_root(tmp_path / "root", CONFIG.format(epochs=epochs))
    version = App(root).ingest(synthetic_batch(tmp_path / "batch", 12, seed=3, size=64), move=False).version
    assert version is not None and version.id is not None
    return root, version.id


def test_flywheel_train_cancel_stops_the_running_child_and_records_it(tmp_path):
    root, version = root_with_version(tmp_path, epochs=50)  # far longer than the test waits
    app = App(root)
    outcome: dict[str, BaseException | None] = {}

    def train() -> None:  # as `flywheel train` or the daemon: holding the data root
        with DataRootLock(root):
            try:
                app.train(version)
            except BaseException as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    run = wait_for("a batch", lambda: next((r for r in app.store.runs() if r.batch or r.epochs_done), None))
    cancel = subprocess.run(
        [*FLYWHEEL, "train", "--cancel", "--root", str(root)], capture_output=True, text=True, timeout=180
    )
    thread.join(120)
    assert not thread.is_alive()
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert f"run r{run.id:04d}: cancelled" in cancel.stdout
    assert isinstance(outcome.get("error"), TrainingCancelled)
    final = app.store.run(run.id)
    assert final.state == RunState.CANCELLED and "flywheel train --cancel" in final.error
    assert final.epochs_done < 50 and app.store.models() == []
    assert not alive(final.environment["pid"])
    log = (root / "runs" / f"r{run.id:04d}" / "train.log").read_text()
    assert "run cancelled" in log
    # nothing running now: --cancel says so
    again = subprocess.run([*FLYWHEEL, "train", "--cancel", "--root", str(root)], capture_output=True, text=True)
    assert again.returncode == 1 and "no training is running" in again.stderr


def test_a_daemon_killed_mid_run_marks_it_interrupted_on_restart_and_resumes_from_last_pt(tmp_path):
    root = init_data_root(tmp_path / "root", CONFIG.format(epochs=3))
    app = App(root)
    logs = []

    def daemon() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"daemon{len(logs)}.log").open("w")
        logs.append(log)
        return subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)

    first = daemon()
    try:
        drop(synthetic_batch(tmp_path / "staging" / "batch", 12, seed=3, size=64), root / "inbox")
        run = wait_for("epoch 1", lambda: next((r for r in app.store.runs() if r.epochs_done >= 1), None))
        assert (root / "runs" / f"r{run.id:04d}" / "train" / "weights" / "last.pt").is_file()
        first.send_signal(signal.SIGKILL)  # no clean-up at all: as a crash or a power cut would
        first.wait(30)
        child = app.store.run(run.id).environment["pid"]
        wait_for("the orphaned child to stop by itself", lambda: not alive(child), timeout=120)
        assert app.store.run(run.id).state == RunState.RUNNING  # what the dead daemon left behind

        second = daemon()
        try:
            final = wait_for("the resumed run", lambda: (r := app.store.run(run.id)).state == RunState.SUCCEEDED and r)
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
        for log in logs:
            log.close()
    restarted = (tmp_path / "daemon1.log").read_text()
    assert f"run r{run.id:04d} was interrupted (on_interrupt: resume)" in restarted, restarted
    assert final.resumed == 1 and final.environment["resumed_from_epoch"] >= 2  # continued, not started over
    assert [e.epoch for e in app.store.epochs(run.id)] == [1, 2, 3] and final.epochs_done == 3
    assert app.store.production().id == final.model_id
    assert len(app.store.runs()) == 1  # the same run, not a new one
    log = (root / "runs" / f"r{run.id:04d}" / "train.log").read_text()
    assert "Resuming training" in log and "the process that started this run is gone" in log

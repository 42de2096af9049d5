"""`flywheel train`'s additions: --from, --cancel, the progress bar, progress in `flywheel status`."""

from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.train import TrainProgress, progress_of
from flywheel.core.domain import RunState, StartKind
from flywheel.core.events import BatchProgress
from flywheel.store.tables import RunRow
from tests.fakes import epoch_ended

FLYWHEEL = [sys.executable, "-m", "flywheel"]


def test_train_help_names_from_and_cancel():
    done = subprocess.run([*FLYWHEEL, "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--from" in done.stdout and "--cancel" in done.stdout and "m0003" in done.stdout


def test_train_from_something_unknown_is_a_usage_error_and_trains_nothing(data_root, tmp_path):
    App(data_root).ingest(synthetic_batch(tmp_path / "b", 8, seed=1), move=False)
    done = subprocess.run(
        [*FLYWHEEL, "train", "--root", str(data_root), "--from", "the good one"], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "expected production, base" in done.stderr
    assert App(data_root).store.runs() == []


def test_cancel_of_a_run_no_process_holds_records_it_at_once(data_root, tmp_path):
    """A run left "running" with nobody holding the data root is stale: cancelled at once."""
    app = App(data_root)
    version = app.ingest(synthetic_batch(tmp_path / "b", 8, seed=1), move=False).version
    run = app.store.create_run(version_id=version.id, start_kind=StartKind.SCRATCH, start_checkpoint="x.yaml", epochs=2)
    app.store.update_run(run.id, RunState.RUNNING)
    (final,) = app.cases.cancel_running("tester", wait_seconds=1)
    assert final.state == RunState.CANCELLED and "cancelled by tester" in final.error
    assert app.cases.cancel_running("tester", wait_seconds=1) == []


def test_progress_bar_follows_batches_and_epochs():
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    bar = TrainProgress(console)
    with bar:
        bar.training_started(7, StartKind.WARM, 4)
        task = bar.task
        bar.training_event(BatchProgress(epoch=2, epochs=4, batch=3, batches=4))
        assert bar.bar.tasks[0].completed == 1.75 and "batch 3/4" in bar.bar.tasks[0].fields["status"]
        bar.training_event(epoch_ended(2, 4, map50_95=0.4321))
        assert bar.bar.tasks[0].completed == 2 and "0.4321" in bar.bar.tasks[0].fields["status"]
        bar.training_finished(RunState.SUCCEEDED, 12.0)
    assert task is not None and bar.task is None
    assert "r0007" in console.file.getvalue()


def test_status_shows_the_batch_within_the_epoch_while_running():
    running = RunRow(version_id=1, state="running", start_kind="warm", start_checkpoint="x", epochs=10)
    running.epochs_done, running.batch, running.batches = 3, 5, 8
    assert progress_of(running) == "3/10 (batch 5/8)"
    running.state = "succeeded"
    assert progress_of(running) == "3/10"

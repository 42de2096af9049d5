"""`flywheel train`, and what it adds to the cycle: a progress bar, `--cancel` from another
process, and asking the daemon when it holds the data root. Registered on the main CLI by
`register(app)`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from flywheel.app import App
from flywheel.cli.common import Root, call, err, out, setup_logging
from flywheel.core.domain import RunState, StartKind, model_name, parse_id, run_name
from flywheel.core.errors import Busy, ExitCode
from flywheel.core.events import BatchProgress, EpochEnded, TrainingEvent
from flywheel.core.ports import NullObserver, StorePort
from flywheel.core.records import Run
from flywheel.flow.registry import current_actor
from flywheel.service import train_queue
from flywheel.store.data_root import DataRootLock


def train(
    root: Root = Path("."),
    version: Annotated[str | None, typer.Option(help="Version to train (default: the newest).")] = None,
    start_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start point: `production` (the default once there is one), `base` (model.base), a model "
            "id such as m0003, a model YAML (yolov8n.yaml: from scratch) or a .pt path (weights you provide).",
        ),
    ] = None,
    cancel: Annotated[
        bool,
        typer.Option(
            "--cancel",
            help="Stop the training running now (the daemon's or another `flywheel train`'s) after its "
            "current batch; it is recorded as cancelled.",
        ),
    ] = False,
    wait: Annotated[float, typer.Option(help="With --cancel: seconds to wait for it to stop.")] = 120.0,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="When the daemon runs: wait for the training it starts for you (default), or only queue it.",
        ),
    ] = True,
) -> None:
    """Train now on the newest version (or --version), then gate and promote or reject.

    While the daemon runs (it holds the data root), the training is asked of the daemon and
    goes through its one queue: it starts at the daemon's next step, after any batch being
    ingested and any training already running, whatever min_new_images or the schedule say.
    """
    setup_logging()
    if cancel:
        application = call(lambda: App(root))
        runs = call(lambda: application.cases.cancel_running(current_actor(), wait))
        if not runs:
            err.print("no training is running")
            raise typer.Exit(ExitCode.FAILED)
        for r in runs:
            out.print(f"run {run_name(r.id)}: {r.state}" + (f" ({r.error})" if r.error else ""))
        raise typer.Exit(ExitCode.OK if all(r.state != "running" for r in runs) else ExitCode.FAILED)
    progress = TrainProgress(err)
    application = call(lambda: App(root, observer=progress))
    lock = DataRootLock(application.paths.root)
    try:
        lock.__enter__()
    except Busy:
        vid_asked = call(lambda: parse_id(version, "v")) if version else None
        run = through_daemon(application, vid_asked, start_from, current_actor(), err, follow)
        if run is not None:  # the same ending as a local training: the model and the gate's word on it
            for line in run_ending(application.store, run):
                out.print(line, highlight=False)
            raise typer.Exit(ExitCode.OK if run.state == "succeeded" else ExitCode.FAILED) from None
        if follow:
            err.print(
                "error: the daemon made no run for this request (no dataset version, or a bad --from): see its log"
            )
            raise typer.Exit(ExitCode.FAILED) from None
        return
    with contextlib.closing(lock), progress:  # the lock is held already: only released here
        latest = application.store.latest_version()
        if version is None and latest is None:
            err.print("error: no dataset version yet: ingest a batch first (`flywheel ingest PATH`)")
            raise typer.Exit(ExitCode.FAILED)
        vid = call(lambda: parse_id(version, "v")) if version else latest.id  # type: ignore[union-attr]
        result = call(lambda: application.train(vid or 0, start_from=start_from))
    for line in run_ending(application.store, result.run):
        out.print(line, highlight=False)


class TrainProgress(NullObserver):
    """A progress bar per run: epochs, and batches within the epoch (on stderr)."""

    def __init__(self, console: Console):
        self.bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> TrainProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def training_started(self, run_id: int, start_kind: StartKind, epochs: int) -> None:
        self.task = self.bar.add_task(f"{run_name(run_id)} ({start_kind})", total=epochs, status="starting")

    def training_event(self, event: TrainingEvent) -> None:
        if self.task is None:
            return
        if isinstance(event, BatchProgress):
            done = event.epoch - 1 + event.batch / max(1, event.batches)
            status = f"epoch {event.epoch}/{event.epochs}, batch {event.batch}/{event.batches}"
            self.bar.update(self.task, completed=done, status=status)
        elif isinstance(event, EpochEnded):
            status = f"epoch {event.epoch}/{event.epochs}, mAP50-95 {event.map50_95:.4f}"
            self.bar.update(self.task, completed=event.epoch, status=status)

    def training_finished(self, outcome: RunState, seconds: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, status=f"{outcome} in {seconds:.0f}s")
            self.task = None


def progress_of(run: Run) -> str:
    """`3/20` epochs, plus the batch within the epoch while it runs."""
    text = f"{run.epochs_done}/{run.epochs}"
    if run.state == RunState.RUNNING and run.batches:
        text += f" (batch {run.batch}/{run.batches})"
    return text


def through_daemon(
    application: App, version_id: int | None, start_from: str | None, actor: str, console: Console, wait: bool
) -> Run | None:
    """The daemon holds the data root: ask it to train (flywheel.service.train_queue) and, with `wait`,
    follow the run it starts for us to its end. Returns that run (None if not waited for)."""
    root = application.paths.root
    request = train_queue.submit(root, version_id, start_from, actor)
    console.print(f"the daemon holds {root}: asked it to train (request {request.id}); it starts at its next step")
    if not wait:
        return None
    store = application.store

    def first_after(run_id: int) -> Run | None:  # the request's candidate run (a challenger comes later)
        return next((r for r in store.runs() if r.id > run_id), None)

    with console.status("waiting for the daemon to take the request") as status:
        while (where := train_queue.progress(root, request.id)).state == "queued":
            time.sleep(0.5)
        while where.state == "taken":
            run = first_after(where.after_run or 0)
            if run is not None:
                status.update(f"run {run_name(run.id)}: {run.state}, epoch {progress_of(run)}")
            time.sleep(0.5)
            where = train_queue.progress(root, request.id)
    train_queue.forget(root, request.id)
    return store.run(where.runs[0]) if where.runs else None


def run_ending(store: StorePort, run: Run) -> list[str]:
    """How a training ended, in the words the gate recorded: the same lines whether this
    process trained or the daemon did for it (`flywheel train` while the daemon runs)."""
    lines = [_one_run(store, run, "run")]
    for other in store.runs():
        if other.challenger_for == run.id:  # the refresh or negative-transfer guard's run from model.base
            winner = other.guard.get("winner", "?")
            lines.append(_one_run(store, other, "refresh from model.base: run") + f"; winner: {winner}")
    return lines


def _one_run(store: StorePort, run: Run, what: str) -> str:
    head = f"{what} {run_name(run.id)}: {run.state}"
    if run.model_id is None:
        return head + (f" ({run.error})" if run.error else "")
    words = next((e.reason for e in store.ledger() if e.model_id == run.model_id), "")  # the gate's, its first
    return f"{head}, model {model_name(run.model_id)} {words}".rstrip()


def register(app: typer.Typer) -> None:
    app.command()(train)

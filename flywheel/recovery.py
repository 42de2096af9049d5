"""What a start finds after a process died mid-run, and how it is put right.

A SIGKILL, a power cut or an OOM kill leaves a run "running" in the database with nobody
running it. Holding the data root lock, the next start marks such runs INTERRUPTED and
reopens them per `training.on_interrupt`. The child process may have outlived its parent
by an epoch or so (it notices the broken pipe only at its next report) and written epochs
that nobody recorded: those are read back from Ultralytics' results.csv, so a resumed run's
history has no holes.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

from flywheel.domain import RunState, run_name
from flywheel.store import Store
from flywheel.store.tables import EpochRow, RunRow

log = logging.getLogger("flywheel.recovery")

MAX_RESUMES = 3  # a run the daemon died under this often is not tried again

# results.csv column -> EpochRow field (Ultralytics' detection trainer)
_COLUMNS = {
    "train/box_loss": "box_loss",
    "train/cls_loss": "cls_loss",
    "train/dfl_loss": "dfl_loss",
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
}


def mark_interrupted(store: Store) -> list[RunRow]:
    """Runs left running by a process that died (call it holding the data root lock, so no
    one else is training): INTERRUPTED, never left "running" forever."""
    marked = []
    for run in store.runs():
        if run.id is None:
            continue
        if run.state == RunState.RUNNING:
            why = "interrupted: the process running it stopped (a crash, a kill, a reboot)"
            marked.append(store.update_run(run.id, RunState.INTERRUPTED, error=why))
        elif run.state == RunState.QUEUED:  # planned, never started
            store.update_run(run.id, RunState.CANCELLED, error="never started: the process that planned it stopped")
    return marked


def reopen(store: Store, runs: Path, run: RunRow, mode: str) -> tuple[RunRow, str]:
    """INTERRUPTED -> QUEUED again; returns the run and the last.pt to resume ('' = restart)."""
    assert run.id is not None
    out_dir = runs / run_name(run.id)
    last = out_dir / "train" / "weights" / "last.pt"
    resume_from = str(last) if mode == "resume" and last.is_file() else ""
    if resume_from:
        backfill_epochs(store, run.id, out_dir / "train" / "results.csv")
    else:
        shutil.rmtree(out_dir / "train", ignore_errors=True)
        store.delete_epochs(run.id)  # a restart trains its epochs again
    reopened = store.update_run(run.id, RunState.QUEUED, error=None, resumed=run.resumed + 1)
    return reopened, resume_from


def backfill_epochs(store: Store, run_id: int, results_csv: Path) -> list[int]:
    """Record the epochs results.csv holds and the database does not; returns their numbers."""
    if not results_csv.is_file():
        return []
    known = {e.epoch for e in store.epochs(run_id)}
    added: list[int] = []
    previous_time = 0.0
    with results_csv.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {k.strip(): v.strip() for k, v in raw.items() if k is not None and v is not None}
            try:
                epoch = int(float(row["epoch"]))
                elapsed = float(row.get("time", "0") or 0)
                fields = {ours: float(row[theirs]) for theirs, ours in _COLUMNS.items()}
            except (KeyError, ValueError):
                continue  # a row cut short by the kill, or another trainer's columns
            seconds, previous_time = max(elapsed - previous_time, 0.0), elapsed  # "time" is cumulative
            if epoch in known:
                continue
            store.add_epoch(EpochRow(run_id=run_id, epoch=epoch, seconds=seconds, **fields))
            added.append(epoch)
    if added:
        store.update_run(run_id, epochs_done=max(known | set(added)))
        log.info("run %s: epochs %s recovered from %s", run_name(run_id), added, results_csv)
    return added

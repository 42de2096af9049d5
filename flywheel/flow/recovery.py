"""What a start finds after a process died mid-run, and how it is put right.

A SIGKILL, a power cut or an OOM kill leaves a run "running" in the database with nobody
running it. Holding the data root lock, the next start marks such runs INTERRUPTED and
reopens them per `training.on_interrupt`. The child process may have outlived its parent
by an epoch or so (it notices the broken pipe only at its next report) and written epochs
that nobody recorded: those are read back from Ultralytics' results.csv, so a resumed run's
history has no holes.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from flywheel.core.domain import ModelStatus, RunState, run_name
from flywheel.core.ports import StorePort
from flywheel.core.records import Epoch, Run
from flywheel.flow.registry import Registry

log = logging.getLogger(__name__)

MAX_RESUMES = 3  # a run the daemon died under this often is not tried again
ORPHAN_GRACE_SECONDS = 30.0  # an orphaned child asked to stop gets this long before SIGKILL

# results.csv column -> Epoch field (Ultralytics' detection trainer)
_COLUMNS = {
    "train/box_loss": "box_loss",
    "train/cls_loss": "cls_loss",
    "train/dfl_loss": "dfl_loss",
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
}


def mark_interrupted(store: StorePort, registry: Registry | None = None) -> list[Run]:
    """Runs left running by a process that died (call it holding the data root lock, so no
    one else is training): INTERRUPTED, never left "running" forever. A run whose gate had
    already decided (the process died promoting, or just before recording the run) is
    finished instead: the recorded decision is carried out, nothing is trained or scored again."""
    marked = []
    for run in store.runs():
        if run.state == RunState.RUNNING:
            stop_orphan(run)
            if registry is not None and finish_decided(store, registry, run):
                continue
            why = "interrupted: the process running it stopped (a crash, a kill, a reboot)"
            marked.append(store.update_run(run.id, RunState.INTERRUPTED, error=why))
        elif run.state == RunState.QUEUED:  # planned, never started
            store.update_run(run.id, RunState.CANCELLED, error="never started: the process that planned it stopped")
    return marked


def stop_orphan(run: Run, grace_seconds: float = ORPHAN_GRACE_SECONDS) -> bool:
    """Stop the training child a dead process left behind, if it still runs (it stops by itself
    after its current batch, but must not write last.pt under a resumed run). True if one ran."""
    environment = run.environment or {}
    if environment.get("executor", "local") != "local":  # a Ray job: the restarted daemon follows it
        return False
    pid = environment.get("pid")
    if not isinstance(pid, int) or not _is_training_child(pid):
        return False
    log.warning(
        "run %s: its training child (pid %d) outlived the process that started it; stopping it",
        run_name(run.id),
        pid,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and _is_training_child(pid):
        time.sleep(0.1)
    if _is_training_child(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def _is_training_child(pid: int) -> bool:
    """A live (not zombie) process running flywheel's training child."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"flywheel.training.child" in cmdline and state != "Z"


def finish_decided(store: StorePort, registry: Registry, run: Run) -> bool:
    """Carry out the gate decision recorded for `run`'s candidate, if there is one; True if so."""
    model = next((m for m in store.models() if m.run_id == run.id), None)
    if model is None:
        return False  # no candidate yet: the resumed run trains (or scores) on
    decision = next((g for g in store.gate_decisions() if g.candidate_model_id == model.id), None)
    if decision is None:
        return False  # not decided: the resumed run scores its best.pt again and the gate decides
    if model.status == ModelStatus.CANDIDATE and not decision.held:
        reason = f"gate decision of run {run_name(run.id)} ({decision.rule}), carried out after a restart"
        if decision.outcome == "promote":
            registry.promote(model.id, reason=reason)
        else:
            registry.reject(model.id, reason=reason)
    elif model.status == ModelStatus.PRODUCTION and not decision.held:  # its serving side may lag
        registry.finish_promotion(model.id)
    store.update_run(run.id, RunState.SUCCEEDED, model_id=model.id)
    log.warning(
        "run %s: its gate decision (%s) was recorded before its step stopped (a kill, or the database "
        "away); finished it",
        run_name(run.id),
        decision.outcome,
    )
    return True


def reopen(store: StorePort, runs: Path, run: Run, mode: str, adopted: bool = False) -> tuple[Run, str]:
    """INTERRUPTED -> QUEUED again; returns the run and the last.pt to resume ('' = restart).
    `adopted`: the trainer follows the job that still runs (or finished) for this run rather
    than training again (a Ray job outlives the daemon): its folder is left as that job has it,
    and the epochs it reports again replace those recorded (one row per epoch)."""
    out_dir = runs / run_name(run.id)
    last = out_dir / "train" / "weights" / "last.pt"
    resume_from = str(last) if mode == "resume" and last.is_file() else ""
    if adopted:
        log.info("run %s: its job on the cluster is followed again, not trained a second time", run_name(run.id))
    elif resume_from:
        backfill_epochs(store, run.id, out_dir / "train" / "results.csv")
    else:
        shutil.rmtree(out_dir / "train", ignore_errors=True)
        store.delete_epochs(run.id)  # a restart trains its epochs again
    reopened = store.update_run(run.id, RunState.QUEUED, error=None, resumed=run.resumed + 1)
    return reopened, resume_from


def backfill_epochs(store: StorePort, run_id: int, results_csv: Path) -> list[int]:
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
            store.add_epoch(Epoch(run_id=run_id, epoch=epoch, seconds=seconds, **fields))
            added.append(epoch)
    if added:
        store.update_run(run_id, epochs_done=max(known | set(added)))
        log.info("run %s: epochs %s recovered from %s", run_name(run_id), added, results_csv)
    return added

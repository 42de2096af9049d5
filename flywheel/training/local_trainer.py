"""Daemon side of training: start the child process, relay its events, stop it on request.

torch never enters the daemon's memory, and a child that crashes, runs out of memory or is
killed ends as a TrainingError naming its log, never as a dead daemon.

Stopping: `cancel()` (the daemon's SIGTERM), the file `runs/<run>/CANCEL` (written by
`flywheel train --cancel` from another process) or the timeout send the child SIGTERM; it
stops after the current batch and says so, and `run` raises TrainingCancelled. A child that
has not exited `KILL_AFTER_SECONDS` later is killed.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from flywheel.core.domain import run_name
from flywheel.core.errors import EventError, TrainingCancelled, TrainingError
from flywheel.core.events import ChildCancelled, ChildFailed, Placed, TrainingEvent, parse_event, read_stream
from flywheel.core.spec import TrainSpec
from flywheel.training.child_process import start_child

log = logging.getLogger(__name__)

CANCEL_FILE = "CANCEL"
KILL_AFTER_SECONDS = 60.0
POLL_SECONDS = 0.5


def request_cancel(out_dir: Path, reason: str) -> Path:
    """Ask whichever process runs the run in `out_dir` to stop it (see module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CANCEL_FILE
    path.write_text(reason + "\n")
    return path


class RunFolders:
    """The RunStopper port (flywheel.core.ports) on the run folders: `request_cancel` in
    `runs/<run>/`, which the trainer running that run watches."""

    def __init__(self, runs: Path):
        self.runs = runs

    def request_stop(self, run_id: int, reason: str) -> None:
        request_cancel(self.runs / run_name(run_id), reason)


class SubprocessTrainer:
    """Runs `python -m flywheel.training.child` for a spec; one run at a time."""

    def __init__(self, config_dir: Path, python: str = sys.executable, timeout_seconds: float = 0):
        self.config_dir = config_dir  # YOLO_CONFIG_DIR: Ultralytics' settings stay in the data root
        self.python = python
        self.timeout_seconds = timeout_seconds
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancelled = threading.Event()
        self._reason = ""

    def run(self, spec: TrainSpec, on_event: Callable[[TrainingEvent], None]) -> list[TrainingEvent]:
        """Run the child to the end; every event goes to `on_event` and is returned in order.
        An event this daemon cannot read stops the child and fails the run with an EventError."""
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec_path = out / "spec.json"
        spec_path.write_text(spec.to_json())
        log_path = out / "train.log"
        self._cancelled.clear()
        self._reason = ""
        (out / CANCEL_FILE).unlink(missing_ok=True)  # a request from an earlier attempt of this run
        events: list[TrainingEvent] = []
        with log_path.open("ab") as log_file:
            self._proc, pipe = start_child(
                self.python, "flywheel.training.child", spec_path, log_file, self.config_dir, spec.threads
            )
            placed = Placed("local", socket.gethostname(), str(self._proc.pid))
            events.append(placed)
            on_event(placed)
            timer = None
            if self.timeout_seconds:
                timer = threading.Timer(self.timeout_seconds, self.cancel)
                timer.start()
            watching = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(out / CANCEL_FILE, watching), daemon=True)
            watcher.start()
            try:

                def take(event: TrainingEvent) -> None:
                    events.append(event)
                    on_event(event)

                with pipe:
                    malformed = read_stream(pipe, parse_event, take, "the training child")
                if malformed is not None:  # its pipe is closed too: its next write stops it
                    self._proc.terminate()
                    threading.Thread(target=self._kill_later, args=(self._proc,), daemon=True).start()
                code = self._proc.wait()
            finally:
                watching.set()
                if timer:
                    timer.cancel()
                self._proc = None
        name = run_name(spec.run_id)
        if malformed is not None:
            raise EventError(f"training run {name} stopped: {malformed}. Full log: {log_path}")
        stopped = next((e.reason for e in events if isinstance(e, ChildCancelled)), None)
        if self._cancelled.is_set() or stopped is not None:
            why = self._reason or stopped or "cancelled"
            raise TrainingCancelled(f"training run {name} was stopped before it finished ({why}); log: {log_path}")
        if code != 0:
            reason = next((e.error for e in events if isinstance(e, ChildFailed)), f"exit code {code}")
            raise TrainingError(f"training run {name} failed: {reason}. Full log: {log_path}")
        return events

    def cancel(self) -> None:
        """Stop the running child (SIGTERM: after its current batch); `run` then raises
        TrainingCancelled. Killed if it has not exited KILL_AFTER_SECONDS later."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._cancelled.set()
            proc.terminate()
            threading.Thread(target=self._kill_later, args=(proc,), daemon=True).start()

    @staticmethod
    def _kill_later(proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(KILL_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("training child %d ignored SIGTERM for %.0fs: killing it", proc.pid, KILL_AFTER_SECONDS)
            proc.kill()

    def _watch(self, cancel_file: Path, done: threading.Event) -> None:
        while not done.wait(POLL_SECONDS):
            if cancel_file.exists():
                self._reason = cancel_file.read_text().strip() or f"asked by {cancel_file}"
                log.info("%s asks to stop the run: %s", cancel_file, self._reason)
                self.cancel()
                return

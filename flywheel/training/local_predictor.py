"""The Predictor port (flywheel.core.ports) on a child process: start `python -m
flywheel.training.predict_child`, relay its events, and fold them into a `PredictOutcome`.
torch stays in the child; a child that crashes, or sends a line that is not one of
flywheel/core/predict_events.py's events, ends as a TrainingError naming its log, never as a
traceback here."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from itertools import count
from pathlib import Path

from flywheel.core.errors import EventError, TrainingError
from flywheel.core.events import read_stream
from flywheel.core.predict_events import PredictDone, PredictEvent, PredictFailed, parse_predict_event
from flywheel.core.prediction import ImageInput, PredictOutcome, PredictRequest, record_event
from flywheel.training.child_process import start_child

_calls = count(1)


class ChildPredictor:
    """Each `predict` runs one child in a new folder under `work_root` (request.json,
    predict.log), removed once the child has answered; after a failure it stays, for its log."""

    def __init__(self, config_dir: Path, work_root: Path, python: str = sys.executable):
        self.config_dir = config_dir  # YOLO_CONFIG_DIR: Ultralytics' settings stay in the data root
        self.work_root = work_root
        self.python = python

    def predict(
        self,
        request: PredictRequest,
        images: Sequence[ImageInput],
        on_event: Callable[[PredictEvent], None] | None = None,
    ) -> PredictOutcome:
        """Run the child over `images`. An event this process cannot read stops the child and
        fails the prediction with an EventError."""
        work = self.work_root / f"predict-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_calls)}"
        work.mkdir(parents=True, exist_ok=True)
        request_path = work / "request.json"
        body = {**asdict(request), "checkpoint": str(request.checkpoint), "images": [str(i.path) for i in images]}
        request_path.write_text(json.dumps(body, indent=1))
        log_path = work / "predict.log"
        outcome = PredictOutcome()
        ends: list[PredictEvent] = []  # the run's end only: per-image events live in `outcome`

        def take(event: PredictEvent) -> None:
            if isinstance(event, PredictDone | PredictFailed):
                ends.append(event)
            record_event(event, images, outcome)
            if on_event is not None:
                on_event(event)

        with log_path.open("ab") as log_file:
            proc, pipe = start_child(
                self.python, "flywheel.training.predict_child", request_path, log_file, self.config_dir, request.threads
            )
            try:
                with pipe:
                    malformed = read_stream(pipe, parse_predict_event, take, "the predict child")
                if malformed is not None:  # its pipe is closed too: its next write stops it
                    proc.terminate()
                code = proc.wait()
            except BaseException:  # Ctrl-C: do not leave the child running
                proc.terminate()
                proc.wait()
                raise
        if malformed is not None:
            raise EventError(f"prediction stopped: {malformed}. Full log: {log_path}")
        if code != 0 or not any(isinstance(e, PredictDone) for e in ends):
            reason = next((e.error for e in ends if isinstance(e, PredictFailed)), f"exit code {code}")
            raise TrainingError(f"prediction failed: {reason}. Full log: {log_path}")
        shutil.rmtree(work, ignore_errors=True)  # answered: nothing in it is needed any more
        return outcome

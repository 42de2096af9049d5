"""CLI side of prediction: start `python -m flywheel.training.predict`, relay its events, and
turn them into `Prediction`s. torch stays in the child; a child that crashes ends as a
TrainingError naming its log, never as a traceback here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.core.errors import TrainingError
from flywheel.prelabel.inputs import Found
from flywheel.prelabel.records import Box, Prediction

Event = dict[str, Any]


@dataclass
class Outcome:
    predictions: list[Prediction] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # image name, why the model could not read it
    names: list[str] = field(default_factory=list)  # the model's class names, in id order
    imgsz: int = 0


@dataclass(frozen=True)
class Request:
    checkpoint: Path
    conf: float
    iou: float
    imgsz: int  # 0: the model's own training imgsz
    fallback_imgsz: int
    device: str
    threads: int
    max_det: int = 300


def predict(
    request: Request,
    images: list[Found],
    work: Path,
    config_dir: Path,
    on_event: Callable[[Event], None],
    python: str = sys.executable,
) -> Outcome:
    """Run the child over `images`; `work` gets request.json and predict.log."""
    work.mkdir(parents=True, exist_ok=True)
    request_path = work / "request.json"
    body = {**request.__dict__, "checkpoint": str(request.checkpoint), "images": [str(f.path) for f in images]}
    request_path.write_text(json.dumps(body, indent=1))
    log_path = work / "predict.log"
    read_fd, write_fd = os.pipe()
    env = {
        **os.environ,
        "FLYWHEEL_EVENT_FD": str(write_fd),
        "YOLO_CONFIG_DIR": str(config_dir),
        "MPLCONFIGDIR": str(config_dir / "matplotlib"),
        "YOLO_OFFLINE": "true",
        "YOLO_AUTOINSTALL": "false",
        "OMP_NUM_THREADS": str(request.threads),
        "PYTHONUNBUFFERED": "1",
    }
    outcome = Outcome()
    events: list[Event] = []
    with log_path.open("ab") as log_file:
        try:
            proc = subprocess.Popen(
                [python, "-m", "flywheel.training.predict", str(request_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env=env,
            )
        finally:
            os.close(write_fd)  # the child holds the only writer: EOF when it exits
        try:
            with os.fdopen(read_fd, "r") as pipe:
                for line in pipe:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    events.append(event)
                    _take(event, images, outcome)
                    on_event(event)
            code = proc.wait()
        except BaseException:  # Ctrl-C: do not leave the child running
            proc.terminate()
            proc.wait()
            raise
    if code != 0 or not any(e.get("event") == "done" for e in events):
        reason = next((e["error"] for e in events if e.get("event") == "failed"), f"exit code {code}")
        raise TrainingError(f"prediction failed: {reason}. Full log: {log_path}")
    return outcome


def _take(event: Event, images: list[Found], outcome: Outcome) -> None:
    kind = event.get("event")
    if kind == "started":
        outcome.names = [str(n) for n in event["names"]]
        outcome.imgsz = int(event["imgsz"])
    elif kind == "image":
        found = images[event["index"]]
        boxes = tuple(Box(int(c), float(p), x1, y1, x2, y2) for c, p, x1, y1, x2, y2 in event["boxes"])
        outcome.predictions.append(Prediction(found.name, found.path, event["width"], event["height"], boxes))
    elif kind == "image_failed":
        outcome.failed.append((images[event["index"]].name, str(event["error"])))

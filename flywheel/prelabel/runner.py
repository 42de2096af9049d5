"""CLI side of prediction: start `python -m flywheel.training.predict_child`, relay its events, and
turn them into `Prediction`s. torch stays in the child; a child that crashes, or sends a line
that is not one of flywheel/core/predict_events.py's events, ends as a TrainingError naming its
log, never as a traceback here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.core.errors import EventError, TrainingError
from flywheel.core.events import read_stream
from flywheel.core.predict_events import (
    ImageEmbedded,
    ImageFailed,
    ImagePredicted,
    PredictDone,
    PredictEvent,
    PredictFailed,
    PredictStarted,
    parse_predict_event,
)
from flywheel.prelabel.inputs import Found
from flywheel.prelabel.records import Box, Prediction


@dataclass
class Outcome:
    predictions: list[Prediction] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # image name, why the model could not read it
    names: list[str] = field(default_factory=list)  # the model's class names, in id order
    imgsz: int = 0
    # image name -> vector (Request.embed), as float32: 1.8 kB an image for yolov8n, not 14 as a tuple
    embeddings: dict[str, Sequence[float]] = field(default_factory=dict)


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
    embed: bool = False  # also report what the head saw of each image (predict_events.ImageEmbedded)


def predict(
    request: Request,
    images: list[Found],
    work: Path,
    config_dir: Path,
    on_event: Callable[[PredictEvent], None],
    python: str = sys.executable,
) -> Outcome:
    """Run the child over `images`; `work` gets request.json and predict.log. An event this
    process cannot read stops the child and fails the prediction with an EventError."""
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
    events: list[PredictEvent] = []  # the run's end only: per-image events live in `outcome`
    with log_path.open("ab") as log_file:
        try:
            proc = subprocess.Popen(
                [python, "-m", "flywheel.training.predict_child", str(request_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env=env,
            )
        finally:
            os.close(write_fd)  # the child holds the only writer: EOF when it exits
        try:

            def take(event: PredictEvent) -> None:
                if isinstance(event, PredictDone | PredictFailed):
                    events.append(event)
                _take(event, images, outcome)
                on_event(event)

            with os.fdopen(read_fd, "r") as pipe:
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
    if code != 0 or not any(isinstance(e, PredictDone) for e in events):
        reason = next((e.error for e in events if isinstance(e, PredictFailed)), f"exit code {code}")
        raise TrainingError(f"prediction failed: {reason}. Full log: {log_path}")
    return outcome


def _take(event: PredictEvent, images: list[Found], outcome: Outcome) -> None:
    if isinstance(event, PredictStarted):
        outcome.names = list(event.names)
        outcome.imgsz = event.imgsz
    elif isinstance(event, ImagePredicted):
        found = images[event.index]
        if (event.width, event.height) != (found.width, found.height):
            outcome.failed.append((found.name, _other_frame(found, event.width, event.height)))
            return
        boxes = tuple(Box(d.cls, d.conf, d.x1, d.y1, d.x2, d.y2) for d in event.boxes)
        outcome.predictions.append(Prediction(found.name, found.path, found.width, found.height, boxes))
    elif isinstance(event, ImageEmbedded):
        outcome.embeddings[images[event.index].name] = array("f", event.vector)
    elif isinstance(event, ImageFailed):
        outcome.failed.append((images[event.index].name, event.error))


def _other_frame(found: Found, width: int, height: int) -> str:
    """Why boxes the model placed on a frame other than the displayed one are not written: every
    labeling tool, and ingest, shows the image with its EXIF rotation applied (inputs.collect's
    size), so such boxes would land turned or stretched (a decoder that ignores the EXIF tag, or
    a file changed while the model ran)."""
    exif = f" (EXIF orientation {found.orientation})" if found.orientation != 1 else ""
    return (
        f"the model read it as {width}x{height}, but shown upright{exif} it is {found.width}x{found.height}, "
        "so its boxes would be misplaced; re-save it with the rotation applied to the pixels"
    )

"""Predictions: what a model is asked (`PredictRequest`, over `ImageInput`s) and what it found
(`PredictOutcome`: a `Prediction` of `Box`es per image), in pixels of each image as displayed.
The `Predictor` port (core/ports.py) takes the first and returns the second, whichever runtime
answers (a child process with Ultralytics today; an in-process runtime can do the same).
`record_event` folds the predict events (core/predict_events.py) into an outcome."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from flywheel.core.predict_events import ImageEmbedded, ImageFailed, ImagePredicted, PredictEvent, PredictStarted


@dataclass(frozen=True)
class Box:
    cls: int
    conf: float
    x1: float  # pixels, top-left origin
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Prediction:
    name: str  # POSIX relpath inside the package's images/ folder
    source: Path  # the image file as found
    width: int
    height: int
    boxes: tuple[Box, ...] = ()

    def above(self, conf: float) -> Prediction:
        """Only the boxes with confidence >= conf."""
        return replace(self, boxes=tuple(b for b in self.boxes if b.conf >= conf))

    @property
    def score(self) -> float:
        """Mean box confidence (0 without boxes): the prediction's score for labeling tools."""
        return sum(b.conf for b in self.boxes) / len(self.boxes) if self.boxes else 0.0


@dataclass(frozen=True)
class ImageInput:
    """One image to predict on, as the caller found and measured it."""

    name: str  # POSIX relpath the package will use
    path: Path
    width: int  # as displayed, i.e. after the EXIF rotation: the frame of the written boxes
    height: int
    origin: str  # where it was found, for people: a path, or ARCHIVE:MEMBER
    orientation: int = 1  # EXIF orientation, 1 = as stored


@dataclass(frozen=True)
class PredictRequest:
    checkpoint: Path
    conf: float
    iou: float
    imgsz: int  # 0: the model's own training imgsz
    fallback_imgsz: int
    device: str
    threads: int
    max_det: int = 300
    embed: bool = False  # also report what the head saw of each image (predict_events.ImageEmbedded)


@dataclass
class PredictOutcome:
    predictions: list[Prediction] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # image name, why the model could not read it
    names: list[str] = field(default_factory=list)  # the model's class names, in id order
    imgsz: int = 0
    # image name -> vector (PredictRequest.embed), as float32: 1.8 kB an image for yolov8n, not 14 as a tuple
    embeddings: dict[str, Sequence[float]] = field(default_factory=dict)


def record_event(event: PredictEvent, images: Sequence[ImageInput], outcome: PredictOutcome) -> None:
    """Add what `event` says about `images` (by index) to `outcome`."""
    if isinstance(event, PredictStarted):
        outcome.names = list(event.names)
        outcome.imgsz = event.imgsz
    elif isinstance(event, ImagePredicted):
        image = images[event.index]
        if (event.width, event.height) != (image.width, image.height):
            outcome.failed.append((image.name, _other_frame(image, event.width, event.height)))
            return
        boxes = tuple(Box(d.cls, d.conf, d.x1, d.y1, d.x2, d.y2) for d in event.boxes)
        outcome.predictions.append(Prediction(image.name, image.path, image.width, image.height, boxes))
    elif isinstance(event, ImageEmbedded):
        outcome.embeddings[images[event.index].name] = array("f", event.vector)
    elif isinstance(event, ImageFailed):
        outcome.failed.append((images[event.index].name, event.error))


def _other_frame(image: ImageInput, width: int, height: int) -> str:
    """Why boxes the model placed on a frame other than the displayed one are not written: every
    labeling tool, and ingest, shows the image with its EXIF rotation applied (inputs.collect's
    size), so such boxes would land turned or stretched (a decoder that ignores the EXIF tag, or
    a file changed while the model ran)."""
    exif = f" (EXIF orientation {image.orientation})" if image.orientation != 1 else ""
    return (
        f"the model read it as {width}x{height}, but shown upright{exif} it is {image.width}x{image.height}, "
        "so its boxes would be misplaced; re-save it with the rotation applied to the pixels"
    )

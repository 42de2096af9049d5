"""What the predict child tells the process that started it, as typed events.

The same wire format as the training child's (flywheel/core/events.py): one JSON object a line,
`{"event": kind, **fields}`, on the pipe named by FLYWHEEL_EVENT_FD. The child
(flywheel/training/predict_child.py) builds these classes and writes them with `encode`; the
predictor that started it (flywheel/training/local_predictor.py) reads every line with
`parse_predict_event`, which checks each key and its type, so a key renamed on one side fails at
once, naming it. Keys the reader does not know are ignored: a newer child may add one.

Events come in this order: started; image or image_failed per image, in the request's order,
each image followed by its embedding when the request asked for embeddings; done. Or failed,
when the whole run fails (the checkpoint does not load, or is not a detector)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NamedTuple, TypeAlias, get_args

from flywheel.core.events import parse_record


class Detection(NamedTuple):
    """One box in pixels of the original image, top-left origin. A NamedTuple, so that on the
    wire it is the row [cls, conf, x1, y1, x2, y2]."""

    cls: int
    conf: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class PredictStarted:
    """The model loaded: its class names in id order, and the imgsz the images run at."""

    kind: ClassVar[str] = "started"
    names: tuple[str, ...]
    imgsz: int
    task: str  # always "detect": the child refuses any other


@dataclass(frozen=True)
class ImagePredicted:
    kind: ClassVar[str] = "image"
    index: int  # in the request's image list
    width: int
    height: int
    boxes: tuple[Detection, ...]


@dataclass(frozen=True)
class ImageEmbedded:
    """What the model's detection head saw of an image (request "embed": true): each feature map
    entering the head, averaged over its pixels, concatenated, L2-normalised (448 numbers for a
    yolov8n). Images that look alike to the model lie close; `flywheel suggest --pick diverse`
    uses it to spread a batch over the pool."""

    kind: ClassVar[str] = "embedding"
    index: int
    vector: tuple[float, ...]


@dataclass(frozen=True)
class ImageFailed:
    """This image only: it is skipped and the others go on."""

    kind: ClassVar[str] = "image_failed"
    index: int
    error: str


@dataclass(frozen=True)
class PredictDone:
    kind: ClassVar[str] = "done"
    seconds: float


@dataclass(frozen=True)
class PredictFailed:
    """The whole run failed."""

    kind: ClassVar[str] = "failed"
    error: str


PredictEvent: TypeAlias = PredictStarted | ImagePredicted | ImageEmbedded | ImageFailed | PredictDone | PredictFailed

KINDS: dict[str, type[Any]] = {cls.kind: cls for cls in get_args(PredictEvent)}


def encode(event: PredictEvent) -> str:
    """One JSON line (without the newline), as `parse_predict_event` reads it."""
    return json.dumps({"event": event.kind, **asdict(event)})


def parse_predict_event(line_or_dict: str | bytes | dict[str, Any]) -> PredictEvent:
    """The event a line (or its decoded dict) holds; EventError naming the kind and key if it is
    not one the CLI knows, with every key it needs, of the right type."""
    event: PredictEvent = parse_record(KINDS, line_or_dict, "prediction event")
    return event

"""A labeling tool's side of the loop (Label Studio today), as records and plain rules.

Push: a `NewTask` per image, its pre-annotation made from production's `Prediction` in the
tool's percent frame. Pull: the tool's `LabeledTask`s, each with its annotations; `to_pull`
decides, against the `PullMark`s already taken (the database keeps them), which annotation of
which task goes into the next batch and whether it is a relabel, and `yolo_label` writes it.

A task's finished annotation is its newest one that was not skipped (`was_cancelled`): a skip
says "not now", not "no object here", so a task with only skips is not pulled at all. A task
pulled once is pulled again only when its finished annotation changed (another id, or a newer
`updated_at`): a relabel, which ingest files as one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from flywheel.core.prediction import Prediction

FROM_NAME = "label"  # the RectangleLabels control of the labeling config
TO_NAME = "image"  # the Image object it labels


@dataclass(frozen=True)
class Region:
    """One rectangle, as Label Studio stores it: percent of the image, top-left origin."""

    label: str
    x: float
    y: float
    width: float
    height: float
    score: float | None = None  # pre-annotations only


@dataclass(frozen=True)
class NewTask:
    """An image to label, with the model's regions as its pre-annotation."""

    name: str  # the image's name as found (kept with the task, for people)
    image_sha256: str  # the image's identity: pulled back, it must still hash to this
    image: bytes
    width: int
    height: int
    model_version: str  # the model id (m0007) that made the regions
    score: float  # the prediction's score (mean box confidence)
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class Annotation:
    id: int
    updated_at: str  # ISO 8601 as the tool gives it; compared as a time by `newer`
    cancelled: bool  # skipped by the annotator
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class LabeledTask:
    id: int
    name: str  # the image's name as pushed (or the tool's name for it)
    image_ref: str  # where the tool serves the image (its data.image)
    image_sha256: str  # "" for a task flywheel did not push
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True)
class PullMark:
    """What was taken of a task: its annotation and that annotation's updated_at, in `batch`."""

    task_id: int
    annotation_id: int
    updated_at: str
    batch: str


@dataclass(frozen=True)
class ToPull:
    task: LabeledTask
    annotation: Annotation
    relabel: bool  # the task was pulled before with another annotation or an older edit


@dataclass
class PullResult:
    """What one pull did: the batch written (None: nothing new) and what it holds."""

    batch: str | None = None
    tasks: list[int] = field(default_factory=list)
    relabels: list[int] = field(default_factory=list)
    waiting: int = 0  # tasks with no finished annotation yet (or only skips)
    unknown_labels: dict[int, list[str]] = field(default_factory=dict)  # task -> labels not in the class map


def finished(task: LabeledTask) -> Annotation | None:
    """The task's newest annotation that is not a skip, or None."""
    done = [a for a in task.annotations if not a.cancelled]
    return max(done, key=lambda a: (a.updated_at, a.id)) if done else None


def to_pull(tasks: Sequence[LabeledTask], marks: Mapping[int, PullMark]) -> tuple[list[ToPull], int]:
    """The annotations a pull takes now, in task order, and how many tasks wait for a person."""
    chosen: list[ToPull] = []
    waiting = 0
    for task in sorted(tasks, key=lambda t: t.id):
        annotation = finished(task)
        if annotation is None:
            waiting += 1
            continue
        mark = marks.get(task.id)
        if mark is not None and (mark.annotation_id, mark.updated_at) == (annotation.id, annotation.updated_at):
            continue
        chosen.append(ToPull(task, annotation, relabel=mark is not None))
    return chosen, waiting


def yolo_label(regions: Sequence[Region], names: Sequence[str]) -> tuple[str, list[str]]:
    """The YOLO label text of the regions, and the labels that are no class of `names`.

    A label that names no class gets an id past the last one, and a box is written as drawn,
    not clipped: ingest then quarantines the image as an unknown class or a box out of range,
    with that reason, as it would a file a person dropped (flywheel/ingest/labels.py)."""
    unknown: list[str] = []
    lines = []
    for r in regions:
        if r.label in names:
            cls = list(names).index(r.label)
        else:
            if r.label not in unknown:
                unknown.append(r.label)
            cls = len(names) + unknown.index(r.label)
        cx, cy = (r.x + r.width / 2) / 100, (r.y + r.height / 2) / 100
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {r.width / 100:.6f} {r.height / 100:.6f}\n")
    return "".join(lines), unknown


def regions_of(prediction: Prediction, names: Sequence[str]) -> tuple[Region, ...]:
    """The prediction's boxes in percent of the image, clipped to it (as the labelstudio writer does)."""
    regions = []
    w, h = prediction.width, prediction.height
    for b in prediction.boxes:
        x1, y1 = min(max(b.x1, 0.0), w), min(max(b.y1, 0.0), h)
        x2, y2 = min(max(b.x2, 0.0), w), min(max(b.y2, 0.0), h)
        if x2 <= x1 or y2 <= y1:
            continue
        label = names[b.cls] if 0 <= b.cls < len(names) else str(b.cls)
        regions.append(
            Region(label, 100 * x1 / w, 100 * y1 / h, 100 * (x2 - x1) / w, 100 * (y2 - y1) / h, round(b.conf, 5))
        )
    return tuple(regions)


def labeling_config(names: Sequence[str]) -> str:
    """A project's labeling config for boxes of these classes, in class-id order."""
    labels = "".join(f'<Label value="{escape(n, {chr(34): "&quot;"})}"/>' for n in names)
    return (
        f'<View><Image name="{TO_NAME}" value="$image"/>'
        f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels></View>'
    )

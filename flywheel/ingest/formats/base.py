"""The internal form every batch format is read into."""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel.ingest.labels import Annotation, LabelProblem
from flywheel.ingest.reasons import Code


@dataclass
class Sample:
    image: str  # relpath of the image file
    labels: tuple[str, ...]  # label files describing this image alone (YOLO .txt, VOC .xml)
    annotation: Annotation | LabelProblem | None  # None: the batch holds no label for it


@dataclass
class Parsed:
    format: str  # "yolo", "coco" or "voc"
    class_names: list[str]
    samples: list[Sample] = field(default_factory=list)
    used: list[str] = field(default_factory=list)  # read into the version: class files, COCO JSON
    ignored: list[str] = field(default_factory=list)  # export metadata flywheel has no use for
    refused: list[tuple[str, Code, str]] = field(default_factory=list)  # relpath, code, reason
    notes: list[tuple[str, Code, str]] = field(default_factory=list)  # on files that are kept

"""What the predict child reports for one image, in pixels of the image as displayed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


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

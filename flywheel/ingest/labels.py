"""YOLO label text: parse, check, and rewrite with the project's class ids. Pure functions.

A label file holds one box per line, `class cx cy w h`, coordinates normalised to [0, 1].
An empty file is a valid negative image. The normalised form (project class ids, six
decimals, LF endings) is what the store keeps, so the same boxes always hash the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    cls: int
    cx: float
    cy: float
    w: float
    h: float


class LabelProblem(ValueError):
    """A label line that cannot be used; str() is the reason a person reads."""


def parse_label(text: str, class_count: int) -> list[Box]:
    """Every box in `text`, or LabelProblem naming the first bad line and what is wrong."""
    boxes = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        boxes.append(_parse_line(line, number, class_count))
    return boxes


def _parse_line(line: str, number: int, class_count: int) -> Box:
    fields = line.split()
    where = f"line {number}"
    if len(fields) != 5:
        raise LabelProblem(f"{where}: expected 5 numbers `class cx cy w h`, found {len(fields)} fields")
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise LabelProblem(f"{where}: not a number in {line!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise LabelProblem(f"{where}: NaN or infinite value in {line!r}")
    cls_value, cx, cy, w, h = values
    if not cls_value.is_integer() or cls_value < 0:
        raise LabelProblem(f"{where}: class id {fields[0]!r} is not a non-negative integer")
    cls = int(cls_value)
    if cls >= class_count:
        raise LabelProblem(
            f"{where}: class id {cls} is unknown (the batch names {class_count} classes, ids 0..{class_count - 1})"
        )
    if w <= 0 or h <= 0:
        raise LabelProblem(f"{where}: box width and height must be positive, got w={w} h={h}")
    for name, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not 0.0 <= value <= 1.0:
            raise LabelProblem(f"{where}: {name}={value} is outside [0, 1] (coordinates are normalised)")
    return Box(cls, cx, cy, w, h)


def normalised(boxes: list[Box], remap: Mapping[int, int]) -> bytes:
    """The stored form: project class ids, fixed precision, LF line endings."""
    return "".join(f"{remap[b.cls]} {b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}\n" for b in boxes).encode()

"""Boxes: YOLO label text parsed, and every format's boxes checked and normalised. Pure functions.

Every format's reader produces an `Annotation`: boxes as centre and size, either normalised
(YOLO) or in pixels (COCO, VOC), plus the image size the annotation claims. `finish` turns it
into the stored form against the real image size: normalised, inside [0, 1] (clipped when
within `tolerance`, refused beyond), zero-size and repeated boxes dropped with a note.

A YOLO label file holds one box per line, `class cx cy w h`; a segmentation polygon
`class x1 y1 x2 y2 x3 y3 ...` becomes its bounding box (as Ultralytics does). An empty file is
a valid negative image. The stored form (project class ids, six decimals, LF endings) is what
the store keeps, so the same boxes always hash the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from flywheel.ingest.reasons import Code, Problem

_EPS = 1e-9  # floating-point noise: clamped silently, never reported


@dataclass(frozen=True)
class Box:
    """A stored box: batch or project class id, centre and size normalised to [0, 1]."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float


@dataclass(frozen=True)
class RawBox:
    """A box as the source gave it: centre and size, normalised or in pixels; `where` names it."""

    cls: int
    cx: float
    cy: float
    w: float
    h: float
    where: str


@dataclass
class Annotation:
    boxes: list[RawBox] = field(default_factory=list)
    pixels: bool = False
    size: tuple[int, int] | None = None  # (width, height) the annotation says the image has
    notes: list[tuple[Code, str]] = field(default_factory=list)


class LabelProblem(Problem):
    """A label that cannot be used; str() is the reason a person reads."""


def parse_yolo(text: str, class_count: int) -> Annotation:
    """Every box in YOLO `text` (BOM and CRLF accepted), or LabelProblem naming the first bad line."""
    ann = Annotation()
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if line:
            ann.boxes.append(_parse_line(line, f"line {number}", class_count, ann.notes))
    return ann


def parse_label(text: str, class_count: int, tolerance: float = 0.0) -> list[Box]:
    """YOLO text straight to checked, normalised boxes (notes dropped)."""
    return finish(parse_yolo(text, class_count), None, tolerance)[0]


def _parse_line(line: str, where: str, class_count: int, notes: list[tuple[Code, str]]) -> RawBox:
    fields = line.split()
    n = len(fields)
    if n != 5 and (n < 7 or n % 2 == 0):
        raise LabelProblem(
            Code.LABEL_BAD_FIELDS,
            f"{where}: expected 5 numbers `class cx cy w h` (or a polygon `class x1 y1 x2 y2 x3 y3 ...`), "
            f"found {n} fields",
        )
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise LabelProblem(Code.LABEL_NOT_NUMERIC, f"{where}: not a number in {line!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise LabelProblem(Code.LABEL_NOT_FINITE, f"{where}: NaN or infinite value in {line!r}")
    cls = check_class_id(values[0], fields[0], where, class_count)
    if n == 5:
        return RawBox(cls, values[1], values[2], values[3], values[4], where)
    xs, ys = values[1::2], values[2::2]
    notes.append((Code.POLYGON_TO_BOX, f"{where}: a {len(xs)}-point polygon, stored as its bounding box"))
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return RawBox(cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, where)


def check_class_id(value: float, text: str, where: str, class_count: int) -> int:
    if not value.is_integer() or value < 0:
        raise LabelProblem(Code.LABEL_UNKNOWN_CLASS, f"{where}: class id {text!r} is not a non-negative integer")
    if value >= class_count:
        raise LabelProblem(
            Code.LABEL_UNKNOWN_CLASS,
            f"{where}: class id {int(value)} is unknown (the batch names {class_count} classes, "
            f"ids 0..{class_count - 1})",
        )
    return int(value)


def finish(
    ann: Annotation, image_size: tuple[int, int] | None, tolerance: float
) -> tuple[list[Box], list[tuple[Code, str]]]:
    """Checked, normalised boxes, and notes (code, text) on what was changed on the way.

    `image_size` is the displayed (width, height); pixel boxes are divided by it.
    """
    width, height = image_size if ann.pixels and image_size else (1, 1)
    boxes: list[Box] = []
    notes = list(ann.notes)
    seen: set[str] = set()
    for raw in ann.boxes:
        if raw.w < 0 or raw.h < 0:
            raise LabelProblem(
                Code.LABEL_BAD_SIZE, f"{raw.where}: box width and height must be positive, got w={raw.w:g} h={raw.h:g}"
            )
        box, note = _inside(
            Box(raw.cls, raw.cx / width, raw.cy / height, raw.w / width, raw.h / height), raw, tolerance
        )
        if note:
            notes.append(note)
        if box is None:
            continue
        key = _line(box)
        if key in seen:
            notes.append((Code.BOX_DUPLICATE, f"{raw.where}: the same box twice, kept once"))
            continue
        seen.add(key)
        boxes.append(box)
    return boxes, notes


def _inside(box: Box, raw: RawBox, tolerance: float) -> tuple[Box | None, tuple[Code, str] | None]:
    """The box clipped to [0, 1] (None when nothing of it is left), and a note if it changed."""
    if box.w == 0 or box.h == 0:
        return None, (Code.BOX_ZERO_SIZE, f"{raw.where}: zero-size box (w={raw.w:g} h={raw.h:g}) dropped")
    edges = {"x0": box.cx - box.w / 2, "y0": box.cy - box.h / 2, "x1": box.cx + box.w / 2, "y1": box.cy + box.h / 2}
    for name, value in edges.items():
        if value < -tolerance - _EPS or value > 1 + tolerance + _EPS:
            raise LabelProblem(
                Code.LABEL_OUT_OF_RANGE,
                f"{raw.where}: box edge {name}={value:.6g} is outside [0, 1] by more than "
                f"ingest.coordinate_tolerance = {tolerance:g} (coordinates are normalised to the image size)",
            )
    if all(0 <= v <= 1 for v in edges.values()):
        return box, None
    x0, y0 = max(0.0, edges["x0"]), max(0.0, edges["y0"])
    x1, y1 = min(1.0, edges["x1"]), min(1.0, edges["y1"])
    if x1 - x0 <= _EPS or y1 - y0 <= _EPS:
        return None, (Code.BOX_ZERO_SIZE, f"{raw.where}: nothing of the box is inside the image; dropped")
    clipped = Box(box.cls, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)
    noise = all(-_EPS <= v <= 1 + _EPS for v in edges.values())  # rounding, not the annotator: silent
    return clipped, None if noise else (Code.BOX_CLIPPED, f"{raw.where}: box overhung the image; clipped")


def _line(box: Box) -> str:
    return f"{box.cls} {box.cx:.6f} {box.cy:.6f} {box.w:.6f} {box.h:.6f}\n"


def normalised(boxes: list[Box], remap: Mapping[int, int]) -> bytes:
    """The stored form: project class ids, fixed precision, LF line endings."""
    return "".join(_line(Box(remap[b.cls], b.cx, b.cy, b.w, b.h)) for b in boxes).encode()

"""Likely label errors: the production model's boxes against the given ones, image by image.

The same idea as cleanlab's object-detection scores (`cleanlab.object_detection.rank`: an
"overlooked", a "swap" and a "badloc" score per box, the image scored by its worst box), written
here as pure functions rather than taken from cleanlab: cleanlab wants per-class probability
arrays the predict child does not send (it sends each box's class and confidence), and its
scores come without the kind of error and the box they are about, which the review file and the
report need. Each finding is one box, with its kind and a score in [0, 1] (1 = surely wrong):

- missing: the model finds an object (confidence >= `missing_conf`) no given box overlaps
  (IoU < `overlap_iou` with every given box): an annotator missed it. Score: its confidence.
- swapped: a given box is matched (IoU >= `match_iou`) by a confident box of another class and
  by no box of its own class as confident. Score: that box's confidence times the IoU.
- misplaced: a given box's best same-class match is confident but only in the middle band
  (`overlap_iou` <= IoU < `match_iou`): the object is there, the box is loose or shifted.
  Score: the confidence times (1 - IoU).
- spurious: no prediction of any class overlaps a given box (IoU < `overlap_iou` with every box
  at `floor_conf`): nothing the model can see is there. Score: 1 - the best overlapping
  confidence at any IoU (a box the model half-sees scores lower).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class LabelIssue(StrEnum):
    MISSING = "missing"
    SWAPPED = "swapped"
    MISPLACED = "misplaced"
    SPURIOUS = "spurious"


@dataclass(frozen=True)
class Rect:
    """A box in pixels (top-left origin); `conf` is 1 for a given box."""

    cls: int
    x1: float
    y1: float
    x2: float
    y2: float
    conf: float = 1.0


@dataclass(frozen=True)
class LabelThresholds:
    missing_conf: float = 0.5
    swap_conf: float = 0.4
    misplaced_conf: float = 0.4
    match_iou: float = 0.5
    overlap_iou: float = 0.1
    floor_conf: float = 0.05  # predictions under this are not looked at (the child's conf)


@dataclass(frozen=True)
class BoxFinding:
    issue: LabelIssue
    score: float
    box: Rect  # the given box (swapped, misplaced, spurious) or the predicted one (missing)
    other: Rect | None = None  # the prediction behind the finding, when there is one

    @property
    def why(self) -> str:
        o = self.other
        if self.issue is LabelIssue.MISSING:
            return f"the model sees class {self.box.cls} here (conf {self.box.conf:.2f}) and no box is given"
        if self.issue is LabelIssue.SWAPPED and o is not None:
            overlap = iou(self.box, o)
            return f"given class {self.box.cls}, the model says class {o.cls} (conf {o.conf:.2f}, IoU {overlap:.2f})"
        if self.issue is LabelIssue.MISPLACED and o is not None:
            return f"the model's class-{o.cls} box overlaps it only at IoU {iou(self.box, o):.2f} (conf {o.conf:.2f})"
        return f"no prediction overlaps this class-{self.box.cls} box"


def iou(a: Rect, b: Rect) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def check_image(given: Sequence[Rect], predicted: Sequence[Rect], t: LabelThresholds) -> list[BoxFinding]:
    """Every likely error of one image's given boxes, worst first."""
    preds = [p for p in predicted if p.conf >= t.floor_conf]
    found: list[BoxFinding] = []
    for p in preds:
        if p.conf >= t.missing_conf and all(iou(p, g) < t.overlap_iou for g in given):
            found.append(BoxFinding(LabelIssue.MISSING, p.conf, p, p))
    for g in given:
        finding = _given_box(g, preds, t)
        if finding is not None:
            found.append(finding)
    return sorted(found, key=lambda f: -f.score)


def _given_box(g: Rect, preds: Sequence[Rect], t: LabelThresholds) -> BoxFinding | None:
    overlaps = [(iou(g, p), p) for p in preds]
    if all(o < t.overlap_iou for o, _ in overlaps):
        best = max((p.conf for o, p in overlaps if o > 0), default=0.0)
        return BoxFinding(LabelIssue.SPURIOUS, 1.0 - best, g)
    same = max(((o, p) for o, p in overlaps if p.cls == g.cls), key=lambda op: op[0] * op[1].conf, default=None)
    other = max(
        ((o, p) for o, p in overlaps if p.cls != g.cls and o >= t.match_iou and p.conf >= t.swap_conf),
        key=lambda op: op[0] * op[1].conf,
        default=None,
    )
    same_matched = same is not None and same[0] >= t.match_iou
    if other is not None and not (same_matched and same is not None and same[1].conf >= other[1].conf):
        return BoxFinding(LabelIssue.SWAPPED, other[1].conf * other[0], g, other[1])
    if same is not None and not same_matched and t.overlap_iou <= same[0] and same[1].conf >= t.misplaced_conf:
        return BoxFinding(LabelIssue.MISPLACED, same[1].conf * (1.0 - same[0]), g, same[1])
    return None


def image_score(findings: Sequence[BoxFinding]) -> float:
    """How likely the image's labels hold an error: its worst box's score (0 when none)."""
    return max((f.score for f in findings), default=0.0)

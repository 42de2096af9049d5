"""Likely label errors: the production model's boxes against the given ones, image by image.

The same idea as cleanlab's object-detection scores (`cleanlab.object_detection.rank`: an
"overlooked", a "swap" and a "badloc" score per box, the image scored by its worst box), written
here as pure functions rather than taken from cleanlab: cleanlab wants per-class probability
arrays the predict child does not send (after NMS each box has one class and a confidence), and
its scores come without the kind of error and the box they are about, which the review file and
the report need. Each given box and each unexplained prediction gets one score per kind, higher
= more likely wrong:

- missing: a prediction no given box overlaps (IoU < `overlap_iou` with all): its confidence.
- swapped: the most confident prediction of another class on the box (IoU >= `match_iou`) minus
  the most confident one of the given class there. A margin, not a confidence, so that a model
  that is unsure of everything still tells a swap apart (it leans to the true class).
- misplaced: the most confident same-class prediction that only half-covers the box
  (`overlap_iou` <= IoU < `match_iou`, and matched to no other given box) minus the most
  confident one that covers it: the object is there, the box is loose or shifted.
- spurious: 1 - the most confident prediction of any class overlapping the box.

How high a score must be to flag a box is not a constant: a weak model's confidences sit low,
a strong one's high. `calibrate` takes each kind's threshold from the production model's own
val images, whose labels are taken as right: the score that at most `fpr` of their boxes reach
(a quantile of the clean scores, as a conformal threshold). A batch from the same source then
raises false findings at about that rate per kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


# Without val boxes to calibrate on: thresholds for a confident model (said in the screening).
UNCALIBRATED = {LabelIssue.MISSING: 0.5, LabelIssue.SWAPPED: 0.4, LabelIssue.MISPLACED: 0.4, LabelIssue.SPURIOUS: 0.95}


@dataclass(frozen=True)
class LabelThresholds:
    match_iou: float = 0.5
    overlap_iou: float = 0.25
    floor_conf: float = 0.05  # predictions under this are not looked at (the child's conf)
    flag: Mapping[LabelIssue, float] = field(default_factory=lambda: dict(UNCALIBRATED))


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
            return (
                f"given class {self.box.cls}, the model says class {o.cls} (conf {o.conf:.2f}, IoU "
                f"{iou(self.box, o):.2f}; {self.score:.2f} above its class-{self.box.cls} conf)"
            )
        if self.issue is LabelIssue.MISPLACED and o is not None:
            return f"the model's class-{o.cls} box overlaps it only at IoU {iou(self.box, o):.2f} (conf {o.conf:.2f})"
        return f"no prediction overlaps this class-{self.box.cls} box (score {self.score:.2f})"


def iou(a: Rect, b: Rect) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def score_image(given: Sequence[Rect], predicted: Sequence[Rect], t: LabelThresholds) -> list[BoxFinding]:
    """Every candidate finding of one image with its score, flagged or not (calibration needs
    the scores of clean boxes too); a finding scores above 0."""
    preds = [p for p in predicted if p.conf >= t.floor_conf]
    found = [
        BoxFinding(LabelIssue.MISSING, p.conf, p, p) for p in preds if all(iou(p, g) < t.overlap_iou for g in given)
    ]
    for g in given:
        found += _given_box(g, given, preds, t)
    return found


def check_image(given: Sequence[Rect], predicted: Sequence[Rect], t: LabelThresholds) -> list[BoxFinding]:
    """The findings of one image at or above their kind's threshold, worst first."""
    flagged = [f for f in score_image(given, predicted, t) if f.score >= t.flag[f.issue]]
    return sorted(flagged, key=lambda f: -f.score)


def _given_box(g: Rect, given: Sequence[Rect], preds: Sequence[Rect], t: LabelThresholds) -> list[BoxFinding]:
    overlaps = [(iou(g, p), p) for p in preds]
    touching = [p for o, p in overlaps if o >= t.overlap_iou]
    if not touching:
        best = max((p.conf for o, p in overlaps if o > 0), default=0.0)
        return [BoxFinding(LabelIssue.SPURIOUS, 1.0 - best, g)]
    own = max((p.conf for o, p in overlaps if p.cls == g.cls and o >= t.match_iou), default=0.0)
    out = []
    other = max((p for o, p in overlaps if p.cls != g.cls and o >= t.match_iou), key=_conf, default=None)
    if other is not None and other.conf > own:
        out.append(BoxFinding(LabelIssue.SWAPPED, other.conf - own, g, other))
    loose = [p for o, p in overlaps if p.cls == g.cls and t.overlap_iou <= o < t.match_iou]
    loose = [p for p in loose if not any(h is not g and h.cls == p.cls and iou(h, p) >= t.match_iou for h in given)]
    near = max(loose, key=_conf, default=None)
    if near is not None and near.conf > own:
        out.append(BoxFinding(LabelIssue.MISPLACED, near.conf - own, g, near))
    return out


def _conf(p: Rect) -> float:
    return p.conf


def image_score(findings: Sequence[BoxFinding]) -> float:
    """How likely the image's labels hold an error: its worst box's score (0 when none)."""
    return max((f.score for f in findings), default=0.0)


@dataclass(frozen=True)
class Calibration:
    flag: dict[LabelIssue, float]
    images: int  # clean images the thresholds come from (0: not calibrated, UNCALIBRATED used)
    boxes: int
    fpr: float  # at most this share of the clean boxes reach each kind's threshold


def calibrate(
    clean: Sequence[tuple[Sequence[Rect], Sequence[Rect]]], fpr: float, t: LabelThresholds, least: float = 0.05
) -> Calibration:
    """Each kind's threshold from images whose labels are right, as (given, predicted) pairs: the
    lowest score that at most `fpr` x (their given boxes) of their findings of that kind reach,
    and never under `least`. Without a given box there is nothing to learn from: UNCALIBRATED."""
    boxes = sum(len(g) for g, _ in clean)
    if boxes == 0:
        return Calibration(dict(UNCALIBRATED), 0, 0, fpr)
    allowed = int(fpr * boxes)
    scores: dict[LabelIssue, list[float]] = {k: [] for k in LabelIssue}
    for given, predicted in clean:
        for f in score_image(given, predicted, t):
            scores[f.issue].append(f.score)
    flag = {}
    for kind, found in scores.items():
        found.sort(reverse=True)
        above = found[allowed] + 1e-6 if len(found) > allowed else least  # the allowed ones stay under it
        flag[kind] = round(max(least, above), 6)
    return Calibration(flag, len(clean), boxes, fpr)

"""Which unlabeled images would teach the model most: an uncertainty score per image from the
model's own detections (the confidence of each box after NMS, taken at a low threshold).

    score = (E + B + L) / 3, each term in [0, 1]

- E, mean binary entropy: over the boxes with conf >= FLOOR, the mean of
  H(c) = -c log2 c - (1-c) log2 (1-c). H is 1 at c = 0.5, the box the model cannot decide on,
  and near 0 for boxes it is sure of (c near 1); a label resolves exactly these.
- B, band fraction: the share of those boxes in the band [0.1, 0.5): objects the model half
  sees but would not pre-label at the usual threshold (0.25 keeps some, 0.5 none), i.e. the
  misses and false alarms a person would have to fix by hand.
- L, least confidence: 1 - the image's highest box confidence (1 with no box at all), the
  classic uncertainty-sampling term. It alone ranks an image where nothing is seen high, so
  it is only a third: an empty image (E = B = 0, L near 1) lands in the middle, above images
  the model is sure of and below images full of doubtful boxes. Empty images are either
  backgrounds (little to learn) or complete misses (much to learn); the middle says "unsure".

Boxes under FLOOR are noise at a 0.01 threshold and are counted in neither E nor B (an image
with hundreds of 0.02 boxes is not more uncertain than one with ten). Ties break by name so a
ranking is reproducible. `rank` is what a benchmark of suggest vs random calls: detections in,
ordered images out, no model needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

SCORING_CONF = 0.01  # the threshold the child predicts at when scoring
FLOOR = 0.1
BAND = (0.1, 0.5)


@dataclass(frozen=True)
class Uncertainty:
    score: float
    entropy: float  # E
    band: float  # B
    least_confidence: float  # L
    boxes: int  # boxes with conf >= FLOOR
    band_boxes: int  # of those, in BAND
    max_conf: float

    def why(self) -> dict[str, float | int]:
        """The terms of the score, as written to ranking.csv/json."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k != "score"}


def entropy(c: float) -> float:
    """Binary entropy in bits of a confidence c (0 at 0 and 1, 1 at 0.5)."""
    if c <= 0.0 or c >= 1.0:
        return 0.0
    return -(c * math.log2(c) + (1 - c) * math.log2(1 - c))


def score_image(confidences: Iterable[float]) -> Uncertainty:
    """The image's uncertainty from its boxes' confidences (see the module docstring)."""
    confs = [float(c) for c in confidences]
    kept = [c for c in confs if c >= FLOOR]
    band = [c for c in kept if BAND[0] <= c < BAND[1]]
    e = sum(entropy(c) for c in kept) / len(kept) if kept else 0.0
    b = len(band) / len(kept) if kept else 0.0
    top = max(confs, default=0.0)
    least = 1.0 - top
    return Uncertainty((e + b + least) / 3, e, b, least, len(kept), len(band), top)


def rank(detections: Mapping[str, Iterable[float]]) -> list[tuple[str, Uncertainty]]:
    """Images (name -> box confidences) from most to least uncertain; ties by name."""
    scored = [(name, score_image(confs)) for name, confs in detections.items()]
    return sorted(scored, key=lambda item: (-item[1].score, item[0]))

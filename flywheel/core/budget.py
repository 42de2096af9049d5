"""How long a warm start trains, and when it stops: pure functions, no I/O, no torch.

A chain of warm starts drifts behind a model retrained from scratch when each generation gets
a fixed, small budget (`docs/benchmarks.md`, generations). The budget here follows the work:

- `warm_budget`: scratch training gives every train image `epochs_scratch` epochs. A warm
  start already knows the parent's images, so it gets `epochs_scratch x share of new train
  images x warm_budget_factor` epochs over the whole version: at factor 1 the new images get
  about as many passes as scratch would give them. The default factor is 1.5: at 1, chains
  whose models are far from converged (Aquarium at 320 px) fell to 0.74-0.95x a model
  retrained from scratch by their third generation; at 1.5 they kept up (docs/benchmarks.md).
  A parent that was still improving when it stopped (its own val mAP rose >= 15% over its
  last quarter of epochs) has not learnt what it saw: x `unconverged_boost`. Clamped to
  [epochs_warm_min, epochs_warm_max or epochs_scratch].
  Why 15%: on BCCD at 320 px, 50-epoch scratch models on 19-64 images rose 18% to 850% over
  their last quarter, on 86-103 images 7-11% (docs/benchmarks.md); the LR decay and the
  mosaic-free last epochs lift every curve a little at its end, so 5% would call every run weak.
- `Plateau`: within that budget, a run whose val fitness has not improved for
  `plateau_patience` epochs (after `epochs_warm_min`) stops early, but not at a high LR:
  Ultralytics decays the LR over `epochs`, so the plateau starts a final decay phase of
  `plateau_decay_epochs` to the final LR (`lrf`) instead of stopping cold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

UNCONVERGED_GAIN = 0.15  # a parent whose val mAP rose >= 15% (relative) over its last quarter


@dataclass(frozen=True)
class Budget:
    epochs: int
    why: str  # recorded with the run and shown by `flywheel models show`

    def record(self) -> dict[str, object]:
        return {"epochs": self.epochs, "why": self.why}


def late_gain(curve: Sequence[float]) -> float:
    """How much a run's val mAP rose over its last quarter of epochs, relative to before it.

    0 for a run that had converged (or too short a curve to say); 0.2 = its best score in the
    last quarter is 20% above its best before."""
    if len(curve) < 4:
        return 0.0
    cut = len(curve) - max(1, len(curve) // 4)
    before, best = max(curve[:cut]), max(curve)
    if before <= 0:
        return 1.0 if best > 0 else 0.0
    return max(0.0, best / before - 1.0)


def warm_budget(
    *,
    epochs_scratch: int,
    train_images: int,
    new_train_images: int,
    factor: float,
    floor: int,
    ceiling: int,
    parent_gain: float,
    boost: float = 1.5,
) -> Budget:
    """Epochs for a warm start on a version with `train_images`, `new_train_images` of them not
    in the parent model's version; `parent_gain`: `late_gain` of the parent's own run."""
    top = ceiling or epochs_scratch
    share = new_train_images / train_images if train_images else 0.0
    raw = epochs_scratch * share * factor
    why = f"{new_train_images}/{train_images} train images new ({share:.0%}) x epochs_scratch {epochs_scratch}"
    why += f" x factor {factor:g} = {raw:.1f}"
    if parent_gain >= UNCONVERGED_GAIN and boost != 1.0:
        raw *= boost
        why += f"; parent still improving (+{parent_gain:.0%} val mAP over its last quarter): x{boost:g}"
    floor = min(floor, top)  # the ceiling wins: a warm start never trains longer than scratch would
    epochs = min(max(math.ceil(raw - 1e-9), floor, 1), top)
    if epochs != math.ceil(raw - 1e-9):
        why += f"; clamped to [{floor}, {top}]"
    return Budget(epochs, why + f" -> {epochs} epochs")


class Plateau:
    """Watches val fitness epoch by epoch; says when to enter the final decay phase.

    `update` returns the run's new total epochs once, when the plateau is reached, else None.
    patience 0: never."""

    def __init__(self, patience: int, min_epochs: int, decay_epochs: int, min_delta: float = 1e-4) -> None:
        self.patience, self.min_epochs, self.decay_epochs = patience, min_epochs, decay_epochs
        self.min_delta = min_delta
        self.best = -math.inf
        self.best_epoch = 0
        self.decaying_from = 0  # the epoch after which the decay phase began; 0: not yet

    def update(self, epoch: int, fitness: float, total: int) -> int | None:
        """`epoch`: epochs done (1-based); `total`: the run's planned epochs."""
        if fitness > self.best + self.min_delta:
            self.best, self.best_epoch = fitness, epoch
        if not self.patience or self.decaying_from or epoch < self.min_epochs:
            return None
        if epoch - self.best_epoch < self.patience:
            return None
        new_total = min(total, epoch + self.decay_epochs)
        if new_total >= total:
            return None  # the planned decay ends as soon anyway
        self.decaying_from = epoch
        return new_total


def decayed(lf_at_start: float, lrf: float, start: int, length: int, epoch: float) -> float:
    """The LR factor of the final decay phase: linear from `lf_at_start` (the schedule's value
    when the plateau was reached) to `lrf` over `length` epochs after `start`."""
    if length <= 0:
        return lrf
    progress = min(max((epoch - start) / length, 0.0), 1.0)
    return lf_at_start + (lrf - lf_at_start) * progress

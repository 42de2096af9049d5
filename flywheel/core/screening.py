"""A batch screened before it trains: its records and the pure checks beside the label check
(flywheel/core/label_check.py): near copies of eval images, and the shift of the class mix.

A screening belongs to a batch (and the version it made). Its state says what the policy
decided: `skipped` (no production model to screen with), `reported` (recorded, nothing waits),
`held` (training waits for `flywheel approve` or the hold timeout), `approved` (released by a
person or the timeout), `quarantined` (the suspect train images are left out of every training
from this version on; their files and the reasons are under quarantine/<batch>/screen/).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from flywheel.core.errors import InvalidTransition


class Check(StrEnum):
    LABEL_ERRORS = "label_errors"
    LEAKAGE = "leakage"
    CLASS_SHIFT = "class_shift"


class Policy(StrEnum):
    REPORT = "report"
    HOLD = "hold"
    QUARANTINE = "quarantine"


class ScreenState(StrEnum):
    SKIPPED = "skipped"
    REPORTED = "reported"
    HELD = "held"
    APPROVED = "approved"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Suspect:
    """One finding: an image (or, for class shift, the batch: image_sha256 = "") and why."""

    check: Check
    kind: str  # label_check.LabelIssue, "val_copy" / "golden_copy" / "split_copy", or "class_shift"
    image_sha256: str
    score: float
    why: str
    split: str = ""
    box: tuple[float, ...] = ()  # the given box, x1, y1, x2, y2 in pixels (label errors)
    cls: int = -1  # its class
    predicted: tuple[float, ...] = ()  # the prediction behind it: class, conf, x1, y1, x2, y2


@dataclass(frozen=True, kw_only=True)
class Screening:
    id: int = 0
    batch_id: int
    version_id: int
    model_id: int | None
    state: ScreenState
    note: str = ""  # why skipped or held, for people
    images: int = 0  # images screened
    checks: dict[str, Any] = field(default_factory=dict)  # per check: policy, flagged, statistics
    suspects: tuple[Suspect, ...] = ()
    quarantined: tuple[str, ...] = ()  # image sha256s left out of training (quarantine policy)
    created_at: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    decided_at: datetime | None = None
    decided_by: str = ""

    def flagged(self, check: Check) -> list[Suspect]:
        return [s for s in self.suspects if s.check is check]


def informative(dhash: int) -> bool:
    """Nearly flat images (few or almost all bits set) say too little to match on (ingest's
    near-duplicate check and screening's near copies)."""
    return 8 <= dhash.bit_count() <= 56


@dataclass(frozen=True)
class Hashed:
    image_sha256: str
    dhash: int
    split: str  # "train", "val" or "golden"


# A flat image (a gradient of water or sky) has an uninformative 64-bit dHash; it is compared
# with the flat images near it by a finer one: horizontal and vertical differences on a 17x17
# grid, 512 bits. On Aquarium re-encoded copies sat 0-21 bits from their originals and distinct
# photos at least 41 apart (docs/benchmarks/screen.md).
FINE_BITS = 32


def near_copies(
    new: Iterable[Hashed],
    reference: Sequence[Hashed],
    max_bits: int,
    fine: Callable[[str, str], int | None] | None = None,
) -> list[Suspect]:
    """The new images that are near copies (difference hashes at most `max_bits` apart) of a
    val or golden image, or of an image of the other split: each with its nearest such image.
    `fine(new_sha, other_sha)`: the fine hashes' distance, for flat images (None: unknown)."""
    out = []
    for n in new:
        flat = not informative(n.dhash)
        if flat and fine is None:
            continue
        best: tuple[int, Hashed] | None = None
        for r in reference:
            if r.image_sha256 == n.image_sha256 or not _leaks(n.split, r.split):
                continue
            d = (n.dhash ^ r.dhash).bit_count()
            if flat and fine is not None and d <= 2 * max_bits:
                far = fine(n.image_sha256, r.image_sha256)
                d = max_bits + 1 if far is None or far > FINE_BITS else far * max_bits // FINE_BITS
            if d <= max_bits and (best is None or d < best[0]):
                best = (d, r)
        if best is not None:
            d, r = best
            kind = "golden_copy" if r.split == "golden" else "val_copy" if r.split == "val" else "split_copy"
            hashed = f"fine hash, {FINE_BITS} of 512 bits scaled to" if flat else "dHash,"
            why = f"{d} bits from {r.split} image {r.image_sha256[:12]} ({hashed} at most {max_bits})"
            if n.split == "val":
                why += "; it is in val too, so the eval set counts it twice"
            out.append(Suspect(Check.LEAKAGE, kind, n.image_sha256, 1.0 - d / 64, why, n.split))
    return out


def _leaks(split: str, other: str) -> bool:
    """A copy of a held-out image anywhere, or a val image that copies a train image."""
    return other in ("val", "golden") or split == "val"


@dataclass(frozen=True)
class ShiftTest:
    chi2: float
    dof: int
    p_value: float
    distance: float  # total variation between the two class mixes, in [0, 1]
    batch: dict[str, int]
    version: dict[str, int]


def class_shift(batch: Mapping[str, int], version: Mapping[str, int]) -> ShiftTest:
    """Pearson's chi-square goodness of fit of the batch's boxes per class against the version's
    mix (add-one smoothed, so a class new to the version does not divide by zero)."""
    names = sorted(set(batch) | set(version))
    n = sum(batch.get(c, 0) for c in names)
    smoothed = {c: version.get(c, 0) + 1 for c in names}
    total = sum(smoothed.values())
    chi2 = 0.0
    for c in names:
        expected = n * smoothed[c] / total
        chi2 += (batch.get(c, 0) - expected) ** 2 / expected if expected > 0 else 0.0
    dof = max(1, len(names) - 1)
    base = sum(version.get(c, 0) for c in names) or 1
    distance = 0.5 * sum(abs(batch.get(c, 0) / (n or 1) - version.get(c, 0) / base) for c in names)
    p = chi2_sf(chi2, dof) if n and len(names) > 1 else 1.0
    return ShiftTest(chi2, dof, p, distance, dict(batch), dict(version))


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for chi-square with `dof` degrees of freedom: Q(dof/2, x/2), the regularized
    upper incomplete gamma (series below a + 1, Lentz's continued fraction above)."""
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    log_front = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:
        term = total = 1.0 / a
        k = a
        for _ in range(500):
            k += 1
            term *= z / k
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


# Only a hold is released; every other state is final (a new screening of the batch replaces it).
RELEASES = {(ScreenState.HELD, ScreenState.APPROVED)}


def check_release(screening: Screening, target: ScreenState) -> None:
    if (screening.state, target) not in RELEASES:
        raise InvalidTransition(
            f"the screening of batch b{screening.batch_id:04d} is {screening.state}, not held: there is "
            "nothing to approve (`flywheel screen` shows it)"
        )


def decide(flagged: Mapping[Check, int], policies: Mapping[Check, Policy]) -> ScreenState:
    """The screening's state from the checks that flagged something and their policies: a hold
    wins over a quarantine (a person looks first), which wins over a report."""
    acting = {policies[c] for c, n in flagged.items() if n}
    if Policy.HOLD in acting:
        return ScreenState.HELD
    if Policy.QUARANTINE in acting:
        return ScreenState.QUARANTINED
    return ScreenState.REPORTED


def hold_expired(screening: Screening, now: datetime, timeout_hours: float) -> bool:
    created = screening.created_at if screening.created_at.tzinfo else screening.created_at.replace(tzinfo=UTC)
    return timeout_hours > 0 and (now - created).total_seconds() >= timeout_hours * 3600

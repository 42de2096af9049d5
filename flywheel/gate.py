"""The promotion gate: a pure decision from two scores on the same eval set.

Policy (README "The gate"): the candidate is promoted iff its mAP50-95 is at least
production's minus `tolerance`. With no production model yet the candidate is promoted:
something is better than nothing, and the next candidate must then beat it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    PROMOTE = "promote"
    REJECT = "reject"


class Rule(StrEnum):
    FIRST_MODEL = "first_model"  # nothing in production to compare with
    MAP_NOT_WORSE = "map_not_worse"  # candidate >= production - tolerance
    MAP_REGRESSED = "map_regressed"  # candidate < production - tolerance


@dataclass(frozen=True)
class Score:
    """How one model did on one eval set (Ultralytics DetMetrics, box task)."""

    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class: dict[str, float]  # AP50-95 by class name, only classes present in the set


@dataclass(frozen=True)
class GateDecision:
    outcome: Outcome
    rule: Rule
    candidate_map: float
    production_map: float | None
    margin: float | None  # candidate - production; positive is better
    tolerance: float

    def explain(self) -> str:
        if self.production_map is None:
            return f"promoted: first model (mAP50-95 {self.candidate_map:.4f}, nothing to beat)"
        verb = "promoted" if self.outcome is Outcome.PROMOTE else "rejected"
        return (
            f"{verb}: mAP50-95 {self.candidate_map:.4f} vs production {self.production_map:.4f} "
            f"(margin {self.margin:+.4f}, tolerance {self.tolerance:.4f})"
        )


def decide(candidate: Score, production: Score | None, tolerance: float) -> GateDecision:
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if production is None:
        return GateDecision(Outcome.PROMOTE, Rule.FIRST_MODEL, candidate.map50_95, None, None, tolerance)
    margin = candidate.map50_95 - production.map50_95
    ok = margin >= -tolerance
    return GateDecision(
        Outcome.PROMOTE if ok else Outcome.REJECT,
        Rule.MAP_NOT_WORSE if ok else Rule.MAP_REGRESSED,
        candidate.map50_95,
        production.map50_95,
        margin,
        tolerance,
    )

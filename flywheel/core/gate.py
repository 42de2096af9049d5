"""The promotion gate: a pure decision from scores on the same frozen eval sets.

Policy (README "The gate"), checked on every eval set (the new version's val split, and the
golden set when configured), first refusal wins:
1. overall mAP50-95 may not drop by more than `tolerance`;
2. no class's AP50-95 may drop by more than `max_class_drop`; a class with fewer than
   `min_class_instances` boxes in the set is reported, not gated (its AP is noise). With
   `class_interval` and a paired-bootstrap interval for the class, the drop must also be real:
   refused only when the whole interval of (candidate - production) AP lies below zero, so a
   0.12 drop on a 45-image val split that resampling says could as well be a gain is noise;
3. with `require_interval`, the paired-bootstrap interval's lower bound for candidate minus
   production mAP50-95 must be at least -`tolerance`;
With no production model yet the candidate is promoted: something is better than nothing,
and the next candidate must then beat it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class GateOutcome(StrEnum):
    PROMOTE = "promote"
    REJECT = "reject"


class Rule(StrEnum):
    FIRST_MODEL = "first_model"  # nothing in production to compare with
    MAP_NOT_WORSE = "map_not_worse"  # every rule passed
    MAP_REGRESSED = "map_regressed"  # overall mAP50-95 dropped beyond tolerance
    CLASS_REGRESSED = "class_regressed"  # one class's AP dropped beyond max_class_drop
    INTERVAL_BELOW = "interval_below"  # bootstrap lower bound of the mAP difference < -tolerance


@dataclass(frozen=True)
class Score:
    """How one model did on one eval set (Ultralytics DetMetrics, box task)."""

    map50_95: float
    map50: float
    precision: float
    recall: float
    per_class: dict[str, float]  # AP50-95 by class name, classes present in the set
    instances: dict[str, int] = field(default_factory=dict)  # boxes per class in the set


# The gate's defaults, written once: GatePolicy's and config.toml's [gate] (flywheel.core.config)
DEFAULT_TOLERANCE = 0.0
DEFAULT_MAX_CLASS_DROP = 0.1
DEFAULT_MIN_CLASS_INSTANCES = 10


@dataclass(frozen=True)
class GatePolicy:
    tolerance: float = DEFAULT_TOLERANCE
    max_class_drop: float = DEFAULT_MAX_CLASS_DROP
    min_class_instances: int = DEFAULT_MIN_CLASS_INSTANCES
    require_interval: bool = False  # gate on the bootstrap interval's lower bound too
    class_interval: bool = False  # a class drop refuses only if its bootstrap interval is below 0

    def __post_init__(self) -> None:
        if self.tolerance < 0 or self.max_class_drop < 0:
            raise ValueError(f"tolerance and max_class_drop must be >= 0, got {self}")


@dataclass(frozen=True)
class ClassCheck:
    name: str
    candidate: float
    production: float
    instances: int
    gated: bool  # False: too few instances, reported only
    interval: tuple[float, float] | None = None  # bootstrap interval of candidate - production AP

    def refuses(self, policy: GatePolicy) -> bool:
        if not self.gated or self.drop <= policy.max_class_drop:
            return False
        if policy.class_interval and self.interval is not None:
            return self.interval[1] < 0  # the drop is larger than resampling noise
        return True

    @property
    def drop(self) -> float:
        return self.production - self.candidate


@dataclass(frozen=True)
class SetVerdict:
    eval_set: str
    candidate: Score
    production: Score | None
    classes: tuple[ClassCheck, ...]
    rule: Rule
    interval: tuple[float, float] | None = None  # bootstrap interval of candidate - production mAP

    @property
    def margin(self) -> float | None:
        return None if self.production is None else self.candidate.map50_95 - self.production.map50_95


@dataclass(frozen=True)
class GateDecision:
    outcome: GateOutcome
    rule: Rule
    verdicts: tuple[SetVerdict, ...]  # the first is the primary set (the version's val split)
    policy: GatePolicy

    @property
    def candidate_map(self) -> float:
        return self.verdicts[0].candidate.map50_95

    @property
    def production_map(self) -> float | None:
        p = self.verdicts[0].production
        return None if p is None else p.map50_95

    @property
    def margin(self) -> float | None:
        return self.verdicts[0].margin

    @property
    def tolerance(self) -> float:
        return self.policy.tolerance

    def explain(self) -> str:
        if self.rule is Rule.FIRST_MODEL:
            return f"promoted: first model (mAP50-95 {self.candidate_map:.4f}, nothing to beat)"
        deciding = next((v for v in self.verdicts if v.rule is self.rule), self.verdicts[0])
        verb = "promoted" if self.outcome is GateOutcome.PROMOTE else "rejected"
        text = (
            f"{verb}: mAP50-95 {deciding.candidate.map50_95:.4f} vs production "
            f"{deciding.production.map50_95 if deciding.production else 0.0:.4f} on {deciding.eval_set} "
            f"(margin {deciding.margin or 0.0:+.4f}, tolerance {self.policy.tolerance:.4f})"
        )
        if deciding.interval is not None:
            low, high = deciding.interval
            text += f"; bootstrap interval of the difference [{low:+.4f}, {high:+.4f}]"
        if self.rule is Rule.CLASS_REGRESSED:
            worst = max((c for c in deciding.classes if c.refuses(self.policy)), key=lambda c: c.drop)
            text += (
                f"; class {worst.name!r} AP50-95 {worst.production:.4f} -> {worst.candidate:.4f} "
                f"(drop {worst.drop:.4f} > max_class_drop {self.policy.max_class_drop:.4f})"
            )
            if worst.interval is not None and self.policy.class_interval:
                text += f", bootstrap interval [{worst.interval[0]:+.4f}, {worst.interval[1]:+.4f}] below zero"
        return text


def judge(
    eval_set: str,
    candidate: Score,
    production: Score | None,
    policy: GatePolicy,
    interval: tuple[float, float] | None = None,
    class_intervals: Mapping[str, tuple[float, float]] | None = None,
) -> SetVerdict:
    if production is None:
        return SetVerdict(eval_set, candidate, None, (), Rule.FIRST_MODEL)
    classes = tuple(
        ClassCheck(
            name,
            candidate.per_class.get(name, 0.0),
            production.per_class[name],
            production.instances.get(name, candidate.instances.get(name, 0)),
            production.instances.get(name, candidate.instances.get(name, 0)) >= policy.min_class_instances,
            (class_intervals or {}).get(name),
        )
        for name in sorted(production.per_class)
    )
    if candidate.map50_95 - production.map50_95 < -policy.tolerance:
        rule = Rule.MAP_REGRESSED
    elif any(c.refuses(policy) for c in classes):
        rule = Rule.CLASS_REGRESSED
    elif policy.require_interval and (interval is None or interval[0] < -policy.tolerance):
        rule = Rule.INTERVAL_BELOW  # no interval when one was required also refuses: fail closed
    else:
        rule = Rule.MAP_NOT_WORSE
    return SetVerdict(eval_set, candidate, production, classes, rule, interval)


REFUSING = (Rule.MAP_REGRESSED, Rule.CLASS_REGRESSED, Rule.INTERVAL_BELOW)


def decide_gate(
    scores: Mapping[str, tuple[Score, Score | None]],
    policy: GatePolicy,
    intervals: Mapping[str, tuple[float, float]] | None = None,
    class_intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> GateDecision:
    """`scores`: eval-set name -> (candidate, production or None), primary set first;
    `intervals`: eval-set name -> bootstrap interval (low, high), when computed;
    `class_intervals`: eval-set name -> class name -> the same for the class's AP."""
    if not scores:
        raise ValueError("the gate needs at least one eval set")
    intervals = intervals or {}
    per_class = class_intervals or {}
    verdicts = tuple(
        judge(name, cand, prod, policy, intervals.get(name), per_class.get(name))
        for name, (cand, prod) in scores.items()
    )
    refusal = next((v for v in verdicts if v.rule in REFUSING), None)
    if refusal is not None:
        return GateDecision(GateOutcome.REJECT, refusal.rule, verdicts, policy)
    return GateDecision(GateOutcome.PROMOTE, verdicts[0].rule, verdicts, policy)

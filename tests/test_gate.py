"""The promotion gate's rules, margins and explanations (pure; the real-model path is in
test_gate_real.py)."""

from __future__ import annotations

import pytest

from flywheel.core.gate import GateOutcome, GatePolicy, Rule, Score, decide_gate


def score(overall: float, **per_class: float) -> Score:
    classes = per_class or {"a": overall}
    return Score(overall, overall + 0.1, 0.5, 0.5, classes, dict.fromkeys(classes, 50))


def one(candidate: Score, production: Score | None, **policy: float):
    return decide_gate({"val": (candidate, production)}, GatePolicy(**policy))


def test_first_model_is_promoted_with_its_own_rule():
    d = one(score(0.0), None)
    assert (d.outcome, d.rule, d.margin, d.production_map) == (GateOutcome.PROMOTE, Rule.FIRST_MODEL, None, None)
    assert "first model" in d.explain()


def test_equal_score_is_not_a_regression():
    d = one(score(0.4), score(0.4))
    assert d.outcome is GateOutcome.PROMOTE and d.rule is Rule.MAP_NOT_WORSE and d.margin == 0.0


def test_better_candidate_is_promoted_with_positive_margin():
    d = one(score(0.5), score(0.4))
    assert d.outcome is GateOutcome.PROMOTE
    assert d.margin == pytest.approx(0.1)


def test_small_drop_within_tolerance_is_promoted():
    d = one(score(0.39), score(0.40), tolerance=0.02)
    assert d.outcome is GateOutcome.PROMOTE and d.margin == pytest.approx(-0.01)


def test_drop_beyond_tolerance_is_rejected_and_explained():
    d = one(score(0.30), score(0.40), tolerance=0.05)
    assert d.outcome is GateOutcome.REJECT and d.rule is Rule.MAP_REGRESSED
    assert d.margin == pytest.approx(-0.10)
    assert "rejected" in d.explain() and "-0.1000" in d.explain()


def test_overall_rises_but_a_class_collapses_is_rejected():
    production = score(0.40, cat=0.40, dog=0.40)
    candidate = score(0.45, cat=0.80, dog=0.10)
    d = one(candidate, production, max_class_drop=0.1)
    assert d.margin == pytest.approx(0.05)
    assert d.outcome is GateOutcome.REJECT and d.rule is Rule.CLASS_REGRESSED
    dog = next(c for c in d.verdicts[0].classes if c.name == "dog")
    assert dog.drop == pytest.approx(0.30) and dog.gated
    assert "'dog'" in d.explain() and "0.3000" in d.explain()


def test_a_rare_class_is_reported_not_gated():
    production = Score(0.4, 0.5, 0.5, 0.5, {"cat": 0.4, "dog": 0.4}, {"cat": 50, "dog": 3})
    candidate = Score(0.45, 0.5, 0.5, 0.5, {"cat": 0.8, "dog": 0.1}, {"cat": 50, "dog": 3})
    d = one(candidate, production, min_class_instances=10)
    assert d.outcome is GateOutcome.PROMOTE
    dog = next(c for c in d.verdicts[0].classes if c.name == "dog")
    assert not dog.gated and dog.instances == 3 and dog.drop == pytest.approx(0.3)


def test_a_class_new_in_this_version_is_not_gated():
    d = one(score(0.45, cat=0.5, bird=0.0), score(0.40, cat=0.4))
    assert d.outcome is GateOutcome.PROMOTE
    assert [c.name for c in d.verdicts[0].classes] == ["cat"]


def test_every_gated_set_must_pass_and_the_failing_one_is_named():
    val = (score(0.5), score(0.4))
    golden = (score(0.2), score(0.4))
    d = decide_gate({"val": val, "golden": golden}, GatePolicy())
    assert d.outcome is GateOutcome.REJECT and d.rule is Rule.MAP_REGRESSED
    assert "on golden" in d.explain()
    assert d.margin == pytest.approx(0.1)  # the headline margin is the primary set's


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        GatePolicy(tolerance=-0.1)


# --- issue 12: a per-class rule that does not stall the chain on noise -----------------------


def test_a_class_drop_within_its_bootstrap_interval_is_noise_not_a_refusal():
    candidate, production = score(0.52, a=0.80, b=0.24), score(0.50, a=0.60, b=0.40)  # b drops 0.16
    policy = GatePolicy(class_interval=True)
    noisy = decide_gate({"val": (candidate, production)}, policy, class_intervals={"val": {"b": (-0.35, 0.05)}})
    assert noisy.outcome is GateOutcome.PROMOTE and noisy.rule is Rule.MAP_NOT_WORSE
    assert noisy.verdicts[0].classes[1].interval == (-0.35, 0.05)
    real = decide_gate({"val": (candidate, production)}, policy, class_intervals={"val": {"b": (-0.30, -0.02)}})
    assert real.outcome is GateOutcome.REJECT and real.rule is Rule.CLASS_REGRESSED
    assert "class 'b' AP50-95 0.4000 -> 0.2400" in real.explain()
    assert "bootstrap interval [-0.3000, -0.0200] below zero" in real.explain()
    # no interval for the class (the bootstrap did not run): the fixed rule, fail closed
    assert decide_gate({"val": (candidate, production)}, policy).rule is Rule.CLASS_REGRESSED
    # class_interval off: the fixed rule, whatever the interval says
    off = decide_gate({"val": (candidate, production)}, GatePolicy(), class_intervals={"val": {"b": (-0.35, 0.05)}})
    assert off.rule is Rule.CLASS_REGRESSED
    # an interval below zero but a drop within max_class_drop: not refused
    small = decide_gate(
        {"val": (score(0.52, a=0.80, b=0.35), production)}, policy, class_intervals={"val": {"b": (-0.1, -0.01)}}
    )
    assert small.outcome is GateOutcome.PROMOTE

"""The promotion gate's rule, margins and explanations."""

from __future__ import annotations

import pytest

from flywheel.gate import Outcome, Rule, Score, decide


def score(map50_95: float) -> Score:
    return Score(map50_95, map50_95 + 0.1, 0.5, 0.5, {"a": map50_95})


def test_first_model_is_promoted_with_its_own_rule():
    d = decide(score(0.0), None, tolerance=0.0)
    assert (d.outcome, d.rule, d.margin, d.production_map) == (Outcome.PROMOTE, Rule.FIRST_MODEL, None, None)
    assert "first model" in d.explain()


def test_equal_score_is_not_a_regression():
    d = decide(score(0.4), score(0.4), tolerance=0.0)
    assert d.outcome is Outcome.PROMOTE and d.rule is Rule.MAP_NOT_WORSE and d.margin == 0.0


def test_better_candidate_is_promoted_with_positive_margin():
    d = decide(score(0.5), score(0.4), tolerance=0.0)
    assert d.outcome is Outcome.PROMOTE
    assert d.margin == pytest.approx(0.1)


def test_small_drop_within_tolerance_is_promoted():
    d = decide(score(0.39), score(0.40), tolerance=0.02)
    assert d.outcome is Outcome.PROMOTE and d.margin == pytest.approx(-0.01)


def test_drop_beyond_tolerance_is_rejected_and_explained():
    d = decide(score(0.30), score(0.40), tolerance=0.05)
    assert d.outcome is Outcome.REJECT and d.rule is Rule.MAP_REGRESSED
    assert d.margin == pytest.approx(-0.10)
    assert "rejected" in d.explain() and "-0.1000" in d.explain()


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        decide(score(0.3), score(0.3), tolerance=-0.1)

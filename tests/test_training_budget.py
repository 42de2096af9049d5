"""The warm-start budget, the plateau stop and the refresh policy, as pure functions.

Their effect on real trainings is in test_training_strategies.py (the plateau's final decay,
shrink and perturb) and test_training_guard.py (a refresh trains after the warm candidate).
"""

from __future__ import annotations

import pytest

from flywheel.core.budget import Plateau, decayed, late_gain, warm_budget
from flywheel.core.config import parse
from flywheel.core.domain import StartKind
from flywheel.core.plan import CANDIDATE, CHALLENGER, Generation, plan_budget, refresh_due, refresh_outlook

W, S = StartKind.WARM, StartKind.SCRATCH


def budget(new: int, total: int = 100, gain: float = 0.0, factor: float = 1.0, floor: int = 5, ceiling: int = 0):
    return warm_budget(
        epochs_scratch=50,
        train_images=total,
        new_train_images=new,
        factor=factor,
        floor=floor,
        ceiling=ceiling,
        parent_gain=gain,
    )


def test_budget_gives_the_new_images_the_epochs_scratch_would():
    assert budget(50).epochs == 25  # half the version is new: half of scratch's epochs
    assert budget(25).epochs == 13  # rounded up
    assert budget(12, factor=2.0).epochs == 12
    assert "12/100 train images new (12%) x epochs_scratch 50 x factor 2" in budget(12, factor=2.0).why


def test_budget_is_clamped_and_says_so():
    small = budget(1)
    assert small.epochs == 5 and "clamped to [5, 50]" in small.why and small.why.endswith("-> 5 epochs")
    assert budget(0).epochs == 5  # the same data again: the floor
    assert budget(100, ceiling=30).epochs == 30
    assert budget(90, ceiling=0).epochs == 45  # ceiling 0: epochs_scratch
    assert budget(0, total=0).epochs == 5


def test_a_parent_still_improving_gets_a_larger_budget():
    assert budget(20, gain=0.15).epochs == 15 and "parent still improving (+15% val mAP" in budget(20, gain=0.15).why
    assert budget(20, gain=0.149).epochs == 10


@pytest.mark.parametrize(
    ("curve", "gain"),
    [
        ([], 0.0),
        ([0.1, 0.2, 0.3], 0.0),  # too short to say
        ([0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3], 0.0),  # flat over the last quarter
        ([0.1, 0.2, 0.3, 0.36], 0.2),  # +20% in the last quarter
        ([0.0, 0.0, 0.0, 0.1], 1.0),  # nothing learnt before
        ([0.5, 0.4, 0.3, 0.2], 0.0),  # falling: not improving
    ],
)
def test_late_gain(curve, gain):
    assert late_gain(curve) == pytest.approx(gain)


def test_plan_budget_fixed_or_auto_from_config():
    assert plan_budget(parse({"training": {"warm_budget": "fixed"}}), 100, 50, []) is None
    auto = plan_budget(parse({"training": {"epochs_scratch": 40}}), 100, 50, [0.1, 0.2, 0.3, 0.3])
    assert auto is not None and auto.epochs == 30  # 40 x 50% new x warm_budget_factor 1.5


def test_plateau_enters_the_final_decay_once_after_patience_epochs_without_improvement():
    plateau = Plateau(patience=2, min_epochs=3, decay_epochs=3)
    fitness = [0.1, 0.2, 0.2, 0.2, 0.2, 0.2]
    calls = [plateau.update(epoch, f, total=20) for epoch, f in enumerate(fitness, start=1)]
    # best at epoch 2; epochs 3 and 4 flat: at epoch 4 (>= min_epochs, 2 epochs flat) decay to 4 + 3
    assert calls == [None, None, None, 7, None, None]
    assert plateau.best_epoch == 2 and plateau.decaying_from == 4


def test_plateau_waits_for_min_epochs_and_never_extends_a_run():
    plateau = Plateau(patience=1, min_epochs=5, decay_epochs=3)
    assert [plateau.update(e, 0.1, total=6) for e in range(1, 7)] == [None] * 6  # 5 + 3 > 6: ends as planned
    assert [Plateau(0, 1, 3).update(e, 0.1, total=50) for e in range(1, 10)] == [None] * 9  # patience 0: off


def test_the_final_decay_runs_linearly_to_lrf():
    assert decayed(0.6, 0.01, start=10, length=3, epoch=10) == pytest.approx(0.6)
    assert decayed(0.6, 0.01, start=10, length=3, epoch=11) == pytest.approx(0.6 - 0.59 / 3)
    assert decayed(0.6, 0.01, start=10, length=3, epoch=13) == pytest.approx(0.01)
    assert decayed(0.6, 0.01, start=10, length=3, epoch=20) == pytest.approx(0.01)


def g(kind: StartKind, images: int, purpose: str = CANDIDATE, rejected: bool = False) -> Generation:
    return Generation(kind, purpose, rejected, images)


def test_refresh_due_when_the_data_grew_by_the_share_since_the_newest_scratch_training():
    assert refresh_due([g(S, 20), g(W, 40), g(W, 79)], growth=4.0) is None
    reason = refresh_due([g(S, 20), g(W, 40), g(W, 80)], growth=4.0)
    assert reason == (
        "the train split grew x4.0 (20 -> 80 images) since the newest training from scratch (refresh_growth 4)"
    )
    # a refresh that lost still counts: growth is measured from it, not retried every generation
    lost = [g(S, 20), g(W, 80), g(S, 80, CHALLENGER, rejected=True), g(W, 100)]
    assert refresh_due(lost, growth=4.0) is None
    assert refresh_due([g(S, 20), g(W, 80)], growth=0) is None  # off
    assert refresh_due([g(S, 20), g(S, 80, CHALLENGER)], growth=2.0) is None  # only after a warm candidate
    assert refresh_due([g(W, 80)], growth=2.0) is None  # no scratch training known: nothing to measure from


def test_refresh_outlook_says_when_and_why():
    history = [g(S, 20), g(W, 40)]
    assert refresh_outlook(history, 4.0, 0) == (
        "next refresh from model.base: when the train split reaches 80 images "
        "(x4 the 20 of the newest training from scratch; refresh_growth)"
    )
    assert "after 2 more warm generations (scratch_challenger_every 3)" in refresh_outlook(history, 4.0, 3)
    assert refresh_outlook(history, 0, 0).startswith("never")
    assert refresh_outlook([], 4.0, 0).startswith("no model trained from scratch yet")

"""The paired bootstrap: its statistics on constructed matches, the gate rule, and a real run."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.gate import GateOutcome, GatePolicy, Rule, Score, decide_gate
from flywheel.training import bootstrap


def images(hits: list[bool]) -> list[dict[str, np.ndarray]]:
    """One target of class 0 per image; a hit is a confident match at every IoU threshold."""
    return [
        {
            "tp": np.full((1, 10), hit),
            "conf": np.array([0.9 if hit else 0.3]),
            "pred_cls": np.array([0.0]),
            "target_cls": np.array([0.0]),
        }
        for hit in hits
    ]


def test_a_better_model_gets_an_interval_above_zero():
    rng = np.random.default_rng(1)
    good = images(list(rng.random(60) < 0.9))
    bad = images(list(rng.random(60) < 0.4))
    result = bootstrap.paired(good, bad, samples=200, confidence=0.95)
    assert result["observed"] > 0.2
    assert 0 < result["low"] < result["mean"] < result["high"]
    worse = bootstrap.paired(bad, good, samples=200, confidence=0.95)
    assert worse["high"] < 0
    # one class here: its interval is the overall one, on the same resamples
    assert list(result["classes"]) == [0]
    assert result["classes"][0] == {"observed": result["observed"], "low": result["low"], "high": result["high"]}


def test_each_class_gets_its_own_interval_on_the_same_resamples():
    rng = np.random.default_rng(2)
    same = list(rng.random(40) < 0.7)
    zero_cand, zero_prod = images(same), images(same)  # class 0: the same hits, a zero interval
    one_cand, one_prod = images(list(rng.random(40) < 0.9)), images(list(rng.random(40) < 0.3))
    for part in one_cand + one_prod:  # class 1: the candidate is far better
        part["pred_cls"], part["target_cls"] = np.array([1.0]), np.array([1.0])
    result = bootstrap.paired(zero_cand + one_cand, zero_prod + one_prod, samples=200, confidence=0.95)
    assert result["classes"][0]["low"] == result["classes"][0]["high"] == 0.0
    assert result["classes"][1]["low"] > 0
    assert result["low"] < result["classes"][1]["low"]  # the overall mean halves the class gain


def test_the_same_model_gets_a_zero_interval():
    same = images([True, False] * 20)
    result = bootstrap.paired(same, same, samples=100, confidence=0.9)
    assert result["low"] == result["high"] == result["observed"] == 0.0


def test_stats_round_trip_through_npz(tmp_path):
    original = images([True, False, True])
    original[1]["target_cls"] = np.array([0.0, 1.0])  # uneven lengths per image
    bootstrap.save(tmp_path / "s.npz", original)
    loaded = bootstrap.load(tmp_path / "s.npz")
    assert len(loaded) == 3
    for a, b in zip(original, loaded, strict=True):
        for key in bootstrap.STAT_KEYS:
            assert np.array_equal(a[key].reshape(b[key].shape), b[key])


def test_paired_refuses_different_image_counts():
    with pytest.raises(ValueError, match="same images"):
        bootstrap.paired(images([True]), images([True, False]), samples=10, confidence=0.9)


def _score(value: float) -> Score:
    return Score(value, value, 0.5, 0.5, {"a": value}, {"a": 50})


def test_gate_requires_the_lower_bound_when_asked():
    policy = GatePolicy(tolerance=0.01, require_interval=True)
    scores = {"val": (_score(0.42), _score(0.40))}
    ok = decide_gate(scores, policy, {"val": (-0.005, 0.05)})
    assert ok.outcome is GateOutcome.PROMOTE and "[-0.0050, +0.0500]" in ok.explain()
    low = decide_gate(scores, policy, {"val": (-0.03, 0.07)})
    assert low.outcome is GateOutcome.REJECT and low.rule is Rule.INTERVAL_BELOW
    missing = decide_gate(scores, policy)
    assert missing.outcome is GateOutcome.REJECT and missing.rule is Rule.INTERVAL_BELOW  # fails closed


@pytest.mark.slow
def test_a_real_warm_start_gets_a_bootstrap_interval(tmp_path):
    config = (
        "[dataset]\nval_fraction = 0.25\n[training]\nepochs_scratch = 2\nepochs_warm = 1\nimgsz = 64\nbatch = 8\n"
        "[gate]\nbootstrap = true\nbootstrap_samples = 100\n"
    )
    app = App(init_data_root(tmp_path / "root", config))
    for seed in (1, 2):
        result = app.train(app.ingest(synthetic_batch(tmp_path / f"b{seed}", 16, seed=seed), move=False).version.id)
    verdict = result.decision.verdicts[0]
    assert verdict.interval is not None and verdict.interval[0] <= verdict.interval[1]
    row = app.store.gate_decisions()[-1]
    assert row.details.verdicts[0] == verdict  # recorded, and read back as the same verdict
    run_dir = tmp_path / "root" / "runs" / "r0002"
    assert (run_dir / "stats-candidate-val.npz").is_file() and (run_dir / "stats-production-val.npz").is_file()
    # every class in val got its own interval, recorded with the verdict and used by the class rule
    classes = row.details.verdicts[0].classes
    with_boxes = [c for c in classes if c.instances > 0]
    assert with_boxes and all(c.interval is None for c in classes if c.instances == 0)
    assert all(c.interval is not None and c.interval[0] <= c.interval[1] for c in with_boxes), classes
    assert row.details.policy is not None and row.details.policy.class_interval is True

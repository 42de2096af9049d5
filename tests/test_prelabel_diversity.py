"""`flywheel suggest --pick diverse`'s choice (flywheel/prelabel/diversity.py) as a pure function:
uncertain images spread over clusters of look-alikes. The real child's embeddings are checked
in test_prelabel.py's slow tests; the benchmark of the pick is benchmarks/suggest.py."""

from __future__ import annotations

import math
import random

import pytest

from flywheel.prelabel.diversity import Picked, pick


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _pool(groups: dict[str, tuple[list[float], float]], size: int = 8) -> tuple[list[tuple[str, float]], dict]:
    """`size` near-duplicates per group around its direction, scores just under the group's."""
    rng = random.Random(7)
    vectors, ranked = {}, []
    for g, (direction, score) in groups.items():
        for i in range(size):
            name = f"{g}{i}"
            vectors[name] = _unit([x + rng.gauss(0, 0.02) for x in direction])
            ranked.append((name, round(score - i * 0.001, 4)))
    ranked.sort(key=lambda item: (-item[1], item[0]))
    return ranked, vectors


GROUPS = {"a": ([1, 0, 0, 0], 0.90), "b": ([0, 1, 0, 0], 0.60), "c": ([0, 0, 1, 0], 0.55), "d": ([0, 0, 0, 1], 0.10)}


def test_it_takes_the_most_uncertain_of_each_group_where_top_k_takes_one_group():
    ranked, vectors = _pool(GROUPS)
    assert [n for n, _s in ranked[:3]] == ["a0", "a1", "a2"]  # top-K: three look-alikes
    assert pick(ranked, vectors, 3, prefilter=8) == Picked(["a0", "b0", "c0"], by_rank=0)


def test_uncertainty_still_chooses_the_region_the_batch_comes_from():
    """The confident group d is never a candidate: only the 3K most uncertain are clustered."""
    ranked, vectors = _pool(GROUPS, size=2)  # a0 a1 b0 b1 c0 c1 d0 d1
    for k, prefilter in ((2, 3), (3, 2)):  # both: the 6 most uncertain (a0 a1 b0 b1 c0 c1) are candidates
        chosen = pick(ranked, vectors, k, prefilter=prefilter).names
        assert chosen[0] == "a0" and not {"d0", "d1"} & set(chosen) and len({n[0] for n in chosen}) == k


def test_without_vectors_or_with_too_few_candidates_it_is_the_top_k_and_says_so():
    ranked, vectors = _pool(GROUPS, size=2)
    top = [n for n, _s in ranked[:3]]
    assert pick(ranked, {}, 3) == Picked(top, by_rank=3)
    assert pick(ranked, {n: vectors[n] for n, _s in ranked[:2]}, 3) == Picked(top, by_rank=1)  # 2 for 3
    assert pick(ranked, vectors, 20) == Picked([n for n, _s in ranked], by_rank=0)  # K over the pool: every image
    assert pick(ranked, {}, 20) == Picked([n for n, _s in ranked], by_rank=0)  # no choice made, so no fallback
    assert pick([], {}, 5) == Picked([], by_rank=0)


def test_a_vector_that_is_not_finite_counts_as_none_instead_of_collapsing_the_clusters():
    ranked, vectors = _pool(GROUPS)
    vectors["a1"] = [math.nan, 0.0, 0.0, 0.0]
    vectors["a2"] = [0.0, 0.0, 0.0, 0.0]  # nothing to normalise
    assert pick(ranked, vectors, 3, prefilter=8) == Picked(["a0", "b0", "c0"], by_rank=0)


def test_vectors_of_two_models_are_refused():
    ranked, vectors = _pool(GROUPS)
    vectors["b0"] = [1.0, 0.0]
    with pytest.raises(ValueError, match="different lengths"):
        pick(ranked, vectors, 3, prefilter=8)


def test_the_batch_comes_back_in_rank_order_with_no_image_twice():
    ranked, vectors = _pool(GROUPS, size=5)
    chosen = pick(ranked, vectors, 6).names
    order = [n for n, _s in ranked]
    assert len(set(chosen)) == 6 and chosen == sorted(chosen, key=order.index)


def test_a_large_k_is_scored_in_chunks_with_the_same_pick(monkeypatch):
    """`--top` in the thousands: the candidates meet the centres CHUNK rows at a time, so memory
    stays CHUNK x K; the pick must not depend on the chunk size."""
    from flywheel.prelabel import diversity

    rng = random.Random(3)
    directions = {f"g{j}_": ([rng.gauss(0, 1) for _ in range(16)], 0.9 - j * 0.01) for j in range(40)}
    ranked, vectors = _pool(directions, size=5)
    whole = pick(ranked, vectors, 40)
    monkeypatch.setattr(diversity, "CHUNK", 7)  # 120 candidates: 18 chunks, the last one short
    assert pick(ranked, vectors, 40) == whole
    # the 3K = 120 candidates are the first 24 groups of 5: every one of them is in the pick
    assert whole.by_rank == 0 and len(whole.names) == 40
    assert {n.split("_")[0] for n in whole.names} == {f"g{j}" for j in range(24)}

"""Which K images to label next when they should differ from each other, not only be uncertain.

The top K by uncertainty alone are often look-alikes: on BCCD at 320 px, 24 of the 30 images
`suggest` ranked first came from one stretch of the pool (neighbouring slides), and labelling
them taught no more than 30 random images (docs/benchmarks.md, "Suggest vs random"). A batch
of near-duplicates teaches about what one of them would.

`pick` is a variant of diverse mini-batch active learning (Zhdanov 2019, arXiv:1901.05954):
keep the PREFILTER x K most uncertain images, group them into K clusters by what the model saw
of each (the head's input features, predict_events.ImageEmbedded, unit vectors; spherical
k-means, so cosine similarity), each image weighted by its uncertainty score, and take the most
uncertain image of every cluster (Zhdanov takes the one nearest the centre, from a wider
prefilter; here uncertainty keeps the last word within a cluster). Uncertainty chooses the
region of the pool, the clusters spread the batch over it.

Deterministic for given vectors (the same model, machine and settings): k-means starts from a
farthest-first traversal that begins at the most uncertain image (no random seed), and ties go
to the better rank. Farthest-first seeds odd images (a blank slide) as their own clusters, so
an outlier among the candidates tends to be picked: it is at least uncertain. Pure: names,
scores and vectors in, names out; numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported when a pick is made, not when the CLI starts
    import numpy as np
    from numpy.typing import NDArray

PREFILTER = 3  # candidates per pick: 3K keeps the batch among the more uncertain images
ROUNDS = 50  # Lloyd iterations at most; a few hundred candidates settle in well under that
CHUNK = 2048  # candidates scored against every centre at once (memory: CHUNK x K floats)


@dataclass(frozen=True)
class Picked:
    names: list[str]  # K names, in rank order
    by_rank: int  # of them, how many were filled in by rank, not chosen from a cluster


def pick(
    ranked: Sequence[tuple[str, float]],
    vectors: Mapping[str, Sequence[float]],
    k: int,
    prefilter: int = PREFILTER,
) -> Picked:
    """K names of `ranked` (name, score), most uncertain first, spread over the clusters of
    their `vectors`; returned in rank order. An image without a vector, or with a non-finite
    one, is not clustered; when too few candidates have one, or a cluster comes out empty, the
    next best ranked fill in, and `by_rank` counts them (all K: the pick is plain top-K)."""
    import numpy as np

    if k >= len(ranked):  # every image is in the batch: nothing to choose, nothing fell back
        return Picked([name for name, _s in ranked], 0)
    candidates = []
    for i, (name, score) in enumerate(ranked[: prefilter * k]):
        vector = np.asarray(vectors.get(name, ()), dtype=np.float64)
        if vector.size and np.isfinite(vector).all() and np.linalg.norm(vector) > 0:
            candidates.append((i, score, vector / np.linalg.norm(vector)))
    if len(candidates) <= k:
        return _fill([i for i, _s, _v in candidates], ranked, k)
    sizes = {len(v) for _i, _s, v in candidates}
    if len(sizes) > 1:  # vectors from two models cannot be compared
        raise ValueError(f"embeddings of different lengths {sorted(sizes)}: one model's vectors only")
    points = np.stack([v for _i, _s, v in candidates])
    weights = np.array([max(score, 0.0) for _i, score, _v in candidates]) + 1e-6
    groups = _spherical_kmeans(points, weights, k)
    chosen = []
    for group in range(k):
        members = np.flatnonzero(groups == group)
        if members.size:  # candidates are in rank order: the first member is the most uncertain
            chosen.append(candidates[int(members[0])][0])
    return _fill(chosen, ranked, k)


def _spherical_kmeans(x: NDArray[np.float64], w: NDArray[np.float64], k: int) -> NDArray[np.intp]:
    """Each unit vector's cluster (0..k-1) by cosine similarity to weighted, renormalised
    centres. Centres start at a farthest-first traversal from point 0 (the most uncertain)."""
    import numpy as np

    first = [0]
    nearest = x @ x[0]  # similarity to the closest centre so far
    for _ in range(1, k):
        far = int(np.argmin(nearest))  # argmin takes the first of equals: the better ranked
        first.append(far)
        nearest = np.maximum(nearest, x @ x[far])
    centres = x[first].copy()
    groups = np.full(len(x), -1, dtype=np.intp)
    weighted = w[:, None] * x
    for _round in range(ROUNDS):
        new_groups = _nearest(x, centres)
        if np.array_equal(new_groups, groups):
            break
        groups = new_groups
        sums = np.zeros_like(centres)
        np.add.at(sums, groups, weighted)  # one pass for every centre: `--top` may be in the thousands
        norms = np.linalg.norm(sums, axis=1)
        filled = norms > 0  # an empty cluster keeps its centre
        centres[filled] = sums[filled] / norms[filled, None]
    return groups


def _nearest(x: NDArray[np.float64], centres: NDArray[np.float64]) -> NDArray[np.intp]:
    """Each point's most similar centre, CHUNK rows at a time: 3K points by K centres at once
    would be 2.4 GB of float64 for K = 10000."""
    import numpy as np

    return np.concatenate([(x[i : i + CHUNK] @ centres.T).argmax(axis=1) for i in range(0, len(x), CHUNK)])


def _fill(chosen: list[int], ranked: Sequence[tuple[str, float]], k: int) -> Picked:
    """The names at ranks `chosen`, topped up to K with the best ranked others, in rank order."""
    taken = set(chosen)
    extra = [i for i in range(len(ranked)) if i not in taken][: k - len(chosen)]
    return Picked([ranked[i][0] for i in sorted([*chosen, *extra])], len(extra))

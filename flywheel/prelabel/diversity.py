"""Which K images to label next when they should differ from each other, not only be uncertain.

The top K by uncertainty alone are often look-alikes: on BCCD at 320 px, 24 of the 30 images
`suggest` ranked first came from one stretch of the pool (neighbouring slides), and labelling
them taught no more than 30 random images (docs/benchmarks.md, "Suggest vs random"). A batch
of near-duplicates teaches about what one of them would.

`pick` is diverse mini-batch active learning (Zhdanov 2019, arXiv:1901.05954): keep the
PREFILTER x K most uncertain images, group them into K clusters by what the model saw of each
(the head's input features, predict_events.ImageEmbedded; cosine geometry, as the vectors are
L2-normalised), with each image weighted by its uncertainty score, and take the most uncertain
image of every cluster. Uncertainty chooses the region of the pool, the clusters spread the
batch over it.

Deterministic, so a ranking repeats for a given model: k-means starts from a farthest-first
traversal that begins at the most uncertain image (no random seed), and ties go to the better
rank. Pure: names, scores and vectors in, names out; numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported when a pick is made, not when the CLI starts
    import numpy as np
    from numpy.typing import NDArray

PREFILTER = 3  # candidates per pick: 3K keeps the batch among the more uncertain images
ROUNDS = 50  # Lloyd iterations at most; a few hundred candidates settle in well under that


def pick(
    ranked: Sequence[tuple[str, float]],
    vectors: Mapping[str, Sequence[float]],
    k: int,
    prefilter: int = PREFILTER,
) -> list[str]:
    """K names of `ranked` (name, score), most uncertain first, spread over the clusters of
    their `vectors`; returned in rank order. Images without a vector are not clustered; when
    fewer than K candidates have one, or clusters come out empty, the next best ranked fill in."""
    import numpy as np

    k = min(k, len(ranked))
    candidates = [(i, name, score) for i, (name, score) in enumerate(ranked[: prefilter * k]) if name in vectors]
    if len(candidates) <= k:
        return _fill([name for _i, name, _s in candidates], ranked, k)
    points = np.array([vectors[name] for _i, name, _s in candidates], dtype=np.float64)
    weights = np.array([max(score, 0.0) for _i, _n, score in candidates]) + 1e-6
    groups = _weighted_kmeans(points, weights, k)
    chosen = []
    for group in range(k):
        members = np.flatnonzero(groups == group)
        if members.size:  # candidates are in rank order: the first member is the most uncertain
            chosen.append(candidates[int(members[0])][0])
    return _fill([ranked[i][0] for i in sorted(chosen)], ranked, k)


def _weighted_kmeans(x: NDArray[np.float64], w: NDArray[np.float64], k: int) -> NDArray[np.intp]:
    """Each point's cluster (0..k-1). Centres start at a farthest-first traversal from point 0."""
    import numpy as np

    norms = (x * x).sum(axis=1)
    first = [0]
    nearest = norms - 2 * x @ x[0] + norms[0]
    for _ in range(1, k):
        far = int(np.argmax(nearest))  # argmax takes the first of equals: the better ranked
        first.append(far)
        nearest = np.minimum(nearest, norms - 2 * x @ x[far] + norms[far])
    centres = x[first].copy()
    groups = np.full(len(x), -1, dtype=np.intp)
    for _round in range(ROUNDS):
        distances = norms[:, None] - 2 * x @ centres.T + (centres * centres).sum(axis=1)[None, :]
        new_groups = distances.argmin(axis=1)
        if np.array_equal(new_groups, groups):
            break
        groups = new_groups
        for g in range(k):
            members = groups == g
            if members.any():
                centres[g] = (w[members, None] * x[members]).sum(axis=0) / w[members].sum()
    return groups


def _fill(chosen: list[str], ranked: Sequence[tuple[str, float]], k: int) -> list[str]:
    """`chosen`, topped up to K with the best ranked names not in it, in rank order."""
    order = {name: i for i, (name, _s) in enumerate(ranked)}
    taken = set(chosen)
    extra = [name for name, _s in ranked if name not in taken][: k - len(chosen)]
    return sorted([*chosen, *extra], key=order.__getitem__)

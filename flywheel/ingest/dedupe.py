"""Near copies: an image that is a re-encoded, resized or lightly edited copy of one already
stored (or of one earlier in the batch) goes to the split of that image, so a copy of a val
image can never train the model that val scores. Exact copies need none of this: an image's
split is a function of its bytes.

Near means difference hashes (see images.dhash) at most MAX_DISTANCE bits apart. Each hash is
kept as four indexed 16-bit quarters; two hashes within 3 bits share at least one quarter, so
the lookups cost grows with the new images, never with the store. Nearly flat images (few or
almost all bits set) say too little to match on and are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flywheel.core.screening import informative
from flywheel.store.image_hashes import ImageHashes, quarters

MAX_DISTANCE = 3


@dataclass(frozen=True)
class Match:
    image_sha256: str
    split: str
    distance: int


class NearCopies:
    """Stored images' hashes (from the database) plus this batch's, as they are placed."""

    def __init__(self, stored: ImageHashes) -> None:
        self.stored = stored
        self._stored: list[tuple[int, str, str]] = []  # candidates loaded for this batch
        self._batch: dict[tuple[int, int], list[tuple[int, str, str]]] = {}  # (quarter no, value) -> entries
        self._new: dict[str, tuple[int, str]] = {}

    def known_splits(self, shas: Iterable[str]) -> dict[str, str]:
        """The split of each image already stored, by exact content."""
        return self.stored.splits(shas)

    def load(self, hashes: Iterable[int]) -> None:
        """Fetch the stored images sharing a quarter with any of `hashes`."""
        self._stored += self.stored.sharing_a_quarter([h for h in hashes if informative(h)])
        for entry in self._stored:
            self._index(entry)

    def nearest(self, sha: str, h: int) -> Match | None:
        if not informative(h):
            return None
        best: Match | None = None
        for n, q in enumerate(quarters(h)):
            for other, other_sha, split in self._batch.get((n, q), []):
                distance = (h ^ other).bit_count()
                if other_sha != sha and distance <= MAX_DISTANCE and (best is None or distance < best.distance):
                    best = Match(other_sha, split, distance)
        return best

    def add(self, sha: str, h: int, split: str) -> None:
        """Record a newly placed image (in memory; `save` writes them)."""
        if sha not in self._new:
            self._new[sha] = (h, split)
            self._index((h, sha, split))

    def _index(self, entry: tuple[int, str, str]) -> None:
        for n, q in enumerate(quarters(entry[0])):
            self._batch.setdefault((n, q), []).append(entry)

    def save(self) -> None:
        """Write the newly placed images' hashes (those not stored already)."""
        self.stored.add((sha, h, split) for sha, (h, split) in self._new.items())
        self._new.clear()

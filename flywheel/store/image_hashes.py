"""The image_hash table: every stored image's difference hash and split, for ingest's near-copy
checks (flywheel/ingest/dedupe.py holds the matching; this holds the queries).

The 64-bit hash is also kept as four indexed 16-bit quarters, so a near-copy is found with
indexed lookups, not a scan (tables.ImageHashRow)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import insert, or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from flywheel.store.db import session
from flywheel.store.tables import ImageHashRow

_CHUNK = 200  # hashes or shas per query: far under every backend's limit on bound parameters


def quarters(h: int) -> tuple[int, int, int, int]:
    return (h >> 48) & 0xFFFF, (h >> 32) & 0xFFFF, (h >> 16) & 0xFFFF, h & 0xFFFF


class ImageHashes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def splits(self, shas: Iterable[str]) -> dict[str, str]:
        """The split of each image already stored, by exact content."""
        wanted = list(dict.fromkeys(shas))
        out: dict[str, str] = {}
        with session(self.engine) as s:
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                query = select(ImageHashRow.image_sha256, ImageHashRow.split)
                out.update(s.exec(query.where(col(ImageHashRow.image_sha256).in_(chunk))).all())
        return out

    def sharing_a_quarter(self, hashes: Sequence[int]) -> list[tuple[int, str, str]]:
        """(hash, image sha256, split) of the stored images that share a quarter with any of
        `hashes` (one query per chunk)."""
        wanted = [quarters(h) for h in hashes]
        found: list[tuple[int, str, str]] = []
        with session(self.engine) as s:
            for i in range(0, len(wanted), _CHUNK):
                qs = list(zip(*wanted[i : i + _CHUNK], strict=True))
                rows = s.exec(  # plain rows, not ORM objects: ~4x faster for thousands of candidates
                    select(ImageHashRow.dhash, ImageHashRow.image_sha256, ImageHashRow.split).where(
                        or_(
                            col(ImageHashRow.q0).in_(set(qs[0])),
                            col(ImageHashRow.q1).in_(set(qs[1])),
                            col(ImageHashRow.q2).in_(set(qs[2])),
                            col(ImageHashRow.q3).in_(set(qs[3])),
                        )
                    )
                )
                found += [(int(dhash, 16), sha, split) for dhash, sha, split in rows]
        return found

    def add(self, entries: Iterable[tuple[str, int, str]]) -> None:
        """Store (image sha256, hash, split) for images not stored yet; ones already there are kept."""
        new = {sha: (h, split) for sha, h, split in entries}
        if not new:
            return
        have = set(self.splits(new))
        rows = [
            {
                "image_sha256": sha,
                "dhash": f"{h:016x}",
                "split": split,
                **dict(zip(("q0", "q1", "q2", "q3"), quarters(h), strict=True)),
            }
            for sha, (h, split) in new.items()
            if sha not in have
        ]
        if rows:
            with session(self.engine) as s:
                s.execute(insert(ImageHashRow), rows)  # one executemany, not an ORM object per image

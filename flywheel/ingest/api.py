"""What ingest takes: where things go and the options from config (what it gives,
IngestResult, is core's: the flows read it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flywheel.core.ingest_result import IngestResult
from flywheel.store import ObjectStore


@dataclass(frozen=True)
class IngestPaths:
    objects: ObjectStore
    versions: Path
    quarantine: Path
    done: Path  # where a processed inbox batch is moved
    staging: Path | None = None  # where archives are unpacked; default: beside quarantine/, `.staging`

    @property
    def staging_root(self) -> Path:
        return self.staging or self.quarantine.parent / ".staging"


@dataclass(frozen=True)
class IngestOptions:
    max_image_pixels: int = 64_000_000
    coordinate_tolerance: float = 0.01
    allow_unlabeled: bool = False  # the default; a batch's READY file can say otherwise
    max_archive_bytes: int = 20 * 2**30
    keep_done: bool = True  # after commit: move the dropped batch to inbox/.done/ (else delete it)
    refuse_batch_on_link_outside: bool = False  # a link leaving a folder batch: its own file (False) or all


__all__ = ["IngestOptions", "IngestPaths", "IngestResult"]

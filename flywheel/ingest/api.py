"""What ingest takes and gives: where things go, the options from config, and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flywheel.core.records import Batch, Version
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


@dataclass
class IngestResult:
    batch: Batch
    version: Version | None
    accepted: int = 0
    new_images: int = 0
    relabelled: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # relpath, reason
    codes: list[str] = field(default_factory=list)  # each quarantined file's code, in the same order
    ignored: list[str] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # relpath, code, text
    format: str | None = None
    already: bool = False  # the same content was ingested before (as `batch`): nothing was done
    left_in_inbox: str = ""  # why the processed batch is still in the inbox (it may not be moved)

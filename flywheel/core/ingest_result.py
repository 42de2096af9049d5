"""What ingesting one dropped batch gave back: the batch record, the dataset version it made
(if any) and where each of its files went. Built by the ingest pipeline (flywheel.ingest),
read by the flows, the daemon and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel.core.records import Batch, Version


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

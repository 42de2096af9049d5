"""Ingest a dropped batch: the BatchIngester port does the work; this use case times it and
tells the observer (a metric per refusal code), for the daemon and `flywheel ingest` alike."""

from __future__ import annotations

import time
from pathlib import Path

from flywheel.core.ingest_result import IngestResult
from flywheel.core.ports import BatchIngester, Observer


def ingest_batch(ingester: BatchIngester, observer: Observer, batch_dir: Path, move: bool, again: bool) -> IngestResult:
    started = time.monotonic()
    result = ingester.ingest(batch_dir, move=move, again=again)
    # codes, not sentences: a bounded set (flywheel.ingest.reasons.Code), fit for a metric label
    observer.batch_processed(time.monotonic() - started, result.codes)
    return result

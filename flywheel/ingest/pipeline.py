"""Ingest one dropped batch (a folder or an archive): read whichever export format it is,
validate every pair, store the good ones by content, quarantine the rest with a code and a
reason, and make the next immutable dataset version.

Accounting: every entry of the batch ends in exactly one place, and the batch record counts
them (`files == files_versioned + quarantined + ignored`): a version (the object store holds
its bytes), `quarantine/<batch>/` with a line in `report.json`, or the ignored list.

Exactly once: a batch's identity is a hash of its content. An interrupted ingest of the same
content is resumed (its row and any version it made are reused), content already ingested is
not ingested again, and the dropped batch leaves the inbox (to `inbox/.done/`, or deleted) only
after its records are committed. Quarantine holds copies, so nothing is lost in between.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flywheel.core.domain import BatchState, batch_name, merge_class_map
from flywheel.core.errors import BatchRejected, StoreError
from flywheel.core.faults import crash_point
from flywheel.ingest import source as sources
from flywheel.ingest.accept import Checks
from flywheel.ingest.api import IngestOptions, IngestPaths, IngestResult
from flywheel.ingest.batchopts import allow_unlabeled, check_class_names
from flywheel.ingest.batchrun import BatchRun
from flywheel.ingest.formats import read_batch
from flywheel.ingest.layout import ignore_code
from flywheel.ingest.reasons import BatchRefused, Code
from flywheel.store import Store

__all__ = ["BatchPipeline", "IngestOptions", "IngestPaths", "IngestResult", "ingest_batch"]

log = logging.getLogger(__name__)


def ingest_batch(
    store: Store,
    paths: IngestPaths,
    batch_dir: Path,
    *,
    val_fraction: float,
    marker: str,
    ignore: list[str],
    move: bool,
    options: IngestOptions | None = None,
    again: bool = False,
) -> IngestResult:
    """Ingest `batch_dir` (a folder or an archive). `move`: take it out of the inbox afterwards.
    `again`: ingest even if the same content was ingested before."""
    try:
        return _ingest_batch(store, paths, batch_dir, val_fraction, marker, ignore, move, options, again)
    except OSError as exc:  # disk full, permissions, a file vanishing under us: the batch stays where it is
        raise StoreError(
            f"cannot ingest {batch_dir}: {exc}. Nothing was lost: the batch is left in place (an interrupted "
            "ingest resumes when it is seen again); check free space and permissions"
        ) from exc


class BatchPipeline:
    """The BatchIngester port (flywheel.core.ports) on this module: `ingest_batch` with the
    paths and options a data root's config gives."""

    def __init__(
        self,
        store: Store,
        paths: IngestPaths,
        options: IngestOptions,
        val_fraction: float,
        marker: str,
        ignore: list[str],
    ):
        self.store = store
        self.paths = paths
        self.options = options
        self.val_fraction = val_fraction
        self.marker = marker
        self.ignore = ignore

    def ingest(self, batch_dir: Path, *, move: bool, again: bool = False) -> IngestResult:
        return ingest_batch(
            self.store,
            self.paths,
            batch_dir,
            val_fraction=self.val_fraction,
            marker=self.marker,
            ignore=self.ignore,
            move=move,
            options=self.options,
            again=again,
        )


def _ingest_batch(
    store: Store,
    paths: IngestPaths,
    batch_dir: Path,
    val_fraction: float,
    marker: str,
    ignore: list[str],
    move: bool,
    options: IngestOptions | None,
    again: bool,
) -> IngestResult:
    opts = options or IngestOptions()
    sources.clear_staging(paths.staging_root)
    with sources.open_source(batch_dir, paths.staging_root, opts.max_archive_bytes) as src:
        run = BatchRun(store, paths, src, opts, move)
        for rel in src.listing.files:
            code = ignore_code(rel, marker, ignore)
            if code:
                run.outcome.ignore(rel, code)
        shas = sources.file_hashes(src)
        content = sources.identity(src, shas, set(run.outcome.ignored))
        last = next((b for b in reversed(store.batches()) if b.content_sha256 == content), None)
        if last is not None and last.state == BatchState.INGESTED and not again:
            log.info("batch %s has the same content as %s, ingested already", batch_dir.name, batch_name(last.id or 0))
            run.leave_inbox(f"{batch_name(last.id or 0)}-{batch_dir.name}")
            return IngestResult(last, None, already=True, left_in_inbox=run.left_in_inbox)
        if last is not None and last.state == BatchState.INGESTING:  # an interrupted try: resume it
            run.batch = last
        elif last is not None and last.state == BatchState.RECEIVED:  # killed between its first two commits
            run.batch = store.update_batch(last.id or 0, BatchState.INGESTING)
        else:
            row = store.add_batch(batch_dir.name, content, len(run.outcome.entries))
            run.batch = store.update_batch(row.id or 0, BatchState.INGESTING)
        crash_point("ingest.started")
        try:
            if src.refused is not None:
                raise src.refused
            run.links_and_special()
            files = [f for f in src.listing.files if f not in run.outcome.ignored]
            if not files and not src.listing.links:
                raise BatchRefused(Code.BATCH_EMPTY, f"{batch_dir}: the batch holds no files (only ignored ones)")
            parsed = read_batch(src.listing.root, files)
            images_refused = any(str(code).startswith("image_") for _, code, _ in parsed.refused)
            if not parsed.samples and not images_refused:  # only labels, class files, metadata: say so
                raise BatchRefused(
                    Code.BATCH_EMPTY,
                    f"{batch_dir}: no images found ({len(files)} files, none of them an image a label could go "
                    "with); put the images beside their labels (images/ and labels/, or side by side)",
                )
            parent = store.latest_version()
            check_class_names(parent.class_names if parent else [], parsed.class_names)
            class_names, remap = merge_class_map(parent.class_names if parent else [], parsed.class_names)
        except BatchRejected as exc:
            return run.reject(exc)
        checks = Checks(
            opts.max_image_pixels,
            opts.coordinate_tolerance,
            allow_unlabeled(src.listing, marker, opts.allow_unlabeled),
            val_fraction,
            link=move or src.archive,  # a batch leaving the inbox (or unpacked by us) is ours: link, not copy
        )
        return run.ingest(parsed, class_names, remap, shas, checks)

"""One batch's ingest once it is read: refuse it whole, or check, store and version its samples;
then write its quarantine report, commit its record, and take it out of the inbox."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from flywheel.core.domain import BatchState, batch_name
from flywheel.core.errors import BatchRejected
from flywheel.core.faults import crash_point
from flywheel.core.manifests import changes
from flywheel.core.records import Batch, Version
from flywheel.ingest import source as sources
from flywheel.ingest.accept import Checks, accept
from flywheel.ingest.api import IngestOptions, IngestPaths, IngestResult
from flywheel.ingest.dedupe import NearCopies
from flywheel.ingest.formats import Parsed
from flywheel.ingest.layout import link_escapes
from flywheel.ingest.reasons import BatchRefused, Code
from flywheel.ingest.report import BatchPlacement, write_quarantine
from flywheel.store import Store

log = logging.getLogger(__name__)


class BatchRun:
    """One batch's ingest: where its files go, and its records."""

    def __init__(self, store: Store, paths: IngestPaths, src: sources.Source, opts: IngestOptions, move: bool):
        self.store, self.paths, self.src, self.opts, self.move = store, paths, src, opts, move
        self.outcome = BatchPlacement(src.entries)
        # id 0 until the store records it (b0000 in a label)
        self.batch = Batch(id=0, name=src.dropped.name, content_sha256="", state=BatchState.RECEIVED)
        self.left_in_inbox = ""  # why the batch could not be taken out of the inbox, if it could not

    @property
    def label(self) -> str:
        return f"{batch_name(self.batch.id)}-{self.src.dropped.name}"

    def header(self, **fields: Any) -> dict[str, Any]:
        return {"batch": self.label, "source": str(self.src.dropped), "reason": None, "code": None, **fields}

    def links_and_special(self) -> None:
        """Links are never followed: each is quarantined (its own reason: one leaving the batch
        is `link_outside`), or, with `ingest.link_outside = "batch"`, one leaving refuses it all."""
        links = self.src.listing.links
        for rel, target in links.items():
            if link_escapes(rel, target) and self.opts.refuse_batch_on_link_outside:
                raise BatchRefused(
                    Code.LINK_OUTSIDE,
                    f"{self.src.dropped}: {rel} links to {target}, outside the batch; put the file itself in the batch",
                )
        for rel, target in links.items():
            if link_escapes(rel, target):
                self.outcome.quarantine(
                    rel, Code.LINK_OUTSIDE, f"links to {target}, outside the batch: never followed; put the file here"
                )
            else:
                self.outcome.quarantine(
                    rel, Code.LINK, f"a link (to {target}); flywheel never follows links: put the file here"
                )
        for rel in self.src.listing.special:
            self.outcome.quarantine(rel, Code.SPECIAL_FILE, "not a regular file (a device, pipe or socket)")

    def reject(self, exc: BatchRejected) -> IngestResult:
        code = exc.code if isinstance(exc, BatchRefused) else Code.CLASS_NAMES_BAD
        why = str(exc)
        if self.src.archive:  # name the file inside the archive, not in the staging folder that is gone
            root, dropped = str(self.src.listing.root), str(self.src.dropped)
            why = why.replace(root + "/", dropped + ":").replace(root, dropped)
        for rel in self.outcome.entries:
            self.outcome.quarantine(rel, code, f"batch refused: {why}")
        target = self.paths.quarantine / self.label
        whole = self.src.dropped if not self.src.listing.count else None  # an archive that did not unpack
        write_quarantine(target, self.src.listing.root, self.outcome, self.header(reason=why, code=code), whole)
        row = self.store.update_batch(
            self.batch.id,
            BatchState.REJECTED,
            reason=why,
            quarantined=len(self.outcome.quarantined),
            ignored=len(self.outcome.ignored),
            quarantine_reasons=self.outcome.codes(),
            quarantine_dir=str(target),
        )
        self.leave_inbox(self.label)
        log.warning("batch %s rejected (%s): %s (files in %s)", self.label, code, why, target)
        return self.result(row, None)

    def ingest(
        self, parsed: Parsed, class_names: list[str], remap: dict[int, int], shas: dict[str, str], checks: Checks
    ) -> IngestResult:
        store, outcome, batch_id = self.store, self.outcome, self.batch.id
        for rel, code, reason in parsed.refused:
            outcome.quarantine(rel, code, reason)
        for rel in parsed.ignored:
            outcome.ignore(rel, Code.EXPORT_METADATA)
        for rel, code, text in parsed.notes:
            outcome.note(rel, code, text)
        made = next((v for v in store.versions() if v.batch_id == batch_id), None)  # by an interrupted try
        parent = (store.version(made.parent_id) if made.parent_id else None) if made else store.latest_version()
        parent_id = parent.id if parent else None
        root = self.src.listing.root
        items, old = accept(
            root,
            parsed.samples,
            shas,
            remap,
            outcome,
            checks,
            lambda image_shas: store.items(parent_id, image_shas) if parent_id else {},
            NearCopies(store.image_hashes),
            self.paths.objects,
        )
        crash_point("ingest.stored")
        for rel in parsed.used:
            outcome.version(rel)
        outcome.close()
        changed = changes(old, items)
        new = sum(1 for i in changed if i.image_sha256 not in old)
        relabelled = len(changed) - new
        version = made
        if made is None and (changed or (parent is not None and parent.class_names != class_names)):
            # Its folder for Ultralytics is built when it is first trained or compared
            # (flywheel/store/materialize.py): a link per image of the whole data set is not a
            # cost to pay per batch.
            version = store.create_version(
                parent, batch_id, class_names, changed, old, images_new=new, images_relabelled=relabelled
            )
            crash_point("ingest.versioned")
        target = self.paths.quarantine / self.label
        reported = bool(outcome.quarantined or outcome.notes)
        if reported:
            header = self.header(format=parsed.format, class_names=list(parsed.class_names))
            write_quarantine(target, root, outcome, header)
        row = store.update_batch(
            batch_id,
            BatchState.INGESTED,
            images_ok=len(items),
            files_versioned=len(outcome.versioned),
            images_new=new,
            images_relabelled=relabelled,
            quarantined=len(outcome.quarantined),
            quarantine_reasons=outcome.codes(),
            ignored=len(outcome.ignored),
            version_id=version.id if version else None,
            quarantine_dir=str(target) if reported else None,
            format=parsed.format,
        )
        crash_point("ingest.recorded")
        self.leave_inbox(self.label)
        result = self.result(row, version)
        result.accepted, result.new_images, result.relabelled = len(items), new, relabelled
        return result

    def result(self, row: Batch, version: Version | None) -> IngestResult:
        quarantined = self.outcome.quarantined
        return IngestResult(
            row,
            version,
            quarantined=[(rel, why) for rel, (_, why) in quarantined.items()],
            codes=[str(code) for code, _ in quarantined.values()],
            ignored=sorted(self.outcome.ignored),
            notes=[(rel, str(code), text) for rel, code, text in self.outcome.notes],
            format=row.format,
            left_in_inbox=self.left_in_inbox,
        )

    def leave_inbox(self, name: str) -> None:
        """Take the processed batch out of the inbox: into `.done/` under a free name, or delete it.

        Only by rename, which is atomic: a batch is out of the inbox whole or not at all. One the
        daemon may not move (another user's folder: renaming a directory needs write access to
        it) stays where it is, done, and `left_in_inbox` says why; copying it instead and then
        failing to delete it is what made the same batch pile up in `.done/` at every rescan."""
        dropped = self.src.dropped
        if not self.move or not (dropped.exists() or dropped.is_symlink()):
            return
        target = self.paths.done / (name if self.opts.keep_done else f".removing-{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        final, n = target, 1
        while final.exists() or final.is_symlink():
            n += 1
            final = target.with_name(f"{target.name}.{n}")
        try:
            os.rename(dropped, final)
        except OSError as exc:
            self.left_in_inbox = (
                f"{dropped} could not be moved out of the inbox ({exc.strerror}); it stays there and is not "
                f"ingested again unless its content changes. Remove it as its owner (or give the daemon's user "
                f"write access to it)"
            )
            log.warning("batch %s is done: %s", self.label, self.left_in_inbox)
            return
        if not self.opts.keep_done:
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final, ignore_errors=True)  # out of the inbox already: what stays is only disk
            else:
                final.unlink(missing_ok=True)

"""Ingest one batch folder: validate every pair, store the good ones by content, quarantine
the rest with a reason, and make the next immutable dataset version.

Accounting: every file of the batch ends in exactly one place, and the batch record counts
them: a version (the object store holds its bytes), `quarantine/<batch>/` with a line in
`report.json`, or the ignored list (marker file, `.DS_Store`, ...). The original folder is
moved to `inbox/.done/` afterwards, so the source files are never deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from flywheel.domain import BatchState, ManifestItem, batch_name, merge_class_map, next_manifest, split_of
from flywheel.errors import BatchRejected
from flywheel.ingest.images import ImageProblem, check_image
from flywheel.ingest.labels import LabelProblem, normalised, parse_label
from flywheel.ingest.layout import list_files, read_layout
from flywheel.store import ObjectStore, Store, sha256_file
from flywheel.store.materialize import materialize
from flywheel.store.tables import BatchRow, VersionRow

log = logging.getLogger("flywheel.ingest")


@dataclass(frozen=True)
class IngestPaths:
    objects: ObjectStore
    versions: Path
    quarantine: Path
    done: Path  # where a processed inbox folder is moved; None-like when ingesting by hand


@dataclass
class IngestResult:
    batch: BatchRow
    version: VersionRow | None
    accepted: int = 0
    new_images: int = 0
    relabelled: int = 0
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # relpath, reason
    ignored: list[str] = field(default_factory=list)


def ingest_batch(
    store: Store,
    paths: IngestPaths,
    batch_dir: Path,
    *,
    val_fraction: float,
    marker: str,
    ignore: list[str],
    move: bool,
) -> IngestResult:
    files = list_files(batch_dir)
    shas = {f: sha256_file(batch_dir / f) for f in files}
    content = hashlib.sha256("".join(f"{f}\0{shas[f]}\n" for f in files).encode()).hexdigest()
    batch = store.add_batch(batch_dir.name, content, len(files))
    assert batch.id is not None
    label = f"{batch_name(batch.id)}-{batch_dir.name}"
    store.update_batch(batch.id, BatchState.INGESTING)
    result = IngestResult(batch, None)
    parent = store.latest_version()
    try:
        if not files:
            raise BatchRejected(f"{batch_dir}: the batch folder is empty")
        layout = read_layout(batch_dir, files, marker, ignore)
        class_names, remap = merge_class_map(parent.class_names if parent else [], layout.class_names)
    except BatchRejected as exc:
        _quarantine(paths, batch_dir, label, [(f, "batch refused") for f in files], str(exc), move)
        if move:
            _move(batch_dir, paths.done / label)  # only empty folders remain: keep the inbox clear
        result.batch = store.update_batch(
            batch.id,
            BatchState.REJECTED,
            reason=str(exc),
            quarantined=len(files),
            quarantine_dir=str(paths.quarantine / label),
        )
        log.warning("batch %s rejected: %s (files in %s)", label, exc, paths.quarantine / label)
        return result

    result.ignored = list(layout.ignored)
    bad = result.quarantined
    bad += [(f, "label file without a matching image") for f in layout.orphan_labels]
    bad += [(f, "not an image, label or class-name file") for f in layout.unsupported]
    bad += layout.refused
    items: list[ManifestItem] = []
    seen: dict[str, str] = {}
    for image, label_file in layout.pairs:
        sha = shas[image]
        if label_file is None:
            bad.append((image, "no label file (an image without boxes needs an empty .txt)"))
            continue
        if sha in seen:
            reason = f"same image content as {seen[sha]} in this batch"
            bad += [(image, reason), (label_file, reason)]
            continue
        try:
            check_image(batch_dir / image)
        except ImageProblem as exc:
            bad += [(image, str(exc)), (label_file, f"its image {image} was refused")]
            continue
        try:
            text = (batch_dir / label_file).read_text(encoding="utf-8-sig")
            boxes = parse_label(text, len(layout.class_names))
        except (LabelProblem, UnicodeDecodeError) as exc:
            bad += [(label_file, str(exc)), (image, f"its label {label_file} was refused")]
            continue
        seen[sha] = image
        paths.objects.put_file(batch_dir / image, sha)
        label_sha = paths.objects.put_bytes(normalised(boxes, remap))
        ext = PurePosixPath(image).suffix.lower()
        items.append(ManifestItem(sha, label_sha, ext, split_of(sha, val_fraction), len(boxes)))

    result.accepted = len(items)
    old = store.manifest(parent.id) if parent and parent.id else {}
    result.new_images = sum(1 for i in items if i.image_sha256 not in old)
    result.relabelled = sum(1 for i in items if i.image_sha256 in old and old[i.image_sha256] != i)
    changed = result.new_images + result.relabelled > 0 or (parent and parent.class_names != class_names)
    if changed:
        manifest = next_manifest(old, items)
        version = store.create_version(parent.id if parent else None, batch.id, class_names, manifest)
        assert version.id is not None
        materialize(paths.objects, paths.versions, version.id, class_names, manifest)
        result.version = version
    if bad:
        _quarantine(paths, batch_dir, label, bad, None, move)
    if move:
        _move(batch_dir, paths.done / label)
    result.batch = store.update_batch(
        batch.id,
        BatchState.INGESTED,
        images_ok=result.accepted,
        files_versioned=2 * result.accepted + 1,  # each image, its label, and the class-name file
        images_new=result.new_images,
        quarantined=len({rel for rel, _ in bad}),
        ignored=len(result.ignored),
        version_id=result.version.id if result.version else None,
        quarantine_dir=str(paths.quarantine / label) if bad else None,
    )
    return result


def _quarantine(
    paths: IngestPaths, batch_dir: Path, label: str, bad: list[tuple[str, str]], reason: str | None, move: bool
) -> None:
    target = paths.quarantine / label
    target.mkdir(parents=True, exist_ok=True)
    for rel in dict.fromkeys(rel for rel, _ in bad):  # once each, even if two reasons name it
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.move if move else shutil.copy2)(str(batch_dir / rel), str(dest))
    report = {
        "batch": label,
        "source": str(batch_dir),
        "reason": reason,
        "files": [{"path": rel, "reason": why} for rel, why in bad],
        "what_to_do": "fix each file named here and drop them again as a new batch",
    }
    (target / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))

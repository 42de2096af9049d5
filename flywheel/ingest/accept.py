"""Each sample of a batch checked, placed in a split, and stored: the image must decode, its
boxes must fit it, and exact or near copies keep the split of the image they copy.

Three passes, so the database is asked once per chunk rather than once per image: check every
sample (image decode, boxes, EXIF), then decide the splits (exact content first, then near
copies, else the content hash), then write the objects and return the manifest items. The
parent version is asked only about the batch's own images, never for its whole manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flywheel.core.domain import ManifestItem, split_of
from flywheel.ingest.dedupe import NearCopies
from flywheel.ingest.formats.base import Sample
from flywheel.ingest.images import ImageInfo, check_image, upright_bytes
from flywheel.ingest.labels import Annotation, LabelProblem, finish, normalised
from flywheel.ingest.reasons import Code, Problem
from flywheel.ingest.report import BatchPlacement
from flywheel.store import ObjectStore


@dataclass(frozen=True)
class Checks:
    max_image_pixels: int
    coordinate_tolerance: float
    allow_unlabeled: bool
    val_fraction: float
    link: bool = False  # images may be hard-linked into the store (the batch is flywheel's from now on)


@dataclass
class _Good:
    sample: Sample
    sha: str  # of the bytes stored (the upright re-encoding when EXIF rotation was applied)
    upright: bytes | None
    label: bytes
    boxes: int
    dhash: int
    notes: list[tuple[Code, str]]


def accept(
    root: Path,
    samples: list[Sample],
    shas: dict[str, str],
    remap: dict[int, int],
    outcome: BatchPlacement,
    checks: Checks,
    parent_items: Callable[[Iterable[str]], dict[str, ManifestItem]],
    near: NearCopies,
    objects: ObjectStore,
) -> tuple[list[ManifestItem], dict[str, ManifestItem]]:
    """The batch's items, and the parent version's items for the same images (by sha256)."""
    todo: list[tuple[Sample, Annotation | LabelProblem]] = []
    seen: dict[str, str] = {}
    for sample in samples:  # the cheap checks, in order: a missing label, the same bytes twice
        annotation = sample.annotation
        if annotation is None:
            if not checks.allow_unlabeled:  # every reason the file has, not only the first one found
                try:
                    check_image(root / sample.image, checks.max_image_pixels)
                except Problem as exc:
                    _refuse(outcome, sample, exc.code, f"{exc}; and {_UNLABELED}", True)
                    continue
                _refuse(outcome, sample, Code.IMAGE_UNLABELED, _UNLABELED, True)
                continue
            outcome.note(sample.image, Code.IMAGE_UNLABELED, "no label: kept as a negative image (allow_unlabeled)")
            annotation = Annotation()
        first = seen.setdefault(shas[sample.image], sample.image)
        if first != sample.image:
            _refuse(outcome, sample, Code.IMAGE_DUPLICATE, f"same image content as {first} in this batch", True)
            continue
        todo.append((sample, annotation))
    # Decoding, hashing and writing wait on the disk or run in C without the GIL: threads overlap them.
    with ThreadPoolExecutor(_WORKERS) as pool:
        verdicts = list(pool.map(lambda t: _judge(root, t[0], t[1], shas[t[0].image], remap, checks), todo))
    good: list[_Good] = []
    for (sample, _), verdict in zip(todo, verdicts, strict=True):
        if isinstance(verdict, tuple):
            _refuse(outcome, sample, *verdict)
            continue
        for code, text in verdict.notes:
            outcome.note(sample.labels[0] if sample.labels and code != Code.EXIF_APPLIED else sample.image, code, text)
        first = seen.setdefault(verdict.sha, sample.image)
        if first != sample.image:  # upright pixels equal to another image's
            _refuse(outcome, sample, Code.IMAGE_DUPLICATE, f"same image content as {first} in this batch", True)
            continue
        good.append(verdict)
    old = parent_items(g.sha for g in good)
    splits = _splits(good, old, near, outcome, checks.val_fraction)
    with ThreadPoolExecutor(_WORKERS) as pool:
        label_shas = list(pool.map(lambda g: _store(root, g, objects, checks.link), good))
    items = []
    for g, split, label_sha in zip(good, splits, label_shas, strict=True):
        items.append(ManifestItem(g.sha, label_sha, PurePosixPath(g.sample.image).suffix.lower(), split, g.boxes))
        for rel in (g.sample.image, *g.sample.labels):
            outcome.version(rel)
    objects.sync()  # once for the batch: every object is on disk before a version names it
    near.save()
    return items, old


_WORKERS = min(8, 2 * (os.cpu_count() or 1))
_UNLABELED = (
    "no label file (an image without boxes needs an empty label; "
    "or declare the batch allow_unlabeled in its READY file)"
)


def _refuse(outcome: BatchPlacement, sample: Sample, code: Code, reason: str, blame_image: bool) -> None:
    """Quarantine the sample's files: the one at fault with `code`, the others as its partners."""
    image, labels = sample.image, sample.labels
    first, partners = ((image,), labels) if blame_image or not labels else (labels, (image,))
    for rel in first:
        outcome.quarantine(rel, code, reason)
    kind = "image" if first == (image,) else "label"
    for rel in partners:
        outcome.quarantine(rel, Code.PARTNER_REFUSED, f"its {kind} {', '.join(first)} was refused")


def _judge(
    root: Path,
    sample: Sample,
    annotation: Annotation | LabelProblem,
    file_sha: str,
    remap: dict[int, int],
    checks: Checks,
) -> _Good | tuple[Code, str, bool]:
    """The sample made ready to store, or (code, reason, blame the image) why not. No shared state."""
    try:
        info = check_image(root / sample.image, checks.max_image_pixels)
    except Problem as exc:
        return exc.code, str(exc), True
    if isinstance(annotation, LabelProblem):
        return annotation.code, str(annotation), False
    size_problem = _size_problem(annotation, info)
    if size_problem:
        return size_problem.code, str(size_problem), False
    try:
        boxes, notes = finish(annotation, (info.width, info.height), checks.coordinate_tolerance)
    except LabelProblem as exc:
        return exc.code, str(exc), False
    if annotation.boxes and not boxes and not checks.allow_unlabeled:
        # The annotator marked something here; as a background image it would teach the model
        # that nothing is. An empty label file (or allow_unlabeled) is how to say "no object".
        dropped = "; ".join(text for _, text in notes)
        return (
            Code.LABEL_NO_BOX_LEFT,
            f"every box of this label was dropped ({dropped}), which would make the image a silent negative: "
            "fix the boxes, or empty the label file if the image truly shows no object",
            False,
        )
    upright, sha = None, file_sha
    if info.orientation != 1:
        upright = upright_bytes(root / sample.image)
        sha = hashlib.sha256(upright).hexdigest()
        notes.append((Code.EXIF_APPLIED, f"EXIF orientation {info.orientation} applied to the stored pixels"))
    return _Good(sample, sha, upright, normalised(boxes, remap), len(boxes), info.dhash, notes)


def _store(root: Path, good: _Good, objects: ObjectStore, link: bool) -> str:
    """Put the image and its label into the object store; the label's sha."""
    if good.upright is not None:
        objects.put_bytes(good.upright, durable=False)
    elif link:
        objects.link_file(root / good.sample.image, good.sha)
    else:
        objects.put_file(root / good.sample.image, good.sha, durable=False)
    return objects.put_bytes(good.label, durable=False)


def _size_problem(annotation: Annotation, info: ImageInfo) -> Problem | None:
    """Pixel boxes are only right for the image size they were drawn on."""
    if not annotation.pixels or annotation.size is None or annotation.size == (info.width, info.height):
        return None
    w, h = annotation.size
    if info.orientation != 1 and annotation.size == info.raw_size:
        return Problem(
            Code.IMAGE_EXIF_MISMATCH,
            f"the annotation is for {w}x{h}, the image before its EXIF rotation (orientation "
            f"{info.orientation}); shown upright it is {info.width}x{info.height}, so the boxes would be "
            "misplaced. Re-export with the image auto-oriented (or the EXIF tag removed)",
        )
    return Problem(
        Code.LABEL_SIZE_MISMATCH,
        f"the annotation says the image is {w}x{h}, but it is {info.width}x{info.height}; "
        "the boxes were drawn on another image (or a resized copy)",
    )


def _splits(
    good: list[_Good], old: dict[str, ManifestItem], near: NearCopies, outcome: BatchPlacement, val_fraction: float
) -> list[str]:
    known = near.known_splits(g.sha for g in good if g.sha not in old)
    near.load(g.dhash for g in good if g.sha not in old and g.sha not in known)
    splits = []
    for g in good:
        if g.sha in old:
            split = old[g.sha].split  # a re-labelled image stays where it was
        elif g.sha in known:
            split = known[g.sha]
        else:
            match = near.nearest(g.sha, g.dhash)
            split = match.split if match else split_of(g.sha, val_fraction)
            if match:
                outcome.note(
                    g.sample.image,
                    Code.NEAR_DUPLICATE,
                    f"a near copy ({match.distance} bits apart) of image {match.image_sha256[:12]}, "
                    f"so it goes to {split} with it",
                )
        near.add(g.sha, g.dhash, split)
        splits.append(split)
    return splits

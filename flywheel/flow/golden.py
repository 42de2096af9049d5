"""The golden set (`gate.golden_dir`): labeled images never trained on and never altered, on
which candidate and production are scored beside the version's val split, under the same rules.

Why beside val: val grows with every version, so two generations are judged on different data;
the golden set stays put, so its scores compare across generations and it can hold the cases
that matter most.
- It is read with ingest's YOLO reader and checks, strictly: a golden set with a bad file is an
  error to fix, never silently shrunk (the gate would then judge on less than the user thinks).
- Its hash covers content only (image bytes, boxes by class *name*): touching or renaming files
  keeps it, editing an image or a label or renaming a class changes it. A change is a ledger
  entry (`golden_changed`) with the old and new hash.
- It is copied (never linked, never written into) to `eval/golden-<hash>/` with the class ids of
  the version's class map, matched by name; a golden class the version does not know is left
  out and reported. The eval-set hash covers the content and that class map: with the model's
  sha256 it is the score cache's key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from flywheel.core.config import Config, resolve
from flywheel.core.domain import ManifestItem
from flywheel.core.errors import GoldenSetError
from flywheel.core.gate_details import GoldenNote
from flywheel.core.hashing import sha256_bytes, sha256_file
from flywheel.core.ledger import Action
from flywheel.core.ports import StorePort
from flywheel.flow.evalsets import EvalSet
from flywheel.ingest.formats import yolo
from flywheel.ingest.formats.base import Sample
from flywheel.ingest.images import check_image, upright_bytes
from flywheel.ingest.labels import finish
from flywheel.ingest.layout import ignore_code, list_entries
from flywheel.ingest.reasons import BatchRefused, Problem

log = logging.getLogger(__name__)

GOLDEN = "golden"  # the eval set's name (evalsets.GATED)
KEY = "gate.golden_dir"
EVAL_DIR = "eval"  # under the data root
_FIX = (
    'fix it, or set gate.golden_dir = "" in config.toml to gate on the val split alone. A golden set is '
    "YOLO: images/ and labels/ (or image and .txt side by side) plus data.yaml `names:` or classes.txt"
)
_NEW_HASH = re.compile(r"-> ([0-9a-f]{64})")


@dataclass(frozen=True)
class GoldenImage:
    path: Path
    sha256: str  # of the file's bytes
    ext: str
    upright: bool  # EXIF-rotated: the copy gets its pixels turned, as ingest stores images
    boxes: tuple[tuple[str, str], ...]  # (class name, "cx cy w h" normalised, six decimals)


@dataclass(frozen=True)
class GoldenSet:
    folder: Path
    images: tuple[GoldenImage, ...]
    sha256: str  # content only: see the module docstring

    @property
    def boxes(self) -> int:
        return sum(len(i.boxes) for i in self.images)


def _error(folder: Path, problem: str) -> GoldenSetError:
    return GoldenSetError(f"{KEY} = {folder}: {problem}; {_FIX}")


def read(folder: Path, ignore: list[str], max_pixels: int, tolerance: float) -> GoldenSet:
    """Read and check the golden folder; GoldenSetError names the first problem and the fix."""
    if not folder.is_dir():
        raise _error(folder, "no such folder")
    listing = list_entries(folder)
    odd = sorted(listing.links) + listing.special
    if odd:  # ingest never follows links either: what is scored must be what is in the folder
        raise _error(folder, f"{odd[0]} is a link or a special file; put the file itself there")
    files = [f for f in listing.files if ignore_code(f, "", ignore) is None]
    try:
        parsed = yolo.read(folder, files)
    except BatchRefused as exc:
        raise _error(folder, str(exc)) from None
    if parsed.refused:
        rel, _code, why = parsed.refused[0]
        more = f" (and {len(parsed.refused) - 1} more)" if len(parsed.refused) > 1 else ""
        raise _error(folder, f"{rel}: {why}{more}")
    if not parsed.samples:
        raise _error(folder, "no images in it")
    images = [_image(folder, s, parsed.class_names, max_pixels, tolerance) for s in parsed.samples]
    seen: dict[str, Path] = {}
    for image in images:
        if image.sha256 in seen:  # one image counted twice would weigh double in the score
            raise _error(folder, f"{image.path} and {seen[image.sha256]} are the same image; remove one")
        seen[image.sha256] = image.path
    lines = sorted(f"{i.sha256} " + ";".join(sorted(f"{n} {b}" for n, b in i.boxes)) for i in images)
    return GoldenSet(folder, tuple(images), hashlib.sha256("\n".join(lines).encode()).hexdigest())


def _image(folder: Path, sample: Sample, names: list[str], max_pixels: int, tolerance: float) -> GoldenImage:
    path = folder / sample.image
    if sample.annotation is None:
        raise _error(folder, f"{sample.image} has no label file (an image with no objects needs an empty .txt)")
    label = sample.labels[0] if sample.labels else sample.image
    if isinstance(sample.annotation, Problem):
        raise _error(folder, f"{label}: {sample.annotation}")
    try:
        info = check_image(path, max_pixels)
    except Problem as exc:
        raise _error(folder, f"{sample.image}: {exc}") from None
    try:
        boxes, _notes = finish(sample.annotation, (info.width, info.height), tolerance)
    except Problem as exc:
        raise _error(folder, f"{label}: {exc}") from None
    labelled = tuple((names[b.cls], f"{b.cx:.6f} {b.cy:.6f} {b.w:.6f} {b.h:.6f}") for b in boxes)
    return GoldenImage(path, sha256_file(path), path.suffix.lower(), info.orientation != 1, labelled)


def record(store: StorePort, golden: GoldenSet) -> bool:
    """A ledger entry when the content differs from the last one recorded (the first use
    included: it is the baseline later changes are measured from). True when one was written."""
    last = next((e for e in reversed(store.ledger()) if e.action == Action.GOLDEN_CHANGED), None)
    found = _NEW_HASH.search(last.reason) if last is not None else None
    old = found.group(1) if found else None
    if old == golden.sha256:
        return False
    reason = (
        f"golden set content sha256 {old or 'none (first use)'} -> {golden.sha256} "
        f"({len(golden.images)} images, {golden.boxes} boxes in {golden.folder})"
    )
    store.append_ledger(Action.GOLDEN_CHANGED, "flywheel", reason)
    if old is None:
        log.info("%s", reason)
    else:  # scores on the golden set before and after are not comparable: worth a look
        log.warning("the golden set changed: %s", reason)
    return True


def eval_set(
    golden: GoldenSet, class_names: list[str], eval_root: Path, trained: Mapping[str, ManifestItem]
) -> EvalSet | None:
    """The golden set as an eval set on `class_names`; None when it has no box of a known class."""
    index = {n: i for i, n in enumerate(class_names)}
    unknown: dict[str, int] = {}
    for image in golden.images:
        for name, _box in image.boxes:
            if name not in index:
                unknown[name] = unknown.get(name, 0) + 1
    if unknown:
        log.warning(
            "golden set %s: classes %s are not in the model's class map %s; their %d boxes are left out",
            golden.folder,
            sorted(unknown),
            class_names,
            sum(unknown.values()),
        )
    if golden.boxes == sum(unknown.values()):
        log.warning("golden set %s: no box of a class the model knows; not scored", golden.folder)
        return None
    shas = {i.image_sha256 for i in trained.values() if i.split == "train"}
    in_training = [str(i.path) for i in golden.images if i.sha256 in shas]
    if in_training:  # a warning, not an error: versions are immutable, so it could not be undone
        log.warning(
            "golden set %s: %d images are also training images, e.g. %s; their scores flatter the model",
            golden.folder,
            len(in_training),
            in_training[0],
        )
    sha = hashlib.sha256(f"{golden.sha256}\n{json.dumps(class_names)}".encode()).hexdigest()
    folder = eval_root / f"{GOLDEN}-{sha[:16]}"
    if not (folder / "data.yaml").is_file():
        _write(golden, index, class_names, folder)
    note = GoldenNote(
        folder=str(golden.folder),
        content_sha256=golden.sha256,
        boxes=golden.boxes,
        unknown_classes=dict(unknown),
        in_training=len(in_training),
    )
    return EvalSet(GOLDEN, sha, folder / "data.yaml", len(golden.images), note)


def _write(golden: GoldenSet, index: Mapping[str, int], class_names: list[str], folder: Path) -> None:
    """Copy images and labels (class ids mapped by name) read-only, then rename into place."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    for image in golden.images:
        data = image.path.read_bytes()
        if sha256_bytes(data) != image.sha256:
            raise _error(golden.folder, f"{image.path} changed while flywheel read it (a golden set must not change)")
        if image.upright:
            data = upright_bytes(image.path)
        lines = "".join(f"{index[n]} {box}\n" for n, box in image.boxes if n in index)
        for path, content in (
            (tmp / "images" / f"{image.sha256}{image.ext}", data),
            (tmp / "labels" / f"{image.sha256}.txt", lines.encode()),
        ):
            path.write_bytes(content)
            path.chmod(0o444)
    spec = {"path": str(folder), "train": "images", "val": "images", "names": dict(enumerate(class_names))}
    (tmp / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.rmtree(folder, ignore_errors=True)  # a leftover without data.yaml: an interrupted attempt
    os.replace(tmp, folder)


def golden_eval_sets(
    store: StorePort, config: Config, data_root: Path, class_names: list[str], trained: Mapping[str, ManifestItem]
) -> list[EvalSet]:
    """[the golden eval set] when `gate.golden_dir` is set, else []. `trained`: the version's
    manifest, to warn about golden images that are also training data."""
    if not config.gate.golden_dir:
        return []
    folder = resolve(data_root, config.gate.golden_dir).resolve()
    if folder.is_relative_to((data_root / "inbox").resolve()):
        raise _error(folder, "it is inside the inbox, so it would be ingested and trained on; move it out")
    golden = read(folder, config.inbox.ignore, config.ingest.max_image_pixels, config.ingest.coordinate_tolerance)
    record(store, golden)
    found = eval_set(golden, class_names, data_root / EVAL_DIR, trained)
    return [found] if found is not None else []

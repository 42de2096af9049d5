"""The files a screening reads (the ScreenFiles port, flywheel/core/ports.py): a batch's stored
images linked under a work folder with their extensions (the predictor reads files by their
suffix; the object store keeps none), measured, with their YOLO labels read; the golden set's
difference hashes; the suspects' files copied to quarantine/<batch>/screen/ with a report."""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from flywheel.core.domain import ManifestItem
from flywheel.core.prediction import ImageInput
from flywheel.core.screening import Hashed
from flywheel.ingest.images import dhash, fine_dhash
from flywheel.store.objects import ObjectStore

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
YoloBox = tuple[int, float, float, float, float]  # class, cx, cy, w, h normalised


class ScreenFolders:
    def __init__(self, objects: ObjectStore, work_root: Path, quarantine_root: Path) -> None:
        self.objects, self.work_root, self.quarantine_root = objects, work_root, quarantine_root
        # a flat image meets the same flat candidates batch after batch; the daemon lives for
        # months, so the cache is bounded (an entry is a 512-bit int)
        self._fine = functools.lru_cache(maxsize=4096)(self._fine_uncached)

    def stage(self, name: str, items: Sequence[ManifestItem]) -> tuple[list[ImageInput], dict[str, list[YoloBox]]]:
        """Each item's image at work_root/name/<sha><ext>, measured, and its label's boxes by sha."""
        folder = self.work_root / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        inputs, labels = [], {}
        for item in items:
            target = folder / f"{item.image_sha256}{item.ext}"
            source = self.objects.path(item.image_sha256)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            with Image.open(target) as im:  # stored upright (ingest applied any EXIF rotation)
                width, height = im.size
            inputs.append(ImageInput(target.name, target, width, height, str(source)))
            labels[item.image_sha256] = _yolo(self.objects.path(item.label_sha256).read_text())
        return inputs, labels

    def clear(self, name: str) -> None:
        shutil.rmtree(self.work_root / name, ignore_errors=True)

    def label_classes(self, items: Iterable[ManifestItem]) -> list[int]:
        return [b[0] for i in items for b in _yolo(self.objects.path(i.label_sha256).read_text())]

    def fine_distance(self, a: str, b: str) -> int | None:
        hashes = [self._fine(sha) for sha in (a, b)]
        return None if None in hashes else (hashes[0] ^ hashes[1]).bit_count()  # type: ignore[operator]

    def _fine_uncached(self, sha: str) -> int | None:
        path = self.objects.path(sha)
        if not path.is_file():
            return None
        with Image.open(path) as im:
            return fine_dhash(im)

    def golden_hashes(self, folder: Path | None) -> list[Hashed]:
        if folder is None or not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                with Image.open(path) as im:
                    out.append(Hashed(f"golden:{path.relative_to(folder)}", dhash(im), "golden"))
        return out

    def quarantine(self, batch: str, items: Iterable[ManifestItem], report: dict[str, object]) -> Path:
        """Copies of the suspects' images and labels (the stored objects stay: versions name
        them) and report.json with each one's reasons and scores."""
        folder = self.quarantine_root / batch / "screen"
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            shutil.copyfile(self.objects.path(item.image_sha256), folder / f"{item.image_sha256}{item.ext}")
            shutil.copyfile(self.objects.path(item.label_sha256), folder / f"{item.image_sha256}.txt")
        (folder / "report.json").write_text(json.dumps(report, indent=1))
        return folder


def _yolo(text: str) -> list[YoloBox]:
    boxes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5:
            boxes.append((int(parts[0]), *(float(p) for p in parts[1:])))
    return boxes  # type: ignore[return-value]

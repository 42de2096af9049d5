"""The images to pre-label: a folder (walked), an archive (unpacked by flywheel's own safe
extractor into a staging folder) or image files. Each image is decoded with the same checks
ingest makes (`check_image`), so one that could never be ingested is reported by name with
its reason and skipped, before the model sees it; nothing else stops the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from flywheel.core.prediction import ImageInput
from flywheel.ingest import archives
from flywheel.ingest.images import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES, check_image
from flywheel.ingest.layout import list_files
from flywheel.ingest.reasons import BatchRefused, Problem


@dataclass
class Inputs:
    images: list[ImageInput] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # name, reason
    ignored: int = 0  # files that are not images (labels, notes)


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(archives.SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem


def collect(paths: list[Path], staging: Path, max_pixels: int, max_archive_bytes: int) -> Inputs:
    found = Inputs()
    taken: set[str] = set()
    several = len(paths) > 1
    for index, path in enumerate(paths):
        if path.is_dir():
            prefix = f"{path.name}/" if several else ""
            for rel in list_files(path):
                _consider(found, taken, path / rel, prefix + rel, max_pixels, str(path / rel))
        elif archives.is_archive(path):
            dest = staging / f"{index}-{archive_stem(path)}"
            try:
                listing = archives.extract(path, dest, max_archive_bytes)
            except BatchRefused as exc:
                found.skipped.append((path.name, str(exc)))
                continue
            prefix = f"{archive_stem(path)}/" if several else ""
            for rel in listing.files:
                _consider(found, taken, dest / rel, prefix + rel, max_pixels, f"{path}:{rel}")
        elif path.is_file():
            _consider(found, taken, path, path.name, max_pixels, str(path), named=True)
        else:
            found.skipped.append((str(path), "no such file or folder"))
    return found


def _consider(
    found: Inputs, taken: set[str], path: Path, name: str, max_pixels: int, origin: str, named: bool = False
) -> None:
    rel = PurePosixPath(name)
    if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
        found.ignored += 1
        return
    suffix = rel.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        if suffix in OTHER_IMAGE_SUFFIXES or named:
            found.skipped.append(
                (name, f"not an image flywheel reads ({suffix or 'no suffix'}): JPEG, PNG, BMP, TIFF or WebP")
            )
        else:
            found.ignored += 1
        return
    try:
        info = check_image(path, max_pixels)
    except Problem as exc:
        found.skipped.append((name, str(exc)))
        return
    except OSError as exc:
        found.skipped.append((name, f"cannot read it: {exc}"))
        return
    unique, n = name, 2
    while unique in taken:  # two files called a.jpg given by hand
        unique = str(rel.with_name(f"{rel.stem}_{n}{rel.suffix}"))
        n += 1
    taken.add(unique)
    found.images.append(ImageInput(unique, path, info.width, info.height, origin, info.orientation))

"""Helpers for the ingest tests: a real store in a temp folder, and real files of every kind
(images in several formats, EXIF-rotated JPEGs, archives) made on the spot."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

from flywheel.ingest.pipeline import IngestOptions, IngestPaths, IngestResult, ingest_batch
from flywheel.store import ObjectStore, Store, make_engine, upgrade_schema
from flywheel.store.materialize import materialize

MARKER = "READY"
IGNORE = [".DS_Store", "Thumbs.db", "__MACOSX", "._*"]


class Env:
    def __init__(self, tmp: Path, **options: Any):
        tmp.mkdir(parents=True, exist_ok=True)
        engine = make_engine(f"sqlite:///{tmp / 'db.sqlite'}")
        upgrade_schema(engine)
        self.tmp = tmp
        self.store = Store(engine)
        self.objects = ObjectStore(tmp / "objects")
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.paths = IngestPaths(self.objects, tmp / "versions", tmp / "quarantine", self.inbox / ".done")
        self.options = IngestOptions(**options)

    def ingest(self, batch: Path, move: bool = True, **options: Any) -> IngestResult:
        opts = IngestOptions(**{**self.options.__dict__, **options})
        return ingest_batch(
            self.store, self.paths, batch, val_fraction=0.25, marker=MARKER, ignore=IGNORE, move=move, options=opts
        )

    def report(self, result: IngestResult) -> dict[str, Any]:
        assert result.batch.quarantine_dir, "the batch has no report"
        data: dict[str, Any] = json.loads((Path(result.batch.quarantine_dir) / "report.json").read_text())
        return data

    def codes(self, result: IngestResult) -> dict[str, str]:
        """relpath -> code of every quarantined file."""
        return {f["path"]: f["code"] for f in self.report(result)["files"]}

    def folder(self, version_id: int) -> Path:
        """The version's folder for Ultralytics, built as a training would build it."""
        version = self.store.version(version_id)
        manifest = self.store.manifest(version_id)
        return materialize(self.objects, self.paths.versions, version_id, version.class_names, manifest).parent

    def label_lines(self, version_id: int, image_sha: str) -> list[str]:
        item = self.store.manifest(version_id)[image_sha]
        return self.objects.path(item.label_sha256).read_text().splitlines()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_bytes(seed: int, size: tuple[int, int] = (32, 24), fmt: str = "PNG", **save: Any) -> bytes:
    """A noise image; a different seed gives different bytes (and a different look)."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def gradient_jpeg(size: tuple[int, int], orientation: int | None = None, quality: int = 90) -> bytes:
    """A smooth image (a copy re-encoded or resized keeps its difference hash), optionally with
    an EXIF orientation tag."""
    w, h = size
    im = Image.new("RGB", size)
    im.putdata([((x * 255) // w, (y * 255) // h, ((x + y) * 127) // (w + h)) for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    im.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def zip_folder(folder: Path, archive: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def tar_folder(folder: Path, archive: Path, extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tf.add(p, p.relative_to(folder).as_posix())
        for info in extra or []:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return archive


def yolo_batch(folder: Path, count: int = 3, seed: int = 0, names: str = "cat\ndog\n") -> Path:
    """`count` good pairs in images/ + labels/, with classes.txt."""
    write(folder / "classes.txt", names)
    for i in range(count):
        write(folder / "images" / f"g{i}.png", image_bytes(seed * 1000 + i))
        write(folder / "labels" / f"g{i}.txt", f"{i % 2} 0.5 0.5 0.25 0.25\n")
    return folder

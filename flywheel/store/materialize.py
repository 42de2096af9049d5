"""Lay a dataset version out on disk the way Ultralytics reads it.

`versions/v0007/{data.yaml, images/{train,val}/<sha><ext>, labels/{train,val}/<sha>.txt}`,
every file a hard link into the object store. The folder is built under a temp name and
renamed, so a half-built version is never visible; Ultralytics' label caches
(`labels/<split>.cache`) land inside the version's own folder, never in shared input.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import yaml

from flywheel.core.domain import ManifestItem, version_name
from flywheel.core.errors import StoreError
from flywheel.store.objects import ObjectStore

SPLITS = ("train", "val")


def version_dir(versions_root: Path, version_id: int) -> Path:
    return versions_root / version_name(version_id)


def materialize(
    objects: ObjectStore,
    versions_root: Path,
    version_id: int,
    class_names: list[str],
    manifest: Mapping[str, ManifestItem],
) -> Path:
    """The version's data.yaml, building the folder if it is not there yet."""
    final = version_dir(versions_root, version_id)
    data_yaml = final / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    tmp = versions_root / f".tmp-{final.name}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
        for item in manifest.values():
            _link(objects.path(item.image_sha256), tmp / "images" / item.split / f"{item.image_sha256}{item.ext}")
            _link(objects.path(item.label_sha256), tmp / "labels" / item.split / f"{item.image_sha256}.txt")
        spec = {
            "path": str(final.resolve()),
            "train": "images/train",
            "val": "images/val",
            "names": dict(enumerate(class_names)),
        }
        (tmp / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        if final.exists():  # a leftover without data.yaml: an interrupted earlier attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(
            f"cannot build {final}: {exc.strerror or exc}. Check free space and permissions; "
            "the version is recorded and will be rebuilt on the next training"
        ) from exc
    return data_yaml


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, target)  # versions on another file system than the store


class VersionFolders:
    """The Datasets port (flywheel.core.ports) on a versions folder and the object store."""

    def __init__(self, objects: ObjectStore, root: Path) -> None:
        self.objects, self.root = objects, root

    def materialize(self, version_id: int, class_names: list[str], manifest: Mapping[str, ManifestItem]) -> Path:
        return materialize(self.objects, self.root, version_id, class_names, manifest)

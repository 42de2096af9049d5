"""What a dropped batch holds, before any format is decided: every entry (regular files, links,
special files), which of them are on an ignore list, and the class-name files.

Nothing is followed: a symlink is an entry of its own (quarantined, or the batch refused when
it points outside), so a batch can never make flywheel read or write outside itself.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

import yaml

from flywheel.ingest.reasons import BatchRefused, Code

# Class names, in id order: Ultralytics' data.yaml, Label Studio's classes.txt, CVAT's obj.names
# (YOLO) and labelmap.txt (VOC).
CLASS_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names", "labelmap.txt")


@dataclass
class Listing:
    root: Path
    files: list[str] = field(default_factory=list)  # regular files, sorted POSIX relpaths
    links: dict[str, str] = field(default_factory=dict)  # symlink relpath -> its target, as written
    special: list[str] = field(default_factory=list)  # fifos, sockets, devices

    @property
    def count(self) -> int:
        return len(self.files) + len(self.links) + len(self.special)


def list_entries(root: Path) -> Listing:
    listing = Listing(root)
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in [*dirs, *names]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                listing.links[rel] = os.readlink(path)
            elif stat.S_ISREG(mode):
                listing.files.append(rel)
            elif not stat.S_ISDIR(mode):
                listing.special.append(rel)
    listing.files.sort()
    listing.special.sort()
    return listing


def list_files(root: Path) -> list[str]:
    """Every regular file under `root`, as sorted POSIX relpaths (symlinks are not followed)."""
    return list_entries(root).files


def link_escapes(rel: str, target: str) -> bool:
    """Whether a link at `rel` pointing at `target` leaves the batch (judged on the text alone)."""
    if target.startswith("/") or PurePosixPath(target).drive:
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return resolved == ".." or resolved.startswith("../")


def ignore_code(rel: str, marker: str, patterns: list[str]) -> Code | None:
    """MARKER or IGNORE_LIST when the file is neither data nor an error, else None.

    `patterns` are shell globs (`.DS_Store`, `._*`, `__MACOSX`) matched against every part of
    the path, so a whole `__MACOSX/` folder is ignored along with what is in it."""
    parts = rel.split("/")
    if parts[-1] == marker:
        return Code.MARKER
    if any(fnmatchcase(part, pattern) for part in parts for pattern in patterns):
        return Code.IGNORE_LIST
    return None


def is_export_metadata(rel: str) -> bool:
    """Files labeling tools write beside the data that flywheel has no use for."""
    path = PurePosixPath(rel)
    name = path.name.lower()
    return (
        (name.startswith("readme") and path.suffix.lower() in (".txt", ".md"))
        or name in ("notes.json", "obj.data")
        or "ImageSets" in path.parts[:-1]  # VOC's split lists
    )


def class_file(files: list[str]) -> str | None:
    """The class-name file: one at the top of the batch, else the shallowest one found."""
    found = sorted((f for f in files if PurePosixPath(f).name in CLASS_FILES), key=lambda f: (f.count("/"), f))
    return found[0] if found else None


def read_class_names(path: Path) -> list[str]:
    """Class names, in id order, from any of CLASS_FILES."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchRefused(Code.CLASS_NAMES_BAD, f"{path}: cannot read the class names: {exc}") from None
    if path.name == "labelmap.txt":  # CVAT: `name:r,g,b:parts:actions`, a `#` header, `background`
        names = [line.split(":")[0].strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
        return [n for n in names if n != "background"]
    if path.suffix not in (".yaml", ".yml"):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BatchRefused(Code.CLASS_NAMES_BAD, f"{path}: not valid YAML ({exc})") from None
    listed = data.get("names") if isinstance(data, dict) else None
    if isinstance(listed, dict):
        try:
            ids = sorted(int(k) for k in listed)
        except (TypeError, ValueError):
            raise BatchRefused(Code.CLASS_NAMES_BAD, f"{path}: `names:` keys must be class ids 0, 1, ...") from None
        if ids != list(range(len(ids))):
            raise BatchRefused(
                Code.CLASS_NAMES_BAD, f"{path}: `names:` ids must run 0..{len(ids) - 1} without gaps, got {ids}"
            )
        return [str(listed[k] if k in listed else listed[str(k)]) for k in ids]
    if isinstance(listed, list) and listed:
        return [str(n) for n in listed]
    raise BatchRefused(Code.NO_CLASS_NAMES, f"{path}: no `names:` list or mapping; list the class names in it")

"""How a dropped batch folder is laid out: which files are images, which is each image's
label, where the class names are, and which files are none of these.

Two YOLO layouts are understood: `images/...` beside `labels/...` (the label path replaces
the last `images` folder with `labels`, as Ultralytics does), and image + `.txt` side by side.
Class names come from `data.yaml` (`names:` as list or mapping) or `classes.txt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from flywheel.errors import BatchRejected
from flywheel.ingest.images import IMAGE_SUFFIXES

CLASS_FILES = ("data.yaml", "data.yml", "classes.txt")


@dataclass
class Layout:
    root: Path
    class_names: list[str]
    class_file: str
    pairs: list[tuple[str, str | None]] = field(default_factory=list)  # image, label (relpaths)
    orphan_labels: list[str] = field(default_factory=list)  # a .txt no image claims
    refused: list[tuple[str, str]] = field(default_factory=list)  # relpath, reason
    unsupported: list[str] = field(default_factory=list)  # neither image, label nor metadata
    ignored: list[str] = field(default_factory=list)  # on the ignore list, or the marker


def list_files(root: Path) -> list[str]:
    """Every regular file under `root`, as sorted POSIX relpaths (symlinks are not followed)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def read_layout(root: Path, files: list[str], marker: str, ignore: list[str]) -> Layout:
    class_file, names = _class_names(root, files)
    layout = Layout(root, names, class_file)
    ignore_names = set(ignore) | {marker}
    images = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES]
    claimed: dict[str, str] = {}
    present = set(files)
    for image in images:
        label = _label_for(image, present)
        if label in claimed:  # x.png and x.jpg both map to x.txt: which one it describes is unknowable
            layout.refused.append(
                (image, f"its label {label} is also the label of {claimed[label]}; give each image its own label")
            )
            continue
        layout.pairs.append((image, label))
        if label:
            claimed[label] = image
    for f in files:
        name = PurePosixPath(f).name
        if f in claimed or f in images or f == class_file:
            continue
        if name in CLASS_FILES:
            layout.refused.append((f, f"a second class-name file; {class_file} was used"))
        elif name in ignore_names:
            layout.ignored.append(f)
        elif f.endswith(".txt"):
            layout.orphan_labels.append(f)
        else:
            layout.unsupported.append(f)
    return layout


def _label_for(image: str, present: set[str]) -> str | None:
    path = PurePosixPath(image)
    parts = list(path.parent.parts)
    if "images" in parts:  # images/a/b.jpg -> labels/a/b.txt (last `images` component)
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
        candidate = str(PurePosixPath(*parts, path.stem + ".txt"))
        if candidate in present:
            return candidate
    beside = str(path.with_suffix(".txt"))
    return beside if beside in present else None


def _class_names(root: Path, files: list[str]) -> tuple[str, list[str]]:
    # Prefer a class file at the top of the batch; else the shallowest one found.
    found = sorted((f for f in files if PurePosixPath(f).name in CLASS_FILES), key=lambda f: (f.count("/"), f))
    if not found:
        raise BatchRejected(
            f"{root}: no class names. Add a data.yaml with `names:` or a classes.txt "
            "(one name per line, in class-id order) to the batch folder"
        )
    return found[0], read_class_names(root / found[0])


def read_class_names(path: Path) -> list[str]:
    """Class names, in id order, from a data.yaml (`names:` list or mapping) or classes.txt."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchRejected(f"{path}: cannot read the class names: {exc}") from None
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BatchRejected(f"{path}: not valid YAML ({exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise BatchRejected(f"{path}: `names:` keys must be class ids 0, 1, ...") from None
        if ids != list(range(len(ids))):
            raise BatchRejected(f"{path}: `names:` ids must run 0..{len(ids) - 1} without gaps, got {ids}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise BatchRejected(f"{path}: no `names:` list or mapping; list the class names in it")

"""YOLO text labels: `images/...` beside `labels/...` (the label path replaces the last
`images` folder with `labels`, as Ultralytics does), or image and `.txt` side by side; class
names from data.yaml, classes.txt or obj.names. Roboflow, CVAT (YOLO 1.1) and Label Studio
exports all fit one of the two layouts.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from flywheel.ingest.formats.base import Parsed, Sample
from flywheel.ingest.images import IMAGE_SUFFIXES
from flywheel.ingest.labels import Annotation, LabelProblem, parse_yolo
from flywheel.ingest.layout import CLASS_FILES, class_file, is_export_metadata, read_class_names
from flywheel.ingest.reasons import BatchRefused, Code

_LIST_LIMIT = 1 << 20  # an image list (train.txt) bigger than this is read as a label, not sniffed


def read(root: Path, files: list[str]) -> Parsed:
    names_file = class_file(files)
    if names_file is None:
        raise BatchRefused(
            Code.NO_CLASS_NAMES,
            f"{root}: no class names. Add a data.yaml with `names:` or a classes.txt "
            "(one name per line, in class-id order) to the batch folder",
        )
    parsed = Parsed("yolo", read_class_names(root / names_file), used=[names_file])
    images = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES]
    present = set(files)
    claimed: dict[str, str] = {}
    for image in images:
        label = _label_for(image, present)
        if label is not None and label in claimed:  # x.png and x.jpg both map to x.txt
            parsed.refused.append(
                (
                    image,
                    Code.LABEL_AMBIGUOUS,
                    f"its label {label} is also the label of {claimed[label]}; give each image its own label",
                )
            )
            continue
        if label is None:
            parsed.samples.append(Sample(image, (), None))
            continue
        claimed[label] = image
        parsed.samples.append(Sample(image, (label,), _annotation(root / label, len(parsed.class_names))))
    taken = set(images) | set(claimed) | {names_file}
    for f in files:
        if f in taken:
            continue
        if PurePosixPath(f).name in CLASS_FILES:
            parsed.refused.append((f, Code.CLASS_FILE_EXTRA, f"a second class-name file; {names_file} was used"))
        elif f.endswith(".txt") and (is_export_metadata(f) or _is_image_list(root / f)):
            parsed.ignored.append(f)  # CVAT's train.txt: a list of image paths
        elif f.endswith(".txt"):
            parsed.refused.append((f, Code.LABEL_ORPHAN, "label file without a matching image"))
    return parsed


def _annotation(path: Path, class_count: int) -> Annotation | LabelProblem:
    try:
        return parse_yolo(path.read_text(encoding="utf-8-sig"), class_count)
    except UnicodeDecodeError as exc:
        return LabelProblem(Code.LABEL_UNREADABLE, f"not UTF-8 text: {exc}")
    except LabelProblem as exc:
        return exc


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


def _is_image_list(path: Path) -> bool:
    if path.stat().st_size > _LIST_LIMIT:
        return False
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        return False
    return bool(lines) and all(PurePosixPath(ln).suffix.lower() in IMAGE_SUFFIXES for ln in lines)

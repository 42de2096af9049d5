"""COCO JSON: `images`, `annotations` (bbox `[x, y, w, h]` in pixels) and `categories`, as
Roboflow (`_annotations.coco.json` per split folder), CVAT (`annotations/instances_*.json`
beside `images/`) and Label Studio (`result.json` beside `images/`) export it.

Read with the standard library's json: a COCO file is one document, and its structure is
checked here field by field so each bad annotation refuses only its own image.
"""

from __future__ import annotations

import json
import math
import posixpath
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any

from flywheel.ingest.formats.base import Parsed, Sample
from flywheel.ingest.images import IMAGE_SUFFIXES
from flywheel.ingest.labels import Annotation, LabelProblem, RawBox
from flywheel.ingest.layout import CLASS_FILES
from flywheel.ingest.reasons import BatchRefused, Code

_NAMED = ("_annotations.coco.json", "instances_*.json", "result.json", "*coco*.json")
Doc = dict[str, Any]


def load(root: Path, json_files: list[str]) -> dict[str, Doc]:
    """The COCO documents among `json_files`; one named like COCO that does not parse, or whose
    structure is broken, refuses the batch (which images it described cannot be known)."""
    docs: dict[str, Doc] = {}
    for rel in json_files:
        named = any(fnmatchcase(PurePosixPath(rel).name.lower(), p) for p in _NAMED)
        try:
            data = json.loads((root / rel).read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if named:
                raise BatchRefused(
                    Code.ANNOTATIONS_UNREADABLE, f"{rel}: not valid JSON ({exc}); re-export it"
                ) from None
            continue
        if isinstance(data, dict) and isinstance(data.get("images"), list) and "categories" in data:
            _check_structure(rel, data)
            docs[rel] = data
    return docs


def _check_structure(rel: str, data: Doc) -> None:
    def refuse(what: str) -> BatchRefused:
        return BatchRefused(Code.ANNOTATIONS_UNREADABLE, f"{rel}: {what}; this is not a COCO file flywheel can read")

    if not isinstance(data.get("categories"), list) or not isinstance(data.get("annotations", []), list):
        raise refuse("`categories` and `annotations` must be lists")
    for i, cat in enumerate(data["categories"]):
        if not (isinstance(cat, dict) and "id" in cat and isinstance(cat.get("name"), str)):
            raise refuse(f"categories[{i}] needs an `id` and a `name`")
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and "id" in img and isinstance(img.get("file_name"), str)):
            raise refuse(f"images[{i}] needs an `id` and a `file_name`")
    for i, ann in enumerate(data.get("annotations", [])):
        if not (isinstance(ann, dict) and "image_id" in ann):
            raise refuse(f"annotations[{i}] needs an `image_id`")


def read(root: Path, files: list[str], docs: dict[str, Doc]) -> Parsed:
    names = _class_names(docs)
    index = {name: i for i, name in enumerate(names)}
    parsed = Parsed("coco", names, used=sorted(docs))
    parsed.ignored += [f for f in files if PurePosixPath(f).name in CLASS_FILES]  # the JSON's categories rule
    images = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES]
    by_name: dict[str, list[str]] = {}
    for image in images:
        by_name.setdefault(PurePosixPath(image).name, []).append(image)
    found: dict[str, Annotation | LabelProblem] = {}
    image_set = set(images)
    for rel, doc in sorted(docs.items()):
        categories = {c["id"]: index[c["name"].strip()] for c in doc["categories"] if c["name"].strip() in index}
        entries: dict[Any, tuple[str, Annotation | LabelProblem]] = {}
        for img in doc["images"]:
            target = _resolve(rel, img["file_name"], image_set, by_name)
            if target is None:
                parsed.notes.append(
                    (rel, Code.IMAGE_MISSING, f"image id {img['id']} ({img['file_name']}) is not in the batch")
                )
                continue
            if target in found or any(target == e[0] for e in entries.values()):
                found[target] = LabelProblem(
                    Code.LABEL_AMBIGUOUS, f"described twice (again in {rel} as image id {img['id']})"
                )
                continue
            entries[img["id"]] = (target, Annotation(pixels=True, size=_size(img)))
        listed = {img["id"] for img in doc["images"]}  # an image noted missing (or twice) once, not per box
        for ann in doc.get("annotations", []):
            entry = entries.get(ann["image_id"])
            if entry is None:
                if ann["image_id"] in listed:
                    continue
                parsed.notes.append(
                    (
                        rel,
                        Code.IMAGE_MISSING,
                        f"annotation id {ann.get('id')} names image id {ann['image_id']}, which is not in the batch",
                    )
                )
            elif isinstance(entry[1], Annotation):
                box = _box(rel, ann, categories, entry[1])
                if isinstance(box, LabelProblem):
                    entries[ann["image_id"]] = (entry[0], box)
                elif box is not None:
                    entry[1].boxes.append(box)
        for image, annotation in entries.values():
            found.setdefault(image, annotation)
    parsed.samples = [Sample(image, (), found.get(image)) for image in images]
    return parsed


def _class_names(docs: dict[str, Doc]) -> list[str]:
    """Category names in id order, across files; Roboflow's placeholder parent category (the
    supercategory of the others, with no boxes of its own) is left out."""
    names: list[str] = []
    for doc in (docs[rel] for rel in sorted(docs)):
        used = {a.get("category_id") for a in doc.get("annotations", [])}
        parents = {c.get("supercategory") for c in doc["categories"]}
        for cat in sorted(doc["categories"], key=lambda c: str(c["id"]).zfill(12)):
            name = cat["name"].strip()
            if name in parents and cat["id"] not in used:
                continue
            if name not in names:
                names.append(name)
    return names


def _resolve(rel: str, file_name: str, images: set[str], by_name: dict[str, list[str]]) -> str | None:
    told = file_name.replace("\\", "/")
    folder = posixpath.dirname(rel)
    parent = posixpath.dirname(folder)
    for candidate in (
        posixpath.join(folder, told),
        told,
        posixpath.join(folder, "images", told),
        posixpath.join(parent, "images", told),
    ):
        path = posixpath.normpath(candidate)
        if path in images:
            return path
    same = by_name.get(PurePosixPath(told).name, [])
    return same[0] if len(same) == 1 else None


def _size(img: Doc) -> tuple[int, int] | None:
    width, height = img.get("width"), img.get("height")
    if isinstance(width, int | float) and isinstance(height, int | float) and width > 0 and height > 0:
        return int(width), int(height)
    return None


def _box(rel: str, ann: Doc, categories: dict[Any, int], target: Annotation) -> RawBox | LabelProblem | None:
    where = f"{rel} annotation id {ann.get('id')}"
    if ann.get("iscrowd"):
        target.notes.append((Code.BOX_CROWD, f"{where}: a crowd region (iscrowd=1), not a box; left out"))
        return None
    if ann.get("category_id") not in categories:
        return LabelProblem(
            Code.LABEL_UNKNOWN_CLASS, f"{where}: category_id {ann.get('category_id')!r} is not in the file's categories"
        )
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return LabelProblem(Code.LABEL_BAD_FIELDS, f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
        return LabelProblem(Code.LABEL_NOT_NUMERIC, f"{where}: not a number in bbox {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        return LabelProblem(Code.LABEL_NOT_FINITE, f"{where}: NaN or infinite value in bbox {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    return RawBox(categories[ann["category_id"]], x + w / 2, y + h / 2, w, h, where)

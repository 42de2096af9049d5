"""Pre-label writers: one folder per package, the images under images/ (hard links where the
file system allows, else copies) and the boxes in the form the labeling tool imports.

- yolo: labels/*.txt beside images/ and data.yaml with the model's class names; the folder
  is a flywheel batch as it is (drop it into the inbox once the labels are checked).
- coco: annotations/instances_default.json (the layout CVAT and Roboflow import), with a
  `score` on each annotation; category ids start at 1, as in COCO itself.
- labelstudio: tasks.json, a list of tasks with `data.image` and `predictions` (Label
  Studio's import of pre-annotations: rectanglelabels in percent of the image size).
- cvat: annotations.xml in "CVAT for images 1.1" form (docs.cvat.ai, XML annotation format):
  <meta><task><labels> lists every class, each with a numeric `score` attribute, and each
  image's boxes are `source="auto"` with their score as that attribute.

Pure: standard library and PyYAML only, so nothing here needs torch.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from flywheel.core.prediction import Prediction

FORMATS = ("yolo", "coco", "labelstudio", "cvat")
IMAGES = "images"


def write(
    fmt: str, out: Path, predictions: Sequence[Prediction], class_names: list[str], model: str, image_prefix: str = ""
) -> Path:
    """Write the package in `fmt` into `out` (created); returns the annotation file written."""
    writer = _WRITERS.get(fmt)
    if writer is None:
        raise ValueError(f"unknown pre-label format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    for p in predictions:
        _place(p.source, out / IMAGES / p.name)
    return writer(out, predictions, class_names, model, image_prefix)


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # cheap, and the pre-labels never change the image
    except OSError:
        shutil.copyfile(source, target)


def _clip(v: float, top: float) -> float:
    return min(max(v, 0.0), top)


def _yolo(out: Path, predictions: Sequence[Prediction], names: list[str], _model: str, _prefix: str) -> Path:
    for p in predictions:
        lines = []
        for b in p.boxes:
            x1, x2 = _clip(b.x1, p.width), _clip(b.x2, p.width)
            y1, y2 = _clip(b.y1, p.height), _clip(b.y2, p.height)
            if x2 <= x1 or y2 <= y1:
                continue
            cx, cy = (x1 + x2) / 2 / p.width, (y1 + y2) / 2 / p.height
            lines.append(f"{b.cls} {cx:.6f} {cy:.6f} {(x2 - x1) / p.width:.6f} {(y2 - y1) / p.height:.6f}\n")
        label = out / "labels" / PurePosixPath(p.name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(lines))
    data = out / "data.yaml"
    data.write_text(yaml.safe_dump({"names": dict(enumerate(names))}, sort_keys=False, allow_unicode=True))
    return data


def _coco(out: Path, predictions: Sequence[Prediction], names: list[str], model: str, _prefix: str) -> Path:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, p in enumerate(predictions, start=1):
        images.append({"id": image_id, "file_name": p.name, "width": p.width, "height": p.height})
        for b in p.boxes:
            x1, y1 = _clip(b.x1, p.width), _clip(b.y1, p.height)
            w, h = _clip(b.x2, p.width) - x1, _clip(b.y2, p.height) - y1
            if w <= 0 or h <= 0:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": b.cls + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "segmentation": [],
                    "score": round(b.conf, 5),
                }
            )
    doc = {
        "info": {"description": f"pre-labels by {model}", "version": "1.0"},
        "licenses": [],
        "categories": [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(names)],
        "images": images,
        "annotations": annotations,
    }
    path = out / "annotations" / "instances_default.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def _labelstudio(out: Path, predictions: Sequence[Prediction], names: list[str], model: str, prefix: str) -> Path:
    tasks = []
    for p in predictions:
        result = []
        for i, b in enumerate(p.boxes):
            x1, y1 = _clip(b.x1, p.width), _clip(b.y1, p.height)
            w, h = _clip(b.x2, p.width) - x1, _clip(b.y2, p.height) - y1
            if w <= 0 or h <= 0:
                continue
            result.append(
                {
                    "id": f"{PurePosixPath(p.name).stem}-{i}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": p.width,
                    "original_height": p.height,
                    "image_rotation": 0,
                    "value": {
                        "rotation": 0,
                        "x": 100 * x1 / p.width,
                        "y": 100 * y1 / p.height,
                        "width": 100 * w / p.width,
                        "height": 100 * h / p.height,
                        "rectanglelabels": [_name(names, b.cls)],
                    },
                    "score": round(b.conf, 5),
                }
            )
        prediction = {"model_version": model, "score": round(p.score, 5), "result": result}
        tasks.append({"data": {"image": f"{prefix}{IMAGES}/{p.name}"}, "predictions": [prediction]})
    path = out / "tasks.json"
    path.write_text(json.dumps(tasks, indent=1))
    return path


def _cvat(out: Path, predictions: Sequence[Prediction], names: list[str], model: str, _prefix: str) -> Path:
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    for tag, text in (("name", f"pre-labels by {model}"), ("size", str(len(predictions))), ("mode", "annotation")):
        ET.SubElement(task, tag).text = text
    labels = ET.SubElement(task, "labels")
    for n in names:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = n
        ET.SubElement(label, "type").text = "rectangle"
        attribute = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
        for tag, text in (
            ("name", "score"),
            ("mutable", "False"),
            ("input_type", "number"),
            ("default_value", "0"),
            ("values", "0\n1\n0.001"),  # a number attribute's values: min, max, step
        ):
            ET.SubElement(attribute, tag).text = text
    for image_id, p in enumerate(predictions):
        image = ET.SubElement(root, "image", id=str(image_id), name=p.name, width=str(p.width), height=str(p.height))
        for b in p.boxes:
            x1, x2 = _clip(b.x1, p.width), _clip(b.x2, p.width)
            y1, y2 = _clip(b.y1, p.height), _clip(b.y2, p.height)
            if x2 <= x1 or y2 <= y1:
                continue
            box = ET.SubElement(
                image,
                "box",
                label=_name(names, b.cls),
                source="auto",
                occluded="0",
                xtl=f"{x1:.2f}",
                ytl=f"{y1:.2f}",
                xbr=f"{x2:.2f}",
                ybr=f"{y2:.2f}",
                z_order="0",
            )
            ET.SubElement(box, "attribute", name="score").text = f"{b.conf:.3f}"
    ET.indent(root)
    path = out / "annotations.xml"
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _name(names: list[str], cls: int) -> str:
    return names[cls] if 0 <= cls < len(names) else str(cls)


_WRITERS: dict[str, Callable[[Path, Sequence[Prediction], list[str], str, str], Path]] = {
    "yolo": _yolo,
    "coco": _coco,
    "labelstudio": _labelstudio,
    "cvat": _cvat,
}

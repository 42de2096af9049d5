"""Pascal VOC: one `<annotation>` XML per image (`Annotations/*.xml` + `JPEGImages/`, or XML
beside its image), boxes in pixels. CVAT, Roboflow and Label Studio export this shape; class
names come from a class file (CVAT's labelmap.txt, classes.txt, data.yaml) when there is one,
else they are the names the annotations use, sorted.

XML is read with the standard library's ElementTree: it never fetches external entities, and
the expat it is built on (>= 2.4.1) refuses entity-expansion bombs, so defusedxml would add a
dependency without adding protection here.
"""

from __future__ import annotations

import math
import posixpath
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

from flywheel.ingest.formats.base import Parsed, Sample
from flywheel.ingest.images import IMAGE_SUFFIXES
from flywheel.ingest.labels import Annotation, LabelProblem, RawBox
from flywheel.ingest.layout import class_file, read_class_names
from flywheel.ingest.reasons import Code

Doc = ET.Element | LabelProblem


def load(root: Path, xml_files: list[str]) -> dict[str, Doc]:
    """VOC annotation files by relpath; unparseable XML counts as VOC when other files are."""
    docs: dict[str, Doc] = {}
    broken: dict[str, Doc] = {}
    for rel in xml_files:
        try:
            element = ET.parse(root / rel).getroot()
        except (ET.ParseError, OSError) as exc:
            broken[rel] = LabelProblem(Code.LABEL_UNREADABLE, f"not well-formed XML: {exc}")
            continue
        if element.tag == "annotation":
            docs[rel] = element
    return {**docs, **broken} if docs else {}


def read(root: Path, files: list[str], docs: dict[str, Doc]) -> Parsed:
    names_file = class_file(files)
    if names_file:
        names = read_class_names(root / names_file)
    else:
        names = sorted(
            {
                (o.findtext("name") or "").strip()
                for d in docs.values()
                if isinstance(d, ET.Element)
                for o in d.iter("object")
            }
            - {""}
        )
    parsed = Parsed("voc", names, used=[names_file] if names_file else [])
    index = {name: i for i, name in enumerate(names)}
    images = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES]
    by_stem: dict[str, list[str]] = {}
    for image in images:
        by_stem.setdefault(PurePosixPath(image).stem, []).append(image)
    claimed: dict[str, str] = {}
    for rel, doc in sorted(docs.items()):
        target = _image_for(rel, doc, set(images), by_stem)
        if target is None:
            told = doc.findtext("filename") if isinstance(doc, ET.Element) else None
            parsed.refused.append(
                (rel, Code.LABEL_ORPHAN, f"annotation without a matching image ({told or 'no <filename>'})")
            )
        elif target in claimed:
            parsed.refused.append((rel, Code.LABEL_AMBIGUOUS, f"describes {target}, as {claimed[target]} does too"))
        else:
            claimed[target] = rel
            annotation = doc if isinstance(doc, LabelProblem) else _annotation(doc, index, names_file)
            parsed.samples.append(Sample(target, (rel,), annotation))
    parsed.samples += [Sample(image, (), None) for image in images if image not in claimed]
    return parsed


def _image_for(rel: str, doc: Doc, images: set[str], by_stem: dict[str, list[str]]) -> str | None:
    """The image an annotation describes: by its <filename>, else the image with its stem."""
    folder = posixpath.dirname(rel)
    told = (doc.findtext("filename") or "").strip().replace("\\", "/") if isinstance(doc, ET.Element) else ""
    for base in (
        folder,
        posixpath.join(posixpath.dirname(folder), "JPEGImages"),
        posixpath.join(posixpath.dirname(folder), "images"),
        "",
    ):
        candidate = posixpath.normpath(posixpath.join(base, told)) if told else ""
        if candidate in images:
            return candidate
    stem = PurePosixPath(told).stem if told else PurePosixPath(rel).stem
    same = by_stem.get(stem, []) or by_stem.get(PurePosixPath(rel).stem, [])
    near = [
        i for i in same if posixpath.dirname(i) in (folder, posixpath.join(posixpath.dirname(folder), "JPEGImages"))
    ]
    if len(near) == 1:
        return near[0]
    return same[0] if len(same) == 1 else None


def _annotation(doc: ET.Element, index: dict[str, int], names_file: str | None) -> Annotation | LabelProblem:
    ann = Annotation(pixels=True, size=_size(doc))
    for number, obj in enumerate(doc.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"object {number} ({name or 'no name'})"
        if name not in index:
            source = names_file or "the annotations"
            return LabelProblem(Code.LABEL_UNKNOWN_CLASS, f"{where}: {name!r} is not a class named in {source}")
        box = obj.find("bndbox")
        texts = [box.findtext(k) if box is not None else None for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(t is None or not t.strip() for t in texts):
            return LabelProblem(Code.LABEL_BAD_FIELDS, f"{where}: <bndbox> needs xmin, ymin, xmax and ymax")
        try:
            x0, y0, x1, y1 = (float(t or "") for t in texts)
        except ValueError:
            return LabelProblem(Code.LABEL_NOT_NUMERIC, f"{where}: not a number in <bndbox> {texts}")
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            return LabelProblem(Code.LABEL_NOT_FINITE, f"{where}: NaN or infinite value in <bndbox> {texts}")
        ann.boxes.append(RawBox(index[name], (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, where))
    return ann


def _size(doc: ET.Element) -> tuple[int, int] | None:
    try:
        width, height = int(float(doc.findtext("size/width") or 0)), int(float(doc.findtext("size/height") or 0))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None

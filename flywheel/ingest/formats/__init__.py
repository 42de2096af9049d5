"""Batch formats: detect which export a batch is, and read it into the internal form.

Each reader turns its format into `Sample`s (an image, the label files that belong to it
alone, and its boxes) plus the batch's class names, so everything after this point (image
checks, box checks, storage, quarantine) is the same for every format. Detection is by
content, not by folder names: a COCO JSON (`images`, `annotations`, `categories`) wins, then
Pascal VOC XML (`<annotation>`), else YOLO text labels.

Why not a converter library: the readers are small (COCO is one JSON document, VOC one XML
element per image, both read with the standard library), and a converter (Ultralytics'
`convert_coco`, supervision, globox) writes files or raises on the first bad entry, where
flywheel must keep every good image and give each bad one its own reason. Ultralytics'
converters would also import torch into the daemon, which runs without it.
"""

from __future__ import annotations

from pathlib import Path

from flywheel.ingest.formats import coco, voc, yolo
from flywheel.ingest.formats.base import Parsed, Sample

__all__ = ["Parsed", "Sample", "read_batch"]


def read_batch(root: Path, files: list[str]) -> Parsed:
    """The batch's samples and class names, in whichever format its files are.

    `files` are the batch's regular files less those on the ignore list. Raises BatchRefused
    when the batch as a whole cannot be read (no class names, an unreadable COCO file)."""
    docs = coco.load(root, [f for f in files if f.lower().endswith(".json")])
    if docs:
        return coco.read(root, files, docs)
    xmls = voc.load(root, [f for f in files if f.lower().endswith(".xml")])
    if xmls:
        return voc.read(root, files, xmls)
    return yolo.read(root, files)

"""A copy of a shared data set with its photos shrunk to a long side of `--size` pixels.

For a machine the shared folders are not on (a lent GPU machine takes the repository and at
most 64 MiB): Aquarium's 1024 px photos are 71 MB, at 320 px 23 MB. At `imgsz` 320 nothing is
lost that training would have kept: Ultralytics resizes every photo to `imgsz` on load. What
changes is the interpolation (area here, bilinear there) and the content hashes, so flywheel's
train/val split of each version differs from one made on the originals. Labels are YOLO's
normalised coordinates and are copied as they are. Only the train and val splits are kept
(the benchmarks read no others).

    .venv/bin/python benchmarks/shrink.py aquarium .bench-data --size 320
    FLYWHEEL_BENCH_DATASETS=.bench-data .venv/bin/python benchmarks/generations.py --data aquarium ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets

SPLITS = ("train", "val")


def shrink(name: str, out: Path, size: int) -> int:
    """Writes `out/<name>/yolo`; returns the number of photos written."""
    import cv2

    source = datasets.source(name)
    target = out / name / "yolo"
    if target.exists():
        sys.exit(f"{target} exists: remove it first")
    target.mkdir(parents=True)
    for extra in ("README.md", "LICENSE.md"):
        if (source.parent / extra).is_file():
            shutil.copy(source.parent / extra, out / name / extra)
    spec = yaml.safe_load((source / "data.yaml").read_text())
    kept = {k: v for k, v in spec.items() if k != "test"}
    (target / "data.yaml").write_text(yaml.safe_dump(kept, sort_keys=False))
    written = 0
    for split in SPLITS:  # as data.yaml names them: Aquarium's valid/images, BCCD's images/valid
        for photo in sorted((source / spec[split]).iterdir()):
            image = cv2.imread(str(photo))
            if image is None:
                sys.exit(f"{photo}: not a readable image")
            h, w = image.shape[:2]
            scale = size / max(h, w)
            if scale < 1:
                image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            dest = target / photo.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(dest), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            label = datasets.label_of(photo)
            if label.is_file():  # a photo with nothing on it may have no label file
                copied = target / label.relative_to(source)
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(label, copied)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", choices=datasets.KNOWN)
    parser.add_argument("out", type=Path, help="the folder FLYWHEEL_BENCH_DATASETS will name")
    parser.add_argument("--size", type=int, default=320, help="long side in pixels (photos never grow)")
    args = parser.parse_args()
    count = shrink(args.data, args.out, args.size)
    print(f"{count} photos of {args.data} at <= {args.size} px in {args.out / args.data}")


if __name__ == "__main__":
    main()

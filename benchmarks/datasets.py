"""The shared real data sets the benchmarks run on, copied before use (the shared folders are
read-only, and Ultralytics writes `*.cache` files beside label folders).

A data set is its YOLO folder's `data.yaml`: `train` and `val` folders of images (labels found
by replacing the last `images` in a path with `labels`, as Ultralytics does) and `names`.
BCCD (blood cells, 3 classes, 205 train / 87 valid) and Aquarium (Roboflow, 7 classes,
448 train / 127 valid) are laid out differently (`images/train` vs `train/images`); both read
the same way here.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# FLYWHEEL_BENCH_DATASETS: the data sets elsewhere (a lent machine, a copy with smaller photos)
SHARED = Path(os.environ.get("FLYWHEEL_BENCH_DATASETS") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
KNOWN = ("bccd", "aquarium")


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path  # the private copy
    names: list[str]
    train: list[Path]  # sorted
    heldout: list[Path]  # the `val` split of data.yaml (BCCD's and Aquarium's `valid`): never ingested


def label_of(image: Path) -> Path:
    parts = list(image.parts)
    at = len(parts) - 1 - parts[::-1].index("images")
    parts[at] = "labels"
    return Path(*parts).with_suffix(".txt")


def source(name: str) -> Path:
    return SHARED / name / "yolo"


def available(name: str) -> bool:
    return (source(name) / "data.yaml").is_file()


def copy(work: Path, name: str) -> Dataset:
    if name not in KNOWN:
        sys.exit(f"unknown data set {name!r}: one of {', '.join(KNOWN)}")
    data = work / name
    if not (data / "data.yaml").is_file():
        if not available(name):
            sys.exit(
                f"{name} not found at {source(name)}/data.yaml: set FLYWHEEL_BENCH_DATASETS to the folder "
                f"that holds {name}/yolo (benchmarks/shrink.py makes such a copy)"
            )
        shutil.copytree(source(name), data)
    spec = yaml.safe_load((data / "data.yaml").read_text())
    names = spec["names"]
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)

    def images(split: str) -> list[Path]:
        return sorted(p for p in (data / spec[split]).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    return Dataset(name, data, names, images("train"), images("val"))


def cut(images: list[Path], batches: int, seed: int = 0) -> list[list[Path]]:
    """`batches` near-equal parts of the shuffled images. Nested: with the same seed, the cut
    into 4 is the cut into 8 with neighbours merged (boundaries k*n//batches), so the versions
    of the 4-batch chain are versions of the 8-batch one and share their scratch references."""
    pool = sorted(images)
    random.Random(seed).shuffle(pool)
    n = len(pool)
    return [pool[k * n // batches : (k + 1) * n // batches] for k in range(batches)]


def yolo_batch(folder: Path, images: list[Path], names: list[str]) -> Path:
    """A batch folder as a labelling tool exports it, from either data set's layout."""
    return common.yolo_batch(folder, images, names, label=label_of)


def heldout_yaml(data: Dataset, count: int | None = None) -> Path:
    """A data YAML whose val split is the held-out images (the first `count`, or all)."""
    images = data.heldout[:count] if count else data.heldout
    listing = data.root / "heldout.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in images))
    spec = {"path": str(data.root.resolve()), "train": str(listing), "val": str(listing)}
    spec["names"] = dict(enumerate(data.names))  # type: ignore[assignment]
    path = data.root / "heldout.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path

"""Replay within a budget: which training images a warm start trains on.

By default a warm start trains on the whole new version (fine-tuning on the new batch alone
forgets the old data). With `replay.max_images = N`, it trains on every image the start model
has not seen (new, or re-labelled since its version) plus a class-balanced sample of the ones
it has, up to N in all. The sample is a pure function of (the version's train split, the start
model's version, N, seed, the labels' classes), so the run records those and the sample's hash
and anyone can draw it again; the image list is also written to `runs/<run>/replay.json`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flywheel.core.domain import ManifestItem

BACKGROUND = -1  # the bucket of images without boxes: negatives are replayed too


@dataclass(frozen=True)
class ReplaySample:
    max_images: int
    seed: int
    new: list[str]  # train images the start model has not seen: all of them are kept
    old: list[str]  # the sampled train images it has seen
    old_total: int
    per_class: dict[str, int] = field(default_factory=dict)  # sampled old images holding each class

    @property
    def images(self) -> list[str]:
        return sorted(self.new + self.old)

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.images).encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What the run row keeps: enough to draw the same sample again, and its hash to check."""
        return {
            "max_images": self.max_images,
            "seed": self.seed,
            "new_images": len(self.new),
            "old_images": len(self.old),
            "old_total": self.old_total,
            "per_class_old": self.per_class,
            "sample_sha256": self.sha256,
        }


def classes_from_labels(read: Callable[[str], str]) -> Callable[[ManifestItem], frozenset[int]]:
    """`read(label_sha256)` -> label text; returns item -> the class ids in its label."""

    def classes(item: ManifestItem) -> frozenset[int]:
        ids = set()
        for line in read(item.label_sha256).splitlines():
            parts = line.split()
            if parts:
                ids.add(int(float(parts[0])))
        return frozenset(ids)

    return classes


def draw(
    manifest: Mapping[str, ManifestItem],
    seen: Mapping[str, ManifestItem],
    max_images: int,
    seed: int,
    classes_of: Callable[[ManifestItem], frozenset[int]],
    class_names: list[str],
) -> ReplaySample:
    """The replay sample of `manifest`'s train split for a model trained on `seen`."""
    train = {k: i for k, i in manifest.items() if i.split == "train"}
    new = sorted(k for k, i in train.items() if k not in seen or seen[k].label_sha256 != i.label_sha256)
    fresh = set(new)
    old = sorted(k for k in train if k not in fresh)
    budget = max(0, max_images - len(new))
    buckets: dict[int, list[str]] = {}
    item_classes = {k: classes_of(train[k]) for k in old}
    if budget >= len(old):
        chosen = list(old)
    else:
        rng = random.Random(seed)
        for k in old:
            for c in item_classes[k] or {BACKGROUND}:
                buckets.setdefault(c, []).append(k)
        for c in sorted(buckets):
            rng.shuffle(buckets[c])
        # Round robin over classes, rarest first: each turn gives every class one more image
        # (one it does not hold already), so a rare class is not crowded out by a common one.
        order = sorted(buckets, key=lambda c: (len(buckets[c]), c))
        position = dict.fromkeys(order, 0)
        picked: set[str] = set()
        chosen = []
        while len(chosen) < budget:
            progressed = False
            for c in order:
                items = buckets[c]
                while position[c] < len(items) and items[position[c]] in picked:
                    position[c] += 1
                if position[c] < len(items):
                    k = items[position[c]]
                    picked.add(k)
                    chosen.append(k)
                    progressed = True
                    if len(chosen) == budget:
                        break
            if not progressed:
                break
    per_class: dict[str, int] = {}
    for k in chosen:
        for c in item_classes[k]:
            name = class_names[c] if 0 <= c < len(class_names) else str(c)
            per_class[name] = per_class.get(name, 0) + 1
    return ReplaySample(max_images, seed, new, sorted(chosen), len(old), dict(sorted(per_class.items())))


def write(sample: ReplaySample, manifest: Mapping[str, ManifestItem], version_dir: Path, out_dir: Path) -> Path:
    """The run's data.yaml: the sample as the train list, the version's whole val split as val.

    Paths go through the version folder's `images/train/`, so Ultralytics finds each label
    under `labels/train/` beside it.
    """
    folder = out_dir / "replay"
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "train.txt"
    images = version_dir.resolve() / "images" / "train"
    listing.write_text("".join(f"{images / (k + manifest[k].ext)}\n" for k in sample.images))
    (out_dir / "replay.json").write_text(json.dumps(asdict(sample), indent=1) + "\n")
    source = yaml.safe_load((version_dir / "data.yaml").read_text())
    data = {**source, "train": str(listing.resolve())}
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml

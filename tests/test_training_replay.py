"""Replay within a budget: every new image, a class-balanced sample of old ones, reproducible,
and Ultralytics trains on exactly that list."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import ManifestItem
from flywheel.store.materialize import materialize
from flywheel.training import replay
from tests.training_support import Abort, spec_for, train

NAMES = ["common", "rare", "scarce"]


def item(key: str, split: str = "train", label: str | None = None) -> ManifestItem:
    return ManifestItem(key, label or f"label-{key}", ".png", split, 1)


def old_pool() -> tuple[dict[str, ManifestItem], dict[str, frozenset[int]]]:
    """60 old images: 50 with only `common`, 6 with `rare` (+ common), 2 with `scarce`, 2 empty."""
    classes: dict[str, frozenset[int]] = {}
    for i in range(50):
        classes[f"c{i:02d}"] = frozenset({0})
    for i in range(6):
        classes[f"r{i}"] = frozenset({0, 1})
    for i in range(2):
        classes[f"s{i}"] = frozenset({2})
        classes[f"e{i}"] = frozenset()
    return {k: item(k) for k in classes}, classes


def draw(manifest: dict[str, ManifestItem], seen: dict[str, ManifestItem], budget: int, seed: int = 0) -> Any:
    _, classes = old_pool()
    lookup = {**classes, **{k: frozenset({0}) for k in manifest if k not in classes}}
    return replay.draw(manifest, seen, budget, seed, lambda i: lookup[i.image_sha256], NAMES)


def test_every_new_image_is_kept_and_old_ones_fill_the_budget():
    seen, _ = old_pool()
    manifest = {**seen, **{f"n{i}": item(f"n{i}") for i in range(10)}, "v0": item("v0", "val")}
    sample = draw(manifest, seen, 30)
    assert sorted(sample.new) == [f"n{i}" for i in range(10)]
    assert len(sample.old) == 20 and set(sample.old) <= set(seen) and sample.old_total == 60
    assert "v0" not in sample.images  # val images are never trained on
    assert len(sample.images) == 30


def test_new_images_beyond_the_budget_are_all_kept():
    seen, _ = old_pool()
    manifest = {**seen, **{f"n{i}": item(f"n{i}") for i in range(40)}}
    sample = draw(manifest, seen, 30)
    assert len(sample.new) == 40 and sample.old == []


def test_a_relabelled_image_counts_as_new():
    seen, _ = old_pool()
    manifest = {**seen, "c00": item("c00", label="a corrected label")}
    sample = draw(manifest, seen, 5)
    assert sample.new == ["c00"]


def test_the_sample_is_class_balanced():
    seen, classes = old_pool()
    sample = draw(dict(seen), seen, 12)
    assert sample.new == [] and len(sample.old) == 12
    buckets = Counter()
    for k in sample.old:
        for c in classes[k] or {-1}:
            buckets[c] += 1
    # rare classes come first and are not crowded out: both scarce images and both empty ones
    assert buckets[2] == 2 and buckets[-1] == 2
    assert buckets[1] >= 3  # rare: an equal share of the rest, although common is 8x as frequent
    assert sample.per_class == {"common": buckets[0], "rare": buckets[1], "scarce": 2}
    # whereas a uniform sample of 12 from these 60 would expect 0.4 scarce images
    assert sum(1 for k in sample.old if k.startswith("c")) <= 6


def test_same_inputs_same_sample_and_a_new_seed_another():
    seen, _ = old_pool()
    manifest = {**seen, "n0": item("n0")}
    a, b, c = draw(manifest, seen, 20, seed=0), draw(manifest, seen, 20, seed=0), draw(manifest, seen, 20, seed=1)
    assert a.images == b.images and a.sha256 == b.sha256
    assert a.sha256 == hashlib.sha256("\n".join(sorted(a.images)).encode()).hexdigest()
    assert c.sha256 != a.sha256 and len(c.images) == 20
    record = a.record()
    assert record["sample_sha256"] == a.sha256 and record["new_images"] == 1 and record["old_images"] == 19


def test_budget_that_covers_everything_takes_everything():
    seen, _ = old_pool()
    sample = draw(dict(seen), seen, 1000)
    assert sorted(sample.old) == sorted(seen)


def test_ultralytics_trains_on_exactly_the_sampled_images(data_root, tmp_path):
    """The run's data.yaml lists the sample; Ultralytics finds each image's label through it."""
    app = App(data_root)
    v1 = app.ingest(synthetic_batch(tmp_path / "b1", 16, seed=1), move=False).version
    v2 = app.ingest(synthetic_batch(tmp_path / "b2", 6, seed=2), move=False).version
    manifest = app.store.manifest(v2.id)
    data_yaml = materialize(app.objects, app.paths.versions, v2.id, v2.class_names, manifest)
    classes = replay.classes_from_labels(lambda sha: app.objects.path(sha).read_text())
    sample = replay.draw(manifest, app.store.manifest(v1.id), 8, 0, classes, v2.class_names)
    assert sample.new and sample.old  # both kinds in the list
    run_yaml = replay.write(sample, manifest, data_yaml.parent, tmp_path / "run")
    seen: dict[str, Any] = {}

    def on_train_start(trainer: Any) -> None:
        seen["images"] = [Path(f).stem for f in trainer.train_loader.dataset.im_files]
        seen["boxes"] = sum(len(lb["cls"]) for lb in trainer.train_loader.dataset.labels)
        seen["val"] = len(trainer.test_loader.dataset.im_files)
        raise Abort

    spec = spec_for(run_yaml, tmp_path / "run", "yolov8n.yaml", False, v2.class_names)
    with pytest.raises(Abort):
        train(spec, {"on_train_start": [on_train_start]})
    assert sorted(seen["images"]) == sample.images
    assert seen["boxes"] == sum(manifest[k].boxes for k in sample.images) > 0  # labels found
    assert seen["val"] == sum(1 for i in manifest.values() if i.split == "val")  # the whole val split

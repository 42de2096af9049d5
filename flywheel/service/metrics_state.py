"""The facts that live in the database, read at each scrape by StateCollector in one read
transaction (flywheel.store.stats), and the disk gauges of the data root."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import (
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from flywheel.core.errors import StoreError
from flywheel.flow.gc import data_root_areas, disk_bytes
from flywheel.service.metrics_families import (
    artifact_families,
    dataset_families,
    inbox_families,
    latency_families,
    model_families,
    training_families,
)
from flywheel.store import ObjectStore, Store
from flywheel.store.stats import ClassCounts, Snapshot, snapshot

log = logging.getLogger(__name__)


class UsedBytes:
    """The bytes under a folder, walked at most once per `max_age` seconds (a scrape every 15 s
    must not walk 100,000 objects each time). Links are not followed; hard links count once."""

    def __init__(self, max_age: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._at, self._value = -math.inf, 0

    def bytes(self, root: Path) -> int:
        now = self.clock()
        if now - self._at >= self.max_age:
            self._value, self._at = disk_bytes(root), now
        return self._value


class AreaBytes:
    """The bytes of each part of the data root (models, runs, objects, versions, quarantine,
    processed batches, captured images), walked at most once per `max_age` seconds: what
    `flywheel gc` can act on, and what grows."""

    def __init__(self, max_age: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._at, self._value = -math.inf, dict[str, int]()

    def by_area(self, root: Path) -> dict[str, int]:
        now = self.clock()
        if now - self._at >= self.max_age:
            self._value = {name: disk_bytes(folder) for name, folder in data_root_areas(root).items()}
            self._at = now
        return self._value


class StateCollector(Collector):
    """Reads the database at each scrape, in one transaction (a few small aggregate queries)."""

    def __init__(self, store: Store, objects: ObjectStore | None = None, data_root: Path | None = None):
        self.store = store
        self.data_root = data_root
        self.used = UsedBytes()
        self.areas = AreaBytes()
        self.class_counts = ClassCounts(objects) if objects is not None else None

    def describe(self) -> list[Metric]:
        return []  # no probe at registration: the database may not be reachable yet

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("flywheel_database_up", "1 if the last scrape could read the database, else 0")
        try:
            snap = snapshot(self.store)
        except StoreError as exc:  # keep /metrics alive: the live metrics still matter
            log.warning("database metrics skipped this scrape: %s", exc)
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            yield from inbox_families(snap)
            yield from dataset_families(snap)
            yield from self._classes(snap)
            yield from training_families(snap)
            yield from model_families(snap)
            yield from latency_families(snap.latencies)
            yield from self._artifacts()
        yield from self._disk()

    def _classes(self, snap: Snapshot) -> Iterator[Metric]:
        images = GaugeMetricFamily(
            "flywheel_dataset_class_images",
            "Images with a box of the class, in the newest version",
            labels=["class", "split"],
        )
        boxes = GaugeMetricFamily(
            "flywheel_dataset_class_boxes", "Boxes of the class in the newest version", labels=["class", "split"]
        )
        latest = snap.latest_version
        if self.class_counts is not None and latest is not None and latest.id is not None:
            try:
                per_image, per_box = self.class_counts.of_version(self.store, latest.id)
            except (OSError, ValueError, StoreError) as exc:
                log.warning("per-class dataset counts skipped this scrape: %s", exc)
            else:
                names = list(latest.class_names)
                for class_id, name in enumerate(names):
                    for split in ("train", "val"):
                        images.add_metric([name, split], per_image.get((class_id, split), 0))
                        boxes.add_metric([name, split], per_box.get((class_id, split), 0))
        yield images
        yield boxes

    def _artifacts(self) -> Iterator[Metric]:
        described = self.data_root / "production" / "model.json" if self.data_root is not None else None
        try:
            record = json.loads(described.read_text()) if described is not None and described.is_file() else {}
        except (OSError, ValueError) as exc:
            log.warning("production exports' metrics skipped this scrape: %s", exc)
            record = {}
        yield from artifact_families(record)

    def _disk(self) -> Iterator[Metric]:
        if self.data_root is None:
            return
        try:
            usage = shutil.disk_usage(self.data_root)
        except OSError as exc:
            log.warning("disk usage of %s unknown: %s", self.data_root, exc)
            return
        yield GaugeMetricFamily(
            "flywheel_data_root_used_bytes",
            "Bytes the data root's files take (summed at most once a minute)",
            value=self.used.bytes(self.data_root),
        )
        areas = GaugeMetricFamily(
            "flywheel_data_root_area_bytes",
            "Bytes each part of the data root takes (what `flywheel gc` frees is in models, runs, "
            "quarantine, done and captured)",
            labels=["area"],
        )
        for area, size in self.areas.by_area(self.data_root).items():
            areas.add_metric([area], size)
        yield areas
        yield GaugeMetricFamily(
            "flywheel_data_root_filesystem_size_bytes",
            "Size of the file system holding the data root",
            value=usage.total,
        )
        yield GaugeMetricFamily(
            "flywheel_data_root_free_bytes", "Space left for flywheel on the data root's file system", value=usage.free
        )

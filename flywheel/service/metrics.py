"""Prometheus metrics on an injected registry.

Two kinds. Facts that live in the database (batches, files, versions, runs, gate decisions,
the production ledger, scores, batch-to-decision latency) are read from it at scrape time by
`StateCollector`, in one read transaction (`flywheel.store.stats`), so they are right
whichever process made the change (the daemon or a CLI `rollback`) and they survive
restarts: nothing resets, and counters only grow because the records they count are never
deleted. What only the daemon sees as it happens (the running training's epoch, losses and
mAP streamed from the training child, durations) is kept in live instruments by
`LiveMetrics`, the `Observer`.

Naming follows Prometheus' conventions: a `flywheel_` prefix, base units (seconds, bytes,
ratios in [0, 1]), `_total` on counters, and labels from small fixed sets (states, outcomes,
rules, splits, class names of the project's class map), never a label per image, file,
batch or run.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from flywheel import __version__
from flywheel.core.domain import RunState, model_name, version_name
from flywheel.core.errors import FlywheelError, StoreError
from flywheel.core.events import BatchProgress, EpochEnded, TrainingEvent
from flywheel.store import ObjectStore, Store
from flywheel.store.stats import ClassCounts, Latency, Scores, Snapshot, snapshot

log = logging.getLogger("flywheel.service.metrics")

_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
# batch arrival -> gate decision: from a tiny CPU training (tens of seconds) to a week
LATENCY_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800)
RUN_OUTCOMES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED)
START_KINDS = ("scratch", "warm", "challenger")
SCORE_METRICS = ("map50_95", "map50", "precision", "recall")
LOSSES = ("box", "cls", "dfl")


class LiveMetrics:
    """The Observer: what the daemon sees as it happens, from ingest and the training child."""

    def __init__(self, registry: CollectorRegistry, store: Store | None = None):
        self.store = store  # to size the running training's epochs (images per second)
        Info("flywheel_build", "flywheel's version and Python's", registry=registry).info(
            {"version": __version__, "python": platform.python_version()}
        )
        self.batch_seconds = Histogram(
            "flywheel_batch_processing_seconds",
            "Time to ingest one batch: validate, store, version",
            registry=registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.running = Gauge("flywheel_training_running", "1 while a training runs, else 0", registry=registry)
        self.inbox_left = Gauge(
            "flywheel_inbox_batch_left",
            "1 for a batch that is done but may not be moved out of the inbox (remove it as its owner)",
            ["batch"],
            registry=registry,
        )
        self.degraded = Gauge(
            "flywheel_degraded",
            "1 while the daemon cannot write its data root or database (disk full, read-only); /readyz says why",
            registry=registry,
        )
        self.run_id = Gauge("flywheel_training_run_id", "Id of the running (or last) training run", registry=registry)
        self.start_kind = Gauge(
            "flywheel_training_start_kind",
            "1 for the start kind of the running (or last) training, 0 for the others",
            ["kind"],
            registry=registry,
        )
        self.epoch = Gauge("flywheel_training_epoch", "Epochs done by the running training", registry=registry)
        self.epochs = Gauge("flywheel_training_epochs", "Epochs planned for the running training", registry=registry)
        self.loss = Gauge("flywheel_training_loss", "Last epoch's mean train loss", ["kind"], registry=registry)
        self.val = Gauge(
            "flywheel_training_val", "Last epoch's validation metric (a ratio in [0, 1])", ["metric"], registry=registry
        )
        self.epoch_seconds = Gauge(
            "flywheel_training_epoch_seconds", "Last epoch's duration (train and validation)", registry=registry
        )
        self.images_per_second = Gauge(
            "flywheel_training_images_per_second",
            "Last epoch's throughput: train images / epoch duration",
            registry=registry,
        )
        self.batch_progress = Gauge(
            "flywheel_training_batch_progress_ratio", "Share of the current epoch's batches done", registry=registry
        )
        self.duration = Histogram(
            "flywheel_training_duration_seconds",
            "Wall time of training runs (train and eval)",
            ["outcome"],
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        for kind in START_KINDS:
            self.start_kind.labels(kind).set(0)
        for name in LOSSES:
            self.loss.labels(name)
        for metric in SCORE_METRICS:
            self.val.labels(metric)
        for outcome in RUN_OUTCOMES:
            self.duration.labels(outcome.value)
        self._train_images = 0

    # --- Observer -------------------------------------------------------------------------
    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None:
        # The reasons are free text here; by-reason counts come from the database, in codes.
        self.batch_seconds.observe(seconds)

    def training_started(self, run_id: int, start_kind: str, epochs: int) -> None:
        self.running.set(1)
        self.run_id.set(run_id)
        for kind in {*START_KINDS, start_kind}:
            self.start_kind.labels(kind).set(1 if kind == start_kind else 0)
        self.epoch.set(0)
        self.epochs.set(epochs)
        self.batch_progress.set(0)
        self._train_images = self._images_of_run(run_id)

    def training_event(self, event: TrainingEvent) -> None:
        if isinstance(event, EpochEnded):
            self.epoch.set(event.epoch)
            if event.epochs:
                self.epochs.set(event.epochs)
            for kind in LOSSES:
                self.loss.labels(kind).set(getattr(event, f"{kind}_loss"))
            for metric in SCORE_METRICS:
                self.val.labels(metric).set(getattr(event, metric))
            seconds = event.seconds
            self.epoch_seconds.set(seconds)
            if seconds > 0 and self._train_images:
                self.images_per_second.set(self._train_images / seconds)
        elif isinstance(event, BatchProgress) and event.batches:
            self.batch_progress.set(event.batch / event.batches)

    def training_finished(self, outcome: str, seconds: float) -> None:
        self.running.set(0)
        self.duration.labels(outcome).observe(seconds)

    def _images_of_run(self, run_id: int) -> int:
        if self.store is None:
            return 0
        try:
            return self.store.version(self.store.run(run_id).version_id).train_images
        except FlywheelError as exc:  # a number on a dashboard is not worth failing a training
            log.warning("training throughput unknown for this run: %s", exc)
            return 0


class UsedBytes:
    """The bytes under a folder, walked at most once per `max_age` seconds (a scrape every 15 s
    must not walk 100,000 objects each time). Links are not followed; hard links count once."""

    def __init__(self, max_age: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.clock = max_age, clock
        self._at, self._value = -math.inf, 0

    def bytes(self, root: Path) -> int:
        now = self.clock()
        if now - self._at >= self.max_age:
            self._value, self._at = _walk_bytes(root), now
        return self._value


def _walk_bytes(root: Path) -> int:
    total, seen, stack = 0, set(), [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        total += info.st_blocks * 512
            except OSError:
                continue
    return total


class StateCollector(Collector):
    """Reads the database at each scrape, in one transaction (a few small aggregate queries)."""

    def __init__(self, store: Store, objects: ObjectStore | None = None, data_root: Path | None = None):
        self.store = store
        self.data_root = data_root
        self.used = UsedBytes()
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
            yield from _inbox(snap)
            yield from _dataset(snap)
            yield from self._classes(snap)
            yield from _training(snap)
            yield from _models(snap)
            yield from _latency(snap.latencies)
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
        yield GaugeMetricFamily(
            "flywheel_data_root_filesystem_size_bytes",
            "Size of the file system holding the data root",
            value=usage.total,
        )
        yield GaugeMetricFamily(
            "flywheel_data_root_free_bytes", "Space left for flywheel on the data root's file system", value=usage.free
        )


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    """A gauge with one sample, or none while the value is unknown."""
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


def _labelled(name: str, doc: str, label: str, values: dict[str, int], keys: Sequence[str] = ()) -> CounterMetricFamily:
    """A counter by one label; `keys` are always exported (0 until seen), others as they come."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in dict.fromkeys([*keys, *sorted(values)]):
        family.add_metric([key], values.get(key, 0))
    return family


def _inbox(snap: Snapshot) -> Iterator[Metric]:
    final = {k: v for k, v in snap.batches.items() if k in ("ingested", "rejected")}
    yield _labelled("flywheel_batches", "Batches by final state", "state", final, ("ingested", "rejected"))
    yield _counter("flywheel_batches_received", "Batches seen complete in the inbox", snap.batches_received)
    yield _counter("flywheel_files_received", "Files in the batches received", snap.files_received)
    yield _labelled(
        "flywheel_files",
        "Files of ingested batches by where they went: versioned, quarantined or ignored",
        "outcome",
        snap.files,
        ("versioned", "quarantined", "ignored"),
    )
    yield _counter(
        "flywheel_images_ingested", "Images (with their labels) accepted into the store", snap.images_ingested
    )
    yield _counter("flywheel_images_new", "Accepted images not in the parent version before", snap.images_new)
    yield _labelled(
        "flywheel_quarantine_reasons", "Quarantined files by reason code", "reason", snap.quarantine_reasons
    )
    yield _gauge(
        "flywheel_last_batch_timestamp_seconds",
        "When the newest batch was received (Unix time)",
        snap.last_batch_at.timestamp() if snap.last_batch_at else None,
    )
    yield _gauge(
        "flywheel_images_waiting",
        "New images in versions no training has been tried on yet",
        snap.images_waiting,
    )


def _dataset(snap: Snapshot) -> Iterator[Metric]:
    latest = snap.latest_version
    yield _gauge("flywheel_dataset_version", "Id of the newest dataset version (0: none)", latest.id if latest else 0)
    yield _counter("flywheel_dataset_versions", "Dataset versions made", snap.versions)
    images = GaugeMetricFamily("flywheel_dataset_images", "Images in the newest version", labels=["split"])
    boxes = GaugeMetricFamily("flywheel_dataset_boxes", "Boxes in the newest version", labels=["split"])
    if latest is not None:
        images.add_metric(["train"], latest.train_images)
        images.add_metric(["val"], latest.val_images)
        for split in ("train", "val"):
            boxes.add_metric([split], snap.boxes_by_split.get(split, 0))
    yield images
    yield boxes
    yield _gauge(
        "flywheel_dataset_classes", "Classes in the project's class map", len(latest.class_names) if latest else 0
    )


def _training(snap: Snapshot) -> Iterator[Metric]:
    yield _labelled(
        "flywheel_training_runs",
        "Finished training runs by outcome",
        "outcome",
        {k: v for k, v in snap.runs.items() if k in {o.value for o in RUN_OUTCOMES}},
        [o.value for o in RUN_OUTCOMES],
    )
    yield _labelled("flywheel_training_starts", "Training runs by start kind", "kind", snap.starts, START_KINDS)
    yield _gauge(
        "flywheel_training_consecutive_failures",
        "Failed training runs since the last one that succeeded",
        snap.consecutive_failures,
    )


def _models(snap: Snapshot) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "flywheel_gate_decisions", "Gate decisions by outcome and rule", labels=["outcome", "rule"]
    )
    for (outcome, rule), n in sorted(snap.gate.items()):
        decisions.add_metric([outcome, rule], n)
    yield decisions
    yield _counter("flywheel_promotions", "Models promoted to production", snap.ledger.get("promote", 0))
    yield _counter("flywheel_rollbacks", "Rollbacks of production", snap.ledger.get("rollback", 0))
    rejections = sum(n for (outcome, _), n in snap.gate.items() if outcome == "reject")
    yield _counter("flywheel_rejections", "Candidates rejected by the gate", rejections)
    last = snap.last_decision
    yield _gauge(
        "flywheel_gate_margin",
        "Last gate decision's candidate - production mAP50-95 (positive: the candidate is better)",
        last.margin if last is not None else None,
    )
    forgetting = GaugeMetricFamily(
        "flywheel_gate_forgetting",
        "The last gated candidate's drop from production (positive: it got worse) on the same data: "
        "old_images_map_drop, mAP50-95 on the val images the parent version had (forgetting); "
        "new_images_map_drop, on the new ones; max_class_ap_drop, the largest drop of a class's AP50-95",
        labels=["measure"],
    )
    for measure, drop in sorted(snap.forgetting.items()):
        forgetting.add_metric([measure], drop)
    yield forgetting

    score = GaugeMetricFamily(
        "flywheel_model_score",
        "Scores of the production model (on the newest eval set it was scored on) and of the last "
        "candidate (on its version's val split)",
        labels=["role", "metric"],
    )
    class_ap = GaugeMetricFamily(
        "flywheel_model_class_ap", "AP50-95 per class, as flywheel_model_score", labels=["role", "class"]
    )
    eval_version = GaugeMetricFamily(
        "flywheel_model_score_version", "Dataset version whose val split the scores are on", labels=["role"]
    )
    for role, scores in (("production", snap.production_score), ("candidate", snap.candidate_score)):
        if scores is None:
            continue
        _add_scores(score, class_ap, role, scores)
        eval_version.add_metric([role], scores.version_id)
    yield score
    yield class_ap
    yield eval_version

    production = snap.production
    info = InfoMetricFamily("flywheel_production_model", "The model in production")
    if production is not None and production.id is not None:
        info.add_metric(
            [],
            {
                "id": model_name(production.id),
                "version": version_name(production.version_id),
                "sha256": production.sha256[:12],
            },
        )
    yield info
    yield _gauge(
        "flywheel_production_model_id", "Id of the model in production (0: none)", production.id if production else 0
    )
    yield _gauge(
        "flywheel_production_since_timestamp_seconds",
        "When the production model became production (Unix time)",
        production.promoted_at.timestamp() if production is not None and production.promoted_at else None,
    )
    yield _gauge(
        "flywheel_last_promotion_timestamp_seconds",
        "When a model was last promoted (Unix time)",
        snap.last_promotion_at.timestamp() if snap.last_promotion_at else None,
    )
    yield _gauge(
        "flywheel_production_pinned", "1 while production is pinned (promotions held), else 0", int(snap.pinned)
    )
    yield _gauge(
        "flywheel_candidate_model_id",
        "Id of the newest model (the last candidate; 0: none)",
        snap.candidate.id if snap.candidate and snap.candidate.id else 0,
    )


def _add_scores(score: GaugeMetricFamily, class_ap: GaugeMetricFamily, role: str, scores: Scores) -> None:
    for metric in SCORE_METRICS:
        score.add_metric([role, metric], getattr(scores, metric))
    for name, ap in sorted(scores.per_class.items()):
        class_ap.add_metric([role, name], ap)


def _latency(latencies: list[Latency]) -> Iterator[Metric]:
    """The flywheel's headline number: a batch's arrival to the gate's decision on a model that
    learnt from it. A histogram computed from the records, so it survives restarts."""
    family = HistogramMetricFamily(
        "flywheel_batch_to_decision_seconds",
        "From a batch's arrival to the promotion or rejection of the first model trained on it",
        labels=["outcome"],
    )
    for outcome in ("promote", "reject"):
        values = [x.seconds for x in latencies if x.outcome == outcome]
        buckets = [(str(float(b)), sum(1 for v in values if v <= b)) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", len(values)))
        family.add_metric([outcome], buckets, sum_value=sum(values))
    yield family
    newest = max(latencies, key=lambda x: (x.decided_at, x.batch_id), default=None)
    yield _gauge(
        "flywheel_last_batch_to_decision_seconds",
        "Latency of the newest batch a gate decision has covered",
        newest.seconds if newest else None,
    )


def build_registry(
    store: Store, objects: ObjectStore | None = None, data_root: Path | None = None
) -> tuple[CollectorRegistry, LiveMetrics]:
    """A fresh registry with flywheel's metrics and the default process, platform and GC ones.

    `objects` (the object store) enables per-class dataset counts, `data_root` the disk gauges."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    live = LiveMetrics(registry, store)
    registry.register(StateCollector(store, objects, data_root))
    return registry, live

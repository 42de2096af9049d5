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
import platform
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from flywheel import __version__
from flywheel.core.domain import RunState, StartKind
from flywheel.core.errors import FlywheelError
from flywheel.core.events import BatchProgress, EpochEnded, Placed, TrainingEvent
from flywheel.service.metrics_families import RUN_OUTCOMES, SCORE_METRICS, START_KINDS
from flywheel.service.metrics_screen import ScreenCollector
from flywheel.service.metrics_state import StateCollector
from flywheel.store import ObjectStore, Store

log = logging.getLogger(__name__)

_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
# batch arrival -> gate decision: from a tiny CPU training (tens of seconds) to a week
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
        self.retries = Counter(
            "flywheel_daemon_retries_total",
            "Work-loop steps that failed for an outside reason and were retried after a pause, by reason "
            "(storage: disk or database away; executor: cluster unreachable; integrity: production damaged)",
            ["reason"],
            registry=registry,
        )
        for reason in ("storage", "executor", "integrity"):
            self.retries.labels(reason)  # 0 from the start: rate() sees the first retry
        self.executor_up = Gauge(
            "flywheel_executor_up",
            "1 while the place trainings run (training.executor) takes them, 0 while it cannot be reached; "
            "/readyz says why",
            ["executor"],
            registry=registry,
        )
        self.placement = Info(
            "flywheel_training_placement",
            "Where the running (or last) training runs: executor, node, and the Ray job or local pid",
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

    def training_started(self, run_id: int, start_kind: StartKind, epochs: int) -> None:
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
        elif isinstance(event, Placed):
            self.placement.info({"executor": event.executor, "node": event.node, "submission_id": event.submission_id})
        elif isinstance(event, BatchProgress) and event.batches:
            self.batch_progress.set(event.batch / event.batches)

    def training_finished(self, outcome: RunState, seconds: float) -> None:
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
    registry.register(ScreenCollector(store))
    return registry, live

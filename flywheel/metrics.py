"""Prometheus metrics on an injected registry.

Two kinds. Facts that live in the database (counts of batches, versions, runs, promotions,
rollbacks; the production model) are read from it at scrape time by `StateCollector`, so
they are right whichever process made the change (the daemon or a CLI `rollback`) and they
survive restarts. What only the daemon sees as it happens (the running training's epoch,
losses and mAP, durations) is kept in live instruments by `LiveMetrics`, the `Observer`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from flywheel import __version__
from flywheel.domain import ModelStatus, RunState, model_name, version_name
from flywheel.errors import StoreError
from flywheel.ports import Event
from flywheel.store import Store
from flywheel.training.spec import EPOCH, PROGRESS

log = logging.getLogger("flywheel.metrics")

_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry):
        Info("flywheel_build", "flywheel's version", registry=registry).info({"version": __version__})
        self.batch_seconds = Histogram(
            "flywheel_batch_processing_seconds",
            "Time to ingest one batch",
            registry=registry,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.running = Gauge("flywheel_training_running", "1 while a training runs", registry=registry)
        self.epoch = Gauge("flywheel_training_epoch", "Epochs done by the running training", registry=registry)
        self.epochs = Gauge("flywheel_training_epochs", "Epochs planned for the running training", registry=registry)
        self.loss = Gauge("flywheel_training_loss", "Last epoch's train loss", ["kind"], registry=registry)
        self.val = Gauge("flywheel_training_val", "Last epoch's validation metric", ["metric"], registry=registry)
        self.epoch_seconds = Gauge("flywheel_training_epoch_seconds", "Last epoch's duration", registry=registry)
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

    # --- Observer -------------------------------------------------------------------------
    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None:
        self.batch_seconds.observe(seconds)

    def training_started(self, run_id: int, start_kind: str, epochs: int) -> None:
        self.running.set(1)
        self.epoch.set(0)
        self.epochs.set(epochs)

    def training_event(self, event: Event) -> None:
        if event["event"] == EPOCH:
            self.epoch.set(event["epoch"])
            for kind in ("box", "cls", "dfl"):
                self.loss.labels(kind).set(event[f"{kind}_loss"])
            for metric in ("precision", "recall", "map50", "map50_95"):
                self.val.labels(metric).set(event[metric])
            self.epoch_seconds.set(event["seconds"])
        elif event["event"] == PROGRESS and event.get("batches"):
            self.batch_progress.set(event["batch"] / event["batches"])

    def training_finished(self, outcome: str, seconds: float) -> None:
        self.running.set(0)
        self.duration.labels(outcome).observe(seconds)


class StateCollector(Collector):
    """Reads the database at each scrape (a handful of small queries)."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        try:
            yield from self._collect()
        except StoreError as exc:  # keep /metrics alive: the live metrics still matter
            log.warning("database metrics skipped this scrape: %s", exc)

    def _collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        counts = self.store.counts()
        yield CounterMetricFamily(
            "flywheel_images_ingested", "Images accepted into the store", value=counts["images_ingested"]
        )
        yield CounterMetricFamily(
            "flywheel_files_quarantined", "Files moved to quarantine", value=counts["images_quarantined"]
        )
        batches = CounterMetricFamily("flywheel_batches", "Batches by final state", labels=["state"])
        for state in ("ingested", "rejected"):
            batches.add_metric([state], counts["batches"].get(state, 0))
        yield batches
        runs = CounterMetricFamily("flywheel_training_runs", "Training runs by outcome", labels=["outcome"])
        for state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED):
            runs.add_metric([state.value], counts["runs"].get(state, 0))
        yield runs
        yield CounterMetricFamily(
            "flywheel_promotions", "Models promoted to production", value=counts["ledger"].get("promote", 0)
        )
        yield CounterMetricFamily(
            "flywheel_rollbacks", "Rollbacks of production", value=counts["ledger"].get("rollback", 0)
        )
        yield CounterMetricFamily(
            "flywheel_rejections", "Candidates rejected by the gate", value=counts["gate"].get("reject", 0)
        )

        latest = self.store.latest_version()
        versions = GaugeMetricFamily("flywheel_dataset_version", "Id of the newest dataset version (0: none)")
        versions.add_metric([], latest.id if latest and latest.id else 0)
        yield versions
        images = GaugeMetricFamily("flywheel_dataset_images", "Images in the newest version", labels=["split"])
        boxes = GaugeMetricFamily("flywheel_dataset_boxes", "Boxes in the newest version")
        if latest is not None:
            images.add_metric(["train"], latest.train_images)
            images.add_metric(["val"], latest.val_images)
            boxes.add_metric([], latest.boxes)
        yield images
        yield boxes

        score = GaugeMetricFamily(
            "flywheel_model_score", "A model's score on its own version's val split", labels=["role", "metric"]
        )
        info = InfoMetricFamily("flywheel_production_model", "The model in production")
        models = self.store.models()
        production = next((m for m in models if m.status == ModelStatus.PRODUCTION), None)
        for role, model in (("production", production), ("candidate", models[-1] if models else None)):
            if model is None:
                continue
            version = self.store.version(model.version_id)
            row = self.store.evaluation(model.sha256, version.val_sha256)
            if row is not None:
                for metric in ("map50_95", "map50", "precision", "recall"):
                    score.add_metric([role, metric], getattr(row, metric))
        if production is not None:
            info.add_metric(
                [],
                {
                    "id": model_name(production.id or 0),
                    "version": version_name(production.version_id),
                    "sha256": production.sha256[:12],
                },
            )
        yield score
        yield info
        decisions = self.store.gate_decisions()
        margin = GaugeMetricFamily("flywheel_gate_margin", "Last gate decision's candidate - production mAP50-95")
        if decisions and decisions[-1].margin is not None:
            margin.add_metric([], decisions[-1].margin)
        yield margin


def build_registry(store: Store) -> tuple[CollectorRegistry, LiveMetrics]:
    registry = CollectorRegistry()
    live = LiveMetrics(registry)
    registry.register(StateCollector(store))
    return registry, live

"""A database snapshot (flywheel.store.stats.Snapshot) as Prometheus metric families: inbox,
dataset, training, models and latency. Pure functions of the snapshot."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from flywheel.core.domain import RunState, model_name, version_name
from flywheel.core.gate import Score
from flywheel.store.stats import Latency, Snapshot

LATENCY_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800)
RUN_OUTCOMES = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.INTERRUPTED)
START_KINDS = ("scratch", "warm", "challenger")
SCORE_METRICS = ("map50_95", "map50", "precision", "recall")


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    """A gauge with one sample, or none while the value is unknown."""
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


def labelled(name: str, doc: str, label: str, values: dict[str, int], keys: Sequence[str] = ()) -> CounterMetricFamily:
    """A counter by one label; `keys` are always exported (0 until seen), others as they come."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in dict.fromkeys([*keys, *sorted(values)]):
        family.add_metric([key], values.get(key, 0))
    return family


def inbox_families(snap: Snapshot) -> Iterator[Metric]:
    final = {k: v for k, v in snap.batches.items() if k in ("ingested", "rejected")}
    yield labelled("flywheel_batches", "Batches by final state", "state", final, ("ingested", "rejected"))
    yield counter("flywheel_batches_received", "Batches seen complete in the inbox", snap.batches_received)
    yield counter("flywheel_files_received", "Files in the batches received", snap.files_received)
    yield labelled(
        "flywheel_files",
        "Files of ingested batches by where they went: versioned, quarantined or ignored",
        "outcome",
        snap.files,
        ("versioned", "quarantined", "ignored"),
    )
    yield counter(
        "flywheel_images_ingested", "Images (with their labels) accepted into the store", snap.images_ingested
    )
    yield counter("flywheel_images_new", "Accepted images not in the parent version before", snap.images_new)
    yield labelled("flywheel_quarantine_reasons", "Quarantined files by reason code", "reason", snap.quarantine_reasons)
    yield gauge(
        "flywheel_last_batch_timestamp_seconds",
        "When the newest batch was received (Unix time)",
        snap.last_batch_at.timestamp() if snap.last_batch_at else None,
    )
    yield gauge(
        "flywheel_images_waiting",
        "New images in versions no training has been tried on yet",
        snap.images_waiting,
    )


def dataset_families(snap: Snapshot) -> Iterator[Metric]:
    latest = snap.latest_version
    yield gauge("flywheel_dataset_version", "Id of the newest dataset version (0: none)", latest.id if latest else 0)
    yield counter("flywheel_dataset_versions", "Dataset versions made", snap.versions)
    images = GaugeMetricFamily("flywheel_dataset_images", "Images in the newest version", labels=["split"])
    boxes = GaugeMetricFamily("flywheel_dataset_boxes", "Boxes in the newest version", labels=["split"])
    if latest is not None:
        images.add_metric(["train"], latest.train_images)
        images.add_metric(["val"], latest.val_images)
        for split in ("train", "val"):
            boxes.add_metric([split], snap.boxes_by_split.get(split, 0))
    yield images
    yield boxes
    yield gauge(
        "flywheel_dataset_classes", "Classes in the project's class map", len(latest.class_names) if latest else 0
    )


def training_families(snap: Snapshot) -> Iterator[Metric]:
    yield labelled(
        "flywheel_training_runs",
        "Finished training runs by outcome",
        "outcome",
        {k: v for k, v in snap.runs.items() if k in {o.value for o in RUN_OUTCOMES}},
        [o.value for o in RUN_OUTCOMES],
    )
    yield labelled("flywheel_training_starts", "Training runs by start kind", "kind", snap.starts, START_KINDS)
    yield gauge(
        "flywheel_training_consecutive_failures",
        "Failed training runs since the last one that succeeded",
        snap.consecutive_failures,
    )


def model_families(snap: Snapshot) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "flywheel_gate_decisions", "Gate decisions by outcome and rule", labels=["outcome", "rule"]
    )
    for (outcome, rule), n in sorted(snap.gate.items()):
        decisions.add_metric([outcome, rule], n)
    yield decisions
    yield counter("flywheel_promotions", "Models promoted to production", snap.ledger.get("promote", 0))
    yield counter("flywheel_rollbacks", "Rollbacks of production", snap.ledger.get("rollback", 0))
    yield counter(
        "flywheel_export_failures",
        "Promotions held because an export failed or missed parity with its .pt (ledger export_failed)",
        snap.ledger.get("export_failed", 0),
    )
    rejections = sum(n for (outcome, _), n in snap.gate.items() if outcome == "reject")
    yield counter("flywheel_rejections", "Candidates rejected by the gate", rejections)
    last = snap.last_decision
    yield gauge(
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
        _add_scores(score, class_ap, role, scores.score)
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
    yield gauge(
        "flywheel_production_model_id", "Id of the model in production (0: none)", production.id if production else 0
    )
    yield gauge(
        "flywheel_production_since_timestamp_seconds",
        "When the production model became production (Unix time)",
        production.promoted_at.timestamp() if production is not None and production.promoted_at else None,
    )
    yield gauge(
        "flywheel_last_promotion_timestamp_seconds",
        "When a model was last promoted (Unix time)",
        snap.last_promotion_at.timestamp() if snap.last_promotion_at else None,
    )
    yield gauge(
        "flywheel_production_pinned", "1 while production is pinned (promotions held), else 0", int(snap.pinned)
    )
    yield gauge(
        "flywheel_candidate_model_id",
        "Id of the newest model (the last candidate; 0: none)",
        snap.candidate.id if snap.candidate and snap.candidate.id else 0,
    )


def artifact_families(described: dict[str, Any]) -> Iterator[Metric]:
    """The production model's exports, from production/model.json (flywheel/flow/exports.py)."""
    score = GaugeMetricFamily(
        "flywheel_production_artifact_map50_95",
        "mAP50-95 on val of each format published in production/ (format=pt: the checkpoint)",
        labels=["format"],
    )
    latency = GaugeMetricFamily(
        "flywheel_production_artifact_latency_seconds",
        "Latency per image of each published format as measured at promotion (forward + NMS)",
        labels=["format", "batch", "quantile"],
    )
    for fmt, record in sorted(described.get("artifacts", {}).items()):
        if record.get("map50_95") is not None:
            score.add_metric([fmt], record["map50_95"])
        for key, ms in sorted(record.get("latency_ms", {}).items()):
            batch, _, quantile = key.removeprefix("batch").partition("_p")
            latency.add_metric([fmt, batch, f"0.{quantile}"], ms / 1000)
    yield score
    yield latency


def _add_scores(score: GaugeMetricFamily, class_ap: GaugeMetricFamily, role: str, scores: Score) -> None:
    for metric in SCORE_METRICS:
        score.add_metric([role, metric], getattr(scores, metric))
    for name, ap in sorted(scores.per_class.items()):
        class_ap.add_metric([role, name], ap)


def latency_families(latencies: list[Latency]) -> Iterator[Metric]:
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
    yield gauge(
        "flywheel_last_batch_to_decision_seconds",
        "Latency of the newest batch a gate decision has covered",
        newest.seconds if newest else None,
    )

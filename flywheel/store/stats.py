"""Read-only aggregates for the metrics exporter, read at scrape time.

`snapshot` reads everything a scrape needs in one transaction (one consistent view and one
short lock, not a dozen), with aggregate queries that cost the same however long the
daemon has run, except for the small per-row reads noted below. Nothing here writes. Over 300
lines on purpose: the snapshot is one transaction, and its queries are read together.

Per-class dataset counts need the label files. They are read from the object store once per
label (labels are content-addressed, so a label's counts never change) and once per version
(versions are immutable), so a scrape after a new version reads only that version's new
labels, and every other scrape reads none.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from flywheel.core.domain import RunState
from flywheel.core.gate_details import GateDetails
from flywheel.core.records import Evaluation
from flywheel.store.convert import evaluation_record
from flywheel.store.db import session
from flywheel.store.objects import ObjectStore
from flywheel.store.repo import Store
from flywheel.store.tables import (
    BatchRow,
    EvaluationRow,
    GateRow,
    LedgerRow,
    ModelRow,
    RunRow,
    VersionRow,
    as_utc,
)

log = logging.getLogger(__name__)

# Quarantined files of a batch recorded without reason codes (BatchRow.quarantine_reasons, a
# count per code of flywheel.ingest.reasons.Code) are counted under this one.
UNCLASSIFIED = "unclassified"


@dataclass(frozen=True)
class Latency:
    """A batch's arrival to the first gate decision on a model trained on data including it."""

    batch_id: int
    outcome: str  # the decision's: promote | reject
    seconds: float
    decided_at: datetime


@dataclass
class Snapshot:
    # inbox
    batches_received: int = 0
    batches: dict[str, int] = field(default_factory=dict)  # by state
    files_received: int = 0
    files: dict[str, int] = field(default_factory=dict)  # versioned | quarantined | ignored
    images_ingested: int = 0
    images_new: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    last_batch_at: datetime | None = None
    images_waiting: int = 0
    # dataset
    latest_version: VersionRow | None = None
    versions: int = 0
    boxes_by_split: dict[str, int] = field(default_factory=dict)
    # training
    runs: dict[str, int] = field(default_factory=dict)  # by state
    starts: dict[str, int] = field(default_factory=dict)  # by start kind
    consecutive_failures: int = 0
    # models, gate, production
    gate: dict[tuple[str, str], int] = field(default_factory=dict)  # (outcome, rule) -> count
    ledger: dict[str, int] = field(default_factory=dict)  # by action
    last_decision: GateRow | None = None
    # the last gate decision's forgetting measures (production - candidate), by measure
    forgetting: dict[str, float] = field(default_factory=dict)
    production: ModelRow | None = None
    production_score: Evaluation | None = None
    candidate: ModelRow | None = None
    candidate_score: Evaluation | None = None
    last_promotion_at: datetime | None = None
    pinned: bool = False
    latencies: list[Latency] = field(default_factory=list)


def snapshot(store: Store) -> Snapshot:
    """Everything the state metrics need, in one read transaction."""
    snap = Snapshot()
    with session(store.engine, consistent=True) as s:
        _inbox(s, snap)
        _dataset(s, snap)
        _training(s, snap)
        _models(s, snap)
        snap.latencies = _latencies(s)
    return snap


def _grouped(s: Session, column: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in s.exec(select(column, func.count()).group_by(column))}


def _inbox(s: Session, snap: Snapshot) -> None:
    snap.batches = _grouped(s, BatchRow.state)
    snap.batches_received = sum(snap.batches.values())
    files = s.exec(
        select(
            func.coalesce(func.sum(BatchRow.files), 0),
            func.coalesce(func.sum(BatchRow.files_versioned), 0),
            func.coalesce(func.sum(BatchRow.quarantined), 0),
            func.coalesce(func.sum(BatchRow.ignored), 0),
        )
    ).one()
    snap.files_received = int(files[0])
    snap.files = {"versioned": int(files[1]), "quarantined": int(files[2]), "ignored": int(files[3])}
    images_ok, images_new, last = s.exec(
        select(
            func.coalesce(func.sum(BatchRow.images_ok), 0),
            func.coalesce(func.sum(BatchRow.images_new), 0),
            func.max(BatchRow.received_at),
        )
    ).one()
    snap.images_ingested = int(images_ok)
    snap.images_new = int(images_new)
    snap.last_batch_at = as_utc(last) if last is not None else None
    snap.quarantine_reasons = _quarantine_reasons(s, snap.files["quarantined"])
    # Images waiting: new images of the versions no training has been tried on yet.
    trained = s.exec(select(func.max(RunRow.version_id))).one()
    waiting = select(func.coalesce(func.sum(BatchRow.images_new), 0)).where(col(BatchRow.version_id).is_not(None))
    if trained is not None:
        waiting = waiting.where(col(BatchRow.version_id) > trained)
    snap.images_waiting = int(s.exec(waiting).one())


def _quarantine_reasons(s: Session, quarantined: int) -> dict[str, int]:
    """Quarantined files by reason code, summed over the batches (a few small JSON objects)."""
    reasons: Counter[str] = Counter()
    coded = 0
    rows = s.exec(select(BatchRow.quarantine_reasons, BatchRow.quarantined).where(BatchRow.quarantined > 0))
    for per_batch, files in rows:
        if per_batch:
            reasons.update({str(k): int(v) for k, v in dict(per_batch).items()})
            coded += int(files)
    uncoded = quarantined - coded  # batches from before the codes were recorded
    if uncoded > 0:
        reasons[UNCLASSIFIED] += uncoded
    return dict(reasons)


def _dataset(s: Session, snap: Snapshot) -> None:
    latest = s.exec(select(VersionRow).order_by(col(VersionRow.id).desc())).first()
    snap.latest_version = latest
    snap.versions = int(s.exec(select(func.count()).select_from(VersionRow)).one())
    if latest is not None:
        snap.boxes_by_split = {"train": latest.boxes - latest.val_boxes, "val": latest.val_boxes}


def _training(s: Session, snap: Snapshot) -> None:
    snap.runs = _grouped(s, RunRow.state)
    snap.starts = _grouped(s, RunRow.start_kind)
    last_ok = s.exec(select(func.max(RunRow.id)).where(RunRow.state == RunState.SUCCEEDED)).one()
    failed = select(func.count()).select_from(RunRow).where(RunRow.state == RunState.FAILED)
    if last_ok is not None:
        failed = failed.where(col(RunRow.id) > last_ok)
    snap.consecutive_failures = int(s.exec(failed).one())


def _models(s: Session, snap: Snapshot) -> None:
    snap.gate = {
        (str(o), str(r)): int(n)
        for o, r, n in s.exec(
            select(GateRow.outcome, GateRow.rule, func.count()).group_by(GateRow.outcome, GateRow.rule)
        )
    }
    snap.ledger = _grouped(s, LedgerRow.action)
    last_promotion = s.exec(select(func.max(LedgerRow.at)).where(LedgerRow.action == "promote")).one()
    snap.last_promotion_at = as_utc(last_promotion) if last_promotion is not None else None
    pin = s.exec(
        select(LedgerRow.action).where(col(LedgerRow.action).in_(["pin", "unpin"])).order_by(col(LedgerRow.id).desc())
    ).first()
    snap.pinned = pin == "pin"

    production = s.exec(select(ModelRow).where(ModelRow.status == "production")).first()
    snap.production = production
    if production is not None:  # its score on the newest version's val split it was scored on
        row = s.exec(
            select(EvaluationRow)
            .join(VersionRow, col(VersionRow.val_sha256) == col(EvaluationRow.eval_sha256))
            .where(EvaluationRow.model_sha256 == production.sha256)
            .order_by(col(VersionRow.id).desc())
        ).first()
        snap.production_score = evaluation_record(row)
    candidate = s.exec(select(ModelRow).order_by(col(ModelRow.id).desc())).first()
    snap.candidate = candidate
    if candidate is not None:  # its score on its own version's val split, as the gate saw it
        version = s.get(VersionRow, candidate.version_id)
        if version is not None:
            snap.candidate_score = evaluation_record(s.get(EvaluationRow, (candidate.sha256, version.val_sha256)))

    last = s.exec(select(GateRow).order_by(col(GateRow.id).desc())).first()
    snap.last_decision = last
    if last is not None and last.production_model_id is not None:
        snap.forgetting = dict(_subset_drops(GateDetails.from_json(last.details)))
        cand = s.get(ModelRow, last.candidate_model_id)
        prod = s.get(ModelRow, last.production_model_id)
        if cand is not None and prod is not None:
            c = s.get(EvaluationRow, (cand.sha256, last.eval_sha256))
            p = s.get(EvaluationRow, (prod.sha256, last.eval_sha256))
            drop = forgetting(p.per_class, c.per_class) if c is not None and p is not None else None
            if drop is not None:
                snap.forgetting["max_class_ap_drop"] = drop


def _subset_drops(details: GateDetails) -> Iterator[tuple[str, float]]:
    """The gate's own forgetting figures: mAP50-95 drop from production to candidate on the val
    images the parent version already had (`val_old`) and on the new ones (`val_new`)."""
    for eval_set, measure in (("val_old", "old_images_map_drop"), ("val_new", "new_images_map_drop")):
        if eval_set in details.forgetting:
            yield measure, details.forgetting[eval_set].drop


def forgetting(production: Mapping[str, float], candidate: Mapping[str, float]) -> float | None:
    """The largest drop of a class's AP50-95 from production to candidate on the same eval set
    (positive: the candidate forgot something production knew; a class the candidate no longer
    detects at all counts as AP 0). None when production has no per-class scores."""
    if not production:
        return None
    return max(ap - candidate.get(name, 0.0) for name, ap in production.items())


def _latencies(s: Session) -> list[Latency]:
    batches = list(
        s.exec(
            select(BatchRow.id, BatchRow.received_at, BatchRow.version_id)
            .where(col(BatchRow.version_id).is_not(None))
            .order_by(col(BatchRow.id))
        )
    )
    decisions = list(
        s.exec(select(GateRow.version_id, GateRow.created_at, GateRow.outcome).order_by(col(GateRow.created_at)))
    )
    return batch_latencies(
        [(int(b), as_utc(t), int(v)) for b, t, v in batches if b is not None and v is not None],
        [(int(v), as_utc(t), str(o)) for v, t, o in decisions],
    )


def batch_latencies(
    batches: Iterable[tuple[int, datetime, int]], decisions: Iterable[tuple[int, datetime, str]]
) -> list[Latency]:
    """For each (batch id, received at, version id), the first decision, in time, on a version
    at least as new (versions are cumulative: a model of version n has seen every batch up to
    n). `decisions` are (version id, decided at, outcome) in time order. Batches no decision
    has covered yet are left out."""
    decided = list(decisions)
    # running maximum of the version id over the decisions in time order: non-decreasing, so
    # the first decision covering version v is found by bisection
    reach: list[int] = []
    for version_id, _, _ in decided:
        reach.append(max(version_id, reach[-1] if reach else version_id))
    out = []
    for batch_id, received_at, version_id in batches:
        i = bisect.bisect_left(reach, version_id)
        if i < len(decided):
            _, at, outcome = decided[i]
            out.append(Latency(batch_id, outcome, max(0.0, (at - received_at).total_seconds()), at))
    return out


class ClassCounts:
    """Images and boxes per class and split of a dataset version, from its label objects.

    Thread-safe; caches per label sha (a label's content never changes) and per version (a
    version never changes). Normalised labels hold one `class cx cy w h` line per box."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._labels: dict[str, Counter[int]] = {}
        self._versions: dict[int, tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]] = {}
        self._lock = threading.Lock()

    def of_version(
        self, store: Store, version_id: int
    ) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]:
        """(images, boxes), each keyed by (class id, split)."""
        with self._lock:
            cached = self._versions.get(version_id)
            if cached is not None:
                return cached
            items = store.manifest(version_id).values()
            images: Counter[tuple[int, str]] = Counter()
            boxes: Counter[tuple[int, str]] = Counter()
            for item in items:
                split = item.split
                per_class = self._label(item.label_sha256)
                for class_id, n in per_class.items():
                    images[(class_id, split)] += 1
                    boxes[(class_id, split)] += n
            result = (dict(images), dict(boxes))
            self._versions = {version_id: result}  # only the newest is asked for: keep one
            return result

    def _label(self, sha: str) -> Counter[int]:
        counts = self._labels.get(sha)
        if counts is None:
            counts = Counter()
            for line in self.objects.path(sha).read_text().splitlines():
                fields = line.split()
                if fields:
                    counts[int(fields[0])] += 1
            self._labels[sha] = counts
        return counts

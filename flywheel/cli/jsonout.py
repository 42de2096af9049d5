"""`--json`: one JSON document on stdout for scripts, in a documented, stable shape per command
(docs/cli-json.md). Every document is an object whose `schema` key names its shape and its
version, `flywheel.<command>/<n>`: a field is only ever added within a version; renaming or
removing one makes the next version.

The records below are the store's (flywheel.core.records) as the tables show them: ids as
the names the CLI prints (m0003, v0002, r0007, b0001; null for none), counts and scores as
numbers, times as ISO 8601 in UTC (`2025-01-31T12:00:00Z`). Logs and progress bars stay on
stderr, so stdout holds the document and nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from flywheel.core.domain import batch_name, model_name, run_name, version_name
from flywheel.core.events import PLACEMENT
from flywheel.core.records import Batch, Evaluation, LedgerEntry, Model, Run, Version, as_utc

Json = dict[str, Any]

JsonFlag = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON document on stdout instead, for scripts (its shape: docs/cli-json.md)."
    ),
]


def document(command: str, data: Json, version: int = 1) -> Json:
    """The document for `command`: its `schema` key first, then the data."""
    return {"schema": f"flywheel.{command}/{version}", **data}


def emit(command: str, data: Json, version: int = 1) -> None:
    """Print the document on stdout (plain: no rich markup, no wrapping)."""
    sys.stdout.write(json.dumps(document(command, data, version), indent=2) + "\n")
    sys.stdout.flush()


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, to the second: `2025-01-31T12:00:00Z` (null for none)."""
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ref(name: Callable[[int], str], record_id: int | None) -> str | None:
    """`m0003` for a model id (with model_name), null for none."""
    return name(record_id) if record_id else None


def batch_json(b: Batch) -> Json:
    return {
        "id": batch_name(b.id),
        "name": b.name,
        "state": str(b.state),
        "format": b.format,
        "received_at": iso(b.received_at),
        "finished_at": iso(b.finished_at),
        "files": b.files,
        "accepted": b.images_ok,
        "new": b.images_new,
        "relabelled": b.images_relabelled,
        "quarantined": b.quarantined,
        "ignored": b.ignored,
        "quarantine_reasons": dict(b.quarantine_reasons),
        "version": ref(version_name, b.version_id),
        "reason": b.reason,
    }


def version_json(v: Version) -> Json:
    return {
        "id": version_name(v.id),
        "parent": ref(version_name, v.parent_id),
        "batch": ref(batch_name, v.batch_id),
        "created_at": iso(v.created_at),
        "train_images": v.train_images,
        "val_images": v.val_images,
        "boxes": v.boxes,
        "val_boxes": v.val_boxes,
        "new_images": v.images_new,
        "relabelled_images": v.images_relabelled,
        "classes": list(v.class_names),
        "manifest_sha256": v.manifest_sha256,
        "manifest_form": v.manifest_form,
        "val_sha256": v.val_sha256,
    }


def run_json(r: Run) -> Json:
    return {
        "id": run_name(r.id),
        "version": version_name(r.version_id),
        "state": str(r.state),
        "purpose": r.purpose,
        "start_kind": r.start_kind,
        "start_model": ref(model_name, r.start_model_id),
        "challenger_for": ref(run_name, r.challenger_for),
        "epochs": r.epochs,
        "epochs_done": r.epochs_done,
        "batch": r.batch,
        "batches": r.batches,
        "model": ref(model_name, r.model_id),
        "error": r.error,
        "placement": placement_json(r),
        "created_at": iso(r.created_at),
        "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at),
    }


def placement_json(r: Run) -> Json | None:
    """Where the run trained (its newest attempt): null for a run not placed yet (or recorded
    before flywheel said so)."""
    env = r.environment or {}
    if not env.get("executor"):
        return None
    return {k: str(env.get(k, "")) for k in PLACEMENT}


def score_json(e: Evaluation | None) -> Json | None:
    if e is None:
        return None
    return {
        "eval_sha256": e.eval_sha256,
        "map50_95": e.score.map50_95,
        "map50": e.score.map50,
        "precision": e.score.precision,
        "recall": e.score.recall,
        "per_class": dict(e.score.per_class),
    }


def model_json(m: Model, val_score: Evaluation | None) -> Json:
    """A model, with its score on its own version's val split (null when none is cached)."""
    return {
        "id": model_name(m.id),
        "status": str(m.status),
        "version": version_name(m.version_id),
        "run": run_name(m.run_id),
        "parent": ref(model_name, m.parent_model_id),
        "created_at": iso(m.created_at),
        "promoted_at": iso(m.promoted_at),
        "sha256": m.sha256,
        "classes": list(m.class_names),
        "val": score_json(val_score),
    }


def ledger_json(e: LedgerEntry) -> Json:
    return {
        "id": e.id,
        "at": iso(e.at),
        "action": str(e.action),
        "model": ref(model_name, e.model_id),
        "previous": ref(model_name, e.previous_model_id),
        "actor": e.actor,
        "reason": e.reason,
        "prev_hash": e.prev_hash,
        "entry_hash": e.entry_hash,
    }

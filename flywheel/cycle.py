"""One turn of the flywheel for a dataset version: train, evaluate, gate, promote or reject.

Plain functions over explicit arguments. The trainer and the observer are ports, so a unit
test can drive the policy with a fake trainer, and the daemon and `flywheel train` share
this one path with the real child process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.config import Config
from flywheel.domain import RunState, model_name, run_name, version_name
from flywheel.errors import FlywheelError, TrainingCancelled
from flywheel.evalsets import version_eval_sets
from flywheel.gate import GateDecision
from flywheel.ports import Event, Observer, Trainer
from flywheel.promotion import cached, gate_and_promote, score_of
from flywheel.registry import Registry
from flywheel.store import ObjectStore, Store
from flywheel.store.materialize import materialize
from flywheel.store.tables import EpochRow, ModelRow, RunRow
from flywheel.training.plan import build_spec, choose_start, resolve_params
from flywheel.training.spec import EPOCH, EVALUATED, TRAINED, WARM_START, EvalTarget

log = logging.getLogger("flywheel.cycle")


@dataclass(frozen=True)
class Workspace:
    data_root: Path
    objects: ObjectStore
    versions: Path
    runs: Path


@dataclass(frozen=True)
class CycleResult:
    run: RunRow
    model: ModelRow | None
    decision: GateDecision | None


def trainable(store: Store, version_id: int) -> str | None:
    """Why version `version_id` cannot be trained yet, or None if it can."""
    v = store.version(version_id)
    if v.train_images == 0 or v.val_images == 0:
        return (
            f"{version_name(version_id)} has {v.train_images} train and {v.val_images} val images; "
            "training needs at least one of each (the split is fixed by image hash), waiting for more data"
        )
    return None


def run_cycle(
    store: Store,
    registry: Registry,
    workspace: Workspace,
    config: Config,
    trainer: Trainer,
    observer: Observer,
    version_id: int,
) -> CycleResult:
    version = store.version(version_id)
    manifest = store.manifest(version_id)
    data_yaml = materialize(workspace.objects, workspace.versions, version_id, version.class_names, manifest)
    production = store.production()
    start = choose_start(
        config, workspace.data_root, (production.id or 0, registry.checkpoint(production)) if production else None
    )
    parent = store.manifest(version.parent_id) if version.parent_id else {}
    eval_sets = version_eval_sets(workspace.versions, version_id, version.class_names, manifest, parent)
    evaluate = [EvalTarget("candidate", "", e.name, str(e.data_yaml)) for e in eval_sets]
    if production is not None:  # production is re-scored only on sets it has no cached score for
        evaluate += [
            EvalTarget("production", start.checkpoint, e.name, str(e.data_yaml))
            for e in eval_sets
            if cached(store, production, e) is None
        ]
    params = resolve_params(config, start)
    run = store.create_run(
        version_id=version_id,
        start_kind=start.kind,
        start_model_id=start.model_id,
        start_checkpoint=start.checkpoint,
        epochs=params["epochs"],
        params=params,
    )
    assert run.id is not None
    out_dir = workspace.runs / run_name(run.id)
    spec = build_spec(run.id, data_yaml, out_dir, start, params, version.class_names, evaluate)
    store.update_run(run.id, RunState.RUNNING)
    log.info(
        "run %s started: %s on %s from %s, %d epochs",
        run_name(run.id),
        start.kind,
        version_name(version_id),
        model_name(start.model_id) if start.model_id else start.checkpoint,
        spec.epochs,
    )
    observer.training_started(run.id, start.kind, spec.epochs)
    started = time.monotonic()
    run_id = run.id

    def on_event(event: Event) -> None:
        observer.training_event(event)
        if event["event"] == EPOCH:
            fields = {
                k: event[k]
                for k in ("box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95", "seconds")
            }
            store.add_epoch(EpochRow(run_id=run_id, epoch=event["epoch"], **fields))
            store.update_run(run_id, epochs_done=event["epoch"])
            log.info(
                "run %s epoch %d/%d: mAP50-95 %.4f box_loss %.3f (%.1fs)",
                run_name(run_id),
                event["epoch"],
                event["epochs"],
                event["map50_95"],
                event["box_loss"],
                event["seconds"],
            )
        elif event["event"] == WARM_START:
            store.update_run(run_id, warm_tensors_matched=event["matched"], warm_tensors_total=event["total"])

    try:
        events = trainer.run(spec, on_event)
    except TrainingCancelled as exc:
        store.update_run(run.id, RunState.CANCELLED, error=str(exc))
        observer.training_finished("cancelled", time.monotonic() - started)
        raise
    except FlywheelError as exc:
        store.update_run(run.id, RunState.FAILED, error=str(exc))
        observer.training_finished("failed", time.monotonic() - started)
        raise
    best = Path(next(e["best"] for e in events if e["event"] == TRAINED))
    scores = {(e["role"], e.get("eval_set", "val")): score_of(e) for e in events if e["event"] == EVALUATED}
    candidate = registry.add_candidate(
        best, run.id, version_id, production.id if production else None, version.class_names
    )
    assert candidate.id is not None
    decision = gate_and_promote(store, registry, config, run.id, version_id, eval_sets, candidate, production, scores)
    run = store.update_run(run.id, RunState.SUCCEEDED, model_id=candidate.id)
    observer.training_finished("succeeded", time.monotonic() - started)
    return CycleResult(run, store.model(candidate.id), decision)

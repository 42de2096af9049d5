"""What the cycle records of a training's events as they arrive: epochs and progress in the
store, the child's environment (what reproducing the run needs), warm-start and plateau facts
in the run's record, and a log line for each that a person reads."""

from __future__ import annotations

import logging

from flywheel.core.domain import run_name
from flywheel.core.events import (
    PLACEMENT,
    BackboneUnfrozen,
    BatchProgress,
    ChildStarted,
    EpochEnded,
    Evaluated,
    Placed,
    PlateauReached,
    TrainingEvent,
    WarmStarted,
    placement_text,
)
from flywheel.core.faults import crash_point
from flywheel.core.ports import StorePort
from flywheel.core.records import Epoch
from flywheel.core.spec import TrainSpec

log = logging.getLogger(__name__)


def record_event(store: StorePort, spec: TrainSpec, event: TrainingEvent) -> None:
    run_id = spec.run_id
    if isinstance(event, EpochEnded):
        fields = {
            k: getattr(event, k)
            for k in ("box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95", "seconds")
        }
        store.add_epoch(Epoch(run_id=run_id, epoch=event.epoch, **fields))
        store.update_run(run_id, epochs_done=event.epoch)
        crash_point("train.epoch")
        log.info(
            "run %s epoch %d/%d: mAP50-95 %.4f box_loss %.3f (%.1fs)",
            run_name(run_id),
            event.epoch,
            event.epochs,
            event.map50_95,
            event.box_loss,
            event.seconds,
        )
    elif isinstance(event, WarmStarted):
        store.update_run(run_id, warm_tensors_matched=event.matched, warm_tensors_total=event.total)
        _note_head_rows(run_id, event)
    elif isinstance(event, Evaluated):
        crash_point("eval.scored")
    elif isinstance(event, BatchProgress):
        store.update_run(run_id, batch=event.batch, batches=event.batches)
    elif isinstance(event, ChildStarted):  # what reproducing the run needs, and which process ran it
        environment: dict[str, object] = {"versions": event.versions, "dataset_sha256": spec.dataset_sha256}
        environment |= {"replay_sha256": spec.replay_sha256, "pid": event.pid}
        environment |= {"resumed_from_epoch": event.resumed_from_epoch}
        placed = {k: v for k, v in store.run(run_id).environment.items() if k in PLACEMENT}  # it may come first
        store.update_run(run_id, environment=placed | environment)
    elif isinstance(event, Placed):
        placement = {"executor": event.executor, "node": event.node, "submission_id": event.submission_id}
        store.update_run(run_id, environment=store.run(run_id).environment | placement)
        log.info("run %s placed: %s", run_name(run_id), placement_text(placement))
    elif isinstance(event, PlateauReached):
        plateau = {"epoch": event.epoch, "best_epoch": event.best_epoch, "epochs": event.epochs}
        store.update_run(run_id, params=store.run(run_id).params | {"plateau": plateau})
        log.info(
            "run %s: val fitness flat since epoch %d; final LR decay to epoch %d",
            run_name(run_id),
            event.best_epoch,
            event.epochs,
        )
    elif isinstance(event, BackboneUnfrozen):
        log.info(
            "run %s epoch %d: backbone unfrozen (%d tensors); %d/%d frozen tensors unchanged in phase one",
            run_name(run_id),
            event.epoch,
            event.unfrozen,
            event.frozen_unchanged,
            event.frozen_total,
        )


def _note_head_rows(run_id: int, event: WarmStarted) -> None:
    kept, total = event.head_rows_kept, event.head_rows_total
    name, fixed = run_name(run_id), event.head_rows_fixed
    if total and kept != total:
        log.error("run %s: only %d/%d class-head rows equal the start model's", name, kept, total)
    elif fixed:
        log.warning("run %s: %d class-head rows were copied by name by flywheel, not Ultralytics", name, fixed)

"""What the cycle records of a training's events as they arrive: epochs and progress in the
store, the child's environment (what reproducing the run needs), warm-start and plateau facts
in the run's record, and a log line for each that a person reads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flywheel.core.domain import run_name
from flywheel.core.errors import IntegrityError, StoreError
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


class OutageBuffer:
    """Records a training's events, holding back those the database would not take (an outage,
    a restart) and writing them, in order, once it answers again: a training survives a
    database outage shorter than itself instead of being cut off at its first epoch. Progress
    events are coalesced while held (only the newest matters)."""

    def __init__(self, store: StorePort, spec: TrainSpec):
        self.store, self.spec = store, spec
        self.pending: list[TrainingEvent] = []

    def record(self, event: TrainingEvent) -> None:
        if self.pending and not self.flush():
            self._hold(event)
            return
        try:
            record_event(self.store, self.spec, event)
        except IntegrityError:
            raise
        except StoreError as exc:
            log.warning(
                "run %s: the database is away (%s); holding its events until it is back",
                run_name(self.spec.run_id),
                exc,
            )
            self._hold(event)

    def flush(self) -> bool:
        """Write what is held, oldest first; False (the rest still held) at the first refusal."""
        while self.pending:
            try:
                record_event(self.store, self.spec, self.pending[0])
            except IntegrityError:
                raise
            except StoreError:
                return False
            self.pending.pop(0)
        log.info("run %s: the database is back; held events written", run_name(self.spec.run_id))
        return True

    def drain(self, timeout: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """After the training: wait (up to `timeout` s, pauses doubling to 30 s) for the
        database to take what is held; the StoreError if it never does."""
        deadline, pause = time.monotonic() + timeout, 0.5
        while self.pending and not self.flush():
            if time.monotonic() + pause > deadline:
                record_event(self.store, self.spec, self.pending[0])  # raises the database's own error
            sleep(pause)
            pause = min(pause * 2, 30.0)

    def _hold(self, event: TrainingEvent) -> None:
        if isinstance(event, BatchProgress) and self.pending and isinstance(self.pending[-1], BatchProgress):
            self.pending[-1] = event
        else:
            self.pending.append(event)


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

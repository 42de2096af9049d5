"""The registry mirrored into an outside tracker (MLflow), behind the core's Tracker port.

The store and its ledger stay the truth. Each sync derives what the tracker should hold from
the store (flywheel.core.mirror.Wanted), compares it with what it is known to hold (the
MirrorStateStore's record) and makes the difference, oldest first, saving each step as it
lands. So a tracker that is down during a promotion only leaves the promotion pending: it is
never in the way (the registry calls `sync` after the change is committed and published), the
next sync catches up, and since every tracker call is keyed by flywheel's names nothing is made
twice, even with the record lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from flywheel.core.domain import ModelStatus, RunState, model_name, run_name, version_name
from flywheel.core.errors import MirrorUnavailable
from flywheel.core.mirror import (
    CANDIDATE_ALIAS,
    PRODUCTION_ALIAS,
    EpochPoint,
    MirrorStatus,
    RunReport,
    VersionReport,
    Wanted,
    flat_params,
    pending,
)
from flywheel.core.ports import MirrorStateStore, Objects, StorePort, Tracker
from flywheel.core.records import Epoch, GateRecord, Model, Run, as_utc

log = logging.getLogger(__name__)

FINISHED = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)  # the others may still change
EVER_PRODUCTION = (ModelStatus.PRODUCTION, ModelStatus.RETIRED)


def wanted(store: StorePort) -> Wanted:
    """What the tracker should hold: every finished run; every model that was ever production
    and the newest gated one; `production` on the production model, `candidate` on the newest
    gated one."""
    runs = tuple(run_name(r.id) for r in store.runs() if r.state in FINISHED)
    gates = store.gate_decisions()
    newest = gates[-1].candidate_model_id if gates else None
    models = tuple(
        (model_name(m.id), run_name(m.run_id))
        for m in store.models()
        if m.status in EVER_PRODUCTION or m.promoted_at is not None or m.id == newest
    )
    aliases = {CANDIDATE_ALIAS: model_name(newest)} if newest is not None else {}
    production = store.production()
    if production is not None:
        aliases[PRODUCTION_ALIAS] = model_name(production.id)
    return Wanted(runs=runs, models=models, aliases=aliases)


class StoreMirror:
    """The RegistryMirror port over a Tracker. `checkpoints`: the registry's model files (each
    model's `<sha>.pt`, and the exports beside it, go up with its run); `runs_dir`: the run
    folders (a run's train.log goes up too)."""

    def __init__(
        self,
        target: str,
        store: StorePort,
        tracker: Tracker,
        state: MirrorStateStore,
        checkpoints: Objects,
        runs_dir: Path,
        retry_seconds: float = 5.0,
        retry_max_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.target = target  # "mlflow", the metrics' label
        self.store, self.tracker, self.state = store, tracker, state
        self.checkpoints, self.runs_dir = checkpoints, runs_dir
        self.retry_seconds, self.retry_max_seconds, self.clock = retry_seconds, retry_max_seconds, clock
        self.failures = 0
        self._due = 0.0
        self._up: bool | None = None
        self._error = ""

    def status(self) -> MirrorStatus:
        return MirrorStatus(
            target=self.target,
            up=self._up,
            pending=pending(wanted(self.store), self.state.load()),
            error=self._error,
        )

    def sync(self, force: bool = False) -> MirrorStatus:
        if not force and self.clock() < self._due:
            return self.status()  # backing off after a failure: the next step tries again
        try:
            with self.state.hold():
                asked = self._sync()
        except MirrorUnavailable as exc:
            self.failures += 1
            pause = min(self.retry_max_seconds, self.retry_seconds * 2.0 ** (self.failures - 1))
            self._due = self.clock() + pause
            if self._up is not False or str(exc) != self._error:  # said once per change, not per retry
                log.warning("%s mirror: %s; retrying in %.0fs, what waits is kept", self.target, exc, pause)
            self._up, self._error = False, str(exc)
        else:
            if not asked:  # nothing waited: not asked now, but it holds everything, so it was reached
                self._up = True if self._up is False else self._up
                self.failures, self._due, self._error = 0, 0.0, ""
                return self.status()
            if self._up is False:
                log.info("%s mirror: reachable again, caught up", self.target)
            self.failures, self._due, self._up, self._error = 0, 0.0, True, ""
        return self.status()

    def _sync(self) -> bool:
        """Whether the tracker was asked (something waited)."""
        state = self.state.load()
        want = wanted(self.store)
        if not pending(want, state):
            return False
        runs = {run_name(r.id): r for r in self.store.runs()}
        for name in want.runs:
            if name not in state.runs:
                state.runs[name] = self.tracker.log_run(self.run_report(runs[name]))
                self.state.save(state)
        models = {model_name(m.id): m for m in self.store.models()}
        for name, run in want.models:
            if name not in state.versions and run in state.runs:  # its run first: the version's source
                state.versions[name] = self.tracker.register_version(self.version_report(models[name]), state.runs[run])
                self.state.save(state)
        for alias, model in sorted(want.aliases.items()):
            if state.aliases.get(alias) != model and model in state.versions:
                self.tracker.set_alias(alias, state.versions[model])
                state.aliases[alias] = model
                self.state.save(state)
        return True

    # --- what the tracker is told ---------------------------------------------------------
    def run_report(self, run: Run) -> RunReport:
        version = self.store.version(run.version_id)
        gate = next((g for g in reversed(self.store.gate_decisions()) if g.run_id == run.id), None)
        model = self.store.model(run.model_id) if run.model_id is not None else None
        started = run.started_at or run.created_at
        tags = {
            "flywheel.run_id": run_name(run.id),
            "flywheel.state": str(run.state),
            "flywheel.purpose": run.purpose,
            "flywheel.start": str(run.start_kind),
            "flywheel.dataset_version": version_name(run.version_id),
            "flywheel.manifest_sha256": version.manifest_sha256,
            "flywheel.val_sha256": version.val_sha256,
        }
        if model is not None:
            tags |= {"flywheel.model_id": model_name(model.id), "flywheel.model_sha256": model.sha256}
        if run.error:
            tags["flywheel.error"] = run.error[:5000]
        metrics: dict[str, float] = {}
        documents: dict[str, object] = {}
        texts: dict[str, str] = {}
        if gate is not None:
            tags |= {"flywheel.gate.outcome": str(gate.outcome), "flywheel.gate.rule": str(gate.rule)}
            metrics, documents, texts = _gate_record(gate)
        return RunReport(
            run=run_name(run.id),
            state=str(run.state),
            started_ms=_ms(started),
            ended_ms=_ms(run.finished_at or started),
            params=flat_params(run.params | {"start_checkpoint": run.start_checkpoint}),
            tags=tags,
            epochs=tuple(_epoch_point(e) for e in self.store.epochs(run.id)),
            metrics=metrics,
            documents=documents,
            texts=texts,
            files=self._files(run, model),
        )

    def version_report(self, model: Model) -> VersionReport:
        version = self.store.version(model.version_id)
        return VersionReport(
            model=model_name(model.id),
            run=run_name(model.run_id),
            tags={
                "flywheel.model_id": model_name(model.id),
                "flywheel.run_id": run_name(model.run_id),
                "flywheel.sha256": model.sha256,
                "flywheel.dataset_version": version_name(model.version_id),
                "flywheel.manifest_sha256": version.manifest_sha256,
                "flywheel.parent": model_name(model.parent_model_id) if model.parent_model_id else "",
            },
            description=f"flywheel {model_name(model.id)}: trained by {run_name(model.run_id)} "
            f"on {version_name(model.version_id)}",
        )

    def _files(self, run: Run, model: Model | None) -> dict[str, Path]:
        """The model's checkpoint and its exports (`<sha>.onnx`, ... beside it), and the run's
        log; what retention already removed is left out."""
        files: dict[str, Path] = {}
        if model is not None:
            checkpoint = self.checkpoints.path(model.sha256)
            for path in sorted(checkpoint.parent.glob(f"{model.sha256}.*")):
                if path.is_file() and not path.name.startswith("."):
                    files[f"model/model{path.suffix}"] = path
        log_file = self.runs_dir / run_name(run.id) / "train.log"
        if log_file.is_file():
            files["logs/train.log"] = log_file
        return files


def _gate_record(gate: GateRecord) -> tuple[dict[str, float], dict[str, object], dict[str, str]]:
    metrics = {"gate.candidate_map50_95": gate.candidate_map, "gate.tolerance": gate.tolerance}
    if gate.production_map is not None:
        metrics["gate.production_map50_95"] = gate.production_map
    if gate.margin is not None:
        metrics["gate.margin"] = gate.margin
    rows = ["eval_set,class,candidate,production,drop,instances,gated"]
    for verdict in gate.details.verdicts:
        metrics[f"eval.{verdict.eval_set}.map50_95"] = verdict.candidate.map50_95
        rows += [
            f"{verdict.eval_set},{c.name},{c.candidate},{c.production},{c.drop},{c.instances},{c.gated}"
            for c in verdict.classes
        ]
    decision = {
        "outcome": str(gate.outcome),
        "rule": str(gate.rule),
        "held": gate.held,
        "candidate": model_name(gate.candidate_model_id),
        "production": model_name(gate.production_model_id) if gate.production_model_id else None,
        "candidate_map50_95": gate.candidate_map,
        "production_map50_95": gate.production_map,
        "margin": gate.margin,
        "tolerance": gate.tolerance,
        "details": gate.details.to_json(),
    }
    return metrics, {"gate/decision.json": decision}, {"gate/per_class.csv": "\n".join(rows) + "\n"}


def _epoch_point(e: Epoch) -> EpochPoint:
    return EpochPoint(
        epoch=e.epoch,
        values={
            "train.box_loss": e.box_loss,
            "train.cls_loss": e.cls_loss,
            "train.dfl_loss": e.dfl_loss,
            "val.precision": e.precision,
            "val.recall": e.recall,
            "val.map50": e.map50,
            "val.map50_95": e.map50_95,
            "epoch_seconds": e.seconds,
        },
    )


def _ms(at: datetime) -> int:
    return int(as_utc(at).timestamp() * 1000)

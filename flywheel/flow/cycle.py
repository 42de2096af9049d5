"""One turn of the flywheel for a dataset version: train, evaluate, gate, promote or reject.

`run_cycle` reads top to bottom as the turn itself: what the run is scored on
(flow/scoring.py), where it starts and with what budget (flow/starts.py), the run recorded and
its spec written (`_open_run`), the training with its events recorded as they come
(flow/run_events.py), the candidate gated (flow/promotion.py), and the guard or refresh that may
train from model.base beside it (flow/guard.py). Every dependency comes in one FlowDeps; the
trainer and the observer are ports, so a unit test drives all of it with a fake trainer, and
the daemon and `flywheel train` share this one path with the real child process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from flywheel.core.domain import RunState, model_name, run_name, version_name
from flywheel.core.errors import ExecutorUnavailable, FlywheelError, TrainingCancelled
from flywheel.core.events import BootstrapInterval, Evaluated, Trained, TrainingEvent
from flywheel.core.faults import crash_point
from flywheel.core.plan import CANDIDATE, Start, build_spec, resolve_params
from flywheel.core.ports import RemoteTrainer, StorePort
from flywheel.core.records import Model, Run
from flywheel.core.spec import EvalTarget, TrainSpec
from flywheel.flow.deps import FlowDeps, Workspace
from flywheel.flow.evalsets import GATED
from flywheel.flow.guard import guard
from flywheel.flow.promotion import gate_and_promote
from flywheel.flow.recovery import MAX_RESUMES, reopen
from flywheel.flow.results import CycleResult
from flywheel.flow.run_events import OutageBuffer
from flywheel.flow.scoring import VersionScoring, known_score, version_scoring
from flywheel.flow.starts import generations, replay_sample_for, run_start, warm_budget_for
from flywheel.training import replay

log = logging.getLogger(__name__)

# After a training, how long its held events wait for a database that went away during it; past
# this the run is left for the daemon's next step to record as interrupted (and resume).
OUTAGE_WAIT_SECONDS = 300.0

__all__ = ["CycleResult", "FlowDeps", "Workspace", "generations", "resume_interrupted", "run_cycle", "trainable"]


def trainable(store: StorePort, version_id: int) -> str | None:
    """Why version `version_id` cannot be trained yet, or None if it can."""
    v = store.version(version_id)
    if v.train_images == 0 or v.val_images == 0:
        return (
            f"{version_name(version_id)} has {v.train_images} train and {v.val_images} val images; "
            "training needs at least one of each (the split is fixed by image hash), waiting for more data"
        )
    return None


@dataclass(frozen=True)
class _Turn:
    """What one cycle decided before training: shared by its steps."""

    scoring: VersionScoring
    production: Model | None
    start: Start
    bootstrapping: bool  # the gate wants bootstrap intervals: production's per-image matches too


def run_cycle(
    deps: FlowDeps,
    version_id: int,
    *,
    start_from: str | None = None,
    resume: Run | None = None,
    purpose: str = CANDIDATE,
    challenger_for: int | None = None,
) -> CycleResult:
    """`start_from`: `flywheel train --from` (default: production, else model.base); `resume`:
    an interrupted run to continue or restart (training.on_interrupt); `purpose`: CHALLENGER
    for the negative-transfer guard's run from model.base beside the warm run `challenger_for`."""
    store, ws, config = deps.store, deps.workspace, deps.config
    production = store.production()
    turn = _Turn(
        version_scoring(store, ws.datasets, config, ws.data_root, version_id),
        production,
        run_start(deps, production, start_from, resume),
        config.gate.bootstrap or config.gate.class_bootstrap,
    )
    run, spec = _open_run(deps, turn, version_id, resume, purpose, challenger_for)
    events = _train(deps, turn, run, spec)
    return guard(deps, _gate(deps, turn, run, events), run_cycle)


def _targets(deps: FlowDeps, turn: _Turn) -> list[EvalTarget]:
    """The candidate on every eval set; production only on sets it has no cached score for
    (or, for the bootstrap, its per-image matches on the gated sets)."""
    sets = turn.scoring.eval_sets
    targets = [EvalTarget("candidate", "", e.name, str(e.data_yaml)) for e in sets]
    production = turn.production
    if production is not None:
        checkpoint = str(deps.registry.checkpoint(production))
        targets += [
            EvalTarget("production", checkpoint, e.name, str(e.data_yaml))
            for e in sets
            if known_score(deps.store, production.sha256, e) is None or (turn.bootstrapping and e.name in GATED)
        ]
    return targets


def _open_run(
    deps: FlowDeps, turn: _Turn, version_id: int, resume: Run | None, purpose: str, challenger_for: int | None
) -> tuple[Run, TrainSpec]:
    """The run recorded (created, or reopened when resumed) and the spec its child will read."""
    store, ws, config, start = deps.store, deps.workspace, deps.config, turn.start
    version, manifest, data_yaml = turn.scoring.version, turn.scoring.manifest, turn.scoring.data_yaml
    budget = None if resume is not None else warm_budget_for(store, config, start, manifest, version.train_images)
    params = resolve_params(config, start, budget) | (resume.params if resume is not None else {})  # as planned
    sample = None if resume is not None else replay_sample_for(deps, start, version_id)
    if resume is not None:
        adopted = isinstance(deps.trainer, RemoteTrainer) and deps.trainer.adopts(resume.id)
        run, last = reopen(store, ws.runs, resume, config.training.on_interrupt, adopted)
    else:
        run, last = (
            store.create_run(
                version_id=version_id,
                start_kind=start.kind,
                start_model_id=start.model_id,
                start_checkpoint=start.checkpoint,
                epochs=params["epochs"],
                params=params,
                purpose=purpose,
                challenger_for=challenger_for,
                replay=sample.record() if sample else {},
            ),
            "",
        )
    out_dir = ws.runs / run_name(run.id)
    train_yaml = data_yaml
    if sample is not None:
        train_yaml = replay.write(sample, manifest, data_yaml.parent, out_dir)
    elif run.replay and (out_dir / "replay" / "data.yaml").is_file():  # resumed: the sample it was drawn with
        train_yaml = out_dir / "replay" / "data.yaml"
    spec = build_spec(
        run.id,
        train_yaml,
        out_dir,
        start,
        params,
        version.class_names,
        _targets(deps, turn),
        dataset_sha256=version.manifest_sha256,
        replay_sha256=str(run.replay.get("sample_sha256", "")),
        resume=last,
    )
    if turn.bootstrapping and turn.production is not None:
        g = config.gate
        spec = replace(spec, bootstrap_samples=g.bootstrap_samples, bootstrap_confidence=g.bootstrap_confidence)
    return run, spec


def _train(deps: FlowDeps, turn: _Turn, run: Run, spec: TrainSpec) -> list[TrainingEvent]:
    """The trainer runs the spec; each event is recorded as it comes. A cancelled or failed
    training is recorded so and raised."""
    store, observer, start = deps.store, deps.observer, turn.start
    store.update_run(run.id, RunState.RUNNING)
    crash_point("train.started")
    log.info(
        "run %s started: %s on %s from %s, %d epochs",
        run_name(run.id),
        start.kind,
        version_name(run.version_id),
        model_name(start.model_id) if start.model_id else start.checkpoint,
        spec.epochs,
    )
    observer.training_started(run.id, start.kind, spec.epochs)
    started = time.monotonic()

    recorder = OutageBuffer(store, spec)

    def on_event(event: TrainingEvent) -> None:
        observer.training_event(event)
        recorder.record(event)

    try:
        events = deps.trainer.run(spec, on_event)
        recorder.drain(OUTAGE_WAIT_SECONDS)
    except TrainingCancelled as exc:
        store.update_run(run.id, RunState.CANCELLED, error=str(exc))
        observer.training_finished(RunState.CANCELLED, time.monotonic() - started)
        raise
    except ExecutorUnavailable as exc:  # not the run's fault: it waits, interrupted, for the cluster
        resumed = max(run.resumed - 1, 0)  # this try does not count against MAX_RESUMES
        store.update_run(run.id, RunState.INTERRUPTED, error=f"waiting for the executor: {exc}", resumed=resumed)
        observer.training_finished(RunState.INTERRUPTED, time.monotonic() - started)
        raise
    except FlywheelError as exc:
        store.update_run(run.id, RunState.FAILED, error=str(exc))
        observer.training_finished(RunState.FAILED, time.monotonic() - started)
        raise
    observer.training_finished(RunState.SUCCEEDED, time.monotonic() - started)
    return events


def _gate(deps: FlowDeps, turn: _Turn, run: Run, events: list[TrainingEvent]) -> CycleResult:
    """The trained checkpoint registered as a candidate, gated against production on the same
    eval sets, promoted or rejected; the run recorded succeeded."""
    store, production, version = deps.store, turn.production, turn.scoring.version
    best = Path(next(e.best for e in events if isinstance(e, Trained)))
    scores = {(e.role, e.eval_set): e.score for e in events if isinstance(e, Evaluated)}
    candidate = deps.registry.add_candidate(
        best, run.id, run.version_id, production.id if production else None, version.class_names
    )
    bootstraps = [e for e in events if isinstance(e, BootstrapInterval)]
    intervals = {e.eval_set: (e.low, e.high) for e in bootstraps}
    class_intervals = {e.eval_set: {name: (c.low, c.high) for name, c in e.classes.items()} for e in bootstraps}
    decision = gate_and_promote(
        store,
        deps.registry,
        deps.config,
        run.id,
        run.version_id,
        turn.scoring.eval_sets,
        candidate,
        production,
        scores,
        intervals,
        class_intervals,
    )
    crash_point("run.finished")
    run = store.update_run(run.id, RunState.SUCCEEDED, model_id=candidate.id)
    return CycleResult(run, store.model(candidate.id), decision)


def resume_interrupted(deps: FlowDeps) -> list[CycleResult]:
    """Continue each interrupted run per `training.on_interrupt` (resume from its last.pt, or
    restart it from its start); one interrupted MAX_RESUMES times is cancelled instead."""
    store, config = deps.store, deps.config
    results: list[CycleResult] = []
    if config.training.on_interrupt == "leave":
        return results
    for run in store.runs():
        if run.state != RunState.INTERRUPTED:
            continue
        if run.resumed >= MAX_RESUMES:
            store.update_run(run.id, RunState.CANCELLED, error=f"interrupted {run.resumed + 1} times: not tried again")
            continue
        log.info("run %s was interrupted: %s it", run_name(run.id), config.training.on_interrupt)
        results.append(run_cycle(deps, run.version_id, resume=run))
    return results

"""One turn of the flywheel for a dataset version: train, evaluate, gate, promote or reject.

Plain functions over explicit arguments. The trainer and the observer are ports, so a unit
test can drive the policy with a fake trainer, and the daemon and `flywheel train` share
this one path with the real child process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from flywheel.core.budget import Budget
from flywheel.core.config import Config
from flywheel.core.domain import ManifestItem, ModelStatus, RunState, StartKind, model_name, run_name, version_name
from flywheel.core.errors import FlywheelError, TrainingCancelled, UsageError
from flywheel.core.events import (
    BackboneUnfrozen,
    BatchProgress,
    BootstrapInterval,
    ChildStarted,
    EpochEnded,
    Evaluated,
    PlateauReached,
    Trained,
    TrainingEvent,
    WarmStarted,
)
from flywheel.core.faults import crash_point
from flywheel.core.gate import GateDecision
from flywheel.core.plan import (
    CANDIDATE,
    CHALLENGER,
    Generation,
    Start,
    build_spec,
    challenger_due,
    choose_start,
    parse_start,
    plan_budget,
    refresh_due,
    resolve_params,
)
from flywheel.core.ports import Datasets, Objects, Observer, StorePort, Trainer
from flywheel.core.records import Epoch, Model, Run
from flywheel.core.spec import EvalTarget
from flywheel.flow.evalsets import GATED, version_eval_sets
from flywheel.flow.golden import golden_eval_sets
from flywheel.flow.promotion import cached, gate_and_promote, score_of
from flywheel.flow.recovery import MAX_RESUMES, reopen
from flywheel.flow.registry import Registry
from flywheel.training import replay

log = logging.getLogger("flywheel.flow.cycle")


@dataclass(frozen=True)
class Workspace:
    data_root: Path
    objects: Objects
    datasets: Datasets  # versions/<v>/: each dataset version laid out for the trainer
    runs: Path


@dataclass(frozen=True)
class CycleResult:
    run: Run
    model: Model | None
    decision: GateDecision | None
    challenger: CycleResult | None = None  # the negative-transfer guard's scratch run, when it ran


def trainable(store: StorePort, version_id: int) -> str | None:
    """Why version `version_id` cannot be trained yet, or None if it can."""
    v = store.version(version_id)
    if v.train_images == 0 or v.val_images == 0:
        return (
            f"{version_name(version_id)} has {v.train_images} train and {v.val_images} val images; "
            "training needs at least one of each (the split is fixed by image hash), waiting for more data"
        )
    return None


def run_cycle(
    store: StorePort,
    registry: Registry,
    workspace: Workspace,
    config: Config,
    trainer: Trainer,
    observer: Observer,
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
    version = store.version(version_id)
    manifest = store.manifest(version_id)
    data_yaml = workspace.datasets.materialize(version_id, version.class_names, manifest)
    production = store.production()
    start = _start(store, registry, workspace.data_root, config, production, start_from, resume)
    parent = store.manifest(version.parent_id) if version.parent_id else {}
    eval_sets = version_eval_sets(data_yaml, version.class_names, version.val_sha256, manifest, parent)
    eval_sets += golden_eval_sets(store, config, workspace.data_root, version.class_names, manifest)
    evaluate = [EvalTarget("candidate", "", e.name, str(e.data_yaml)) for e in eval_sets]
    bootstrapping = config.gate.bootstrap or config.gate.class_bootstrap  # needs production's per-image matches
    if production is not None:  # production is re-scored only on sets it has no cached score for
        evaluate += [
            EvalTarget("production", str(registry.checkpoint(production)), e.name, str(e.data_yaml))
            for e in eval_sets
            if cached(store, production, e) is None or (bootstrapping and e.name in GATED)
        ]
    budget = None if resume is not None else _budget(store, config, start, manifest, version.train_images)
    params = resolve_params(config, start, budget) | (resume.params if resume is not None else {})  # as planned
    sample = None if resume is not None else _replay_sample(store, workspace, config, start, version_id)
    if resume is not None:
        run, last = reopen(store, workspace.runs, resume, config.training.on_interrupt)
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
    assert run.id is not None
    out_dir = workspace.runs / run_name(run.id)
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
        evaluate,
        dataset_sha256=version.manifest_sha256,
        replay_sha256=str(run.replay.get("sample_sha256", "")),
        resume=last,
    )
    if bootstrapping and production is not None:
        spec = replace(
            spec, bootstrap_samples=config.gate.bootstrap_samples, bootstrap_confidence=config.gate.bootstrap_confidence
        )
    store.update_run(run.id, RunState.RUNNING)
    crash_point("train.started")
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

    def on_event(event: TrainingEvent) -> None:
        observer.training_event(event)
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
            store.update_run(run_id, environment=environment | {"resumed_from_epoch": event.resumed_from_epoch})
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
    best = Path(next(e.best for e in events if isinstance(e, Trained)))
    scores = {(e.role, e.eval_set): score_of(e) for e in events if isinstance(e, Evaluated)}
    candidate = registry.add_candidate(
        best, run.id, version_id, production.id if production else None, version.class_names
    )
    assert candidate.id is not None
    intervals = {e.eval_set: (e.low, e.high) for e in events if isinstance(e, BootstrapInterval)}
    class_intervals = {
        e.eval_set: {name: (c.low, c.high) for name, c in e.classes.items()}
        for e in events
        if isinstance(e, BootstrapInterval)
    }
    decision = gate_and_promote(
        store,
        registry,
        config,
        run.id,
        version_id,
        eval_sets,
        candidate,
        production,
        scores,
        intervals,
        class_intervals,
    )
    crash_point("run.finished")
    run = store.update_run(run.id, RunState.SUCCEEDED, model_id=candidate.id)
    observer.training_finished("succeeded", time.monotonic() - started)
    result = CycleResult(run, store.model(candidate.id), decision)
    return _guard(store, registry, workspace, config, trainer, observer, result)


# --- transfer: where a run starts, its replay sample, the guard, interrupted runs -------------


def _start(
    store: StorePort,
    registry: Registry,
    data_root: Path,
    config: Config,
    production: Model | None,
    start_from: str | None,
    resume: Run | None,
) -> Start:
    if resume is not None:
        if resume.start_model_id is not None:  # the checkpoint is verified against its sha256 again
            model = store.model(resume.start_model_id)
            return choose_start(config, data_root, (resume.start_model_id, registry.checkpoint(model)))
        return Start(StartKind(resume.start_kind), resume.start_checkpoint, None)
    request = parse_start(start_from) if start_from else None
    if request is not None and request.what == "model" and request.model_id is not None:
        model = store.model(request.model_id)
        return choose_start(config, data_root, (request.model_id, registry.checkpoint(model)))
    if request is None or request.what == "production":
        if production is not None:
            return choose_start(config, data_root, (production.id or 0, registry.checkpoint(production)))
        if request is not None:
            raise UsageError("--from production: there is no production model yet; use --from base")
    return choose_start(config, data_root, None, request.path if request is not None and request.path else None)


def _budget(
    store: StorePort, config: Config, start: Start, manifest: dict[str, ManifestItem], train_images: int
) -> Budget | None:
    """A warm start's auto budget: from the share of train images its parent never saw and the
    parent's own val curve (flywheel/training/budget.py)."""
    if start.kind is not StartKind.WARM or start.model_id is None:
        return None
    parent = store.model(start.model_id)
    seen = store.manifest(parent.version_id)
    new = sum(1 for sha, item in manifest.items() if item.split == "train" and sha not in seen)
    curve = [e.map50_95 for e in store.epochs(parent.run_id)]
    return plan_budget(config, train_images, new, curve)


def _replay_sample(
    store: StorePort, workspace: Workspace, config: Config, start: Start, version_id: int
) -> replay.ReplaySample | None:
    """The replay sample for a warm start under `replay.max_images`; None: the whole version."""
    if not config.replay.max_images or start.kind is not StartKind.WARM or start.model_id is None:
        return None
    seen = store.manifest(store.model(start.model_id).version_id)
    classes = replay.classes_from_labels(lambda sha: workspace.objects.path(sha).read_text())
    version = store.version(version_id)
    return replay.draw(
        store.manifest(version_id), seen, config.replay.max_images, config.training.seed, classes, version.class_names
    )


def _note_head_rows(run_id: int, event: WarmStarted) -> None:
    kept, total = event.head_rows_kept, event.head_rows_total
    name, fixed = run_name(run_id), event.head_rows_fixed
    if total and kept != total:
        log.error("run %s: only %d/%d class-head rows equal the start model's", name, kept, total)
    elif fixed:
        log.warning("run %s: %d class-head rows were copied by name by flywheel, not Ultralytics", name, fixed)


def generations(store: StorePort) -> list[Generation]:
    runs = [r for r in store.runs() if r.state == RunState.SUCCEEDED and r.model_id is not None]
    images = {v.id: v.train_images for v in store.versions()}
    return [
        Generation(
            r.start_kind,
            r.purpose,
            store.model(r.model_id or 0).status == ModelStatus.REJECTED,
            images.get(r.version_id, 0),
        )
        for r in runs
    ]


def _guard(
    store: StorePort,
    registry: Registry,
    workspace: Workspace,
    config: Config,
    trainer: Trainer,
    observer: Observer,
    result: CycleResult,
) -> CycleResult:
    """The negative-transfer guard: when due, also train from model.base on the same version,
    through the same cycle and gate, and record which of the two won."""
    t = config.training
    warm = result.run
    history = generations(store)
    reason = challenger_due(history, t.scratch_challenger_every, t.scratch_challenger_after_rejections)
    reason = reason or refresh_due(history, t.refresh_growth)
    if reason is None or warm.id is None:
        return result
    log.info("also training from model.base on %s (refresh or guard): %s", version_name(warm.version_id), reason)
    try:
        challenger = run_cycle(
            store,
            registry,
            workspace,
            config,
            trainer,
            observer,
            warm.version_id,
            start_from="base",
            purpose=CHALLENGER,
            challenger_for=warm.id,
        )
    except TrainingCancelled:
        raise
    except FlywheelError as exc:  # recorded as a failed run; the warm candidate's decision stands
        log.error("scratch challenger for run %s failed: %s", run_name(warm.id), exc)
        return result
    production = store.production()
    winner = "production"  # neither was promoted
    if production is not None and challenger.model is not None and production.id == challenger.model.id:
        winner = "scratch"
    elif production is not None and result.model is not None and production.id == result.model.id:
        winner = "warm"
    assert challenger.run.id is not None
    guard = {"reason": reason, "warm_run": warm.id, "challenger_run": challenger.run.id, "winner": winner}
    run = store.update_run(challenger.run.id, guard=guard)
    store.update_run(warm.id, guard=guard)
    log.info("training from model.base beside the warm candidate on %s: %s won", version_name(warm.version_id), winner)
    return CycleResult(store.run(warm.id), result.model, result.decision, replace(challenger, run=run))


def resume_interrupted(
    store: StorePort,
    registry: Registry,
    workspace: Workspace,
    config: Config,
    trainer: Trainer,
    observer: Observer,
) -> list[CycleResult]:
    """Continue each interrupted run per `training.on_interrupt` (resume from its last.pt, or
    restart it from its start); one interrupted MAX_RESUMES times is cancelled instead."""
    results: list[CycleResult] = []
    if config.training.on_interrupt == "leave":
        return results
    for run in store.runs():
        if run.state != RunState.INTERRUPTED or run.id is None:
            continue
        if run.resumed >= MAX_RESUMES:
            store.update_run(run.id, RunState.CANCELLED, error=f"interrupted {run.resumed + 1} times: not tried again")
            continue
        log.info("run %s was interrupted: %s it", run_name(run.id), config.training.on_interrupt)
        results.append(run_cycle(store, registry, workspace, config, trainer, observer, run.version_id, resume=run))
    return results

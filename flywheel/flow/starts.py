"""Where a run starts (production, a model, model.base, or where an interrupted run left off),
the budget a warm start gets, and the replay sample it trains on."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from flywheel.core.budget import Budget
from flywheel.core.config import Config
from flywheel.core.domain import ManifestItem, ModelStatus, RunState, StartKind
from flywheel.core.errors import UsageError
from flywheel.core.plan import Generation, Start, choose_start, parse_start, plan_budget
from flywheel.core.ports import StorePort
from flywheel.core.records import Model, Run
from flywheel.flow.deps import FlowDeps
from flywheel.training import replay


def run_start(deps: FlowDeps, production: Model | None, start_from: str | None, resume: Run | None) -> Start:
    """`start_from`: `flywheel train --from` (default: production, else model.base); `resume`:
    an interrupted run, which starts where it started the first time."""
    store, registry, config, data_root = deps.store, deps.registry, deps.config, deps.workspace.data_root
    choose = partial(choose_start, config, data_root, is_file=Path.is_file)  # the plan itself reads no disk
    if resume is not None:
        if resume.start_model_id is not None:  # the checkpoint is verified against its sha256 again
            model = store.model(resume.start_model_id)
            return choose((resume.start_model_id, registry.checkpoint(model)))
        return Start(StartKind(resume.start_kind), resume.start_checkpoint, None)
    request = parse_start(start_from) if start_from else None
    if request is not None and request.what == "model" and request.model_id is not None:
        model = store.model(request.model_id)
        return choose((request.model_id, registry.checkpoint(model)))
    if request is None or request.what == "production":
        if production is not None:
            return choose((production.id, registry.checkpoint(production)))
        if request is not None:
            raise UsageError("--from production: there is no production model yet; use --from base")
    return choose(None, request.path if request is not None and request.path else None)


def warm_budget_for(
    store: StorePort, config: Config, start: Start, manifest: dict[str, ManifestItem], train_images: int
) -> Budget | None:
    """A warm start's auto budget: from the share of train images its parent never saw and the
    parent's own val curve (flywheel/core/budget.py)."""
    if start.kind is not StartKind.WARM or start.model_id is None:
        return None
    parent = store.model(start.model_id)
    seen = store.manifest(parent.version_id)
    new = sum(1 for sha, item in manifest.items() if item.split == "train" and sha not in seen)
    curve = [e.map50_95 for e in store.epochs(parent.run_id)]
    return plan_budget(config, train_images, new, curve)


def replay_sample_for(deps: FlowDeps, start: Start, version_id: int) -> replay.ReplaySample | None:
    """The replay sample for a warm start under `replay.max_images`; None: the whole version."""
    store, config = deps.store, deps.config
    if not config.replay.max_images or start.kind is not StartKind.WARM or start.model_id is None:
        return None
    seen = store.manifest(store.model(start.model_id).version_id)
    classes = replay.classes_from_labels(lambda sha: deps.workspace.objects.path(sha).read_text())
    version = store.version(version_id)
    return replay.draw(
        store.manifest(version_id), seen, config.replay.max_images, config.training.seed, classes, version.class_names
    )


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

"""What `flywheel gc` may remove, as a pure function of what is on disk and what the records say.

Kept forever, whatever the policy: every model that was ever production (production, retired)
and every candidate, the ledger and every dataset version (they live in the database), every
object a version references (objects/ is never planned here), and anything a run that may
still resume needs (a queued, running or interrupted run keeps its whole folder). What goes:
copies the registry already holds (a finished run's best.pt once its model is registered),
files only an unfinished run could use (last.pt and epoch checkpoints of a finished run),
the weights of rejected models beyond the newest `keep_rejected`, and, after their age limit,
finished runs' logs and eval scratch, quarantine, processed batches and captured images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from flywheel.core.domain import ModelStatus, RunState, run_name

_FINISHED = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


class Area(StrEnum):
    """What a path under the data root is, as the inventory classifies it."""

    RUN_BEST = "run_best"  # runs/<run>/train/weights/best.pt
    RUN_LAST = "run_last"  # runs/<run>/train/weights/last.pt
    RUN_EPOCH = "run_epoch"  # runs/<run>/train/weights/epoch<N>.pt
    RUN_REST = "run_rest"  # everything else of runs/<run>/: logs, events, eval scratch, statistics
    MODEL_WEIGHTS = "model_weights"  # models/<sha[:2]>/<sha>.pt and the exports stored beside it
    QUARANTINE = "quarantine"  # quarantine/<batch>/ or quarantine/.retried/<batch>/
    DONE = "done"  # inbox/.done/<batch>/: a processed batch as it was dropped
    CAPTURED = "captured"  # captured/<file>: what `flywheel serve` saved for labeling
    TRASH = "trash"  # .gc-trash/<...>: left by a gc that was killed before it emptied it


@dataclass(frozen=True)
class Found:
    """One file or folder the inventory saw. `owner` ties it to a record: the run id for run
    areas, the model sha256 for weights, the batch label for quarantine and done."""

    path: str  # relative to the data root, POSIX
    area: Area
    size: int  # bytes (a folder: everything under it)
    age_days: float  # since it was last written
    owner: str = ""


@dataclass(frozen=True)
class RunFacts:
    state: RunState
    has_model: bool  # a model was registered from this run (its best.pt is in models/)
    finished_days: float  # days since it finished (0 while it has not)


@dataclass(frozen=True)
class ModelFacts:
    id: int
    sha256: str
    status: ModelStatus


@dataclass(frozen=True)
class RetentionPolicy:
    """`[retention]` in config.toml; an age of 0 keeps that area forever."""

    keep_rejected: int = 5
    keep_retired: int = 0  # 0: every model that was ever production keeps its weights (rollback)
    run_logs_days: float = 30.0
    quarantine_days: float = 90.0
    done_days: float = 30.0
    captured_days: float = 0.0


@dataclass(frozen=True)
class Removal:
    path: str
    area: Area
    size: int
    why: str


def plan(
    found: Iterable[Found],
    runs: Mapping[int, RunFacts],
    models: Iterable[ModelFacts],
    policy: RetentionPolicy,
    quarantined: frozenset[str] = frozenset(),  # batch labels still in quarantine (not retried)
) -> list[Removal]:
    """The removals the policy allows, in the order `found` lists them."""
    listed = list(models)
    weights_kept = _weights_to_keep(listed, policy.keep_rejected, policy.keep_retired)
    retired_shas = {m.sha256 for m in listed if m.status is ModelStatus.RETIRED}
    out: list[Removal] = []
    for f in found:
        why = _why(f, runs, retired_shas, weights_kept, policy, quarantined)
        if why:
            out.append(Removal(f.path, f.area, f.size, why))
    return out


def _weights_to_keep(models: list[ModelFacts], keep_rejected: int, keep_retired: int) -> set[str]:
    def newest(status: ModelStatus, n: int) -> set[str]:
        ranked = sorted((m for m in models if m.status is status), key=lambda m: m.id, reverse=True)
        return {m.sha256 for m in ranked[: max(n, 0)]}

    newest_rejected = newest(ModelStatus.REJECTED, keep_rejected)
    retired = {m.sha256 for m in models if m.status is ModelStatus.RETIRED}
    kept_retired = retired if keep_retired <= 0 else newest(ModelStatus.RETIRED, keep_retired)
    always = {m.sha256 for m in models if m.status in (ModelStatus.PRODUCTION, ModelStatus.CANDIDATE)}
    # a sha shared by a kept model and a removable one stays: the file is the kept model's too
    return always | kept_retired | newest_rejected


def _why(
    f: Found,
    runs: Mapping[int, RunFacts],
    retired_shas: set[str],
    weights_kept: set[str],
    policy: RetentionPolicy,
    quarantined: frozenset[str],
) -> str:
    if f.area is Area.TRASH:
        return "left by a gc that stopped before emptying it"
    if f.area in (Area.RUN_BEST, Area.RUN_LAST, Area.RUN_EPOCH, Area.RUN_REST):
        return _why_run(f, runs, policy)
    if f.area is Area.MODEL_WEIGHTS:
        if f.owner in weights_kept:
            return ""
        if f.owner in retired_shas:
            return f"weights of a retired model older than the newest {policy.keep_retired} (retention.keep_retired)"
        return f"weights of a rejected model older than the newest {policy.keep_rejected} (retention.keep_rejected)"
    if f.area is Area.QUARANTINE:
        return _aged(f, policy.quarantine_days, "retention.quarantine_days")
    if f.area is Area.DONE:
        if f.owner in quarantined:
            return ""  # `flywheel quarantine retry` rebuilds the batch from this copy
        return _aged(f, policy.done_days, "retention.done_days")
    if f.area is Area.CAPTURED:
        return _aged(f, policy.captured_days, "retention.captured_days")
    return ""


def _why_run(f: Found, runs: Mapping[int, RunFacts], policy: RetentionPolicy) -> str:
    run_id = int(f.owner) if f.owner.isdigit() else None
    facts = runs.get(run_id) if run_id is not None else None
    if facts is None or facts.state not in _FINISHED:
        return ""  # unknown, or it may still resume: everything stays
    name = run_name(run_id or 0)
    if f.area is Area.RUN_BEST:
        return f"{name} finished and its model is in the registry (models/)" if facts.has_model else ""
    if f.area is Area.RUN_LAST:
        return f"{name} is {facts.state}: only a resume reads last.pt"
    if f.area is Area.RUN_EPOCH:
        return f"{name} is {facts.state}: epoch checkpoints are only read by a resume"
    days = policy.run_logs_days
    if days > 0 and facts.finished_days > days:
        return f"{name} finished {facts.finished_days:.0f} days ago (retention.run_logs_days = {days:g})"
    return ""


def _aged(f: Found, days: float, key: str) -> str:
    if days > 0 and f.age_days > days:
        return f"{f.age_days:.0f} days old ({key} = {days:g})"
    return ""

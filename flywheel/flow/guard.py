"""The negative-transfer guard and the refresh against drift: when due, also train from
model.base on the same version, through the same cycle and gate, and record which won."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from flywheel.core.domain import run_name, version_name
from flywheel.core.errors import FlywheelError, TrainingCancelled
from flywheel.core.plan import CHALLENGER, challenger_due, refresh_due
from flywheel.flow.deps import FlowDeps
from flywheel.flow.results import CycleResult
from flywheel.flow.starts import generations

log = logging.getLogger(__name__)

Cycle = Callable[..., CycleResult]  # run_cycle, passed in: the guard runs a second cycle


def guard(deps: FlowDeps, result: CycleResult, run_cycle: Cycle) -> CycleResult:
    """The negative-transfer guard: when due, also train from model.base on the same version,
    through the same cycle and gate, and record which of the two won."""
    store, t = deps.store, deps.config.training
    warm = result.run
    history = generations(store)
    reason = challenger_due(history, t.scratch_challenger_every, t.scratch_challenger_after_rejections)
    reason = reason or refresh_due(history, t.refresh_growth)
    if reason is None:
        return result
    log.info("also training from model.base on %s (refresh or guard): %s", version_name(warm.version_id), reason)
    try:
        challenger = run_cycle(
            deps,
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
    outcome = {"reason": reason, "warm_run": warm.id, "challenger_run": challenger.run.id, "winner": winner}
    run = store.update_run(challenger.run.id, guard=outcome)
    store.update_run(warm.id, guard=outcome)
    log.info("training from model.base beside the warm candidate on %s: %s won", version_name(warm.version_id), winner)
    return CycleResult(store.run(warm.id), result.model, result.decision, replace(challenger, run=run))

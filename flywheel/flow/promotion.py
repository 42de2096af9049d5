"""After training: cache the scores, ask the gate, record the decision, promote or reject.

Separate from the training half of the cycle so the decision can be tested on its own and
re-run (`flywheel compare`) without training anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from flywheel.core.config import Config
from flywheel.core.domain import model_name
from flywheel.core.errors import ExportFailed
from flywheel.core.faults import crash_point
from flywheel.core.gate import GateDecision, GateOutcome, GatePolicy, Score, decide_gate
from flywheel.core.gate_details import ExportFailedNote, GateDetails, forgetting_of
from flywheel.core.ledger import Action
from flywheel.core.ports import StorePort
from flywheel.core.records import GateRecord, Model
from flywheel.flow.evalsets import GATED, EvalSet
from flywheel.flow.registry import Registry
from flywheel.flow.scoring import known_score, remember

log = logging.getLogger(__name__)


def policy_of(config: Config) -> GatePolicy:
    g = config.gate
    return GatePolicy(
        g.tolerance,
        g.max_class_drop,
        g.min_class_instances,
        require_interval=g.bootstrap,
        class_interval=g.class_bootstrap,
    )


def gate_and_promote(
    store: StorePort,
    registry: Registry,
    config: Config,
    run_id: int,
    version_id: int,
    eval_sets: list[EvalSet],
    candidate: Model,
    production: Model | None,
    scores: Mapping[tuple[str, str], Score],  # (role, eval set) -> score, as the child reported
    intervals: Mapping[str, tuple[float, float]] | None = None,  # eval set -> bootstrap (low, high)
    class_intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,  # eval set -> class -> same
) -> GateDecision:
    pairs: dict[str, tuple[Score, Score | None]] = {}
    for eval_set in eval_sets:
        cand = scores[("candidate", eval_set.name)]
        remember(store, candidate.sha256, eval_set, version_id, cand)
        prod = None
        if production is not None:
            prod = scores.get(("production", eval_set.name)) or known_score(store, production.sha256, eval_set)
            assert prod is not None, f"production was neither scored nor cached on {eval_set.name}"
            remember(store, production.sha256, eval_set, version_id, prod)
        pairs[eval_set.name] = (cand, prod)
    gated = {name: pair for name, pair in pairs.items() if name in GATED}
    decision = decide_gate(gated, policy_of(config), intervals, class_intervals)
    details = GateDetails(
        eval_sets={s.name: s.note() for s in eval_sets},
        verdicts=decision.verdicts,
        forgetting=forgetting_of(pairs),
        policy=decision.policy,
    )
    pin = store.pin()
    held = decision.outcome is GateOutcome.PROMOTE and pin is not None and production is not None
    export_failed = None
    if decision.outcome is GateOutcome.PROMOTE and not held:  # what is served is verified before it is
        try:
            failed = registry.verify_exports(
                candidate.id, {s.name: str(s.data_yaml) for s in eval_sets if s.name in GATED}
            )
        except ExportFailed as exc:
            export_failed = exc
            details = replace(
                details, export_failed=ExportFailedNote(message=str(exc), held=True, failures=tuple(exc.failures))
            )
            held = True
        else:
            if failed:  # on_export_failure = "promote_pt": promoted without them, and that is recorded
                message = "promoted without " + ", ".join(f["format"] for f in failed)
                note = ExportFailedNote(message=message, held=False, failures=tuple(failed))
                details = replace(details, export_failed=note)
    store.add_gate_decision(
        GateRecord(
            run_id=run_id,
            version_id=version_id,
            eval_sha256=eval_sets[0].sha256,
            candidate_model_id=candidate.id,
            production_model_id=production.id if production else None,
            candidate_map=decision.candidate_map,
            production_map=decision.production_map,
            margin=decision.margin,
            tolerance=decision.tolerance,
            outcome=decision.outcome,
            rule=decision.rule,
            held=held,
            details=details,
        )
    )
    crash_point("gate.decided")
    if export_failed is not None:
        store.append_ledger(Action.EXPORT_FAILED, "flywheel", str(export_failed), model_id=candidate.id)
        log.error("model %s passed the gate, held: %s", model_name(candidate.id), export_failed)
    elif held:
        log.info(
            "model %s passed the gate but production is pinned (%s): left a candidate; "
            "`flywheel promote %s` when ready",
            model_name(candidate.id),
            pin.reason if pin else "",
            model_name(candidate.id),
        )
    elif decision.outcome is GateOutcome.PROMOTE:
        registry.promote(candidate.id, reason=decision.explain())
    else:
        registry.reject(candidate.id, reason=decision.explain())
    log.info("model %s %s", model_name(candidate.id), decision.explain())
    return decision

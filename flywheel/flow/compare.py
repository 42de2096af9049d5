"""Score models side by side on the same frozen eval sets (`flywheel compare A B`).

Registered models are verified against their sha256 before loading; a checkpoint file the
registry did not write is a pickle from elsewhere and is loaded only when the caller trusts
it. Scores are cached by (checkpoint sha256, eval-set hash), so comparing again is free. The
eval sets are the gate's (flywheel.flow.scoring), the golden set included when configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flywheel.core.domain import model_name, parse_id
from flywheel.core.errors import UsageError
from flywheel.core.events import Evaluated
from flywheel.core.gate import Score
from flywheel.core.hashing import sha256_file
from flywheel.core.ports import StorePort
from flywheel.core.spec import EvalTarget
from flywheel.flow.deps import FlowDeps
from flywheel.flow.evalsets import EvalSet
from flywheel.flow.registry import Registry
from flywheel.flow.scoring import compare_dir, evaluation_spec, known_score, remember, version_scoring


@dataclass(frozen=True)
class Contender:
    label: str  # "m0003" or the file path
    checkpoint: Path
    sha256: str


def resolve(store: StorePort, registry: Registry, ref: str, trust: bool) -> Contender:
    path = Path(ref)
    if path.suffix == ".pt" and path.is_file():
        if not trust:
            raise UsageError(
                f"{path} was not written by this registry; a checkpoint is a pickle and can run code when "
                "loaded. Pass --trust if you know where it comes from"
            )
        return Contender(str(path), path, sha256_file(path))
    model = store.model(parse_id(ref, "m"))
    return Contender(model_name(model.id), registry.checkpoint(model), model.sha256)


def compare(
    deps: FlowDeps, contenders: list[Contender], version_id: int
) -> tuple[list[EvalSet], dict[str, dict[str, Score]]]:
    """Every contender's score on every eval set the gate would use for `version_id`; cached
    scores are reused, the rest computed in one evaluate-only child run."""
    store, ws = deps.store, deps.workspace
    scoring = version_scoring(store, ws.datasets, deps.config, ws.data_root, version_id)
    results: dict[str, dict[str, Score]] = {c.label: {} for c in contenders}
    targets = []
    for c in contenders:
        for e in scoring.eval_sets:
            known = known_score(store, c.sha256, e)
            if known is not None:
                results[c.label][e.name] = known
            else:
                targets.append(EvalTarget(c.label, str(c.checkpoint), e.name, str(e.data_yaml)))
    if targets:
        names = scoring.version.class_names
        spec = evaluation_spec(deps.config, scoring.data_yaml, compare_dir(ws.runs), names, targets)
        by_label = {c.label: c for c in contenders}
        sets = {e.name: e for e in scoring.eval_sets}
        for event in deps.trainer.run(spec, lambda _e: None):
            if isinstance(event, Evaluated):
                score = event.score
                results[event.role][event.eval_set] = score
                remember(store, by_label[event.role].sha256, sets[event.eval_set], version_id, score)
    return scoring.eval_sets, results

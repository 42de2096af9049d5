"""Score models side by side on the same frozen eval sets (`flywheel compare A B`).

Registered models are verified against their sha256 before loading; a checkpoint file the
registry did not write is a pickle from elsewhere and is loaded only when the caller trusts
it. Scores are cached by (checkpoint sha256, eval-set hash), so comparing again is free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.core.config import Config
from flywheel.core.domain import model_name, parse_id
from flywheel.core.errors import UsageError
from flywheel.core.events import Evaluated
from flywheel.core.gate import Score
from flywheel.core.hashing import sha256_file
from flywheel.core.ports import Datasets, StorePort, Trainer
from flywheel.core.spec import EvalTarget, TrainSpec
from flywheel.flow.evalsets import EvalSet, version_eval_sets
from flywheel.flow.promotion import remember, score_of
from flywheel.flow.registry import Registry


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
    return Contender(model_name(model.id or 0), registry.checkpoint(model), model.sha256)


def compare(
    store: StorePort,
    registry: Registry,
    datasets: Datasets,
    runs: Path,
    config: Config,
    trainer: Trainer,
    contenders: list[Contender],
    version_id: int,
) -> tuple[list[EvalSet], dict[str, dict[str, Score]]]:
    version = store.version(version_id)
    manifest = store.manifest(version_id)
    data_yaml = datasets.materialize(version_id, version.class_names, manifest)
    parent = store.manifest(version.parent_id) if version.parent_id else {}
    eval_sets = version_eval_sets(data_yaml, version.class_names, version.val_sha256, manifest, parent)
    results: dict[str, dict[str, Score]] = {c.label: {} for c in contenders}
    targets = []
    for c in contenders:
        for e in eval_sets:
            row = store.evaluation(c.sha256, e.sha256)
            if row is not None:
                results[c.label][e.name] = Score(
                    row.map50_95, row.map50, row.precision, row.recall, dict(row.per_class), dict(row.instances)
                )
            else:
                targets.append((c, e))
    if targets:
        t = config.training
        spec = TrainSpec(
            run_id=0,
            data_yaml=str(data_yaml),
            out_dir=str(runs / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"),
            start="",
            start_kind="",
            epochs=0,
            imgsz=t.imgsz,
            batch=t.batch,
            device=t.device,
            threads=t.threads or os.cpu_count() or 1,
            seed=t.seed,
            patience=t.patience,
            class_names=version.class_names,
            evaluate=[EvalTarget(c.label, str(c.checkpoint), e.name, str(e.data_yaml)) for c, e in targets],
            evaluate_only=True,
        )
        by_label = {c.label: c for c in contenders}
        sets = {e.name: e for e in eval_sets}
        for event in trainer.run(spec, lambda _e: None):
            if not isinstance(event, Evaluated):
                continue
            score = score_of(event)
            results[event.role][event.eval_set] = score
            remember(store, by_label[event.role].sha256, sets[event.eval_set], version_id, score)
    return eval_sets, results

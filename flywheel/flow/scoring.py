"""What models are scored on for a dataset version, and the scores already known.

Shared by the cycle (the candidate and production, before the gate) and `flywheel compare`,
so both score on the same sets: the version's val split, its new-images subset, and the
golden set when one is configured. A score is cached by (checkpoint sha256, eval-set hash)
and never computed twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.core.config import Config
from flywheel.core.domain import ManifestItem
from flywheel.core.gate import Score
from flywheel.core.plan import training_threads
from flywheel.core.ports import Datasets, StorePort
from flywheel.core.records import Evaluation, Version
from flywheel.core.spec import EvalTarget, TrainSpec
from flywheel.flow.evalsets import EvalSet, version_eval_sets
from flywheel.flow.golden import golden_eval_sets
from flywheel.flow.screen_release import excluded


@dataclass(frozen=True)
class VersionScoring:
    """A dataset version laid out for the trainer, and the eval sets it is scored on."""

    version: Version
    manifest: dict[str, ManifestItem]
    data_yaml: Path
    eval_sets: list[EvalSet]


def version_scoring(
    store: StorePort, datasets: Datasets, config: Config, data_root: Path, version_id: int
) -> VersionScoring:
    version = store.version(version_id)
    manifest = store.manifest(version_id)
    left_out = excluded(store, version_id)  # quarantined by a screening: train images only
    manifest = {k: i for k, i in manifest.items() if k not in left_out or i.split == "val"}
    data_yaml = datasets.materialize(version_id, version.class_names, manifest)
    parent = store.manifest(version.parent_id) if version.parent_id else {}
    eval_sets = version_eval_sets(data_yaml, version.class_names, version.val_sha256, manifest, parent)
    eval_sets += golden_eval_sets(store, config, data_root, version.class_names, manifest)
    return VersionScoring(version, manifest, data_yaml, eval_sets)


def known_score(store: StorePort, model_sha256: str, eval_set: EvalSet) -> Score | None:
    """The cached score of the checkpoint with `model_sha256` on `eval_set`, if any."""
    cached = store.evaluation(model_sha256, eval_set.sha256)
    return None if cached is None else cached.score


def remember(store: StorePort, model_sha256: str, eval_set: EvalSet, version_id: int, score: Score) -> None:
    """Cache a score: (checkpoint sha256, eval-set hash) is never computed twice."""
    store.put_evaluation(
        Evaluation(model_sha256=model_sha256, eval_sha256=eval_set.sha256, version_id=version_id, score=score)
    )


def evaluation_spec(
    config: Config, data_yaml: Path, out_dir: Path, class_names: list[str], targets: list[EvalTarget]
) -> TrainSpec:
    """A child run that trains nothing and only scores `targets` (`flywheel compare`)."""
    t = config.training
    return TrainSpec(
        run_id=0,
        data_yaml=str(data_yaml),
        out_dir=str(out_dir),
        start="",
        start_kind="",
        epochs=0,
        imgsz=t.imgsz,
        batch=t.batch,
        device=t.device,
        threads=training_threads(t.threads),
        seed=t.seed,
        patience=t.patience,
        class_names=class_names,
        evaluate=targets,
        evaluate_only=True,
    )


def compare_dir(runs: Path) -> Path:
    return runs / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"

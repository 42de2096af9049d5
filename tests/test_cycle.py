"""The cycle's policy with a fake trainer: start points, gate outcomes, score caching, failures.

The same path with the real Ultralytics child is proven in test_end_to_end.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import ModelStatus, RunState, StartKind
from flywheel.core.errors import TrainingError
from flywheel.core.gate import GateOutcome
from flywheel.flow.waiting import waiting
from tests.fakes import FakeTrainer
from tests.pg_server import both_backends

pytestmark = both_backends  # the store's behaviour, on SQLite and on PostgreSQL


def _ingest(app: App, tmp_path: Path, seed: int) -> int:
    batch = synthetic_batch(tmp_path / f"batch{seed}", 12, seed=seed)
    result = app.ingest(batch, move=False)
    assert result.version is not None and result.version.id is not None
    return result.version.id


def test_first_model_trains_from_base_and_is_promoted(data_root, tmp_path):
    trainer = FakeTrainer([0.2])
    app = App(data_root, trainer=trainer)
    result = app.train(_ingest(app, tmp_path, 1))
    spec = trainer.specs[0]
    assert spec.start_kind == StartKind.SCRATCH and spec.start == "yolov8n.yaml" and spec.epochs == 2
    assert [t.role for t in spec.evaluate] == ["candidate"]
    assert result.decision is not None and result.decision.outcome is GateOutcome.PROMOTE
    assert app.store.production().id == result.model.id
    assert result.run.state == RunState.SUCCEEDED
    assert [e.map50_95 for e in app.store.epochs(result.run.id)] == [0.2]


def test_second_model_warm_starts_from_production_checkpoint(data_root, tmp_path):
    trainer = FakeTrainer([0.2, 0.3], production_map=0.25)
    app = App(data_root, trainer=trainer)
    first = app.train(_ingest(app, tmp_path, 1)).model
    second = app.train(_ingest(app, tmp_path, 2))
    spec = trainer.specs[1]
    assert spec.start_kind == StartKind.WARM and spec.epochs == 2  # the auto budget's floor, capped at epochs_scratch
    assert Path(spec.start) == app.registry.checkpoint(first)
    assert second.run.start_model_id == first.id and second.model.parent_model_id == first.id
    # production was re-scored on the new version's val split (and its old/new halves), not on its own old one
    assert [(t.role, t.eval_set) for t in spec.evaluate if t.eval_set == "val"] == [
        ("candidate", "val"),
        ("production", "val"),
    ]
    gate = app.store.gate_decisions()[-1]
    assert gate.production_map == 0.25 and gate.candidate_map == 0.3 and gate.margin == pytest.approx(0.05)
    assert app.store.production().id == second.model.id
    assert app.store.model(first.id).status == ModelStatus.RETIRED


def test_worse_candidate_is_rejected_and_production_stays(data_root, tmp_path):
    trainer = FakeTrainer([0.4, 0.1], production_map=0.4)
    app = App(data_root, trainer=trainer)
    first = app.train(_ingest(app, tmp_path, 1)).model
    second = app.train(_ingest(app, tmp_path, 2))
    assert second.decision.outcome is GateOutcome.REJECT
    assert second.model.status == ModelStatus.REJECTED
    assert app.store.production().id == first.id
    assert (data_root / "production" / "model.json").read_text().count('"m0001"') == 1


def _rejected_then_trained_again(data_root: Path, tmp_path: Path, class_bootstrap: bool) -> tuple[App, FakeTrainer]:
    """Production m0001 scored 0.4 on v2 while rejecting a candidate; then v2 trains again,
    with the fake now saying 0.9 for production, so a fresh score is told from the cached one."""
    config = data_root / "config.toml"
    config.write_text(config.read_text() + f"\n[gate]\nclass_bootstrap = {str(class_bootstrap).lower()}\n")
    trainer = FakeTrainer([0.4, 0.1, 0.2], production_map=0.4)
    app = App(data_root, trainer=trainer)
    app.train(_ingest(app, tmp_path, 1))
    version = _ingest(app, tmp_path, 2)
    app.train(version)  # rejected: production scored on this version once
    assert ("production", "val") in {(t.role, t.eval_set) for t in trainer.specs[1].evaluate}
    trainer.production_map = 0.9
    app.train(version)  # same production, same eval set
    return app, trainer


def test_cached_production_score_is_not_recomputed(data_root, tmp_path):
    app, trainer = _rejected_then_trained_again(data_root, tmp_path, class_bootstrap=False)
    assert {t.role for t in trainer.specs[2].evaluate} == {"candidate"}  # production not scored again
    assert trainer.specs[2].bootstrap_samples == 0
    assert app.store.gate_decisions()[-1].production_map == 0.4  # the stored score, not the fake's 0.9 now


def test_per_class_intervals_score_production_again_for_its_matches(data_root, tmp_path):
    """The per-class intervals need production's per-image matches on the gated set, which no
    cached score keeps: production is scored again."""
    app, trainer = _rejected_then_trained_again(data_root, tmp_path, class_bootstrap=True)
    roles = {(t.role, t.eval_set) for t in trainer.specs[2].evaluate}
    assert ("production", "val") in roles and trainer.specs[2].bootstrap_samples == 1000
    assert app.store.gate_decisions()[-1].production_map == 0.9


def test_failed_training_is_recorded_and_leaves_production_alone(data_root, tmp_path):
    app = App(data_root, trainer=FakeTrainer([], fail=True))
    version = _ingest(app, tmp_path, 1)
    with pytest.raises(TrainingError, match=r"train\.log"):
        app.train(version)
    run = app.store.runs()[-1]
    assert run.state == RunState.FAILED and "boom" in run.error
    assert app.store.models() == [] and app.store.production() is None
    assert waiting(app.store, datetime.now(UTC)).version_id is None  # not retried in a loop on the same version

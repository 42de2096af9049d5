"""Registry: production pointer, atomic production/ folder, rollback, checkpoint integrity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlmodel import Session

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import ModelStatus
from flywheel.core.errors import IntegrityError, RegistryError
from flywheel.store.tables import ModelRow
from tests.fakes import FakeTrainer
from tests.pg_server import both_backends

pytestmark = both_backends  # the store's behaviour, on SQLite and on PostgreSQL


def _three_generations(data_root: Path, tmp_path: Path) -> App:
    app = App(data_root, trainer=FakeTrainer([0.1, 0.2, 0.3], production_map=0.0))
    for seed in (1, 2, 3):
        result = app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False)
        app.train(result.version.id)
    assert app.store.production().id == 3
    return app


def _published(root: Path) -> dict:
    return json.loads((root / "production" / "model.json").read_text())


def test_production_folder_describes_the_production_model(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    described = _published(data_root)
    assert described["id"] == "m0003" and described["parent"] == "m0002" and described["version"] == "v0003"
    assert described["metrics"]["map50_95"] == 0.3
    assert (data_root / "production").is_symlink()
    published, stored = data_root / "production" / "model.pt", app.registry.checkpoint(app.store.model(3))
    assert published.read_bytes() == stored.read_bytes()
    assert not os.path.samefile(published, stored)  # a copy: damage to one is not damage to both


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_a_damaged_copy_of_production_is_restored_from_the_intact_one(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    model = app.store.model(3)
    published = (data_root / "production" / "model.pt").resolve()
    stored = app.registry.checkpoints.path(model.sha256)
    good = stored.read_bytes()
    assert app.registry.production_problem() == "" and app.registry.heal_production() == ""
    _flip_a_byte(published)
    assert str(published) in app.registry.production_problem()
    assert "copied again from" in app.registry.heal_production()
    assert (data_root / "production" / "model.pt").read_bytes() == good
    _flip_a_byte(stored)
    assert "restored from" in app.registry.heal_production()
    assert stored.read_bytes() == good and app.registry.production_problem() == ""


def test_both_copies_damaged_is_an_integrity_error_naming_the_fix(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    _flip_a_byte((data_root / "production" / "model.pt").resolve())
    _flip_a_byte(app.registry.checkpoints.path(app.store.model(3).sha256))
    with pytest.raises(
        IntegrityError, match=r"both copies are damaged, nothing trains from it\. Run `flywheel rollback"
    ):
        app.registry.heal_production()


def test_rollback_goes_one_generation_back_each_time(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    trainer = app.trainer
    assert isinstance(trainer, FakeTrainer)
    asked, runs = len(trainer.specs), len(app.store.runs())
    entry = app.registry.rollback("bad on site B", actor="alice")
    assert (entry.model_id, entry.previous_model_id, entry.actor, entry.reason) == (2, 3, "alice", "bad on site B")
    # no training, no evaluation: the trainer (which scores too) was asked for nothing, no run recorded
    assert (len(trainer.specs), len(app.store.runs())) == (asked, runs)
    assert _published(data_root)["id"] == "m0002"
    assert app.store.model(3).status == ModelStatus.RETIRED
    app.registry.rollback("still bad", actor="alice")
    assert app.store.production().id == 1
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        app.registry.rollback("again", actor="alice")
    assert [e.action for e in app.store.ledger()] == ["promote", "promote", "promote", "rollback", "rollback"]


def test_rollback_to_a_named_retired_model(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    app.registry.rollback("pin the first", to=1, actor="bob")
    assert app.store.production().id == 1 and _published(data_root)["id"] == "m0001"


def test_rollback_refuses_a_model_that_never_was_production(data_root, tmp_path):
    app = App(data_root, trainer=FakeTrainer([0.5, 0.1], production_map=0.5))
    for seed in (1, 2):
        app.train(app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False).version.id)
    assert app.store.model(2).status == ModelStatus.REJECTED
    with pytest.raises(RegistryError, match="m0002 is rejected"):
        app.registry.rollback("try the rejected one", to=2, actor="eve")
    assert app.store.production().id == 1


def test_rollback_without_production_is_a_clear_error(data_root):
    with pytest.raises(RegistryError, match="no model is in production"):
        App(data_root).registry.rollback("nothing yet")


def test_a_changed_checkpoint_is_refused_before_it_is_loaded_or_published(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    path = app.registry.checkpoint(app.store.model(2))
    path.chmod(0o644)
    path.write_bytes(b"tampered pickle")
    with pytest.raises(IntegrityError, match="m0002"):
        app.registry.rollback("go back", actor="alice")
    assert app.store.production().id == 3  # nothing switched


def test_database_allows_only_one_production_model(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    with Session(app.engine) as s:
        row = s.get(ModelRow, 1)
        row.status = ModelStatus.PRODUCTION
        s.add(row)
        with pytest.raises(SAIntegrityError):
            s.commit()


def test_publish_heals_a_production_folder_that_lags_the_database(data_root, tmp_path):
    app = _three_generations(data_root, tmp_path)
    app.store.set_production(2, "rollback", "crash-test", "simulated crash before the folder swap")
    assert _published(data_root)["id"] == "m0003"  # the crash left the folder behind
    app.registry.publish()
    assert _published(data_root)["id"] == "m0002"

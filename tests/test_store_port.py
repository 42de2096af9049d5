"""The store port's contract (flywheel.core.ports.StorePort), run on the in-memory twin the flows'
unit tests use and on the concrete Store against SQLite and PostgreSQL (tests/pg_server.py):
what the flows may rely on whichever store holds the records. Records, never rows, come out;
states move only as the core allows."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.core import ledger
from flywheel.core.domain import ManifestItem, ModelStatus, RunState, StartKind
from flywheel.core.errors import InvalidTransition, NotFound, RegistryError, StoreError
from flywheel.core.gate import GateOutcome, GatePolicy, Rule, Score, SetVerdict
from flywheel.core.gate_details import EvalSetNote, Forgetting, GateDetails
from flywheel.core.ledger import Action
from flywheel.core.ports import StorePort
from flywheel.core.records import Epoch, Evaluation, GateRecord, LedgerEntry, Model, Run, Version
from flywheel.store import Store, database_url, make_engine, upgrade_schema
from flywheel.store.memory import MemoryStore
from tests.pg_server import BACKENDS, both_backends

# The port's contract holds for the twin as for both databases.
every_store = pytest.mark.parametrize("backend", ["memory", *BACKENDS], indirect=True)

ITEMS = [ManifestItem("a" * 64, "1" * 64, ".jpg", "train", 2), ManifestItem("b" * 64, "2" * 64, ".png", "val", 1)]


@pytest.fixture
def store(tmp_path: Path, backend: str, request: pytest.FixtureRequest):
    if backend == "memory":
        yield MemoryStore()
        return
    db_url = request.getfixturevalue("db_url")
    (tmp_path / "root").mkdir()
    engine = make_engine(database_url(tmp_path / "root", db_url))
    upgrade_schema(engine)
    yield Store(engine)
    engine.dispose()


def _epoch(run_id: int, epoch: int, map50_95: float) -> Epoch:
    losses = dict(box_loss=1.0, cls_loss=2.0, dfl_loss=3.0, precision=0.5, recall=0.4, map50=0.6, seconds=1.5)
    return Epoch(run_id=run_id, epoch=epoch, map50_95=map50_95, **losses)


@pytest.mark.parametrize("implementation", [Store, MemoryStore])
def test_each_store_has_every_method_of_the_port_with_its_parameters(implementation: type):
    for name, member in vars(StorePort).items():
        if name.startswith("_") or not callable(member):
            continue
        ours = getattr(implementation, name, None)
        assert ours is not None, f"{implementation.__name__} lacks {name}"
        assert inspect.signature(ours).parameters == inspect.signature(member).parameters, name
    typed: StorePort = MemoryStore()  # mypy holds the twin to the port's types
    assert typed is not None


@every_store
def test_versions_runs_and_epochs_are_records(store: Store):
    assert store.latest_version() is None and store.versions() == []
    v1 = store.create_version(None, None, ["red"], ITEMS, images_new=2)
    v2 = store.create_version(v1, None, ["red", "blue"], [])
    assert isinstance(v1, Version) and (v1.train_images, v1.val_images, v1.boxes) == (1, 1, 3)
    assert store.version(v1.id) == v1 and store.latest_version() == v2
    assert [v.id for v in store.versions()] == [v1.id, v2.id] and v2.parent_id == v1.id
    assert store.manifest(v2.id) == {i.image_sha256: i for i in ITEMS}
    assert store.items(v2.id, ["b" * 64, "c" * 64]) == {"b" * 64: ITEMS[1]}
    with pytest.raises(NotFound):
        store.version(999)

    run = store.create_run(version_id=v1.id, start_kind=StartKind.SCRATCH, start_checkpoint="yolov8n.yaml", epochs=3)
    assert isinstance(run, Run) and run.state is RunState.QUEUED and run.started_at is None
    assert run.start_kind is StartKind.SCRATCH and store.run(run.id).start_kind is StartKind.SCRATCH
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.state = RunState.RUNNING  # type: ignore[misc]
    running = store.update_run(run.id, RunState.RUNNING, params={"lr0": 0.01})
    assert running.state is RunState.RUNNING and running.started_at is not None and running.params == {"lr0": 0.01}
    assert store.update_run(run.id, epochs_done=2).state is RunState.RUNNING  # fields alone: no transition
    failed_once = store.update_run(run.id, error="disk full")
    assert failed_once.error == "disk full" and failed_once.params == {"lr0": 0.01}  # the others kept
    assert store.update_run(run.id, epochs_done=2).error == "disk full"  # error left as it was
    assert store.update_run(run.id, error=None).error is None  # None clears it
    with pytest.raises(InvalidTransition):
        store.update_run(run.id, RunState.QUEUED)
    assert store.run(run.id) == store.runs()[0] and store.run(run.id).epochs_done == 2
    with pytest.raises(NotFound):
        store.run(999)

    store.add_epoch(_epoch(run.id, 2, 0.2))
    store.add_epoch(_epoch(run.id, 1, 0.1))
    store.add_epoch(_epoch(run.id, 1, 0.15))  # recorded again (a resumed run): replaced
    assert [(e.epoch, e.map50_95) for e in store.epochs(run.id)] == [(1, 0.15), (2, 0.2)]
    store.delete_epochs(run.id)
    assert store.epochs(run.id) == []
    done = store.update_run(run.id, RunState.SUCCEEDED)
    assert done.finished_at is not None


@every_store
def test_models_production_ledger_pin_scores_and_gate_decisions(store: Store):
    version = store.create_version(None, None, ["red"], ITEMS)
    run = store.create_run(version_id=version.id, start_kind=StartKind.SCRATCH, start_checkpoint="yolov8n.yaml")
    a, b = (
        store.add_model(sha256=f"{i:064x}", run_id=run.id, version_id=version.id, class_names=["red"]) for i in (1, 2)
    )
    assert isinstance(a, Model) and a.status is ModelStatus.CANDIDATE and store.production() is None
    assert store.model(a.id) == a and [m.id for m in store.models()] == [a.id, b.id]
    with pytest.raises(NotFound):
        store.model(999)

    first = store.set_production(a.id, Action.PROMOTE, "gate", "better")
    assert isinstance(first, LedgerEntry) and (first.action, first.model_id) == (Action.PROMOTE, a.id)
    with pytest.raises(RegistryError):
        store.previous_production(a.id)  # nothing before the first
    second = store.set_production(b.id, Action.PROMOTE, "gate", "better still")
    assert second.previous_model_id == a.id and store.production() == store.model(b.id)
    assert store.model(a.id).status is ModelStatus.RETIRED and store.previous_production(b.id).id == a.id
    with pytest.raises(InvalidTransition):
        store.reject(a.id, "retired models are not rejected")

    assert store.pin() is None
    pinned = store.set_pin(True, "ops", "investigating")
    assert store.pin() == pinned and pinned.model_id == b.id
    store.set_pin(False, "ops", "done")
    assert store.pin() is None
    store.append_ledger(Action.GOLDEN_CHANGED, "flywheel", "golden set changed")
    entries = store.ledger()
    assert [e.action for e in entries] == ["promote", "promote", "pin", "unpin", "golden_changed"]
    assert all(isinstance(e.action, Action) for e in entries)
    assert ledger.verify(entries) == []

    assert store.evaluation(a.sha256, "e" * 64) is None
    cand = Score(map50_95=0.4, map50=0.6, precision=0.7, recall=0.5, per_class={"red": 0.4}, instances={"red": 3})
    score = Evaluation(model_sha256=a.sha256, eval_sha256="e" * 64, version_id=version.id, score=cand)
    store.put_evaluation(score)
    assert store.evaluation(a.sha256, "e" * 64) == score
    store.put_evaluation(dataclasses.replace(score, score=dataclasses.replace(cand, map50_95=0.45)))  # replaced
    assert store.evaluation(a.sha256, "e" * 64).score.map50_95 == 0.45  # type: ignore[union-attr]

    prod = dataclasses.replace(cand, map50_95=0.3)
    details = GateDetails(
        eval_sets={"val": EvalSetNote(sha256="e" * 64, images=4)},
        verdicts=(SetVerdict("val", cand, prod, (), Rule.MAP_NOT_WORSE, (0.01, 0.2)),),
        forgetting={"val_old": Forgetting(candidate=0.4, production=0.5)},
        policy=GatePolicy(),
    )
    gate = GateRecord(
        run_id=run.id, version_id=version.id, eval_sha256="e" * 64, candidate_model_id=b.id,
        production_model_id=a.id, candidate_map=0.4, production_map=0.3, margin=0.1, tolerance=0.0,
        outcome=GateOutcome.PROMOTE, rule=Rule.MAP_NOT_WORSE, details=details,
    )  # fmt: skip
    recorded = store.add_gate_decision(gate)
    assert recorded.id > 0 and recorded.created_at is not None
    assert dataclasses.replace(recorded, id=0, created_at=None) == gate  # the details read back typed
    assert store.gate_decisions() == [recorded]


@both_backends
def test_the_near_copy_hashes_are_kept_once(store: Store):
    hashes = store.image_hashes
    h = 0x0F0F_00FF_F0F0_FF00
    hashes.add([("a" * 64, h, "val"), ("b" * 64, h ^ 0xFFFF, "train")])
    hashes.add([("a" * 64, 0, "train")])  # already stored: kept as it was
    assert hashes.splits(["a" * 64, "c" * 64]) == {"a" * 64: "val"}
    found = hashes.sharing_a_quarter([h ^ 1])  # shares three quarters with a, two with b
    assert sorted(found) == sorted([(h, "a" * 64, "val"), (h ^ 0xFFFF, "b" * 64, "train")])


def test_a_database_failure_is_a_store_error(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: every query fails
    with pytest.raises(StoreError, match="database error"):
        Store(engine).runs()
    engine.dispose()


def test_the_core_and_the_flows_import_no_store_and_no_database_library():
    """The flows reach the database through the port alone (golden.py's use of ingest's readers,
    registry.py's notifier and cycle.py's replay are other edges, and allowed)."""
    code = (
        "import importlib, pkgutil, sys, flywheel.core, flywheel.flow\n"
        "for pkg in (flywheel.core, flywheel.flow):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__): importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "print(sorted(n for n in sys.modules if n.startswith('flywheel.store') or n.split('.')[0] in\n"
        "    ('sqlalchemy', 'sqlmodel', 'alembic', 'psycopg')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@every_store
def test_screenings_are_recorded_released_once_and_read_back_typed(store: Store):
    from flywheel.core.errors import InvalidTransition
    from flywheel.core.screening import Check, Screening, ScreenState, Suspect

    suspect = Suspect(
        Check.LABEL_ERRORS, "swapped", "a" * 64, 0.8, "why", "train", (1.0, 2.0, 3.0, 4.0), 0, (1, 0.9, 1, 2, 3, 4)
    )
    held = store.add_screening(
        Screening(
            batch_id=2,
            version_id=2,
            model_id=1,
            state=ScreenState.HELD,
            checks={"leakage": {"flagged": 0}},
            suspects=(suspect,),
        )
    )
    store.add_screening(Screening(batch_id=3, version_id=3, model_id=None, state=ScreenState.SKIPPED, note="none"))
    assert held.id and [x.id for x in store.screenings(2)] == [held.id] and len(store.screenings()) == 2
    assert (
        store.screenings(2)[0].suspects == (suspect,) and store.screenings(2)[0].suspects[0].check is Check.LABEL_ERRORS
    )
    released = store.approve_screening(held.id, "alice")
    assert released.state is ScreenState.APPROVED and released.decided_by == "alice" and released.decided_at
    with pytest.raises(InvalidTransition):
        store.approve_screening(held.id, "bob")

"""`flywheel gc`: the retention policy removes exactly what it says, nothing a rollback, compare,
audit or resume needs, and a SIGKILL at any step leaves a root every command still reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core import ledger
from flywheel.core.domain import ModelStatus, RunState
from flywheel.core.errors import IntegrityError
from flywheel.core.faults import ENV
from flywheel.core.retention import Area, Found, ModelFacts, RetentionPolicy, RunFacts, plan
from flywheel.core.spec import TrainSpec
from flywheel.flow.gc import TOMBSTONE, TRASH, collect, disk_bytes, run_gc
from flywheel.service.metrics import build_registry
from tests.conftest import TINY_CONFIG, free_port
from tests.fakes import Event, FakeTrainer

# --- the policy, as a pure function -----------------------------------------------------------


def _run(state: RunState, has_model: bool = True, days: float = 1.0) -> RunFacts:
    return RunFacts(state, has_model, days)


def test_policy_keeps_what_a_resume_needs_and_drops_what_the_registry_already_holds():
    runs = {
        1: _run(RunState.SUCCEEDED),
        2: _run(RunState.INTERRUPTED, has_model=False),
        3: _run(RunState.FAILED, False),
    }
    found = [
        Found("runs/r0001/train/weights/best.pt", Area.RUN_BEST, 10, 1, "1"),
        Found("runs/r0001/train/weights/last.pt", Area.RUN_LAST, 10, 1, "1"),
        Found("runs/r0001/train/weights/epoch3.pt", Area.RUN_EPOCH, 10, 1, "1"),
        Found("runs/r0002/train/weights/last.pt", Area.RUN_LAST, 10, 1, "2"),
        Found("runs/r0002/train/weights/best.pt", Area.RUN_BEST, 10, 1, "2"),
        Found("runs/r0003/train/weights/best.pt", Area.RUN_BEST, 10, 1, "3"),  # no model: not a duplicate
        Found("runs/r0009", Area.RUN_REST, 10, 99, "9"),  # a run the database does not know: kept
    ]
    removed = [r.path for r in plan(found, runs, [], RetentionPolicy())]
    assert removed == [
        "runs/r0001/train/weights/best.pt",
        "runs/r0001/train/weights/last.pt",
        "runs/r0001/train/weights/epoch3.pt",
    ]


def test_policy_ages_logs_quarantine_and_done_batches_by_their_own_limits():
    policy = RetentionPolicy(run_logs_days=30, quarantine_days=90, done_days=30, captured_days=0)
    runs = {1: _run(RunState.SUCCEEDED, days=31), 2: _run(RunState.SUCCEEDED, days=29)}
    found = [
        Found("runs/r0001", Area.RUN_REST, 1, 31, "1"),
        Found("runs/r0002", Area.RUN_REST, 1, 29, "2"),
        Found("quarantine/b0001-a", Area.QUARANTINE, 1, 91, "b0001-a"),
        Found("quarantine/b0002-b", Area.QUARANTINE, 1, 89, "b0002-b"),
        Found("inbox/.done/b0001-a", Area.DONE, 1, 40, "b0001-a"),  # still in quarantine: retry reads it
        Found("inbox/.done/b0003-c", Area.DONE, 1, 40, "b0003-c"),
        Found("captured/images/x.jpg", Area.CAPTURED, 1, 400),  # captured_days 0: forever
    ]
    removed = {r.path: r.why for r in plan(found, runs, [], policy, quarantined=frozenset({"b0001-a", "b0002-b"}))}
    assert sorted(removed) == ["inbox/.done/b0003-c", "quarantine/b0001-a", "runs/r0001"]
    assert "retention.run_logs_days = 30" in removed["runs/r0001"]
    assert "retention.quarantine_days = 90" in removed["quarantine/b0001-a"]


def test_policy_keeps_every_model_that_was_production_and_the_newest_rejected():
    models = [
        ModelFacts(1, "a", ModelStatus.RETIRED),
        ModelFacts(2, "b", ModelStatus.REJECTED),
        ModelFacts(3, "c", ModelStatus.REJECTED),
        ModelFacts(4, "d", ModelStatus.PRODUCTION),
        ModelFacts(5, "e", ModelStatus.REJECTED),
        ModelFacts(6, "f", ModelStatus.CANDIDATE),
        ModelFacts(7, "a", ModelStatus.REJECTED),  # the same checkpoint as a retired model
    ]
    found = [Found(f"models/xx/{sha}.pt", Area.MODEL_WEIGHTS, 1, 1, sha) for sha in "abcdef"]
    removed = [r.path for r in plan(found, {}, models, RetentionPolicy(keep_rejected=1))]
    # 7 is the newest rejected (its file is also the retired m1's); 5, 3 and 2 are older
    assert removed == ["models/xx/b.pt", "models/xx/c.pt", "models/xx/e.pt"]
    # keep_retired N: only the newest N retired keep theirs (rollback reaches no further); never production
    models.append(ModelFacts(8, "g", ModelStatus.RETIRED))
    found.append(Found("models/xx/g.pt", Area.MODEL_WEIGHTS, 1, 1, "g"))
    removed = {r.path: r.why for r in plan(found, {}, models, RetentionPolicy(keep_rejected=1, keep_retired=1))}
    assert sorted(removed) == ["models/xx/b.pt", "models/xx/c.pt", "models/xx/e.pt"]  # "a" is also rejected m7's
    models.append(ModelFacts(9, "h", ModelStatus.RETIRED))
    found.append(Found("models/xx/h.pt", Area.MODEL_WEIGHTS, 1, 1, "h"))
    removed = {r.path: r.why for r in plan(found, {}, models, RetentionPolicy(keep_rejected=0, keep_retired=1))}
    assert "models/xx/g.pt" in removed and "retention.keep_retired" in removed["models/xx/g.pt"]
    assert "models/xx/h.pt" not in removed and "models/xx/d.pt" not in removed and "models/xx/f.pt" not in removed


# --- on a real data root --------------------------------------------------------------------


class UltralyticsShapedTrainer(FakeTrainer):
    """The fake, plus the files a real training leaves in its run folder: train/weights/best.pt
    and last.pt (what gc is for), and a log."""

    def events(self, spec: TrainSpec) -> list[Event]:
        events = super().events(spec)
        if not spec.evaluate_only:
            weights = Path(spec.out_dir) / "train" / "weights"
            weights.mkdir(parents=True, exist_ok=True)
            best = (Path(spec.out_dir) / "best.pt").read_bytes()
            (weights / "best.pt").write_bytes(best)
            (weights / "last.pt").write_bytes(best + b" and its optimizer")
            (Path(spec.out_dir) / "train.log").write_text("epoch 1/1\n")
        return events


def _config() -> str:
    # no refresh and no scratch challenger: each version trains once, so the scores below decide
    return (
        TINY_CONFIG.format(port=free_port()).replace(
            "[training]\n", "[training]\nrefresh_growth = 0.0\nscratch_challenger_after_rejections = 0\n"
        )
        + "\n[retention]\nkeep_rejected = 1\n"
    )


@pytest.fixture
def history(tmp_path: Path) -> App:
    """m1 promoted, m2-m4 rejected, m5 promoted, then rolled back to m1; r6 left interrupted."""
    root = init_data_root(tmp_path / "root", _config())
    app = App(root, trainer=UltralyticsShapedTrainer([0.3, 0.1, 0.2, 0.05, 0.4], production_map=0.25))
    for seed in range(1, 6):
        result = app.ingest(synthetic_batch(tmp_path / f"b{seed}", 8, seed=seed), move=False)
        app.train(result.version.id)
    app.registry.rollback("m5 misbehaves in the field", actor="test")
    interrupted = app.store.create_run(
        version_id=5, start_kind="warm", start_model_id=1, start_checkpoint="", epochs=2, purpose="candidate"
    )
    app.store.update_run(interrupted.id, RunState.RUNNING)
    app.store.update_run(interrupted.id, RunState.INTERRUPTED)
    weights = app.paths.runs / f"r{interrupted.id:04d}" / "train" / "weights"
    weights.mkdir(parents=True)
    (weights / "last.pt").write_bytes(b"half a training")
    return app


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_gc_removes_exactly_what_the_policy_names_and_every_command_still_works(history):
    app, root = history, history.paths.root
    status = {m.id: m.status for m in app.store.models()}
    assert status == {1: "production", 2: "rejected", 3: "rejected", 4: "rejected", 5: "retired"}
    planned = collect(app.store, root, RetentionPolicy(keep_rejected=1))
    before = _tree(root)

    result = run_gc(app.store, root, RetentionPolicy(keep_rejected=1), actor="test")

    removed = before - _tree(root)
    expected = {f"runs/r{n:04d}/train/weights/{name}" for n in range(1, 6) for name in ("best.pt", "last.pt")}
    expected |= {app.registry.checkpoints.path(app.store.model(m).sha256).relative_to(root).as_posix() for m in (2, 3)}
    assert removed == expected
    assert {r.path for r in result.removals} == {r.path for r in planned} == expected
    assert result.freed == sum(r.size for r in planned) > 0
    assert not (root / TRASH).exists()
    # what gc never touches
    assert (app.paths.runs / "r0006" / "train" / "weights" / "last.pt").is_file()  # interrupted: resume reads it
    for kept in (1, 4, 5):
        app.registry.checkpoint(app.store.model(kept))  # verified against its sha256
    # the ledger says what happened, and still verifies
    entries = app.store.ledger()
    assert entries[-1].action == "gc" and entries[-1].reason.startswith("freed ")
    assert ledger.verify(entries) == []
    # rollback still reaches the retired model, and back
    app.registry.rollback("back to m5", to=5, actor="test")
    assert app.store.production().id == 5
    # a rejected model whose weights went says so, naming gc and the key
    with pytest.raises(IntegrityError, match=r"flywheel gc.*retention.keep_rejected"):
        app.registry.checkpoint(app.store.model(2))
    # a second gc finds nothing more
    assert run_gc(app.store, root, RetentionPolicy(keep_rejected=1), actor="test").removals == []


def test_gc_dry_run_removes_nothing_and_the_cli_lists_what_and_why(history):
    root = history.paths.root
    before = _tree(root)
    done = subprocess.run(
        [sys.executable, "-m", "flywheel", "gc", "--dry-run", "--json", "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(done.stdout)
    assert doc["schema"] == "flywheel.gc/1" and doc["dry_run"] is True
    assert len(doc["removals"]) == 12 and all(r["why"] for r in doc["removals"])
    assert doc["freed_bytes"] == sum(r["bytes"] for r in doc["removals"])
    assert _tree(root) == before
    assert history.store.ledger()[-1].action == "rollback"  # a dry run records nothing


@pytest.mark.parametrize("point", ["gc.moved@1", "gc.moved@7", "gc.recorded"])
def test_a_sigkill_at_each_step_of_gc_leaves_a_root_every_command_reads(history, point):
    root = history.paths.root
    env = {**os.environ, ENV: point}
    killed = subprocess.run(
        [sys.executable, "-m", "flywheel", "gc", "--root", str(root)], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr
    app = App(root)
    assert ledger.verify(app.store.ledger()) == []
    assert app.store.production().id == 1
    app.registry.checkpoint(app.store.model(1))
    assert (root / "production" / "model.pt").is_file()
    # the next gc finishes the job: the same end state as an uninterrupted one
    again = subprocess.run(
        [sys.executable, "-m", "flywheel", "gc", "--root", str(root)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert not (root / TRASH).exists()
    assert not any((app.paths.runs / f"r{n:04d}" / "train" / "weights" / "best.pt").exists() for n in range(1, 6))
    assert (app.paths.runs / "r0006" / "train" / "weights" / "last.pt").is_file()
    assert [e.action for e in app.store.ledger()].count("gc") == (2 if point.startswith("gc.recorded") else 1)


def _area_bytes(app: App) -> dict[str, float]:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry, _ = build_registry(app.store, app.objects, app.paths.root)
    text = generate_latest(registry).decode()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "flywheel_data_root_area_bytes")
    return {s.labels["area"]: s.value for s in family.samples}


def test_the_area_gauges_say_what_gc_freed(history):
    app, root = history, history.paths.root
    before = _area_bytes(app)
    assert before["runs"] > 0 and before["models"] > 0 and before["objects"] > 0
    result = run_gc(app.store, root, RetentionPolicy(keep_rejected=1), actor="test")
    after = _area_bytes(app)  # a fresh registry: the walk is cached per registry for a minute
    freed = {area: before[area] - after[area] for area in before}
    by_area = {"runs": 0, "models": 0}
    for r in result.removals:
        by_area["runs" if r.path.startswith("runs/") else "models"] += r.size
    stones = sum(disk_bytes(p) for p in (root / "models").rglob(f"*{TOMBSTONE}"))
    assert len(list((root / "models").rglob(f"*{TOMBSTONE}"))) == 2  # one per model whose weights went
    assert freed["runs"] == by_area["runs"] > 0 and freed["models"] == by_area["models"] - stones
    assert freed["objects"] == freed["versions"] == freed["production"] == 0

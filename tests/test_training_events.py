"""The child-to-daemon events: the wire format both ends share, and the fake trainer's sequence
through the cycle and `flywheel compare` (the real child is proven in test_training_process.py
and test_end_to_end.py)."""

from __future__ import annotations

import io
import json
import socket
import stat
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.main import app as cli
from flywheel.core.errors import EventError, TrainingError
from flywheel.core.events import (
    KINDS,
    BackboneUnfrozen,
    BatchProgress,
    BootstrapInterval,
    ChildCancelled,
    ChildFailed,
    ChildStarted,
    ClassInterval,
    EpochEnded,
    Evaluated,
    Placed,
    PlateauReached,
    Trained,
    TrainingEvent,
    WarmStarted,
    parse_event,
)
from flywheel.core.gate import Score
from flywheel.core.spec import TrainSpec
from flywheel.flow.run_events import record_event
from flywheel.training.local_trainer import SubprocessTrainer
from flywheel.training.process import Reporter
from tests.conftest import TINY_CONFIG
from tests.fakes import FakeTrainer

ONE_OF_EACH: list[TrainingEvent] = [
    ChildStarted(pid=123, versions={"python": "3.11.7", "torch": "2.5.1"}, resumed_from_epoch=0),
    WarmStarted(matched=64, total=64, head_rows_kept=6, head_rows_total=6, head_rows_fixed=0, shrink=1.0, perturb=0.0),
    PlateauReached(epoch=5, best_epoch=3, best_fitness=0.4125, epochs=8),
    BackboneUnfrozen(phase=2, epoch=3, unfrozen=120, frozen_unchanged=150, frozen_total=150),
    BatchProgress(epoch=1, epochs=2, batch=3, batches=4),
    EpochEnded(1, 2, 5.5, 4.1, 4.2, 0.25, 0.5, 0.3, 0.125, 13.2),
    Trained(best="/data/runs/r0001/train/weights/best.pt", seconds=61.5, resumed=True),
    Evaluated(
        role="production",
        eval_set="new",
        checkpoint="/data/models/m0001.pt",
        score=Score(
            map50_95=0.5,
            map50=0.75,
            precision=0.625,
            recall=0.25,
            per_class={"red": 0.5, "blue with spaces": 0.0},
            instances={"red": 12, "blue with spaces": 3},
        ),
        seconds=2.5,
    ),
    BootstrapInterval(
        eval_set="val",
        observed=0.01,
        mean=0.0125,
        low=-0.02,
        high=0.04,
        samples=1000,
        confidence=0.95,
        classes={"red": ClassInterval(observed=0.02, low=-0.01, high=0.05)},
    ),
    ChildFailed(error="RuntimeError: CUDA out of memory"),
    ChildCancelled(reason="stopped by SIGTERM"),
    Placed(executor="ray", node="5f0c2a9e" * 7, submission_id="r0007-2"),
]


def _wire(event: TrainingEvent) -> str:
    """What the child writes for `event`: through its own Reporter."""
    stream = io.StringIO()
    Reporter(stream).send(event)
    return stream.getvalue()


def test_every_kind_has_an_example_here():
    assert {type(e) for e in ONE_OF_EACH} == set(get_args(TrainingEvent)) == set(KINDS.values())


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.kind)
def test_each_kind_round_trips_through_the_childs_reporter(event: TrainingEvent):
    line = _wire(event)
    assert line.endswith("\n") and line.count("\n") == 1  # one JSON line per event
    assert json.loads(line)["event"] == event.kind  # the wire format of earlier versions
    assert parse_event(line) == event
    assert parse_event(json.loads(line)) == event  # a dict, as from a test or another reader


def _broken(kind: str) -> list[tuple[str, str]]:
    return [(kind, f.name) for f in fields(KINDS[kind])]


@pytest.mark.parametrize(("kind", "key"), [p for kind in KINDS for p in _broken(kind)])
def test_a_missing_key_fails_naming_the_kind_and_the_key(kind: str, key: str):
    (event,) = [e for e in ONE_OF_EACH if e.kind == kind]
    data = json.loads(_wire(event))
    del data[key]
    with pytest.raises(EventError, match=f"'{kind}': missing key '{key}'"):
        parse_event(json.dumps(data))


def test_a_renamed_key_fails_naming_the_key_the_daemon_expects():
    data = json.loads(_wire(ONE_OF_EACH[5]))
    data["map50_95_val"] = data.pop("map50_95")
    with pytest.raises(EventError, match="'epoch': missing key 'map50_95'") as info:
        parse_event(data)
    assert "map50_95_val" in str(info.value)  # and shows what came instead


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epoch": "1"}, "key 'epoch' should be int, got str '1'"),
        ({"epoch": True}, "key 'epoch' should be int, got bool"),
        ({"map50_95": None}, "key 'map50_95' should be float, got NoneType"),
    ],
)
def test_a_key_of_the_wrong_type_fails_naming_it(change: dict[str, Any], message: str):
    data = json.loads(_wire(ONE_OF_EACH[5])) | change
    with pytest.raises(EventError, match=message.replace("(", r"\(")):
        parse_event(data)


def test_nested_values_are_checked_too():
    data = json.loads(_wire(ONE_OF_EACH[8]))
    del data["classes"]["red"]["low"]
    with pytest.raises(EventError, match=r"'bootstrap': key 'classes'.*missing key 'low'"):
        parse_event(data)
    data = json.loads(_wire(ONE_OF_EACH[7]))
    data["score"]["per_class"]["red"] = "high"
    with pytest.raises(EventError, match="key 'score': key 'per_class'\\['red'\\] should be float"):
        parse_event(data)


def test_a_whole_number_is_a_float_and_unknown_keys_are_ignored():
    data = json.loads(_wire(ONE_OF_EACH[5])) | {"map50_95": 0, "lr": 0.01}  # JSON has one number type
    event = parse_event(data)
    assert isinstance(event, EpochEnded) and event.map50_95 == 0.0 and isinstance(event.map50_95, float)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"event": "epoch_done", "epoch": 1}', "unknown kind 'event': 'epoch_done'"),
        ('{"epoch": 1}', "unknown kind 'event': None"),
        ("epoch 1 done", "not JSON"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_an_unknown_kind_or_a_line_that_is_no_event_fails(line: str, message: str):
    with pytest.raises(EventError, match=message):
        parse_event(line)
    assert issubclass(EventError, TrainingError)  # fails the run, as a crashed child does


def test_the_runner_stops_a_child_that_sends_a_malformed_event(tmp_path: Path):
    """A child of another format: the run fails at its first bad event, naming the key, and the
    child is stopped rather than left to train for nothing."""
    script = tmp_path / "old_child.py"
    line = json.dumps({"event": "epoch", "epoch": 1, "epochs": 2})  # keys missing
    script.write_text(
        f"import os, time\nos.write(int(os.environ['FLYWHEEL_EVENT_FD']), b'{line}\\n')\ntime.sleep(60)\n"
    )
    child = tmp_path / "python"  # stands in for the interpreter: runs the script, whatever it is asked
    child.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    child.chmod(child.stat().st_mode | stat.S_IXUSR)
    trainer = SubprocessTrainer(tmp_path / "config", python=str(child))
    spec = TrainSpec(7, "data.yaml", str(tmp_path / "run"), "yolov8n.yaml", "scratch", 2, 64, 8, "cpu", 1, 0, 5, ["a"])
    seen: list[TrainingEvent] = []
    started = time.monotonic()
    with pytest.raises(EventError, match=r"r0007.*'epoch': missing key 'box_loss'.*train\.log"):
        trainer.run(spec, seen.append)
    assert [e.kind for e in seen] == ["placed"]  # where it ran; no event of the child's
    assert isinstance(seen[0], Placed) and seen[0].executor == "local" and seen[0].node == socket.gethostname()
    assert time.monotonic() - started < 30  # stopped, not waited for


# --- the fake trainer's sequence through the cycle ----------------------------------------------


def _ingest(app: App, tmp_path: Path, seed: int) -> int:
    result = app.ingest(synthetic_batch(tmp_path / f"batch{seed}", 12, seed=seed), move=False)
    assert result.version is not None and result.version.id is not None
    return result.version.id


def test_the_fakes_events_are_recorded_by_the_cycle(data_root: Path, tmp_path: Path):
    trainer = FakeTrainer([0.2, 0.3], production_map=0.2, epochs=2)
    app = App(data_root, trainer=trainer)
    first = app.train(_ingest(app, tmp_path, 1))
    assert [(e.epoch, e.map50_95, e.box_loss) for e in app.store.epochs(first.run.id)] == [(1, 0.2, 1.0), (2, 0.2, 1.0)]
    run = app.store.run(first.run.id)
    assert run.epochs_done == 2 and (run.batch, run.batches) == (1, 1)
    assert run.environment["versions"]["flywheel"] == "fake" and run.environment["resumed_from_epoch"] == 0
    assert run.warm_tensors_total is None  # a scratch start sends no warm-start check
    second = app.train(_ingest(app, tmp_path, 2))  # warm from production: the warm-start check is recorded
    assert (second.run.warm_tensors_matched, second.run.warm_tensors_total) == (64, 64)
    assert second.model.id is not None and second.decision is not None
    assert second.decision.candidate_map == 0.3 and second.decision.production_map == 0.2


def test_the_fakes_bootstrap_interval_reaches_the_gate(data_root: Path, tmp_path: Path):
    (data_root / "config.toml").write_text((data_root / "config.toml").read_text() + "\n[gate]\nbootstrap = true\n")
    trainer = FakeTrainer([0.2, 0.3], production_map=0.2, bootstrap=True)
    app = App(data_root, trainer=trainer)
    app.train(_ingest(app, tmp_path, 1))
    second = app.train(_ingest(app, tmp_path, 2))
    assert trainer.specs[1].bootstrap_samples > 0
    assert second.decision is not None
    (verdict,) = [v for v in second.decision.verdicts if v.eval_set == "val"]
    assert verdict.interval == pytest.approx((0.1, 0.1))  # candidate 0.3 - production 0.2, as the fake says


def test_compare_runs_an_evaluate_only_spec_through_the_fake(data_root: Path, tmp_path: Path, monkeypatch):
    """`flywheel compare` as a user runs it, with the fake in place of the child process."""
    trainer = FakeTrainer([0.3, 0.4], production_map=0.3)
    app = App(data_root, trainer=trainer)
    app.train(_ingest(app, tmp_path, 1))
    app.train(_ingest(app, tmp_path, 2))
    _ingest(app, tmp_path, 3)  # a version neither model was scored on: nothing cached
    trainer.scores = {"m0001": 0.125, "m0002": 0.625}
    monkeypatch.setattr("flywheel.app.SubprocessTrainer", lambda *_a, **_k: trainer)
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(cli, ["compare", "m0001", "m0002", "--root", str(data_root)])
    assert result.exit_code == 0, result.output
    spec = trainer.specs[-1]
    assert spec.evaluate_only and {t.role for t in spec.evaluate} == {"m0001", "m0002"}
    assert all(t.checkpoint for t in spec.evaluate)  # the registry's checkpoints, not a training's
    assert not (Path(spec.out_dir) / "best.pt").exists()  # evaluate-only: nothing trained
    assert "0.1250" in result.output and "0.6250" in result.output
    events = trainer.events(spec)
    assert {type(e) for e in events} == {Evaluated}  # no start, epochs or trained: as the real child


def test_where_a_run_trained_is_recorded_and_shown(data_root: Path, tmp_path: Path, monkeypatch):
    """A Placed event (from the trainer, before or after the child's started) lands in the run's
    environment beside what started records, and `status` / `models show` say it, text and JSON."""
    placed = Placed(executor="ray", node="5f0c2a9e" * 7, submission_id="r0001")
    trainer = FakeTrainer([0.3], placed=placed)
    app = App(data_root, trainer=trainer)
    result = app.train(_ingest(app, tmp_path, 1))
    env = app.store.run(result.run.id).environment
    assert (env["executor"], env["node"], env["submission_id"]) == ("ray", placed.node, "r0001")
    assert env["versions"]["flywheel"] == "fake"  # started's record kept beside it
    record_event(app.store, trainer.specs[0], ChildStarted(pid=1, versions={}, resumed_from_epoch=0))
    assert app.store.run(result.run.id).environment["executor"] == "ray"  # started after placed keeps it too
    runner = CliRunner(env={"COLUMNS": "250"})
    status = runner.invoke(cli, ["status", "--root", str(data_root)])
    assert status.exit_code == 0 and "ray job r0001 on node 5f0c2a9e" in status.output, status.output
    show = runner.invoke(cli, ["models", "show", "m0001", "--root", str(data_root)])
    assert show.exit_code == 0 and f"trained: ray job r0001 on node {placed.node}" in show.output, show.output
    data = json.loads(runner.invoke(cli, ["status", "--root", str(data_root), "--json"]).output)
    assert data["runs"][-1]["placement"] == {"executor": "ray", "node": placed.node, "submission_id": "r0001"}
    data = json.loads(runner.invoke(cli, ["models", "show", "m0001", "--root", str(data_root), "--json"]).output)
    assert data["run"]["placement"]["submission_id"] == "r0001"


class _Recording:
    """A trainer that keeps every event another one sends, one list a run."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.runs: list[list[TrainingEvent]] = []

    def run(self, spec: Any, on_event: Any) -> list[TrainingEvent]:
        events: list[TrainingEvent] = []
        self.runs.append(events)

        def both(event: TrainingEvent) -> None:
            events.append(event)
            on_event(event)

        result: list[TrainingEvent] = self.inner.run(spec, both)
        return result

    def cancel(self) -> None:
        self.inner.cancel()


def _shape(value: Any) -> Any:
    """A value's type, and for a mapping its key and value types (not its values)."""
    if isinstance(value, dict):
        return ("dict", frozenset(type(k).__name__ for k in value), frozenset(_shape(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return ("seq", frozenset(_shape(v) for v in value))
    return type(value).__name__


def _outline(events: list[TrainingEvent]) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """Each event's kind and its fields' shapes, progress left out (the child throttles it to a
    few a second) and repeats of one kind in a row counted once (the fake trains fewer epochs)."""
    outline: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
    for event in events:
        if isinstance(event, BatchProgress):
            continue
        item = (event.kind, tuple((f.name, _shape(getattr(event, f.name))) for f in fields(event)))
        if not outline or outline[-1] != item:
            outline.append(item)
    return outline


@pytest.mark.slow
def test_the_fake_sends_what_a_real_child_sends(tmp_path: Path):
    """The fake trainer's events (tests/fakes.py), held to a real tiny training's: a scratch run,
    then a warm start scored against production. Same kinds in the same order, same fields of
    the same types, the same eval targets, the same library keys."""
    config = TINY_CONFIG.format(port=0).replace("imgsz = 64\nbatch = 8\n", "imgsz = 32\nbatch = 4\nnbs = 4\n")
    real = App(init_data_root(tmp_path / "real", config))
    real.trainer = recorded_real = _Recording(real.trainer)
    trainer = FakeTrainer([0.3, 0.4], production_map=0.2, bootstrap=True)  # the real child sends one
    fake = App(init_data_root(tmp_path / "fake", config), trainer=trainer)
    fake.trainer = recorded_fake = _Recording(fake.trainer)
    for app in (real, fake):
        for seed in (1, 2):
            app.train(_ingest(app, tmp_path / app.paths.root.name, seed))
    assert len(recorded_real.runs) == len(recorded_fake.runs) == 2
    for real_events, fake_events in zip(recorded_real.runs, recorded_fake.runs, strict=True):
        assert _outline(fake_events) == _outline(real_events)
        assert [(e.role, e.eval_set) for e in fake_events if isinstance(e, Evaluated)] == [
            (e.role, e.eval_set) for e in real_events if isinstance(e, Evaluated)
        ]
        started = [e for e in real_events + fake_events if isinstance(e, ChildStarted)]
        assert len({frozenset(e.versions) for e in started}) == 1, started
        assert any(isinstance(e, BatchProgress) for e in real_events) and any(
            isinstance(e, BatchProgress) for e in fake_events
        )

"""The registry's mirror (flywheel/flow/mirroring.py) over its in-memory tracker twin: what it
mirrors, that an unreachable tracker never holds a production change back, the backoff, the
catch-up with nothing made twice, and the [mlflow] config. The same paths against a real
`mlflow server`: tests/test_mlflow_mirror.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.config import parse_toml
from flywheel.core.errors import ConfigError
from flywheel.core.mirror import PARAM_VALUE_LIMIT, flat_params
from flywheel.core.ports import NullMirror
from flywheel.flow.mirroring import StoreMirror
from flywheel.mirror.memory import InMemoryTracker, MemoryMirrorState
from tests.fakes import FakeTrainer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _mirrored(
    data_root: Path, maps: list[float], production_map: float = 0.0
) -> tuple[App, InMemoryTracker, MemoryMirrorState, Clock]:
    app = App(data_root, trainer=FakeTrainer(maps, production_map=production_map, epochs=2))
    tracker, state, clock = InMemoryTracker(), MemoryMirrorState(), Clock()
    app.registry.mirror = StoreMirror(
        "memory", app.store, tracker, state, app.checkpoints, app.paths.runs, 5.0, 60.0, clock=clock
    )
    return app, tracker, state, clock


def _train(app: App, tmp_path: Path, seed: int) -> None:
    result = app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False)
    app.train(result.version.id)


def test_each_training_is_a_run_and_the_aliases_follow_production(data_root, tmp_path):
    app, tracker, _, _ = _mirrored(data_root, [0.3, 0.1], production_map=0.3)
    _train(app, tmp_path, 1)  # m0001 promoted
    _train(app, tmp_path, 2)  # m0002 worse: rejected, still the newest gated one
    assert tracker.model_at("production") == "m0001" and tracker.model_at("candidate") == "m0002"
    logged = {r.run: r for r in tracker.runs.values()}
    assert sorted(logged) == ["r0001", "r0002"]
    second = logged["r0002"]
    assert second.tags["flywheel.gate.outcome"] == "reject" and second.tags["flywheel.dataset_version"] == "v0002"
    assert second.tags["flywheel.manifest_sha256"] == app.store.version(2).manifest_sha256
    assert [p.epoch for p in second.epochs] == [1, 2] and "val.map50_95" in second.epochs[0].values
    assert second.params["epochs"] == str(app.store.run(2).params["epochs"])
    assert second.documents["gate/decision.json"]["outcome"] == "reject"
    assert second.texts["gate/per_class.csv"].startswith("eval_set,class,")
    assert second.files["model/model.pt"] == app.checkpoints.path(app.store.model(2).sha256)
    assert app.mirror.status().pending == ()


def test_an_unreachable_tracker_never_blocks_a_promotion_and_the_mirror_catches_up(data_root, tmp_path):
    app, tracker, _, clock = _mirrored(data_root, [0.1, 0.2, 0.3])
    _train(app, tmp_path, 1)
    _train(app, tmp_path, 2)
    tracker.down = True
    app.registry.rollback("field trouble", actor="test")  # does not raise, production moved
    _train(app, tmp_path, 3)  # promoted while the tracker is down
    assert app.store.production().id == 3
    status = app.mirror.status()
    assert status.up is False and "in-memory tracker: down" in status.error
    assert status.pending == ("run r0003", "model m0003", "alias candidate -> m0003", "alias production -> m0003")

    calls = tracker.calls
    tracker.down = False
    assert app.cases.sync_mirror().pending  # still backing off: the tracker is not asked
    assert tracker.calls == calls
    clock.now += 60
    assert app.cases.sync_mirror().pending == ()
    assert tracker.model_at("production") == "m0003" and len(tracker.runs) == 3 and len(tracker.versions) == 3


def test_a_lost_record_makes_nothing_twice(data_root, tmp_path):
    app, tracker, state, _ = _mirrored(data_root, [0.1, 0.2])
    _train(app, tmp_path, 1)
    _train(app, tmp_path, 2)
    state.state = type(state.state)()  # the record lost: every item looks pending
    assert app.mirror.status().pending
    assert app.cases.sync_mirror(force=True).pending == ()
    assert len(tracker.runs) == 2 and len(tracker.versions) == 2 and tracker.model_at("production") == "m0002"


def test_params_are_flat_strings_within_the_trackers_limit():
    flat = flat_params({"epochs": 3, "replay": {"images": 10, "sample": "x" * 10_000}, "none": None})
    assert flat["epochs"] == "3" and flat["replay.images"] == "10" and flat["none"] == ""
    assert len(flat["replay.sample"]) == PARAM_VALUE_LIMIT and flat["replay.sample"].endswith("(truncated)")


def test_mlflow_config_errors_name_the_key():
    assert parse_toml("").mlflow.tracking_uri == ""
    assert (
        parse_toml('[mlflow]\ntracking_uri = "http://127.0.0.1:5000/"').mlflow.tracking_uri == "http://127.0.0.1:5000"
    )
    with pytest.raises(ConfigError, match=r"key `mlflow.tracking_uri`: .*MLflow tracking URI"):
        parse_toml('[mlflow]\ntracking_uri = "127.0.0.1:5000"')
    with pytest.raises(ConfigError, match=r"key `mlflow.retry_seconds`"):
        parse_toml("[mlflow]\nretry_seconds = 0")
    with pytest.raises(ConfigError, match=r"key `mlflow.registered_model`"):
        parse_toml('[mlflow]\nregistered_model = " "')


def test_without_a_tracking_uri_nothing_loads_mlflow(data_root):
    assert isinstance(App(data_root).mirror, NullMirror)
    probe = (
        f"import sys, pathlib; from flywheel.app import App; App(pathlib.Path({str(data_root)!r})); "
        "print('mlflow' in sys.modules)"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "False"


def test_the_daemon_serves_the_mirror_gauges_when_mlflow_is_configured(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'flywheel[mlflow]'")
    from flywheel.app import build_daemon, init_data_root

    root = init_data_root(tmp_path / "root", '[mlflow]\ntracking_uri = "http://127.0.0.1:9"\n')
    daemon = build_daemon(root)
    daemon.work.cases.sync_mirror(force=True)  # nothing to mirror yet: MLflow is not asked
    scrape = daemon.metrics_registry
    assert scrape.get_sample_value("flywheel_mirror_pending", {"target": "mlflow"}) == 0.0
    assert scrape.get_sample_value("flywheel_mirror_up", {"target": "mlflow"}) is None

"""The daemon and an executor that can be down (a Ray cluster), with a fake remote trainer:
an unreachable cluster degrades the daemon (one log line, /readyz, `flywheel_executor_up` 0)
and the version waits untrained; a training that loses the cluster leaves its run interrupted,
not failed, and it is trained once the cluster answers again. The real cluster: test_ray_daemon.py."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from flywheel.app import App, build_daemon
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.domain import RunState
from flywheel.core.errors import ConfigError, ExecutorUnavailable
from flywheel.core.events import TrainingEvent
from flywheel.core.ports import RemoteTrainer
from flywheel.core.spec import TrainSpec
from tests.fakes import FakeTrainer
from tests.metrics_scrape import scrape, value
from tests.test_schedule_daemon import until


class FlakyCluster(FakeTrainer):
    """A FakeTrainer behind a cluster that is down while `down` is set; `lose` makes the next
    training lose the cluster half-way (after its first events)."""

    def __init__(self) -> None:
        super().__init__([0.3, 0.4], epochs=2)
        self.down = True
        self.lose = 0
        self.checks = 0

    def check(self, data_root: Path) -> str:
        self.checks += 1
        if self.down:
            raise ExecutorUnavailable("cannot reach the Ray cluster's job API at http://127.0.0.1:9 (refused)")
        return "fake cluster"

    def adopts(self, run_id: int) -> bool:
        return False

    def run(self, spec: TrainSpec, on_event):  # type: ignore[no-untyped-def]
        if self.lose:
            self.lose -= 1
            for event in self.events(spec)[:3]:
                on_event(event)
            raise ExecutorUnavailable("lost the Ray job API at http://127.0.0.1:9 for 60s")
        events: list[TrainingEvent] = super().run(spec, on_event)
        return events


def test_the_fake_is_a_remote_trainer():
    assert isinstance(FlakyCluster(), RemoteTrainer) and not isinstance(FakeTrainer([]), RemoteTrainer)


def test_an_unreachable_cluster_degrades_the_daemon_and_the_version_waits(data_root: Path, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO)
    daemon = build_daemon(data_root, trainer := FlakyCluster())
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    store = daemon.work.store
    try:
        assert daemon.ready.wait(60)
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), data_root / "inbox")
        until("the batch ingested", lambda: store.latest_version() is not None, thread)
        until("a few checks", lambda: trainer.checks >= 3, thread)  # rescan_seconds = 2
        assert store.runs() == [] and "cannot reach the Ray cluster" in daemon.degraded.reason
        metrics = scrape(daemon.metrics_port)
        assert value(metrics, "flywheel_executor_up", executor="local") == 0  # the config's name for it
        assert value(metrics, "flywheel_degraded") == 1
        assert caplog.text.count("degraded, still serving /metrics") == 1  # once, not per retry
        # it comes back, then the first training loses it: interrupted (not failed), then trained
        trainer.lose = 1
        trainer.down = False
        until("the first model", lambda: store.production() is not None, thread)
    finally:
        daemon.stop()
        thread.join(60)
    (run,) = store.runs()
    assert run.state == RunState.SUCCEEDED and run.resumed == 1  # the lost try did not count
    assert "waiting for the executor" in caplog.text or "lost the Ray job API" in caplog.text
    assert [e.epoch for e in store.epochs(run.id)] == [1, 2]
    assert daemon.degraded.reason == "" and value(scrape_after(daemon), "flywheel_executor_up", executor="local") == 1


def scrape_after(daemon):  # type: ignore[no-untyped-def]
    return {
        (m.name, tuple(sorted(s.labels.items()))): s.value for m in daemon.metrics_registry.collect() for s in m.samples
    }


def test_a_training_that_loses_the_cluster_leaves_its_run_interrupted(data_root: Path, tmp_path: Path):
    trainer = FlakyCluster()
    trainer.down, trainer.lose = False, 1
    app = App(data_root, trainer=trainer)
    version = app.ingest(synthetic_batch(tmp_path / "b1", 12, seed=1), move=False).version
    assert version is not None and version.id is not None
    with pytest.raises(ExecutorUnavailable):
        app.train(version.id)
    (run,) = app.store.runs()
    assert run.state == RunState.INTERRUPTED and run.resumed == 0 and "waiting for the executor" in run.error
    (result,) = app.resume_interrupted()
    assert result.run.state == RunState.SUCCEEDED and result.run.id == run.id and result.run.resumed == 1


def _ray_config(root: Path) -> None:
    text = (root / "config.toml").read_text().replace("[training]\n", '[training]\nexecutor = "ray"\n', 1)
    text += '\n[ray]\naddress = "http://127.0.0.1:9"\nresource = "flywheel-trainer"\nnum_gpus = 1\nprefix = "a-"\n'
    (root / "config.toml").write_text(text)


def test_executor_ray_builds_the_ray_trainer_from_the_config(data_root: Path):
    _ray_config(data_root)
    trainer = App(data_root).trainer
    from flywheel.training.ray_jobs import RayJobTrainer

    assert isinstance(trainer, RayJobTrainer) and isinstance(trainer, RemoteTrainer)
    assert (trainer.address, trainer.resources, trainer.num_gpus, trainer.prefix) == (
        "http://127.0.0.1:9",
        {"flywheel-trainer": 1},
        1.0,
        "a-",
    )
    assert trainer.python == sys.executable  # ray.python = "": the daemon's own interpreter path


def test_executor_ray_without_ray_installed_is_a_config_error_naming_the_key(data_root: Path, monkeypatch):
    _ray_config(data_root)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"key `training.executor`.*pip install 'flywheel\[ray\]'"):
        App(data_root)

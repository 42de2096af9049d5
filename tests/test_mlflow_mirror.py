"""The registry mirrored into a real `mlflow server` on loopback (SQLite backend, tests/mlflow_server.py):
runs carry the params, per-epoch metrics, the gate and the checkpoint; promote and rollback move
the `production` alias; MLflow killed during a promotion does not stop it, and once MLflow is
back the mirror catches up with nothing made twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.main import app as cli
from flywheel.service.metrics_mirror import MirrorCollector
from tests.fakes import FakeTrainer
from tests.mlflow_server import MlflowServer, running

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'flywheel[mlflow]'")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.slow  # two server starts of ~15 s each, beside the trainings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    with running(tmp_path / "mlflow") as server:
        yield server


def _root(tmp_path: Path, uri: str) -> Path:
    config = f'[mlflow]\ntracking_uri = "{uri}"\nretry_seconds = 0.1\nretry_max_seconds = 0.1\ntimeout_seconds = 5.0\n'
    return init_data_root(tmp_path / "root", config)


def _train(app: App, tmp_path: Path, seed: int) -> None:
    result = app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False)
    app.train(result.version.id)


def _at(client: MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias("flywheel", alias).tags["flywheel.model_id"])


def _gauges(app: App) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(MirrorCollector(app.mirror))
    return {
        name: registry.get_sample_value(name, {"target": "mlflow"}) or 0.0
        for name in ("flywheel_mirror_up", "flywheel_mirror_pending")
    }


def test_runs_versions_and_aliases_follow_the_registry_through_an_outage(server, tmp_path):
    root = _root(tmp_path, server.uri)
    app = App(root, trainer=FakeTrainer([0.2, 0.3, 0.4], epochs=3))
    client = MlflowClient(server.uri)

    _train(app, tmp_path, 1)  # m0001: the first model is promoted
    _train(app, tmp_path, 2)  # m0002: better, promoted
    assert _at(client, "production") == "m0002" and _at(client, "candidate") == "m0002"
    (run,) = client.search_runs(
        [client.get_experiment_by_name("flywheel").experiment_id], "tags.`flywheel.run_id` = 'r0002'"
    )
    version = app.store.version(2)
    assert run.info.status == "FINISHED"
    assert run.data.tags["flywheel.dataset_version"] == "v0002"
    assert run.data.tags["flywheel.manifest_sha256"] == version.manifest_sha256
    assert run.data.tags["flywheel.model_id"] == "m0002" and run.data.tags["flywheel.gate.outcome"] == "promote"
    assert run.data.params["epochs"] == str(app.store.run(2).params["epochs"])
    history = client.get_metric_history(run.info.run_id, "val.map50_95")
    assert [m.step for m in history] == [1, 2, 3]
    assert run.data.metrics["gate.candidate_map50_95"] == pytest.approx(0.3)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "gate")}
    assert {"model/model.pt", "gate/decision.json", "gate/per_class.csv"} <= artifacts
    uploaded = Path(client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path / "dl")))
    assert uploaded.read_bytes() == app.registry.checkpoint(app.store.model(2)).read_bytes()

    app.registry.rollback("m0002 misbehaves in the field", actor="test")
    assert _at(client, "production") == "m0001"  # the rollback moved the alias at once

    server.stop()  # MLflow away: the next promotion still happens
    _train(app, tmp_path, 3)
    assert app.store.production().id == 3
    status = app.mirror.status()
    assert status.up is False and "run r0003" in status.pending and "alias production -> m0003" in status.pending
    assert "MLflow at http://127.0.0.1" in status.error
    assert _gauges(app) == {"flywheel_mirror_up": 0.0, "flywheel_mirror_pending": float(len(status.pending))}

    server.start()  # back, on the same port and stores
    result = CliRunner().invoke(cli, ["mirror", "sync", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    assert _at(client, "production") == "m0003" and _at(client, "candidate") == "m0003"
    experiment = client.get_experiment_by_name("flywheel").experiment_id
    runs = client.search_runs([experiment], "")
    assert sorted(r.data.tags["flywheel.run_id"] for r in runs) == ["r0001", "r0002", "r0003"]  # none twice
    versions = client.search_model_versions("name = 'flywheel'")
    assert sorted(v.tags["flywheel.model_id"] for v in versions) == ["m0001", "m0002", "m0003"]
    app.mirror.sync(force=True)
    assert _gauges(app) == {"flywheel_mirror_up": 1.0, "flywheel_mirror_pending": 0.0}

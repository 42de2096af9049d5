"""Metrics on an injected registry, scraped over real HTTP, with asserted sample values."""

from __future__ import annotations

import pytest
from prometheus_client import start_http_server

from flywheel.app import App
from flywheel.demo import synthetic_batch
from flywheel.metrics import build_registry
from tests.fakes import FakeTrainer
from tests.metrics_scrape import scrape, value


@pytest.fixture
def served(data_root):
    app = App(data_root, trainer=FakeTrainer([0.2, 0.1], production_map=0.2))
    registry, live = build_registry(app.store)
    app.observer = live
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    yield app, server.server_port
    server.shutdown()
    thread.join(5)


def test_empty_data_root_exports_zeros(served):
    _, port = served
    s = scrape(port)
    assert value(s, "flywheel_dataset_version") == 0
    assert value(s, "flywheel_promotions_total") == 0
    assert value(s, "flywheel_training_runs_total", outcome="succeeded") == 0
    assert value(s, "flywheel_build_info", version="0.1.0") == 1


def test_a_promotion_and_a_rejection_reach_metrics(served, tmp_path):
    app, port = served
    for seed in (1, 2):
        batch = synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed)
        (batch / "labels" / f"s{seed}_0000.txt").write_text("0 0.5 0.5 2.0 0.1\n")  # one bad label
        app.train(app.ingest(batch, move=False).version.id)
    s = scrape(port)
    assert value(s, "flywheel_images_ingested_total") == 22
    assert value(s, "flywheel_files_quarantined_total") == 4  # image + label, twice
    assert value(s, "flywheel_dataset_version") == 2
    latest = app.store.latest_version()
    assert value(s, "flywheel_dataset_images", split="train") == latest.train_images
    assert value(s, "flywheel_dataset_images", split="val") == latest.val_images
    assert value(s, "flywheel_training_runs_total", outcome="succeeded") == 2
    assert value(s, "flywheel_promotions_total") == 1
    assert value(s, "flywheel_rejections_total") == 1
    assert value(s, "flywheel_model_score", role="production", metric="map50_95") == 0.2
    assert value(s, "flywheel_model_score", role="candidate", metric="map50_95") == 0.1
    assert value(s, "flywheel_gate_margin") == pytest.approx(-0.1)
    assert (
        value(s, "flywheel_production_model_info", id="m0001", version="v0001", sha256=app.store.model(1).sha256[:12])
        == 1
    )
    # live instruments: the last epoch of the last run, and the durations
    assert value(s, "flywheel_training_epoch") == 1
    assert value(s, "flywheel_training_val", metric="map50_95") == 0.1
    assert value(s, "flywheel_training_loss", kind="cls") == 2.0
    assert value(s, "flywheel_training_running") == 0
    assert value(s, "flywheel_training_duration_seconds_count", outcome="succeeded") == 2
    assert value(s, "flywheel_batch_processing_seconds_count") == 2


def test_a_rollback_from_another_process_shows_at_the_next_scrape(served, tmp_path, data_root):
    app, port = served
    app.trainer.candidate_maps = [0.2, 0.3]
    for seed in (1, 2):
        app.train(app.ingest(synthetic_batch(tmp_path / f"b{seed}", 12, seed=seed), move=False).version.id)
    App(data_root).registry.rollback("from the CLI", actor="ops")  # a second App: as the CLI would
    s = scrape(port)
    assert value(s, "flywheel_rollbacks_total") == 1
    assert (
        value(s, "flywheel_production_model_info", id="m0001", version="v0001", sha256=app.store.model(1).sha256[:12])
        == 1
    )

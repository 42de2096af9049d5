"""Metrics on an injected registry, scraped over real HTTP, with asserted sample values."""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlmodel import Session, col

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import StartKind
from flywheel.core.errors import StoreError, TrainingError
from flywheel.service import metrics_state
from flywheel.service.metrics import build_registry
from flywheel.store import sha256_file
from flywheel.store.stats import UNCLASSIFIED, batch_latencies, forgetting
from flywheel.store.tables import BatchRow, as_utc
from tests.fakes import FakeTrainer
from tests.metrics_scrape import scrape, value


@pytest.fixture
def served(data_root):
    app = App(data_root, trainer=FakeTrainer([0.2, 0.1], production_map=0.2))
    registry, live = build_registry(app.store, app.objects, app.paths.root)
    app.observer = live
    server, thread = start_http_server(0, "127.0.0.1", registry=registry)
    yield app, server.server_port
    server.shutdown()
    thread.join(5)


def cycle(app: App, tmp_path, seeds=(1, 2), images: int = 12, bad_label: bool = True) -> None:
    for seed in seeds:
        batch = synthetic_batch(tmp_path / f"b{seed}", images, seed=seed)
        if bad_label:
            (batch / "labels" / f"s{seed}_0000.txt").write_text("0 0.5 0.5 2.0 0.1\n")  # out of range
        app.train(app.ingest(batch, move=False).version.id)


def test_empty_data_root_exports_zeros_and_the_process(served):
    _, port = served
    s = scrape(port)
    assert value(s, "flywheel_database_up") == 1
    assert value(s, "flywheel_dataset_version") == 0
    assert value(s, "flywheel_promotions_total") == 0
    assert value(s, "flywheel_batches_received_total") == 0
    for outcome in ("succeeded", "failed", "cancelled", "interrupted"):
        assert value(s, "flywheel_training_runs_total", outcome=outcome) == 0
        assert value(s, "flywheel_training_duration_seconds_count", outcome=outcome) == 0
    for outcome in ("versioned", "quarantined", "ignored"):
        assert value(s, "flywheel_files_total", outcome=outcome) == 0
    for outcome in ("promote", "reject"):
        assert value(s, "flywheel_batch_to_decision_seconds_count", outcome=outcome) == 0
    assert value(s, "flywheel_training_start_kind", kind="warm") == 0
    assert value(s, "flywheel_production_model_id") == 0
    assert not [k for k in s if k[0] in ("flywheel_production_model_info", "flywheel_model_score")]
    build = [labels for name, labels in s if name == "flywheel_build_info"]
    assert len(build) == 1 and dict(build[0])["version"] == "0.1.0" and dict(build[0])["python"]
    assert 0 < value(s, "flywheel_data_root_free_bytes") <= value(s, "flywheel_data_root_filesystem_size_bytes")
    # what the data root takes, not the size of the disk it is on (it was the disk's: 270 GB)
    assert 0 < value(s, "flywheel_data_root_used_bytes") < 50 * 2**20
    assert value(s, "process_resident_memory_bytes") > 1e6  # the default process collector
    assert any(name == "python_info" for name, _ in s)  # ...and the platform one


def test_a_promotion_and_a_rejection_reach_metrics(served, tmp_path):
    app, port = served
    cycle(app, tmp_path)
    s = scrape(port)
    batches = app.store.batches()
    assert value(s, "flywheel_batches_received_total") == 2
    assert value(s, "flywheel_batches_total", state="ingested") == 2
    assert value(s, "flywheel_images_ingested_total") == 22
    assert value(s, "flywheel_images_new_total") == 22
    assert value(s, "flywheel_files_received_total") == sum(b.files for b in batches)
    assert value(s, "flywheel_files_total", outcome="quarantined") == 4  # image + label, twice
    assert value(s, "flywheel_files_total", outcome="versioned") == sum(b.files_versioned for b in batches)
    assert value(s, "flywheel_images_waiting") == 0  # every version has been trained on
    newest = max(as_utc(b.received_at) for b in batches)
    assert value(s, "flywheel_last_batch_timestamp_seconds") == pytest.approx(newest.timestamp())

    latest = app.store.latest_version()
    assert value(s, "flywheel_dataset_version") == 2
    assert value(s, "flywheel_dataset_versions_total") == 2
    assert value(s, "flywheel_dataset_classes") == 2
    assert value(s, "flywheel_dataset_images", split="train") == latest.train_images
    assert value(s, "flywheel_dataset_images", split="val") == latest.val_images
    manifest = app.store.manifest(latest.id)
    for split in ("train", "val"):
        boxes = sum(i.boxes for i in manifest.values() if i.split == split)
        assert value(s, "flywheel_dataset_boxes", split=split) == boxes

    assert value(s, "flywheel_training_runs_total", outcome="succeeded") == 2
    assert value(s, "flywheel_training_starts_total", kind="scratch") == 1
    assert value(s, "flywheel_training_starts_total", kind="warm") == 1
    assert value(s, "flywheel_training_consecutive_failures") == 0
    assert value(s, "flywheel_promotions_total") == 1
    assert value(s, "flywheel_rejections_total") == 1
    assert value(s, "flywheel_gate_decisions_total", outcome="promote", rule="first_model") == 1
    assert value(s, "flywheel_gate_decisions_total", outcome="reject", rule="map_regressed") == 1
    assert value(s, "flywheel_gate_margin") == pytest.approx(-0.1)
    assert value(s, "flywheel_gate_forgetting", measure="max_class_ap_drop") == pytest.approx(0.1)
    # v2's val split has both halves at these seeds: production 0.2 - candidate 0.1 on each
    assert set(app.store.gate_decisions()[-1].details.forgetting) == {"val_old", "val_new"}
    assert value(s, "flywheel_gate_forgetting", measure="old_images_map_drop") == pytest.approx(0.1)
    assert value(s, "flywheel_gate_forgetting", measure="new_images_map_drop") == pytest.approx(0.1)
    assert value(s, "flywheel_model_score", role="production", metric="map50_95") == 0.2
    assert value(s, "flywheel_model_score", role="candidate", metric="map50_95") == 0.1
    assert value(s, "flywheel_model_score", role="candidate", metric="recall") == 0.5
    assert value(s, "flywheel_model_class_ap", role="production", **{"class": "red"}) == 0.2
    assert value(s, "flywheel_model_class_ap", role="candidate", **{"class": "red"}) == 0.1
    assert value(s, "flywheel_model_score_version", role="production") == 2  # scored on v2 at the gate
    m1 = app.store.model(1)
    assert value(s, "flywheel_production_model_info", id="m0001", version="v0001", sha256=m1.sha256[:12]) == 1
    assert value(s, "flywheel_production_model_id") == 1
    assert value(s, "flywheel_candidate_model_id") == 2
    assert value(s, "flywheel_production_since_timestamp_seconds") == pytest.approx(as_utc(m1.promoted_at).timestamp())
    assert value(s, "flywheel_last_promotion_timestamp_seconds") == pytest.approx(
        as_utc(app.store.ledger()[0].at).timestamp()
    )
    assert value(s, "flywheel_production_pinned") == 0

    # the headline latency: each batch's arrival to the decision on the model trained on it
    decisions = app.store.gate_decisions()
    for outcome, batch, decision in (("promote", batches[0], decisions[0]), ("reject", batches[1], decisions[1])):
        seconds = (as_utc(decision.created_at) - as_utc(batch.received_at)).total_seconds()
        assert value(s, "flywheel_batch_to_decision_seconds_count", outcome=outcome) == 1
        assert value(s, "flywheel_batch_to_decision_seconds_sum", outcome=outcome) == pytest.approx(seconds)
        assert value(s, "flywheel_batch_to_decision_seconds_bucket", outcome=outcome, le="10.0") == 1
    assert value(s, "flywheel_last_batch_to_decision_seconds") == pytest.approx(
        (as_utc(decisions[1].created_at) - as_utc(batches[1].received_at)).total_seconds()
    )

    # live instruments: the last epoch of the last run, and the durations
    assert value(s, "flywheel_training_run_id") == 2
    assert value(s, "flywheel_training_start_kind", kind="warm") == 1
    assert value(s, "flywheel_training_start_kind", kind="scratch") == 0
    assert value(s, "flywheel_training_epoch") == 1
    assert value(s, "flywheel_training_val", metric="map50_95") == 0.1
    assert value(s, "flywheel_training_loss", kind="cls") == 2.0
    assert value(s, "flywheel_training_epoch_seconds") == 0.5
    assert value(s, "flywheel_training_images_per_second") == latest.train_images / 0.5
    assert value(s, "flywheel_training_running") == 0
    assert value(s, "flywheel_training_duration_seconds_count", outcome="succeeded") == 2
    assert value(s, "flywheel_batch_processing_seconds_count") == 2


def test_quarantined_files_are_counted_by_reason_code(served, tmp_path):
    app, port = served
    cycle(app, tmp_path)
    reasons = {
        dict(labels)["reason"]: v
        for (name, labels), v in scrape(port).items()
        if name == "flywheel_quarantine_reasons_total"
    }
    expected = Counter()
    for batch in app.store.batches():
        expected.update(batch.quarantine_reasons)
    assert sum(expected.values()) == 4
    assert reasons == dict(expected)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in reasons), reasons  # codes, not sentences
    # a batch recorded before reason codes existed: its files count as unclassified
    with Session(app.engine) as s:
        s.execute(update(BatchRow).where(col(BatchRow.id) == 1).values(quarantine_reasons={}))
        s.commit()
    reasons = {
        dict(labels)["reason"]: v
        for (name, labels), v in scrape(port).items()
        if name == "flywheel_quarantine_reasons_total"
    }
    second = Counter(app.store.batches()[1].quarantine_reasons)
    assert reasons == {**second, UNCLASSIFIED: 2}


def test_per_class_dataset_counts_match_the_label_files(served, tmp_path):
    app, port = served
    batch = synthetic_batch(tmp_path / "b1", 20, seed=7)
    version = app.ingest(batch, move=False).version
    split = {i.image_sha256: i.split for i in app.store.manifest(version.id).values()}
    images, boxes = Counter(), Counter()
    for image in (batch / "images").iterdir():
        where = split[sha256_file(image)]
        classes = [int(line.split()[0]) for line in (batch / "labels" / f"{image.stem}.txt").read_text().splitlines()]
        for c in set(classes):
            images[(c, where)] += 1
        for c in classes:
            boxes[(c, where)] += 1
    s = scrape(port)
    for class_id, name in enumerate(("red", "blue")):
        for where in ("train", "val"):
            labels = {"class": name, "split": where}
            assert value(s, "flywheel_dataset_class_images", **labels) == images[(class_id, where)]
            assert value(s, "flywheel_dataset_class_boxes", **labels) == boxes[(class_id, where)]
    assert sum(boxes.values()) == version.boxes == 40
    assert value(s, "flywheel_images_waiting") == 20  # ingested, not trained yet
    app.train(version.id)
    assert value(scrape(port), "flywheel_images_waiting") == 0


def test_a_rollback_from_another_process_shows_at_the_next_scrape(served, tmp_path, data_root):
    app, port = served
    app.trainer.candidate_maps = [0.2, 0.3]
    cycle(app, tmp_path, bad_label=False)
    assert value(scrape(port), "flywheel_production_model_id") == 2
    App(data_root).registry.rollback("from the CLI", actor="ops")  # a second App: as the CLI would
    s = scrape(port)
    assert value(s, "flywheel_rollbacks_total") == 1
    assert value(s, "flywheel_promotions_total") == 2
    assert value(s, "flywheel_production_model_id") == 1
    m1 = app.store.model(1)
    assert value(s, "flywheel_production_model_info", id="m0001", version="v0001", sha256=m1.sha256[:12]) == 1
    assert value(s, "flywheel_production_since_timestamp_seconds") == pytest.approx(as_utc(m1.promoted_at).timestamp())


def test_consecutive_training_failures_count_until_one_succeeds(served, tmp_path):
    app, port = served
    app.trainer.fail = True
    for seed in (1, 2):
        version = app.ingest(synthetic_batch(tmp_path / f"b{seed}", 8, seed=seed), move=False).version
        with pytest.raises(TrainingError):
            app.train(version.id)
    s = scrape(port)
    assert value(s, "flywheel_training_consecutive_failures") == 2
    assert value(s, "flywheel_training_runs_total", outcome="failed") == 2
    assert value(s, "flywheel_training_duration_seconds_count", outcome="failed") == 2
    assert value(s, "flywheel_training_running") == 0
    app.trainer.fail = False
    app.train(version.id)
    s = scrape(port)
    assert value(s, "flywheel_training_consecutive_failures") == 0
    assert value(s, "flywheel_training_runs_total", outcome="succeeded") == 1


def test_metrics_stay_up_when_the_database_cannot_be_read(served, monkeypatch):
    app, port = served
    app.observer.training_started(1, StartKind.SCRATCH, 3)

    def broken(store):
        raise StoreError("database error: disk I/O error")

    monkeypatch.setattr(metrics_state, "snapshot", broken)
    s = scrape(port)
    assert value(s, "flywheel_database_up") == 0
    assert value(s, "flywheel_training_running") == 1  # the live metrics are still served
    assert value(s, "flywheel_training_epochs") == 3
    assert not [name for name, _ in s if name == "flywheel_promotions_total"]


def test_names_follow_prometheus_conventions_and_labels_stay_bounded(served, tmp_path):
    app, port = served
    cycle(app, tmp_path)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    families = [f for f in text_string_to_metric_families(text) if f.name.startswith("flywheel_")]
    assert len(families) >= 50
    allowed = {
        "state",
        "outcome",
        "reason",
        "kind",
        "split",
        "metric",
        "role",
        "class",
        "measure",
        "rule",
        "le",
        "area",
        "check",  # a screening check: label_errors, leakage, class_shift
    }
    allowed |= {"version", "python", "id", "sha256"}  # the info metrics: one series each
    allowed |= {"executor", "node", "submission_id"}  # where the last training ran (placement info)
    for family in families:
        assert re.fullmatch(r"flywheel_[a-z0-9_]+", family.name), family.name
        assert family.documentation, f"{family.name} has no help text"
        assert not re.search(r"_(ms|milliseconds|minutes|hours|days|kb|mb|gb|percent)$", family.name)
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)
            for v in sample.labels.values():  # never a batch, a file, an image or a run
                assert not re.search(r"(b\d{4}|r\d{4}|s\d_\d{4}|\.png|\.txt|/)", v), (sample.name, v)
    info = {"flywheel_build_info", "flywheel_production_model_info", "flywheel_training_placement_info"}
    assert {f.name: len(f.samples) for f in families if f.name in info} == dict.fromkeys(info, 1)


def test_batch_latency_is_the_first_decision_covering_the_batch():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(minutes: float) -> datetime:
        return t0 + timedelta(minutes=minutes)

    batches = [(1, at(0), 1), (2, at(1), 2), (3, at(2), 3), (4, at(30), 4)]
    # v1 decided at 10; v3 (covering batches 2 and 3: versions are cumulative) at 20; nothing for v4
    decisions = [(1, at(10), "promote"), (3, at(20), "reject"), (2, at(25), "promote")]
    got = {x.batch_id: (x.outcome, x.seconds) for x in batch_latencies(batches, decisions)}
    assert got == {1: ("promote", 600.0), 2: ("reject", 1140.0), 3: ("reject", 1080.0)}
    assert batch_latencies([], decisions) == [] and batch_latencies(batches, []) == []


def test_forgetting_is_the_largest_class_ap_drop():
    assert forgetting({"red": 0.5, "blue": 0.4}, {"red": 0.45, "blue": 0.1}) == pytest.approx(0.3)
    assert forgetting({"red": 0.5}, {"red": 0.7}) == pytest.approx(-0.2)  # it only improved
    assert forgetting({"red": 0.5}, {}) == pytest.approx(0.5)  # a class it no longer finds
    assert forgetting({}, {"red": 0.5}) is None


def test_used_bytes_is_the_data_root_s_files_walked_at_most_once_a_minute(tmp_path):
    from flywheel.service.metrics_state import UsedBytes

    now = [0.0]
    used = UsedBytes(max_age=60, clock=lambda: now[0])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one").write_bytes(b"x" * 2**20)
    first = used.bytes(tmp_path)
    assert 2**20 <= first < 2**20 + 64 * 1024
    (tmp_path / "two").write_bytes(b"y" * 2**20)
    (tmp_path / "link").hardlink_to(tmp_path / "two")  # the same bytes once
    (tmp_path / "sym").symlink_to(tmp_path / "a")  # not followed
    now[0] = 59.0
    assert used.bytes(tmp_path) == first  # cached
    now[0] = 60.0
    assert 2 * 2**20 <= used.bytes(tmp_path) < 2 * 2**20 + 64 * 1024

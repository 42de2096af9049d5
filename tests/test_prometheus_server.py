"""The dashboard and the alerts, proven against a real Prometheus server scraping a real daemon.

A `flywheel run` daemon goes through a whole cycle (two batches with tiny real trainings, a
quarantined file, a promotion, a rollback from the CLI) while Debian's Prometheus scrapes it
every second on loopback. Then every PromQL expression of every dashboard panel and every
alert rule is evaluated through Prometheus' HTTP API and must return data, key values must
equal what the daemon's database says, and the dashboard is rendered from that data.
`promtool` checks the config and rules and runs the alerts' unit tests.

Slow (minutes, real trainings): `make test-slow`, which installs Prometheus first.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from flywheel.app import App
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.domain import RunState
from flywheel.store.tables import as_utc
from tests.conftest import TINY_CONFIG, free_port
from tests.prometheus_server import (
    DASHBOARD,
    PROMETHEUS_DIR,
    Prometheus,
    alert_rules,
    conditions,
    panel_queries,
    render,
    scrape_config,
    tool,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")
FLYWHEEL = [sys.executable, "-m", "flywheel"]


def promtool(*args: str, stdin: str | None = None, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, input=stdin, cwd=cwd, timeout=120)


# --- promtool: config, rules, and the alerts' unit tests ----------------------------------


def test_promtool_checks_the_shipped_config_and_rules():
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: prometheus.yml is valid" in config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout + rules.stderr
    assert len(alert_rules()) == 9


def test_promtool_alert_unit_tests_pass_and_catch_a_changed_threshold(tmp_path):
    tests = ["alerts.test.yml", "alerts.days.test.yml"]
    ok = promtool("test", "rules", *tests)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (ok.stdout + ok.stderr).count("SUCCESS") == 2
    # Every alert is under test: a unit test names each one.
    tested = {
        case["alertname"]
        for name in tests
        for group in yaml.safe_load((PROMETHEUS_DIR / name).read_text())["tests"]
        for case in group["alert_rule_test"]
    }
    assert tested == {r["alert"] for r in alert_rules()}
    # ...and the tests can fail: the same tests against rules with one threshold changed.
    for name in ("alerts.yml", *tests):
        shutil.copy(PROMETHEUS_DIR / name, tmp_path / name)
    rules = (tmp_path / "alerts.yml").read_text()
    assert "flywheel_training_consecutive_failures >= 3" in rules
    (tmp_path / "alerts.yml").write_text(
        rules.replace("flywheel_training_consecutive_failures >= 3", "flywheel_training_consecutive_failures >= 4")
    )
    broken = promtool("test", "rules", *tests, cwd=tmp_path)
    assert broken.returncode != 0
    assert "FlywheelTrainingFailing" in broken.stdout + broken.stderr


# --- the real server --------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], T | None], daemon: subprocess.Popen, timeout: float = 300) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if daemon.poll() is not None:
            pytest.fail(f"daemon exited ({daemon.returncode}) while waiting for {what}")
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def finished_run(app: App, count: int) -> Any:
    runs = app.store.runs()
    done = [r for r in runs if r.state not in (RunState.QUEUED, RunState.RUNNING)]
    return done[count - 1] if len(done) >= count else None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*FLYWHEEL, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen, Prometheus]]:
    """Prometheus first (so it sees every counter from zero), then the daemon it scrapes."""
    metrics_port = free_port()
    root = tmp_path / "root"
    cli("init", str(root))
    (root / "config.toml").write_text(TINY_CONFIG.format(port=metrics_port))
    config = scrape_config(f"127.0.0.1:{metrics_port}")
    (tmp_path / "prometheus").mkdir()
    server = Prometheus(config, tmp_path / "prometheus", free_port())
    checked = promtool("check", "config", str(server.config_path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield root, metrics_port, daemon, server
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
        server.stop()
        log.close()
        print("--- daemon log ---\n" + (tmp_path / "daemon.log").read_text()[-6000:])
        print("--- prometheus log ---\n" + server.log_path.read_text()[-3000:])


def test_every_panel_and_alert_returns_data_from_a_real_prometheus(stack, tmp_path):
    root, metrics_port, daemon, prom = stack
    timings: dict[str, float] = {}
    started = time.time()
    app = App(root)
    staging = tmp_path / "staging"
    t0 = time.monotonic()
    wait_for("the first scrape", lambda: prom.query('up{job="flywheel"} == 1'), daemon, timeout=60)
    timings["first_scrape_s"] = time.monotonic() - t0

    # -- batch 1: a scratch training, the first model promoted ------------------------------
    t0 = time.monotonic()
    drop(synthetic_batch(staging / "batch1", 16, seed=1), root / "inbox")
    run1 = wait_for("run 1", lambda: finished_run(app, 1), daemon)
    assert run1.state == RunState.SUCCEEDED, run1.error
    timings["batch1_to_decision_s"] = time.monotonic() - t0

    # -- batch 2: a warm start; a corrupt image and a bad label line go to quarantine ------
    t0 = time.monotonic()
    bad = synthetic_batch(staging / "batch2", 16, seed=2)
    (bad / "images" / "s2_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (bad / "labels" / "s2_0001.txt").write_text("0 0.5 0.5 0.2\n")
    drop(bad, root / "inbox")
    run2 = wait_for("run 2", lambda: finished_run(app, 2), daemon)
    assert run2.state == RunState.SUCCEEDED, run2.error
    timings["batch2_to_decision_s"] = time.monotonic() - t0
    m2 = app.store.model(run2.model_id)

    # -- make m2 production if the gate did not, then roll back from the CLI ----------------
    if app.store.production().id != m2.id:
        cli("promote", "m0002", "--force", "--reason", "so that there is something to roll back", "--root", str(root))
    cli("rollback", "--root", str(root), "--reason", "prometheus test")
    assert app.store.production().id == run1.model_id
    wait_for(
        "the rollback in Prometheus",
        lambda: prom.query(f"flywheel_rollbacks_total == 1 and flywheel_production_model_id == {run1.model_id}"),
        daemon,
        timeout=30,
    )
    time.sleep(3)  # a few more scrapes of the final state
    now = time.time()

    # -- every panel's query returns data, now (instant) and over the run (range) -----------
    dashboard = json.loads(DASHBOARD.read_text())
    # $__rate_interval as wide as the run: on a dashboard showing days Grafana's is minutes
    # long, and the histograms' quantiles at `now` must see the run's few observations.
    window = f"{math.ceil(now - started) + 30}s"
    queries = panel_queries(dashboard, rate_interval=window)
    assert len(queries) >= 40
    for title, kind, expr in queries:
        result = prom.query(expr, at=now)
        assert result, f"panel {title!r}: no data for {expr}"
        values = [float(s["value"][1]) for s in result]
        assert all(math.isfinite(v) for v in values), f"panel {title!r}: {expr} = {values}"
        if kind == "timeseries":
            assert prom.query_range(expr, started, now, step=2), f"panel {title!r}: no range data for {expr}"
    for ann in dashboard["annotations"]["list"]:
        marks = prom.query_range(render.expand(ann["expr"], window), started, now, step=1)
        assert marks and marks[0]["values"], f"annotation {ann['name']!r}: nothing marked by {ann['expr']}"

    # -- every alert rule: loaded, evaluated without error, and each condition has data ------
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"]
    assert sorted(r["name"] for r in rules) == sorted(r["alert"] for r in alert_rules())
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    # nothing in this cycle is down, failing, stalled or flooding quarantine (2 of 32 files)
    quiet = {"FlywheelDown", "FlywheelDatabaseUnreachable", "FlywheelTrainingFailing", "FlywheelNoPromotion"}
    quiet.add("FlywheelQuarantineSpike")
    for rule in alert_rules():
        fires = bool(prom.query(rule["expr"], at=now))
        truths = []
        for condition in conditions(rule["expr"]):
            result = prom.query(condition, at=now)
            assert result, f"alert {rule['alert']}: no data for {condition}"
            assert all(float(s["value"][1]) in (0.0, 1.0) for s in result if "bool" in condition), condition
            truths.append(any(float(s["value"][1]) == 1.0 for s in result))
        # the expression joins its conditions: it fires exactly when each of them holds
        assert fires == all(truths), f"alert {rule['alert']}: fires {fires}, conditions {truths}"
        assert not (rule["alert"] in quiet and fires), f"alert {rule['alert']} fires: {rule['expr']}"

    # -- values Prometheus holds equal what the database says -------------------------------
    batches = app.store.batches()
    decisions = app.store.gate_decisions()
    latest = app.store.latest_version()
    assert prom.value("flywheel_images_ingested_total") == sum(b.images_ok for b in batches) == 16 + 14
    quarantined = sum(b.quarantined for b in batches)
    assert quarantined >= 2
    assert prom.value('flywheel_files_total{outcome="quarantined"}') == quarantined
    assert prom.value("sum(flywheel_quarantine_reasons_total)") == quarantined  # one reason a file
    assert prom.value('flywheel_training_runs_total{outcome="succeeded"}') == 2
    assert prom.value("flywheel_promotions_total") == sum(1 for e in app.store.ledger() if e.action == "promote")
    assert prom.value("flywheel_rollbacks_total") == 1
    assert prom.value("flywheel_production_model_id") == run1.model_id
    assert prom.query(f'flywheel_production_model_info{{id="m{run1.model_id:04d}",version="v0001"}}')
    assert prom.value('flywheel_dataset_images{split="train"}') == latest.train_images
    assert prom.value('flywheel_dataset_images{split="val"}') == latest.val_images
    assert prom.value("sum(flywheel_dataset_class_boxes)") == latest.boxes
    assert prom.value("sum(flywheel_dataset_boxes)") == latest.boxes
    assert prom.value("sum(flywheel_gate_decisions_total)") == len(decisions) == 2
    m1 = app.store.model(run1.model_id)
    production_score = app.store.evaluation(m1.sha256, latest.val_sha256)  # scored as production at m2's gate
    assert production_score is not None
    assert prom.value('flywheel_model_score{role="production",metric="map50_95"}') == pytest.approx(
        production_score.score.map50_95
    )
    # the headline number: batch 2's arrival to the decision on m2, from the records
    batch2 = next(b for b in batches if b.name == "batch2")
    expected = (as_utc(decisions[-1].created_at) - as_utc(batch2.received_at)).total_seconds()
    assert prom.value("flywheel_last_batch_to_decision_seconds") == pytest.approx(expected, abs=1e-3)
    assert prom.value("sum(flywheel_batch_to_decision_seconds_count)") == 2
    assert 0 < expected < timings["batch2_to_decision_s"] + 5

    # -- the running training's values reached Prometheus while it ran (from the child) ------
    running = prom.query_range("flywheel_training_running", started, now)[0]["values"]
    epochs = dict(prom.query_range("flywheel_training_epoch", started, now)[0]["values"])
    mid_run = [t for t, v in running if v == "1" and float(epochs.get(t, "0")) >= 1]
    assert mid_run, "no scrape saw a training running with an epoch done"
    losses = prom.query_range(
        'flywheel_training_loss{kind="box"} and on () flywheel_training_running == 1', started, now
    )
    assert losses and any(float(v) > 0 for _, v in losses[0]["values"])

    # -- the exposition passes promtool's lint ---------------------------------------------
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    lint = promtool("check", "metrics", stdin=exposition)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    # -- the dashboard, rendered from this run's data ----------------------------------------
    out = tmp_path / "dashboard.png"
    drawn = render.render(render.prometheus(prom.url), started - 10, now, out)
    assert out.stat().st_size > 50_000
    assert drawn.series and all(n > 0 for n in drawn.series.values()), drawn.series
    if os.environ.get("FLYWHEEL_DASHBOARD_PNG"):
        shutil.copy(out, os.environ["FLYWHEEL_DASHBOARD_PNG"])

    # -- the daemon stops: `up` drops to 0 and FlywheelDown goes pending ---------------------
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    wait_for_down = time.monotonic()
    while not prom.query('ALERTS{alertname="FlywheelDown",alertstate="pending"}'):
        assert time.monotonic() - wait_for_down < 30, prom.query('up{job="flywheel"}')
        time.sleep(0.5)
    assert prom.value('up{job="flywheel"}') == 0
    timings["total_s"] = time.time() - started
    print(
        "prometheus test:",
        json.dumps({k: round(v, 1) for k, v in timings.items()}),
        f"{len(queries)} panel queries, {len(alert_rules())} alert rules",
    )

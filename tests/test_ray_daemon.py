"""The daemon with training.executor = "ray" on a real two-node Ray cluster (tests/ray_cluster.py):
a batch dropped in the inbox is trained as a Ray job on the trainer node (the resource
flywheel-trainer), the candidate gated and promoted, and `flywheel status`, `models show` and
/metrics say where; a wrong address degrades the daemon and the version waits until a daemon
with the right one trains it; a daemon SIGKILLed while its job runs attaches to that job when
it starts again (one job for the run, no duplicate epochs)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.app import App, build_daemon, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.cli.main import app as cli
from flywheel.core.domain import RunState
from flywheel.training.ray_client import connect
from tests.conftest import TINY_CONFIG, free_port
from tests.metrics_scrape import scrape, value
from tests.ray_cluster import TRAINER_RESOURCE, RayCluster, ray_cluster_fixture, trainer_node_ids  # noqa: F401
from tests.test_end_to_end import wait_for
from tests.test_schedule_daemon import until

pytestmark = pytest.mark.slow  # a real cluster and real (tiny) trainings


def ray_root(tmp_path: Path, address: str, prefix: str, epochs: int = 2) -> Path:
    config = TINY_CONFIG.format(port=free_port()).replace(
        "[training]\nepochs_scratch = 2", f'[training]\nexecutor = "ray"\nthreads = 1\nepochs_scratch = {epochs}'
    )
    config += f'\n[ray]\naddress = "{address}"\nresource = "{TRAINER_RESOURCE}"\nprefix = "{prefix}"\n'
    return init_data_root(tmp_path / "root", config)


def jobs_of(cluster: RayCluster, prefix: str) -> list[str]:
    client = connect(cluster.address)
    return sorted(j.submission_id for j in client.list_jobs() if (j.submission_id or "").startswith(prefix))


def test_the_daemon_trains_on_the_cluster_and_waits_while_it_cannot_reach_it(ray_cluster, tmp_path):
    prefix = f"d{secrets.token_hex(3)}-"
    wrong = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    root = ray_root(tmp_path, wrong, prefix)
    daemon = build_daemon(root)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    store = daemon.work.store
    try:
        assert daemon.ready.wait(60)
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), root / "inbox")
        until("the batch ingested", lambda: store.latest_version() is not None, thread)
        until("degraded", lambda: "cannot reach the Ray cluster" in daemon.degraded.reason, thread)
        metrics = scrape(daemon.metrics_port)
        assert value(metrics, "flywheel_executor_up", executor="ray") == 0
        assert value(metrics, "flywheel_degraded") == 1 and store.runs() == []  # the version waits
    finally:
        daemon.stop()
        thread.join(60)
    assert not thread.is_alive()

    # the address fixed: the waiting version trains as a Ray job on the trainer node
    text = (root / "config.toml").read_text().replace(wrong, ray_cluster.address)
    (root / "config.toml").write_text(text)
    daemon = build_daemon(root)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    store = daemon.work.store
    try:
        until("the first model", lambda: store.production() is not None, thread, timeout=400)
        metrics = scrape(daemon.metrics_port)
    finally:
        daemon.stop()
        thread.join(60)
    (run,) = store.runs()
    env = run.environment
    assert run.state == RunState.SUCCEEDED and env["executor"] == "ray" and env["submission_id"] == f"{prefix}r0001"
    assert env["node"] in trainer_node_ids(ray_cluster)
    assert [e.epoch for e in store.epochs(run.id or 0)] == [1, 2]
    assert value(metrics, "flywheel_executor_up", executor="ray") == 1 and value(metrics, "flywheel_degraded") == 0
    placement = {"executor": "ray", "node": env["node"], "submission_id": f"{prefix}r0001"}
    assert value(metrics, "flywheel_training_placement_info", **placement) == 1
    assert jobs_of(ray_cluster, prefix) == [f"{prefix}r0001"]
    runner = CliRunner(env={"COLUMNS": "250"})
    status = runner.invoke(cli, ["status", "--root", str(root)])
    assert f"ray job {prefix}r0001 on node {env['node'][:20]}" in status.output, status.output
    shown = json.loads(runner.invoke(cli, ["models", "show", "m0001", "--root", str(root), "--json"]).output)
    assert shown["run"]["placement"] == placement


def test_a_daemon_killed_while_its_job_runs_attaches_to_it_when_it_starts_again(ray_cluster, tmp_path):
    prefix = f"k{secrets.token_hex(3)}-"
    root = ray_root(tmp_path, ray_cluster.address, prefix, epochs=4)
    log = tmp_path / "daemon.log"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "flywheel", "run", "--root", str(root)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )

    app = App(root)
    daemon = start()
    try:
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), root / "inbox")
        wait_for(
            "the job's first epoch",
            lambda: [r for r in app.store.runs() if r.epochs_done >= 1 and r.environment.get("submission_id")],
            daemon,
            timeout=400,
        )
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        assert jobs_of(ray_cluster, prefix) == [f"{prefix}r0001"]
        daemon = start()
        wait_for("the run to finish", lambda: app.store.run(1).state == RunState.SUCCEEDED or None, daemon, 400)
        assert app.store.production() is not None
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(60)
        print(log.read_text())
    run = app.store.run(1)
    assert jobs_of(ray_cluster, prefix) == [f"{prefix}r0001"]  # followed again, never submitted twice
    assert [e.epoch for e in app.store.epochs(1)] == [1, 2, 3, 4]  # the replayed epochs replaced, not added
    assert run.resumed == 1 and run.environment["submission_id"] == f"{prefix}r0001"
    assert "following it instead of submitting another" in log.read_text()

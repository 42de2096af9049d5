"""MLflow's `production` alias follows every production change the DAEMON sees, on a real
`mlflow server` (SQLite backend, tests/mlflow_server.py) and a real `flywheel run` child process
with tiny trainings: the daemon's promotion moves the alias right after it; a promotion while
MLflow is down happens anyway and the daemon's own mirror catches up once MLflow is back (nobody
runs `flywheel mirror sync`); and a `flywheel rollback` made while MLflow is down is carried to
MLflow by the daemon too. Slow: three MLflow starts of ~15 s and two tiny trainings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from tests.conftest import TINY_CONFIG, free_port
from tests.metrics_scrape import scrape, value
from tests.mlflow_server import MlflowServer, running
from tests.test_end_to_end import wait_for

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'flywheel[mlflow]'")
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.slow
FLYWHEEL = [sys.executable, "-m", "flywheel"]
MODEL = "flywheel"  # [mlflow] registered_model


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    with running(tmp_path / "mlflow") as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, server: MlflowServer) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    port = free_port()
    config = TINY_CONFIG.format(port=port) + (
        "\n[gate]\ntolerance = 1.0\nmax_class_drop = 1.0\n"  # any candidate passes: tiny scores are noise
        f'\n[mlflow]\ntracking_uri = "{server.uri}"\nretry_seconds = 0.2\nretry_max_seconds = 1.0\n'
        "timeout_seconds = 10.0\n"
    )
    root = init_data_root(tmp_path / "root", config)
    log = (tmp_path / "daemon.log").open("wb")
    process = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield root, port, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        print((tmp_path / "daemon.log").read_text())  # shown by pytest when the test fails


def at(client: MlflowClient, alias: str) -> str | None:
    """The flywheel model id the alias is on in MLflow, None while it is on none."""
    try:
        return str(client.get_model_version_by_alias(MODEL, alias).tags["flywheel.model_id"])
    except MlflowException:
        return None


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def mirror_up(port: int, up: float) -> Samples | None:
    """A scrape of /metrics once flywheel_mirror_up says `up` (absent before the first try)."""
    samples = scrape(port)
    return samples if samples.get(("flywheel_mirror_up", (("target", "mlflow"),))) == up else None


def test_the_production_alias_follows_the_daemon_through_outages_and_a_rollback(daemon, server, tmp_path):
    root, port, process = daemon
    app = App(root)
    client = MlflowClient(server.uri)
    seen: list[str] = []
    timings: dict[str, float] = {}

    def alias_on(model: str) -> str | None:
        now = at(client, "production")
        if now is not None and (not seen or seen[-1] != now):
            seen.append(now)
        return now if now == model else None

    # The daemon's first promotion: the alias is set right after it.
    drop(synthetic_batch(tmp_path / "staging" / "b1", 16, seed=1), root / "inbox")
    wait_for("m0001 in production", lambda: app.store.production(), process, timeout=600)
    t0 = time.monotonic()
    wait_for("alias production on m0001", lambda: alias_on("m0001"), process, timeout=60)
    timings["promotion_to_alias_s"] = time.monotonic() - t0

    # MLflow down during the next promotion: the daemon promotes anyway, and says what waits.
    server.stop()
    drop(synthetic_batch(tmp_path / "staging" / "b2", 16, seed=2), root / "inbox")
    wait_for("m0002 in production", lambda: app.store.production().id == 2, process, timeout=600)
    samples = wait_for(
        "the mirror down on /metrics",
        lambda: mirror_up(port, 0),
        process,
        timeout=60,
    )
    assert value(samples, "flywheel_mirror_pending", target="mlflow") >= 2  # run r0002, alias production

    t0 = time.monotonic()
    server.start()  # back on the same port and stores: the daemon catches up on its own
    wait_for("alias production on m0002", lambda: alias_on("m0002"), process, timeout=120)
    timings["mlflow_back_to_caught_up_s"] = time.monotonic() - t0

    # A rollback while MLflow is down: flywheel's registry moves at once, MLflow follows later.
    server.stop()
    rollback = subprocess.run(
        [*FLYWHEEL, "rollback", "--root", str(root), "--reason", "mlflow test"], capture_output=True, text=True
    )
    assert rollback.returncode == 0, rollback.stderr
    assert "production is now m0001" in rollback.stdout
    t0 = time.monotonic()
    server.start()
    wait_for("alias production on m0001 again", lambda: alias_on("m0001"), process, timeout=120)
    timings["mlflow_back_to_rollback_followed_s"] = time.monotonic() - t0
    assert seen == ["m0001", "m0002", "m0001"]

    experiment = client.get_experiment_by_name("flywheel").experiment_id
    runs = client.search_runs([experiment], "")
    assert sorted(r.data.tags["flywheel.run_id"] for r in runs) == ["r0001", "r0002"]  # none twice
    assert all(r.info.status == "FINISHED" for r in runs)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(v.tags["flywheel.model_id"] for v in versions) == ["m0001", "m0002"]
    assert at(client, "candidate") == "m0002"  # the newest gated model; a rollback leaves it
    samples = wait_for(
        "the mirror up on /metrics",
        lambda: mirror_up(port, 1),
        process,
        timeout=60,
    )
    assert value(samples, "flywheel_mirror_pending", target="mlflow") == 0
    print("mlflow daemon timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}), "aliases seen:", seen)

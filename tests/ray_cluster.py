"""A real two-node Ray cluster on 127.0.0.1 for the Ray executor's tests.

A head (1 CPU, no trainer resource: trainings must not land there) and a second node joined
to it with `{"flywheel-trainer": 1}`. Every port either node opens is pinned to a free one
(`ray start` would otherwise take fixed defaults such as 6379/8265/10001 and clash with
another cluster on the machine), and both use a temp dir of their own.

`ray stop` is not used: it stops every Ray process of the user on the machine, whatever
cluster they belong to. The fixture starts each node with `ray start --block` in a session
of its own and stops what it started: SIGTERM to each launcher (which takes its node's
processes down), SIGKILL to their process groups, then any process left whose command line
names this cluster's temp dir (the job entrypoints start sessions of their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port

TRAINER_RESOURCE = "flywheel-trainer"
RAY = str(Path(sys.executable).with_name("ray"))
START_SECONDS = 120.0


@dataclass
class RayCluster:
    address: str  # the job API (dashboard) address, http://127.0.0.1:<port>
    gcs: str  # 127.0.0.1:<port>, what `ray start --address` joins
    temp_dir: Path
    launchers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in self.logs:
            if path.is_file():
                out.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


def _node_ports() -> list[str]:
    """Every port a node opens, pinned (worker ports: a random range of 100)."""
    base = random.randrange(15000, 32000, 100)  # below the ephemeral range free_port() draws from
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--min-worker-port={base}",
        f"--max-worker-port={base + 99}",
    ]


def _environment() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        # the job entrypoints import flywheel from this checkout, as the daemon does
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
    }


def _launch(cluster: RayCluster, name: str, args: list[str]) -> None:
    log = cluster.temp_dir.parent / f"{cluster.temp_dir.name}-{name}.log"
    cluster.logs.append(log)
    with log.open("wb") as out:
        cluster.launchers.append(
            subprocess.Popen(
                [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_environment(),
                start_new_session=True,
            )
        )


def _wait_for_nodes(cluster: RayCluster, count: int) -> None:
    """Until the job API answers and lists `count` alive nodes (the trainer node included)."""
    import urllib.request

    deadline = time.monotonic() + START_SECONDS
    last = ""
    while time.monotonic() < deadline:
        for proc in cluster.launchers:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}\n{cluster.log_tail()}")
        try:
            with urllib.request.urlopen(f"{cluster.address}/nodes?view=summary", timeout=5) as r:
                data = json.loads(r.read())
            nodes = data["data"]["summary"]
            alive = [n for n in nodes if n.get("raylet", {}).get("state") == "ALIVE"]
            if len(alive) >= count:
                return
            last = f"{len(alive)} alive nodes"
        except (OSError, KeyError, ValueError) as exc:
            last = repr(exc)
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster did not come up in {START_SECONDS}s ({last})\n{cluster.log_tail()}")


def stop(cluster: RayCluster) -> None:
    for proc in cluster.launchers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in cluster.launchers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(10)
    _kill_stragglers(cluster.temp_dir)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


def _kill_stragglers(temp_dir: Path) -> None:
    """Processes of this cluster that outlived their launcher: their command line names its temp dir."""
    marker = str(temp_dir).encode()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def running_cluster() -> Iterator[RayCluster]:
    """The cluster, up (both nodes alive) until the block ends."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rayfw", dir="/tmp"))  # short: Ray's unix sockets live under it
    gcs_port, dashboard_port = free_port(), free_port()
    cluster = RayCluster(f"http://127.0.0.1:{dashboard_port}", f"127.0.0.1:{gcs_port}", temp_dir)
    try:
        _launch(
            cluster,
            "head",
            [
                "--head",
                f"--port={gcs_port}",
                "--num-cpus=1",
                "--num-gpus=0",
                "--object-store-memory=100000000",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={temp_dir}",
                *_node_ports(),
            ],
        )
        _wait_for_nodes(cluster, 1)
        _launch(
            cluster,
            "trainer",
            [
                f"--address={cluster.gcs}",
                "--num-cpus=1",
                "--num-gpus=0",
                "--object-store-memory=100000000",
                f"--resources={json.dumps({TRAINER_RESOURCE: 1})}",
                f"--temp-dir={temp_dir}",
                *_node_ports(),
            ],
        )
        _wait_for_nodes(cluster, 2)
    except BaseException:
        stop(cluster)
        raise
    try:
        yield cluster
    finally:
        stop(cluster)


@pytest.fixture(scope="session", name="ray_cluster")
def ray_cluster_fixture() -> Iterator[RayCluster]:
    """The cluster for a test session (import this fixture into a test module to use it)."""
    import ray.job_submission  # noqa: F401  # the dev extra has ray[default]: a broken install fails, not skips

    with running_cluster() as cluster:
        yield cluster


def trainer_node_ids(cluster: RayCluster) -> set[str]:
    """The ids of the alive nodes that have the trainer resource."""
    import urllib.request

    with urllib.request.urlopen(f"{cluster.address}/nodes?view=summary", timeout=10) as r:
        nodes = json.loads(r.read())["data"]["summary"]
    return {
        n["raylet"]["nodeId"]
        for n in nodes
        if n["raylet"].get("state") == "ALIVE" and TRAINER_RESOURCE in n["raylet"].get("resourcesTotal", {})
    }

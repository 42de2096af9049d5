"""/metrics, /healthz and /readyz over real HTTP: the server in this process with real checks
(and broken databases, data roots and hung checks), then a real `flywheel run`."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import create_engine

from flywheel.app import App
from flywheel.service import http as http_mod
from flywheel.service.health import Check, Health, Heartbeat, TimedCheck, data_root_check, database_check
from flywheel.service.http import HEALTHZ, READYZ, HttpServer, probe_url
from tests.conftest import TINY_CONFIG, free_port
from tests.metrics_scrape import scrape, value

FLYWHEEL = [sys.executable, "-m", "flywheel"]


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str, str]:
    """(status, content type, body) of a GET; 4xx/5xx are answers, not errors."""
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served(data_root: Path) -> Iterator[tuple[int, Health, FakeClock, Path]]:
    app = App(data_root)
    registry = CollectorRegistry()
    Gauge("flywheel_test_answer", "a gauge only this test sets", registry=registry).set(42)
    clock = FakeClock()
    started, stopping = threading.Event(), threading.Event()
    health = Health(Heartbeat(stall_seconds=60, clock=clock), app.engine, app.paths.root, started, stopping)
    server = HttpServer("127.0.0.1", 0, registry, {HEALTHZ: health.liveness, READYZ: health.readiness})
    try:
        yield server.port, health, clock, data_root
    finally:
        server.stop()


def test_metrics_are_served_by_prometheus_client_on_the_given_registry(served):
    port, *_ = served
    assert value(scrape(port), "flywheel_test_answer") == 42
    status, ctype, body = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain") and "# HELP flywheel_test_answer" in body
    # content negotiation is prometheus_client's: OpenMetrics when asked for
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_healthz_is_200_while_the_work_loop_beats_and_503_when_it_stalls(served):
    port, health, clock, _ = served
    health.heartbeat.beat("idle: watching inbox")
    status, ctype, body = get(port, "/healthz")
    assert status == 200 and ctype == "application/json"
    answer = json.loads(body)
    assert answer["status"] == "ok" and answer["checks"]["work_loop"]["ok"] is True
    assert "idle: watching inbox" in answer["checks"]["work_loop"]["detail"]

    clock.now += 61  # no beat for longer than stall_seconds
    status, _, body = get(port, "/healthz")
    answer = json.loads(body)
    assert status == 503 and answer["status"] == "fail"
    assert "stalled" in answer["reason"] and "idle: watching inbox" in answer["reason"]

    health.heartbeat.beat()
    assert get(port, "/healthz")[0] == 200
    health.heartbeat.stopped()
    status, _, body = get(port, "/healthz")
    assert status == 503 and "stopped" in json.loads(body)["reason"]


def test_readyz_follows_start_up_database_and_data_root(served):
    port, health, _, root = served
    status, _, body = get(port, "/readyz")
    assert status == 503 and json.loads(body)["reason"] == "starting"
    health.started.set()
    status, _, body = get(port, "/readyz")
    answer = json.loads(body)
    assert status == 200, body
    assert set(answer["checks"]) == {"daemon", "work_loop", "work", "database", "data_root"}
    assert all(c["ok"] for c in answer["checks"].values())
    assert "MiB free" in answer["checks"]["data_root"]["detail"]
    assert not list(root.glob(".readyz-probe-*"))  # the probe file is cleaned up
    health.stopping.set()
    status, _, body = get(port, "/readyz")
    assert status == 503 and json.loads(body)["reason"] == "stopping"


def test_readyz_is_503_with_the_reason_when_the_data_root_is_gone(served, tmp_path):
    port, health, _, root = served
    health.started.set()
    moved = tmp_path / "moved-away"
    root.rename(moved)  # e.g. its volume was unmounted
    try:
        status, _, body = get(port, "/readyz")
        answer = json.loads(body)
        assert status == 503
        assert answer["checks"]["data_root"]["ok"] is False
        assert f"data root {root} is not writable: No such file or directory" in answer["reason"]
    finally:
        moved.rename(root)
    assert get(port, "/readyz")[0] == 200  # and ready again once it is back


def _data_root_check_as_a_user(root: Path) -> tuple[bool, str]:
    """The check in a forked child as a user that file modes bind: root writes through them, so
    as root (how CI runs) the child drops to `nobody` first. Forked, not exec'd: the interpreter
    may live where `nobody` cannot read it (a pyenv under /root)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of pytest's cleanup
        try:
            os.close(reader)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            check = data_root_check(root)
            os.write(writer, json.dumps([check.ok, check.detail]).encode())
        except BaseException as exc:  # whatever it was, the parent reports it
            os.write(writer, json.dumps([None, repr(exc)]).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        ok, detail = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert ok is not None, detail
    return ok, detail


def test_data_root_without_write_permission_is_not_ready():
    with tempfile.TemporaryDirectory() as folder:  # not under pytest's tmp dir, which only its owner may enter
        parent = Path(folder)
        parent.chmod(0o755)
        writable, read_only = parent / "rw", parent / "ro"
        writable.mkdir(mode=0o777)
        writable.chmod(0o777)
        read_only.mkdir()
        read_only.chmod(0o555)
        try:
            assert _data_root_check_as_a_user(writable)[0]  # the same user can write where modes let it
            ok, detail = _data_root_check_as_a_user(read_only)
        finally:
            read_only.chmod(0o755)
    assert not ok and detail == f"data root {read_only} is not writable: Permission denied"


def test_an_unreachable_database_is_not_ready(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/no/such/folder/flywheel.db")
    check = database_check(engine)
    assert not check.ok and check.name == "database"
    assert "unreachable" in check.detail and "unable to open database file" in check.detail

    started, stopping = threading.Event(), threading.Event()
    started.set()
    health = Health(Heartbeat(60), engine, tmp_path, started, stopping)
    server = HttpServer("127.0.0.1", 0, CollectorRegistry(), {READYZ: health.readiness})
    try:
        status, _, body = get(server.port, "/readyz")
    finally:
        server.stop()
    answer = json.loads(body)
    assert status == 503 and answer["checks"]["data_root"]["ok"] and not answer["checks"]["database"]["ok"]
    assert answer["reason"].startswith(f"database sqlite:///{tmp_path}/no/such/folder/flywheel.db unreachable")


def test_a_hung_check_times_out_and_is_not_started_twice():
    release = threading.Event()
    calls = []

    def hangs() -> Check:
        calls.append(1)
        release.wait(10)
        return Check("database", True, "late")

    check = TimedCheck("database", hangs, timeout=0.2)
    started = time.monotonic()
    first = check()
    assert time.monotonic() - started < 2
    assert not first.ok and "did not answer within 0.2s" in first.detail
    second = check()
    assert not second.ok and "still hangs" in second.detail and len(calls) == 1
    release.set()
    deadline = time.monotonic() + 5
    while not (answer := check()).ok and time.monotonic() < deadline:  # until the hung one ends
        pass
    assert answer.detail == "late" and len(calls) <= 2  # its own late answer, or a new check once it ended


def test_overlapping_probes_share_one_check_and_all_pass():
    release, calls = threading.Event(), []

    def slow() -> Check:
        calls.append(1)
        release.wait(5)
        return Check("data_root", True, "writable")

    check = TimedCheck("data_root", slow, timeout=5)
    answers: list[Check] = []
    threads = [threading.Thread(target=lambda: answers.append(check())) for _ in range(16)]
    for t in threads:
        t.start()
    while len(calls) < 1:  # the first caller started the check; the others wait on it
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(10)
    assert len(answers) == 16 and all(a.ok for a in answers) and len(calls) == 1  # was: 30% "still hangs"


def test_the_server_takes_64_simultaneous_connections_without_a_queue_of_seconds():
    server = HttpServer("127.0.0.1", 0, CollectorRegistry(), {HEALTHZ: lambda: [Check("x", True, "ok")]})
    try:
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(64)]
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answers = [sock.recv(64) for sock in socks]
        for sock in socks:
            sock.close()
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers)
        assert server._server.request_queue_size >= 64  # the listen backlog (was socketserver's 5)
    finally:
        server.stop()


def test_a_probe_that_raises_answers_503_and_unknown_paths_404():
    def broken() -> list[Check]:
        raise RuntimeError("boom")

    server = HttpServer("127.0.0.1", 0, CollectorRegistry(), {HEALTHZ: broken})
    try:
        status, _, body = get(server.port, "/healthz")
        assert status == 503 and "boom" in json.loads(body)["reason"]
        assert get(server.port, "/nope")[0] == 404
        status, _, body = get(server.port, "/")
        assert status == 200 and 'href="/healthz"' in body
    finally:
        server.stop()


def test_ipv6_and_probe_urls():
    assert probe_url("0.0.0.0", 9108, "/healthz") == "http://127.0.0.1:9108/healthz"
    assert probe_url("::", 9108, "/readyz") == "http://[::1]:9108/readyz"
    assert probe_url("10.1.2.3", 1, "/x") == "http://10.1.2.3:1/x"
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        server = HttpServer("::1", 0, CollectorRegistry(), {HEALTHZ: lambda: [Check("x", True, "fine")]})
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    try:
        assert get(server.port, "/healthz", host="::1")[0] == 200
    finally:
        server.stop()


def test_a_real_daemon_serves_health_beside_metrics(tmp_path: Path):
    port = free_port()
    root = tmp_path / "root"
    subprocess.run([*FLYWHEEL, "init", str(root)], check=True, capture_output=True)
    (root / "config.toml").write_text(TINY_CONFIG.format(port=port))
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
    probe = [sys.executable, "-m", "flywheel.service.http"]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, body = get(port, "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert daemon.poll() is None, "daemon exited during start-up"
            assert time.monotonic() < deadline, "daemon not ready within 60s"
            time.sleep(0.2)
        checks = json.loads(body)["checks"]
        assert checks["daemon"]["detail"].startswith("idle: watching")
        assert checks["database"]["detail"] == f"sqlite:///{root}/flywheel.db answers"
        assert get(port, "/healthz")[0] == 200
        assert "flywheel_build_info" in get(port, "/metrics")[2]

        # the container's HEALTHCHECK command
        ok = subprocess.run([*probe, "healthz", "--root", str(root)], capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0 and '"status": "ok"' in ok.stdout, ok.stderr

        moved = tmp_path / "moved"
        root.rename(moved)
        try:
            status, _, body = get(port, "/readyz")
        finally:
            moved.rename(root)
        assert status == 503 and "is not writable" in json.loads(body)["reason"]
        assert get(port, "/healthz")[0] == 200  # alive all the same: not ready is not dead
        assert get(port, "/readyz")[0] == 200

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        down = subprocess.run([*probe, "readyz", "--root", str(root)], capture_output=True, text=True, timeout=60)
        assert down.returncode == 1 and "Connection refused" in down.stderr
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
        print((tmp_path / "daemon.log").read_text())


def can_mount() -> bool:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount(), reason="needs root and mount namespaces (unshare, nsenter) for a small fs")
def test_a_real_daemon_whose_disk_fills_up_is_alive_but_not_ready(tmp_path: Path):
    """The data root on a small filesystem of its own (a tmpfs in a mount namespace of the
    daemon's own, so nothing leaks), filled up under the running daemon, then freed."""
    volume = tmp_path / "volume"
    volume.mkdir()
    root = volume / "root"
    port = free_port()
    python = sys.executable
    script = (
        f"set -e; mount -t tmpfs -o size=32m tmpfs {volume}; {python} -m flywheel init {root} >/dev/null; "
        f'printf "%s" "$FLYWHEEL_TEST_CONFIG" > {root}/config.toml; exec {python} -m flywheel run --root {root}'
    )
    env = {**os.environ, "FLYWHEEL_TEST_CONFIG": TINY_CONFIG.format(port=port)}
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def inside(command: str) -> subprocess.CompletedProcess[str]:  # in the daemon's mount namespace
        nsenter = ["nsenter", "-t", str(daemon.pid), "-m"]
        return subprocess.run([*nsenter, "sh", "-c", command], capture_output=True, text=True)

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert daemon.poll() is None, "daemon exited during start-up"
            assert time.monotonic() < deadline, "daemon not ready within 60s"
            time.sleep(0.2)
        assert not (root / "config.toml").exists()  # the tmpfs is the daemon's alone

        filling = inside(f"cat /dev/zero > {volume}/filler")
        assert "No space left on device" in filling.stderr, filling.stderr
        status, _, body = get(port, "/readyz")
        answer = json.loads(body)
        assert status == 503, body
        assert answer["checks"]["data_root"]["detail"] == f"data root {root} is not writable: No space left on device"
        assert get(port, "/healthz")[0] == 200  # not ready, but alive: no restart for this
        assert inside(f"rm {volume}/filler").returncode == 0
        assert get(port, "/readyz")[0] == 200

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
        print((tmp_path / "daemon.log").read_text())


def test_probe_command_exit_codes_without_a_daemon(tmp_path: Path, capsys):
    assert http_mod.main(["healthz", "--root", str(tmp_path)]) == 2  # not a data root
    assert "config.toml" in capsys.readouterr().err
    (tmp_path / "config.toml").write_text("[metrics]\nport = 0\n")
    assert http_mod.main(["healthz", "--root", str(tmp_path)]) == 2
    assert "metrics.port is 0" in capsys.readouterr().err
    (tmp_path / "config.toml").write_text(f"[metrics]\nport = {free_port()}\n")
    assert http_mod.main(["readyz", "--root", str(tmp_path), "--timeout", "2"]) == 1


class CountingCollector:
    """Counts how often the registry is walked (each walk is a database snapshot in the daemon)."""

    def __init__(self) -> None:
        self.collected = 0
        self._lock = threading.Lock()

    def describe(self):
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("flywheel_test_walks", "walks so far")

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            self.collected += 1
        time.sleep(0.05)  # as a snapshot query takes time: concurrent scrapes overlap it
        yield GaugeMetricFamily("flywheel_test_walks", "walks so far", value=self.collected)


def test_concurrent_scrapes_share_one_render_of_the_registry():
    registry, counter = CollectorRegistry(), CountingCollector()
    registry.register(counter)
    server = HttpServer("127.0.0.1", 0, registry, {}, render_seconds=60.0)
    try:
        start, bodies = threading.Barrier(16), []

        def scrape_once() -> None:
            start.wait()
            bodies.append(get(server.port, "/metrics"))

        threads = [threading.Thread(target=scrape_once) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(bodies) == 16 and {b[0] for b in bodies} == {200}
        assert counter.collected == 1  # 16 scrapes, one walk of the collectors
        assert len({b[2] for b in bodies}) == 1
        assert "flywheel_test_walks 1.0" in bodies[0][2]
        # a name[] filter is its own render, of that family alone
        registry.register(Gauge("flywheel_test_other", "another family", registry=None))
        status, _, text = get(server.port, "/metrics?name[]=flywheel_test_walks")
        assert status == 200 and "flywheel_test_walks 2.0" in text and "flywheel_test_other" not in text
    finally:
        server.stop()


def test_the_exposition_renders_again_once_its_copy_is_older_than_max_age():
    registry, counter = CollectorRegistry(), CountingCollector()
    registry.register(counter)
    now = [100.0]
    exposition = http_mod.Exposition(registry, max_age=1.0, clock=lambda: now[0])
    first = exposition.render(None, None)
    now[0] += 0.9
    assert exposition.render(None, None) == first and counter.collected == 1
    now[0] += 0.2
    content_type, body = exposition.render(None, None)
    assert counter.collected == 2 and b"flywheel_test_walks 2.0" in body
    assert content_type.startswith("text/plain")
    openmetrics, _ = exposition.render("application/openmetrics-text; version=1.0.0", None)
    assert openmetrics.startswith("application/openmetrics-text") and counter.collected == 3

"""systemd: the notify protocol spoken by a real `flywheel run` to a socket this test listens
on, the watchdog logic, and the unit file (structure always; `systemd-analyze` when present)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.core.domain import RunState, StartKind
from flywheel.core.events import Trained
from flywheel.core.ports import NullObserver
from flywheel.service.health import Heartbeat
from flywheel.service.systemd import ServiceNotifier, StatusObserver, watchdog_seconds
from tests.conftest import TINY_CONFIG, free_port
from tests.fakes import epoch_ended

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "systemd" / "flywheel.service"
FLYWHEEL = [sys.executable, "-m", "flywheel"]


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address if not address.startswith("@") else "\0" + address[1:])
        self.messages: list[str] = []

    def wait_for(self, predicate: str, timeout: float, proc: subprocess.Popen | None = None) -> list[str]:
        """Read datagrams until one has a line starting with `predicate`; its lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, min(0.5, deadline - time.monotonic())))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if proc is not None and proc.poll() is not None:
                    pytest.fail(f"daemon exited ({proc.returncode}) before sending {predicate!r}: {self.messages}")
                continue
            message = data.decode()
            self.messages.append(message)
            lines = message.splitlines()
            if any(line.startswith(predicate) for line in lines):
                return lines
        pytest.fail(f"no {predicate!r} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, Listener]]:
    folder = tempfile.mkdtemp(prefix="fw-", dir="/tmp")  # AF_UNIX paths are limited to 107 bytes
    path = os.path.join(folder, "notify")
    listener = Listener(path)
    try:
        yield path, listener
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_real_daemon_speaks_the_notify_protocol(tmp_path: Path, notify_socket: tuple[str, Listener]):
    address, listener = notify_socket
    root = tmp_path / "root"
    subprocess.run([*FLYWHEEL, "init", str(root)], check=True, capture_output=True)
    (root / "config.toml").write_text(TINY_CONFIG.format(port=free_port()))
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}  # WatchdogSec=1
    log = (tmp_path / "daemon.log").open("w")
    # As systemd does: WATCHDOG_PID names the service's main process ($$ survives the exec).
    cmd = " ".join([*FLYWHEEL, "run", "--root", str(root)])
    daemon = subprocess.Popen(
        ["sh", "-c", f"WATCHDOG_PID=$$ exec {cmd}"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        ready = listener.wait_for("READY=1", 60, daemon)
        assert f"STATUS=idle: watching {root.resolve() / 'inbox'}" in ready
        started = time.monotonic()
        listener.wait_for("WATCHDOG=1", 5, daemon)
        listener.wait_for("WATCHDOG=1", 5, daemon)
        assert time.monotonic() - started < 3  # pings at half of WATCHDOG_USEC, not once a period

        # a step changes STATUS: a batch without class names is read, then rejected
        batch = tmp_path / "nonames"
        (batch / "images").mkdir(parents=True)
        (batch / "images" / "a.png").write_bytes(b"not a png")
        shutil.move(str(batch), str(root / "inbox" / "nonames"))
        (root / "inbox" / "nonames" / "READY").touch()
        listener.wait_for("STATUS=ingesting batch nonames", 30, daemon)
        listener.wait_for("STATUS=idle:", 30, daemon)

        daemon.send_signal(signal.SIGTERM)
        stopping = listener.wait_for("STOPPING=1", 30)
        assert any(line.startswith("STATUS=stopping") for line in stopping)
        assert daemon.wait(30) == 0
        assert not any("READY=1" in m for m in listener.messages[1:])  # READY once
    finally:
        if daemon.poll() is None:
            daemon.kill()
        log.close()
        print((tmp_path / "daemon.log").read_text())


def test_notifier_outside_systemd_does_nothing_and_inside_takes_the_variables(monkeypatch, notify_socket):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    quiet = ServiceNotifier.from_environment()
    assert not quiet.enabled and quiet.watchdog_seconds is None
    quiet.ready("x")  # no socket: nothing to send, nothing raised

    address, listener = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = ServiceNotifier.from_environment()
    assert notifier.enabled and notifier.watchdog_seconds == 4.0
    # taken out, so the training child processes never see them (sd_notify's unset_environment)
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)
    notifier.status("training r0001 épreuve\nsecond line")
    assert listener.wait_for("STATUS=", 2) == ["STATUS=training r0001 épreuve second line"]


def test_abstract_socket_names_work(monkeypatch):
    name = f"@flywheel-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = Listener(name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        ServiceNotifier.from_environment().stopping("bye")
        assert listener.wait_for("STOPPING=1", 2) == ["STOPPING=1", "STATUS=bye"]
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 2.0),
        ("2000000", "self", 2.0),
        ("2000000", "other", None),
        ("0", None, None),
        ("", None, None),
        ("ten", None, None),
    ],
)
def test_watchdog_period_follows_sd_watchdog_enabled(usec: str, pid: str | None, expected: float | None):
    env = {"WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid() if pid == "self" else os.getpid() + 1)
    assert watchdog_seconds(env, os.getpid()) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_stop_when_the_work_loop_stalls_but_not_during_a_training(monkeypatch, notify_socket):
    address, listener = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    clock = FakeClock()
    heartbeat = Heartbeat(stall_seconds=60, clock=clock)
    status = StatusObserver(NullObserver(), ServiceNotifier.from_environment(), heartbeat)

    status.ready("idle")
    listener.wait_for("READY=1", 2)
    clock.now += 59
    status.watchdog()
    listener.wait_for("WATCHDOG=1", 2)

    clock.now += 2  # 61 s without a beat: stalled
    assert not heartbeat.check().ok and "stalled" in heartbeat.check().detail
    status.watchdog()
    unhealthy = listener.wait_for("STATUS=unhealthy", 2)
    assert "WATCHDOG=1" not in unhealthy
    status.watchdog()  # still stalled: no ping, and the STATUS is not repeated
    with pytest.raises(TimeoutError):
        listener.sock.settimeout(0.3)
        listener.sock.recv(4096)

    # a training may be silent for long (validation): it is not a stall
    status.training_started(3, StartKind.WARM, 20)
    assert listener.wait_for("STATUS=", 2) == ["STATUS=training r0003 (warm) epoch 0/20"]
    clock.now += 3600
    assert heartbeat.check().ok
    status.watchdog()
    listener.wait_for("WATCHDOG=1", 2)
    status.training_event(epoch_ended(2, 20))
    assert listener.wait_for("STATUS=", 2) == ["STATUS=training r0003 epoch 2/20"]
    status.training_event(Trained(best="x", seconds=1.0, resumed=False))
    assert listener.wait_for("STATUS=", 2) == ["STATUS=evaluating r0003"]
    status.training_finished(RunState.SUCCEEDED, 12.0)
    assert listener.wait_for("STATUS=", 2) == ["STATUS=training r0003 succeeded after 12s"]
    clock.now += 61
    assert not heartbeat.check().ok  # after the training the stall rule is back


# --- the unit file ---------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as lists of (key, value): keys may repeat, as systemd allows."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(header.group(1), [])
        else:
            assert current is not None, f"key outside a section: {line!r}"
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= set {len(found)} times"
    return found[0]


def test_unit_file_is_a_hardened_notify_service_with_a_watchdog():
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"  # the training children cannot speak for it
    watchdog = one(service, "WatchdogSec")
    assert re.fullmatch(r"\d+(s|min)?", watchdog), watchdog
    assert one(service, "Restart") == "on-failure"
    assert "2" in one(service, "RestartPreventExitStatus").split()  # bad config: restarting cannot help
    assert one(service, "ExecStart").endswith("flywheel run")
    assert one(service, "KillSignal") == "SIGTERM"
    user = one(service, "User")
    assert user and user != "root" and one(service, "Group")
    root = next(v.split("=", 1)[1] for v in values(service, "Environment") if v.startswith("FLYWHEEL_ROOT="))
    assert root in one(service, "ReadWritePaths").split()  # the only place it may write
    hardening = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, expected in hardening.items():
        assert one(service, key) == expected, key
    assert unit["Install"] == [("WantedBy", "multi-user.target")]


def systemd_analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):  # .ci/run installs it: a CI run must not skip this silently
            pytest.fail("systemd-analyze is missing in CI: .ci/run should have installed Debian's systemd")
        pytest.skip("systemd-analyze is not installed here (Debian: apt-get install systemd)")
    return analyze


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path):
    analyze = systemd_analyze()
    # verify checks that ExecStart's program exists: point it at this checkout's flywheel
    flywheel = shutil.which("flywheel", path=os.path.dirname(sys.executable))
    assert flywheel, "flywheel's console script is not installed beside this Python"
    text = UNIT.read_text().replace("/opt/flywheel/.venv/bin/flywheel", flywheel)
    assert text != UNIT.read_text(), "the unit's ExecStart no longer names /opt/flywheel/.venv/bin/flywheel"
    unit = tmp_path / "flywheel.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either

    broken = tmp_path / "broken" / "flywheel.service"
    broken.parent.mkdir()
    broken.write_text(text.replace("Type=notify", "Type=notifyy"))
    result = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "notifyy" in result.stderr  # the check can fail


def test_unit_file_exposure_per_systemd_analyze_security(tmp_path: Path):
    analyze = systemd_analyze()
    probe = subprocess.run([analyze, "security", "--help"], capture_output=True, text=True)
    if "--offline" not in probe.stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 252)")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=30", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    exposure = re.search(r"Overall exposure level for flywheel.service: ([\d.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    print(result.stdout)
    assert float(exposure.group(1)) <= 2.0, result.stdout  # 10 is an unhardened service


def test_the_serve_unit_passes_systemd_analyze_verify(tmp_path: Path):
    analyze = systemd_analyze()
    flywheel = shutil.which("flywheel", path=os.path.dirname(sys.executable))
    assert flywheel, "flywheel's console script is not installed beside this Python"
    source = UNIT.with_name("flywheel-serve.service").read_text()
    text = source.replace("/opt/flywheel/.venv/bin/flywheel", flywheel)
    assert text != source and "flywheel serve /var/lib/flywheel" in source
    unit = tmp_path / "flywheel-serve.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr

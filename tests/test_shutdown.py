"""Stopping the daemon: SIGTERM while a step will not end (a training that ignores the request
to stop) exits with 124 once `daemon.shutdown_timeout` is up; a second signal exits at once
with 128 + signal. The daemon runs as a real process; only its trainer is a stand-in that
hangs, which no real training does on purpose."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.errors import ExitCode

CONFIG = """\
[inbox]
settle_seconds = 0.3

[dataset]
val_fraction = 0.25

[schedule]
debounce_seconds = 0.0

[metrics]
port = 0

[daemon]
shutdown_timeout = {timeout}
"""

HANGING_DAEMON = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import flywheel.app
    from flywheel.cli.main import app

    class Hangs:  # a trainer stuck where no stop request reaches it
        def __init__(self, *args, **kwargs): pass
        def run(self, spec, on_event):
            print("trainer hangs", flush=True)
            time.sleep(600)
        def cancel(self): pass

    flywheel.app.SubprocessTrainer = Hangs
    app(["run", "--root", sys.argv[1]])  # as `flywheel run`, logging and exit codes included
    """
)


def hanging_daemon(tmp_path: Path, timeout: float) -> tuple[subprocess.Popen[str], Path]:
    root = init_data_root(tmp_path / "root", CONFIG.format(timeout=timeout))
    App(root).ingest(synthetic_batch(tmp_path / "b1", 12, seed=1), move=False)
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", HANGING_DAEMON, str(root)], stdout=out, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + 60
    while "trainer hangs" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return proc, log


def test_a_stop_that_outlasts_shutdown_timeout_exits_124(tmp_path):
    proc, log = hanging_daemon(tmp_path, timeout=2.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    finally:
        proc.kill()
    took = time.monotonic() - started
    assert code == ExitCode.SHUTDOWN_TIMEOUT, log.read_text()
    assert 2.0 <= took < 10, took
    assert "stopping within 2s" in log.read_text() and "daemon.shutdown_timeout" in log.read_text()


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once(tmp_path, second):
    proc, log = hanging_daemon(tmp_path, timeout=300.0)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(second)
    try:
        code = proc.wait(30)
    finally:
        proc.kill()
    assert code == 128 + second, log.read_text()
    assert time.monotonic() - started < 5 and "second signal: exiting now" in log.read_text()

"""How a training child names why it stopped: a request (SIGTERM) or its parent's death.

Real processes, no training: the child installs flywheel's STOP exactly as the training child
does, says it is ready, and prints the reason its `Cancelled` carries.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

CHILD = """
import time
from flywheel.training.process import STOP, Cancelled
try:
    STOP.install()
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
except Cancelled as exc:
    print(exc, flush=True)
"""

# The daemon starts its children from a worker thread, as this parent does.
PARENT = f"""
import subprocess, sys, threading
worker = threading.Thread(target=lambda: subprocess.run([sys.executable, "-c", {CHILD!r}]))
worker.start()
worker.join()
"""


@pytest.mark.parametrize(
    ("sent", "reason"),
    [(signal.SIGTERM, "stopped by SIGTERM"), (signal.SIGHUP, "the process that started this run is gone")],
)
def test_the_child_names_the_signal_it_got(sent, reason):
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(sent)
    out, _ = child.communicate(timeout=30)
    assert out.strip() == reason


def test_a_parent_killed_from_under_its_worker_thread_is_named_as_gone():
    # CI once read this as "stopped by SIGTERM": the kernel signalled when the worker thread
    # died, while the dying parent still held its pid, so getppid() had not changed yet.
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "ready"
    parent.kill()
    parent.wait(30)
    rest = parent.stdout.read()  # EOF once the child, which shares the pipe, has exited
    assert rest.strip() == "the process that started this run is gone"

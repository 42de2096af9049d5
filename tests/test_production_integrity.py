"""A damaged production model is not served as if nothing happened.

production/model.pt is a copy of the registry's object (it was a hard link: damage to one was
damage to both). A real `flywheel run` checks both against the recorded sha256 at start and
before each step: one damaged copy is restored from the other; both damaged, the daemon stays
up but degraded (/readyz 503 naming the files and the fix, `flywheel_degraded` 1, one log
line) and trains from nothing damaged; `flywheel status` says what to do.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.main import app as cli
from tests.conftest import free_port
from tests.fakes import FakeTrainer
from tests.metrics_scrape import scrape, value
from tests.test_disk_full import get, until

CONFIG = """\
[inbox]
settle_seconds = 3600.0
rescan_seconds = 0.5

[dataset]
val_fraction = 0.25

[schedule]
min_new_images = 100000            # no training here: the subject is the check

[metrics]
port = {port}
"""


def with_production(tmp_path: Path) -> tuple[Path, int, Path, Path]:
    port = free_port()
    root = init_data_root(tmp_path / "root", CONFIG.format(port=port))
    app = App(root, trainer=FakeTrainer([0.3]))
    app.train(app.ingest(synthetic_batch(tmp_path / "b1", 8, seed=1), move=False).version.id)
    model = app.store.production()
    stored = app.registry.checkpoints.path(model.sha256)
    published = (root / "production" / "model.pt").resolve()
    app.engine.dispose()
    return root, port, stored, published


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def run_daemon(root: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel", "run", "--root", str(root)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_both_copies_damaged_the_daemon_is_degraded_says_why_once_and_status_says_what_to_do(tmp_path: Path):
    root, port, stored, published = with_production(tmp_path)
    flip(stored)
    flip(published)
    proc, log = run_daemon(root, tmp_path)
    try:
        _, body = until("/readyz to say degraded", lambda: (r := get(port, "/readyz"))[0] == 503 and r, proc)
        assert "both copies are damaged" in body and str(stored) in body and "flywheel rollback" in body
        assert value(scrape(port), "flywheel_degraded") == 1
        assert get(port, "/healthz")[0] == 200  # alive: a restart would not fix it
        # a later step ingests a batch, then meets the same damage: still degraded, not logged again
        batch = synthetic_batch(root / "inbox" / "b2", 4, seed=2)
        (batch / "READY").write_text("")
        until("the batch to be ingested", lambda: not batch.exists(), proc)
        assert get(port, "/readyz")[0] == 503
    finally:
        stop(proc)
    text = log.read_text()
    assert text.count("both copies are damaged") == 1, text
    shown = CliRunner(env={"COLUMNS": "300"}).invoke(cli, ["status", "--root", str(root)])
    assert "production is damaged" in shown.output and "flywheel rollback" in shown.output


def test_one_damaged_copy_is_restored_at_start_and_the_daemon_is_ready(tmp_path: Path):
    root, port, stored, published = with_production(tmp_path)
    good = stored.read_bytes()
    flip(published)
    proc, log = run_daemon(root, tmp_path)
    try:
        until("/readyz 200", lambda: get(port, "/readyz")[0] == 200, proc)
    finally:
        stop(proc)
    assert (root / "production" / "model.pt").read_bytes() == good
    assert "production model restored" in log.read_text() and "copied again from" in log.read_text()

"""Screening in the running daemon (build_daemon in a thread, real inbox watcher, real ingest,
real predict child): before the first production model the batch is screened as `skipped` and
trains; a later batch that carries a pixel copy of a val image is held by the leakage check
(policy "hold"), nothing trains on its version, and `flywheel approve` (the CLI, its own
process) releases it to train. The FakeTrainer's checkpoints are no real model, so the label
check fails there and says so while the other checks go on (the label check on a real model:
benchmarks/screen.py and tests/test_screening.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from PIL import Image

from flywheel.app import App, build_daemon, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.screening import Check, ScreenState
from tests.fakes import FakeTrainer
from tests.test_schedule_daemon import CONFIG, until

SCREEN = '\n[screen]\nleakage = "hold"\n'


def test_a_held_batch_waits_for_approve_then_trains(tmp_path: Path) -> None:
    root = init_data_root(tmp_path / "root", CONFIG.format(debounce=0, min_new=1, cron="", rescan=0.5) + SCREEN)
    daemon = build_daemon(root, trainer := FakeTrainer([0.3, 0.4]))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    store = daemon.work.store
    try:
        assert daemon.ready.wait(60)
        drop(synthetic_batch(tmp_path / "s" / "b1", 12, seed=1), root / "inbox")
        until("the first model", lambda: store.production() is not None, thread)
        assert [s.state for s in store.screenings(1)] == [ScreenState.SKIPPED]
        assert "no production model yet" in store.screenings(1)[0].note
        batch = synthetic_batch(tmp_path / "s" / "b2", 12, seed=2)
        app = App(root)
        val = next(i for i in store.manifest(1).values() if i.split == "val")
        with Image.open(app.objects.path(val.image_sha256)) as im:  # the same pixels, other bytes
            im.save(batch / "images" / "copy.png", compress_level=1)
        (batch / "labels" / "copy.txt").write_bytes(app.objects.path(val.label_sha256).read_bytes())
        drop(batch, root / "inbox")
        until("the screening of b2", lambda: bool(store.screenings(2)), thread)
        held = store.screenings(2)[-1]
        assert held.state is ScreenState.HELD
        assert [s.kind for s in held.flagged(Check.LEAKAGE)] == ["val_copy"]
        assert "error" in held.checks["label_errors"]  # the fake checkpoint: said, not fatal
        until("the hold said", lambda: "flywheel approve b0002" in daemon.trigger.note, thread)
        assert [r.version_id for r in store.runs()] == [1]  # version 2 waits
        approved = subprocess.run(
            [sys.executable, "-m", "flywheel", "approve", "b0002", "--root", str(root), "--actor", "alice"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert approved.returncode == 0, approved.stderr
        until("the approved version to train", lambda: [r.version_id for r in store.runs()] == [1, 2], thread)
        assert store.screenings(2)[-1].decided_by == "alice"
    finally:
        daemon.stop()
        thread.join(60)
    assert len(trainer.specs) == 2

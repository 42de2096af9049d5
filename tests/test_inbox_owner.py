"""A batch the daemon may not move out of the inbox: processed once, left in place, never copied.

As reported: a batch copied in by another user (root, with `docker compose cp` or `cp -r`)
under a daemon running as uid 10001. Renaming a directory needs write access to the directory
itself, so the daemon could not move the folder; `shutil.move` then copied it into
`inbox/.done/`, failed to delete the original, and did so again at every rescan (805 copies in
8 seconds). Here the folder (or the inbox) is made immutable (`chattr +i`), which refuses the
rename and the delete to root too, so the test runs the daemon's own steps in this process.
"""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flywheel.app import build_daemon
from flywheel.cli.demo import synthetic_batch
from flywheel.service.daemon import Daemon


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode == 0


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    if not _chattr("+i", path):
        pytest.skip("chattr +i is not supported on this file system")
    try:
        yield
    finally:
        _chattr("-i", path)


def rescans(daemon: Daemon, name: str, times: int = 3) -> list[list[str]]:
    """The daemon's inbox step, `times` times: ingest what the tracker offers (the first time,
    the batch, as a settled one would be). Returns what was offered after each step."""
    offered = []
    inbox = daemon.work.inbox
    for attempt in range(times):
        if attempt == 0 or inbox / name in daemon.tracker.complete():
            daemon._ingest(inbox / name)
        offered.append([p.name for p in daemon.tracker.complete()])
    return offered


def test_a_folder_the_daemon_may_not_move_is_ingested_once_and_left_in_place(data_root: Path, caplog):
    batch = synthetic_batch(data_root / "inbox" / "batch1", 8, seed=1)
    daemon = build_daemon(data_root)
    with immutable(batch):
        offered = rescans(daemon, "batch1")
        assert len([p for p in batch.rglob("*") if p.is_file()]) == 17  # 8 images, 8 labels, classes.txt
    assert [(b.name, b.state) for b in daemon.work.store.batches()] == [("batch1", "ingested")]  # once
    assert daemon.work.store.latest_version().id == 1
    assert not any((data_root / "inbox" / ".done").iterdir())  # nothing copied
    assert offered == [[], [], []]  # not looked at again until it changes
    assert daemon.metrics_registry.get_sample_value("flywheel_inbox_batch_left", {"batch": "batch1"}) == 1.0
    said = [r.getMessage() for r in caplog.records if "could not be moved out of the inbox" in r.getMessage()]
    assert len(said) == 1 and "Remove it as its owner" in said[0]  # said once, with what to do


def test_an_archive_in_an_inbox_the_daemon_may_not_change_is_left_once_too(data_root: Path, tmp_path: Path):
    folder = synthetic_batch(tmp_path / "src", 6, seed=2)
    archive = data_root / "inbox" / "batch2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    (data_root / "inbox" / ".done").mkdir(exist_ok=True)
    daemon = build_daemon(data_root)
    with immutable(data_root / "inbox"):
        offered = rescans(daemon, "batch2.zip")
    assert [(b.name, b.state) for b in daemon.work.store.batches()] == [("batch2.zip", "ingested")]
    assert daemon.work.store.latest_version().id == 1  # its 6 images were versioned
    assert archive.is_file() and not any((data_root / "inbox" / ".done").iterdir())
    assert offered == [[], [], []]


def test_a_batch_that_may_move_moves_whole_into_done(data_root: Path):
    batch = synthetic_batch(data_root / "inbox" / "batch3", 6, seed=3)
    daemon = build_daemon(data_root)
    rescans(daemon, "batch3", times=1)
    assert not batch.exists() and [p.name for p in (data_root / "inbox" / ".done").iterdir()] == ["b0001-batch3"]
    assert daemon.metrics_registry.get_sample_value("flywheel_inbox_batch_left", {"batch": "batch3"}) is None

"""The InboxDrop port (flywheel.core.ports): a labeled batch put into the inbox the way a person
would drop one, whole before it is seen. The files are written into a hidden folder beside the
inbox's batches (the watcher skips names starting with "."), made durable, renamed into place,
and only then given the marker file (`inbox.marker`), so the daemon never reads half a batch."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path


class InboxFolder:
    def __init__(self, inbox: Path, done: Path, marker: str):
        self.inbox = inbox
        self.done = done
        self.marker = marker

    def drop(self, name: str, files: Mapping[str, bytes]) -> bool:
        target = self.inbox / name
        if target.exists() or (self.done / name).exists():
            return False
        staging = self.inbox / f".{name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        for rel, data in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            staging.rename(target)
        except OSError:  # another puller dropped the same batch first
            shutil.rmtree(staging, ignore_errors=True)
            return False
        (target / self.marker).write_text("")
        return True

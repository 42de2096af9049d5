"""A data root on disk: where everything lives under it (README "On disk"), and the lock that
lets one process at a time ingest and train in it."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from flywheel.core.errors import Busy


@dataclass(frozen=True)
class DataRootPaths:
    """Where everything lives under a data root (README "On disk")."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def done(self) -> Path:
        return self.inbox / ".done"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def production(self) -> Path:
        return self.root / "production"

    @property
    def ultralytics(self) -> Path:
        return self.root / ".ultralytics"


class DataRootLock:
    """An exclusive lock on the data root: one process does ingest and training at a time."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self._fh: IO[str] | None = None

    def __enter__(self) -> DataRootLock:
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise Busy(
                f"{self.path.parent} is in use by {holder}: the running daemon ingests and trains on "
                "its own. Drop the batch in its inbox, or stop the daemon first"
            ) from None
        fh.truncate(0)
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def close(self) -> None:
        self.__exit__()

    def __exit__(self, *exc: object) -> None:
        if self._fh:
            self._fh.truncate(0)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

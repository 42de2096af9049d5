"""What the tracker is known to hold, as a JSON file in the data root (`mirror/<target>.json`).

A file, not a table: it is a cache of the tracker, not a record of flywheel's own (the store
and ledger are those, and what waits is derived from them), so it needs no migration and the
schema carries nothing for an optional extra. Lost or stale, the next sync asks the tracker by
flywheel's names and makes nothing twice. Written whole and renamed into place; a lock file
keeps the daemon and `flywheel mirror sync` from syncing at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flywheel.core.mirror import MirrorState


class MirrorStateFile:
    def __init__(self, path: Path, target: str):
        self.path = path
        self.target = target  # the tracking URI and model name: a record of another target is not ours

    def load(self) -> MirrorState:
        try:
            state = MirrorState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return MirrorState(target=self.target)
        except (ValueError, TypeError):  # a torn or edited file: the tracker is asked again
            return MirrorState(target=self.target)
        return state if state.target == self.target else MirrorState(target=self.target)

    def save(self, state: MirrorState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(state.to_json(), fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    @contextmanager
    def hold(self) -> Iterator[object]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(f".{self.path.name}.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # waits: a sync takes seconds
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

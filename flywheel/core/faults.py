"""Named crash points, for the fault-injection test (tests/test_fault_injection.py).

`FLYWHEEL_CRASH_AT=promote.committed` makes the process SIGKILL itself the first time it
reaches that point; `name@3` the third time. A SIGKILL, not an exception: nothing is cleaned
up, no `finally` runs, exactly as a power cut or the OOM killer would leave things. Unset (as
in production) a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Literal, get_args

ENV = "FLYWHEEL_CRASH_AT"

# Every point, in the order a batch meets them; the test picks among these at random. A type,
# so a misspelt point at a call site is a mypy error, not a point that silently never fires.
CrashPoint = Literal[
    "ingest.started",  # the batch row exists, nothing stored yet
    "ingest.stored",  # its images are in the object store, no version yet
    "ingest.versioned",  # the version's rows are committed, its folder not yet built
    "ingest.recorded",  # the batch is recorded ingested, still in the inbox
    "train.started",  # the run is recorded running, the child is starting
    "train.epoch",  # an epoch was recorded, the child trains on
    "eval.scored",  # a score came in from the child
    "gate.decided",  # the gate's decision is recorded, not yet carried out
    "promote.committed",  # production changed in the database, production/ not yet swapped
    "run.finished",  # production/ swapped, the run not yet recorded succeeded
]
POINTS: tuple[CrashPoint, ...] = get_args(CrashPoint)
# `flywheel gc`'s points: not on a batch's way, so kept out of POINTS (which the daemon's
# fault-injection test draws from) and killed at by tests/test_gc.py.
GcCrashPoint = Literal[
    "gc.moved",  # one more path is in .gc-trash/, the rest where they were, nothing recorded
    "gc.recorded",  # everything is in .gc-trash/ and the ledger says so, the trash not yet emptied
]
GC_POINTS: tuple[GcCrashPoint, ...] = get_args(GcCrashPoint)

_hits: dict[str, int] = {}


def crash_point(name: CrashPoint | GcCrashPoint) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

"""Stop the running training (`flywheel train --cancel`), whoever runs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from flywheel.core.domain import RunState
from flywheel.core.errors import Busy
from flywheel.core.ports import RunStopper, StorePort
from flywheel.core.records import Run

POLL_SECONDS = 0.5


def cancel_running(
    store: StorePort,
    hold_data_root: Callable[[], AbstractContextManager[object]],
    stopper: RunStopper,
    actor: str,
    wait_seconds: float,
) -> list[Run]:
    """A process that holds the data root (the daemon, another `flywheel train`) is asked to
    stop its run and stops after its current batch; a run no process holds any more (a dead
    one's) is recorded cancelled at once. Returns the runs as they ended, or as they still are
    after `wait_seconds`."""
    running = [r for r in store.runs() if r.state == RunState.RUNNING and r.id is not None]
    reason = f"cancelled by {actor} (flywheel train --cancel)"
    try:
        with hold_data_root():  # nobody holds the data root: nobody trains
            return [store.update_run(r.id or 0, RunState.CANCELLED, error=reason) for r in running]
    except Busy:
        pass
    for r in running:
        stopper.request_stop(r.id or 0, reason)
    deadline = time.monotonic() + wait_seconds
    ids = [r.id or 0 for r in running]
    while time.monotonic() < deadline:
        now = [store.run(i) for i in ids]
        if all(r.state != RunState.RUNNING for r in now):
            return now
        time.sleep(POLL_SECONDS)
    return [store.run(i) for i in ids]

"""What screenings decide for training (flywheel/flow/screening.py records them): a held batch
keeps its version and every later one from training until `flywheel approve` or the hold
timeout; quarantined images are left out of training from their version on. A batch's newest
screening is the one that counts."""

from __future__ import annotations

from datetime import UTC, datetime

from flywheel.core.domain import batch_name, version_name
from flywheel.core.errors import NotFound
from flywheel.core.ports import StorePort
from flywheel.core.screening import Screening, ScreenState, hold_expired


def latest(store: StorePort, batch_id: int) -> Screening | None:
    found = store.screenings(batch_id)
    return found[-1] if found else None


def approve(store: StorePort, batch_id: int, actor: str) -> Screening:
    current = latest(store, batch_id)
    if current is None:
        raise NotFound(f"batch {batch_name(batch_id)} was never screened: nothing to approve (`flywheel screen`)")
    return store.approve_screening(current.id, actor)


def _newest_per_batch(store: StorePort, version_id: int) -> list[Screening]:
    newest: dict[int, Screening] = {}
    for s in store.screenings():
        if s.version_id <= version_id:
            newest[s.batch_id] = s
    return list(newest.values())


def holding(store: StorePort, version_id: int, timeout_hours: float, now: datetime | None = None) -> str | None:
    """Why `version_id` may not train yet: a batch it holds is held by its screening."""
    now = now or datetime.now(UTC)
    for s in _newest_per_batch(store, version_id):
        if s.state is ScreenState.HELD and not hold_expired(s, now, timeout_hours):
            b = batch_name(s.batch_id)
            return (
                f"{version_name(version_id)} waits: the screening of {b} holds it ({s.note}); "
                f"review with `flywheel screen {b}`, then `flywheel approve {b}`"
            )
    return None


def excluded(store: StorePort, version_id: int) -> set[str]:
    """The images screenings quarantined, left out of training `version_id`."""
    return {sha for s in _newest_per_batch(store, version_id) for sha in s.quarantined}

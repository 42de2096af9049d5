"""What waits to be trained, read from the store for the schedule's pure policy
(flywheel.core.schedule.decide_schedule), which takes it as a plain value."""

from __future__ import annotations

from datetime import datetime

from flywheel.core.ports import StorePort
from flywheel.core.records import as_utc
from flywheel.core.schedule import Waiting


def waiting(store: StorePort, now: datetime) -> Waiting:
    """Versions after the last one any run trained on."""
    versions = store.versions()
    trained = {r.version_id for r in store.runs()}
    if not versions or versions[-1].id in trained:
        return Waiting(None, 0, 0.0)
    last_trained = max((v.id for v in versions if v.id in trained), default=0)
    fresh = [v for v in versions if v.id > last_trained]
    new_images = sum(v.images_new + v.images_relabelled for v in fresh)
    quiet = (as_utc(now) - as_utc(versions[-1].created_at)).total_seconds()
    return Waiting(versions[-1].id, new_images, max(0.0, quiet))

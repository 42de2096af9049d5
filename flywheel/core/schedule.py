"""When the daemon trains: a pure policy over what is waiting (no clock, no I/O), so every
rule is tested with plain values; the daemon (flywheel.service.daemon) feeds it what
flywheel.flow.waiting reads from the store, and APScheduler's cron trigger tells it when a
scheduled time came.

- A burst of batches is one training: nothing trains until no version was made for
  `debounce_seconds`; then the newest version (which holds every batch of the burst) trains.
- A training starts when at least `min_new_images` images are new or relabelled since the
  last version a run trained on (0: never by count), or when `cron` fires and anything waits.
- One training at a time, always: the daemon has one worker; a batch arriving during a
  training is ingested after it, and waits for the next.
- `flywheel train` while the daemon runs is a request in the same queue (flywheel.service.train_queue):
  it trains at the worker's next step, whatever the count or the schedule say.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulePolicy:
    debounce_seconds: float = 30.0
    min_new_images: int = 1
    cron: str = ""


@dataclass(frozen=True)
class Waiting:
    """What a training would get now."""

    version_id: int | None  # the newest version, if no run has trained on it
    new_images: int  # new or relabelled since the last version a run trained on
    quiet_seconds: float  # since the newest version was made


@dataclass(frozen=True)
class Verdict:
    train: bool
    why: str
    retry_in: float | None = None  # seconds until the verdict may change without new events


def decide_schedule(waiting: Waiting, policy: SchedulePolicy, cron_due: bool) -> Verdict:
    if waiting.version_id is None or waiting.new_images <= 0:
        return Verdict(False, "nothing new to train on")
    if waiting.quiet_seconds < policy.debounce_seconds:
        left = policy.debounce_seconds - waiting.quiet_seconds
        return Verdict(False, f"waiting {left:.0f}s more for the rest of the burst (debounce_seconds)", left)
    if cron_due:
        return Verdict(True, f"the schedule ({policy.cron}) came, {waiting.new_images} images waiting")
    if policy.min_new_images and waiting.new_images >= policy.min_new_images:
        return Verdict(True, f"{waiting.new_images} new images (min_new_images {policy.min_new_images})")
    if policy.min_new_images:
        wait = f"{waiting.new_images} of min_new_images {policy.min_new_images} new images waiting"
    else:
        wait = f"{waiting.new_images} new images waiting"
    return Verdict(False, wait + (f"; next chance: the schedule ({policy.cron})" if policy.cron else ""))

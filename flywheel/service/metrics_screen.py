"""The data engine's metrics, read from the store at scrape time (as StateCollector's): the
suspects each check found, in all batches and in the newest screened one, and the screenings by
state. Labels are checks and states (small fixed sets), never a batch: the newest batch's
numbers are a gauge, and its name is in `flywheel screen`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flywheel.core.errors import FlywheelError
from flywheel.core.ports import StorePort
from flywheel.core.screening import Check, ScreenState

log = logging.getLogger(__name__)


class ScreenCollector(Collector):
    def __init__(self, store: StorePort) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        try:
            screenings = self.store.screenings()
        except FlywheelError as exc:  # the database is away: StateCollector's database_up says so
            log.debug("screening metrics skipped: %s", exc)
            return
        total = CounterMetricFamily(
            "flywheel_screen_suspects",
            "Images (or batches, for class_shift) each check flagged, all batches",
            labels=["check"],
        )
        newest = GaugeMetricFamily(
            "flywheel_screen_last_batch_suspects",
            "Images each check flagged in the newest screened batch",
            labels=["check"],
        )
        states = GaugeMetricFamily(
            "flywheel_screen_batches", "Batches by the state of their newest screening", labels=["state"]
        )
        latest = {s.batch_id: s for s in screenings}
        counts: Counter[str] = Counter()
        for s in latest.values():
            for c in Check:
                counts[c] += len({x.image_sha256 for x in s.flagged(c)})
        last = latest[max(latest)] if latest else None
        for c in Check:
            total.add_metric([str(c)], counts[c])
            newest.add_metric([str(c)], len({x.image_sha256 for x in last.flagged(c)}) if last else 0)
        by_state = Counter(str(s.state) for s in latest.values())
        for state in ScreenState:
            states.add_metric([str(state)], by_state[str(state)])
        yield from (total, newest, states)

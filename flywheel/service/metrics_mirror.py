"""The registry mirror's health on /metrics (`[mlflow]`): whether its tracker answered at the
last try, and how much waits for it. Read from the mirror at scrape time, on the registry the
daemon serves; what waits is derived from the store, so a CLI `rollback` shows at once."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flywheel.core.ports import RegistryMirror


class MirrorCollector(Collector):
    def __init__(self, mirror: RegistryMirror):
        self.mirror = mirror

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.mirror.status()
        up = GaugeMetricFamily(
            "flywheel_mirror_up",
            "1 if the mirror's tracker answered at its last try, 0 if not (it retries with backoff; "
            "production changes never wait for it); absent before the first try",
            labels=["target"],
        )
        if status.up is not None:
            up.add_metric([status.target], 1.0 if status.up else 0.0)
        yield up
        pending = GaugeMetricFamily(
            "flywheel_mirror_pending",
            "Runs, model versions and alias moves the mirror's tracker does not hold yet "
            "(`flywheel mirror sync` catches up by hand)",
            labels=["target"],
        )
        pending.add_metric([status.target], float(len(status.pending)))
        yield pending

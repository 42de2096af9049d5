"""The model being served, and the watcher that swaps in a new production.

A background thread polls `production` (the symlink's target and its model.json) every
`serve.poll_seconds`. On a change it loads the new folder in the configured runtime and warms
it while the old model keeps answering; then one assignment makes it current. The batcher reads
`current` once per batch, so a swap happens between batches: no request fails, and each answer
names the model that computed it. A load that fails keeps the old model and is retried when
production changes again or after a back-off; `differs` tells Prometheus meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.core.errors import FlywheelError
from flywheel.serve import production, runtime
from flywheel.serve.metrics import ServeMetrics
from flywheel.serve.production import Production
from flywheel.serve.runtime import Runtime

log = logging.getLogger(__name__)
RETRY_SECONDS = 30.0  # a production that failed to load is tried again after this, in case it was mid-write


@dataclass(frozen=True)
class Served:
    production: Production
    runtime: Runtime
    stamp: str


class ModelHolder:
    def __init__(
        self,
        link: Path,
        runtime_choice: str,
        train_imgsz: int,
        threads: int,
        warm_batch: int,
        poll_seconds: float,
        metrics: ServeMetrics,
    ) -> None:
        self.link = link
        self.runtime_choice = runtime_choice
        self.train_imgsz = train_imgsz
        self.threads = threads
        self.warm_batch = warm_batch
        self.poll_seconds = poll_seconds
        self.metrics = metrics
        self.current: Served | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: tuple[str, float] | None = None  # stamp, when
        self._differs_since = 0.0

    def load_current(self) -> Served:
        """Load what production names now (at start-up)."""
        if production.current_stamp(self.link) is None:
            raise production.ProductionError(
                f"{self.link} names no model: promote one first (`flywheel promote`), or start `flywheel run` "
                "and let the first training promote"
            )
        served = self._load()
        self._switch(served)
        return served

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="serve-production-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check(self) -> None:
        """One poll: swap if production changed (the watcher calls this every poll_seconds)."""
        stamp = production.current_stamp(self.link)
        served = self.current
        if stamp is None or (served is not None and stamp == served.stamp):
            self._mark_differs(False)
            return
        self._mark_differs(True)
        if self._failed and self._failed[0] == stamp and time.monotonic() - self._failed[1] < RETRY_SECONDS:
            return
        try:
            fresh = self._load()
        except FlywheelError as exc:
            self._failed = (stamp, time.monotonic())
            self.last_error = str(exc)
            self.metrics.swaps.labels("failed").inc()
            log.error("production changed but the new model cannot be served, still serving %s: %s", self._name(), exc)
            return
        previous = self._name()
        self._switch(fresh)
        self._mark_differs(production.current_stamp(self.link) != fresh.stamp)
        log.info("swapped %s -> %s (%s)", previous, fresh.production.id, fresh.runtime.format)

    def _load(self) -> Served:
        found = production.read(self.link)
        fmt, path = production.choose(found, self.runtime_choice)
        loaded = runtime.load(fmt, path, found.imgsz or self.train_imgsz, self.threads)
        runtime.warm(loaded, self.warm_batch)
        return Served(found, loaded, found.stamp)  # what was read, even if the link has moved since

    def _switch(self, served: Served) -> None:
        self.current = served  # one reference assignment: the batcher sees the old or the new, never a mix
        self._failed = None
        self.last_error = ""
        self.metrics.swaps.labels("ok").inc()
        self.metrics.model.info(
            {"model": served.production.id, "version": served.production.version, "runtime": served.runtime.format}
        )
        self.metrics.ready.set(1)

    def _mark_differs(self, differs: bool) -> None:
        if not differs:
            self._differs_since = 0.0
            self.metrics.differs.set(0)
            self.metrics.differs_since.set(0)
        elif not self._differs_since:
            self._differs_since = time.time()
            self.metrics.differs.set(1)
            self.metrics.differs_since.set(self._differs_since)

    def _name(self) -> str:
        return self.current.production.id if self.current else "nothing"

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad poll; the next poll retries
                log.exception("checking %s failed", self.link)

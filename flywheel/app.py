"""The composition root: one place that builds the adapters from config and wires them to the
core. The CLI and the daemon both start here (`App`, `build_daemon`); nothing else constructs an
adapter."""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING

from flywheel.core import config as config_mod
from flywheel.core.config import CONFIG_NAME, Config
from flywheel.core.errors import Busy, ConfigError, DataRootError
from flywheel.core.ports import NullObserver, Observer, Trainer
from flywheel.core.records import Model
from flywheel.flow.cycle import CycleResult, resume_interrupted, run_cycle
from flywheel.flow.deps import FlowDeps, Workspace
from flywheel.flow.exports import ExportPolicy, ExportShelf
from flywheel.flow.registry import Registry
from flywheel.ingest.service import IngestOptions, IngestPaths, IngestResult, ingest_batch
from flywheel.service.notify import Notifier
from flywheel.store import ObjectStore, Store, database_url, make_engine, upgrade_schema
from flywheel.store.materialize import VersionFolders
from flywheel.training.export import SubprocessExporter
from flywheel.training.runner import SubprocessTrainer

if TYPE_CHECKING:  # the daemon's adapters are imported in build_daemon, when the daemon runs
    from prometheus_client import CollectorRegistry

    from flywheel.ingest.watcher import InboxWatcher, SettleTracker
    from flywheel.service.daemon import Daemon
    from flywheel.service.health import Degraded, Heartbeat
    from flywheel.service.http import HttpServer
    from flywheel.service.metrics import LiveMetrics
    from flywheel.service.systemd import ServiceNotifier, StatusObserver

log = logging.getLogger("flywheel")


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


def default_config_text() -> str:
    return resources.files("flywheel").joinpath("default_config.toml").read_text()


def init_data_root(root: Path, config_text: str | None = None) -> Path:
    """Create a data root (idempotent; an existing config.toml is kept)."""
    root = root.resolve()
    paths = DataRootPaths(root)
    for folder in (
        paths.inbox,
        paths.done,
        paths.quarantine,
        paths.objects,
        paths.versions,
        paths.runs,
        paths.models,
        paths.ultralytics,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    cfg = root / CONFIG_NAME
    if not cfg.exists():
        cfg.write_text(config_text or default_config_text())
    config = config_mod.load(root)
    engine = make_engine(database_url(root, config.database.url))
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()  # a PostgreSQL connection would otherwise stay open until exit
    return root


def build_trainer(config: Config, paths: DataRootPaths) -> Trainer:
    """Where trainings run (training.executor): a child process here, or a Ray job ([ray])."""
    timeout = config.training.timeout_seconds
    if config.training.executor == "local":
        return SubprocessTrainer(paths.ultralytics, timeout_seconds=timeout)
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            f'{paths.root / CONFIG_NAME}: key `training.executor`: "ray" needs Ray\'s job client, which is not '
            "installed: pip install 'flywheel[ray]' (the same Ray version as the cluster's), or set it to \"local\""
        )
    from flywheel.training.ray_jobs import RayJobTrainer

    r = config.ray
    return RayJobTrainer(
        r.address,
        paths.ultralytics,
        r.python or sys.executable,
        timeout,
        num_cpus=r.num_cpus,
        num_gpus=r.num_gpus,
        resources={r.resource: 1} if r.resource else None,
        prefix=r.prefix,
    )


class App:
    def __init__(self, root: Path, trainer: Trainer | None = None, observer: Observer | None = None):
        self.paths = DataRootPaths(root.resolve())
        if not (self.paths.root / CONFIG_NAME).is_file():
            raise DataRootError(
                f"{self.paths.root} is not a flywheel data root (no {CONFIG_NAME}); "
                f"create one with `flywheel init {root}`"
            )
        self.config: Config = config_mod.load(self.paths.root)
        self.engine = make_engine(database_url(self.paths.root, self.config.database.url))
        upgrade_schema(self.engine)  # creates or migrates the schema (flywheel/store/migrate.py)
        self.store = Store(self.engine)
        self.objects = ObjectStore(self.paths.objects)
        n = self.config.notify
        notifier = Notifier(n.command, n.webhook, n.retries, n.retry_seconds)
        self.checkpoints = ObjectStore(self.paths.models, ".pt")  # models/<sha[:2]>/<sha>.pt
        self.datasets = VersionFolders(self.objects, self.paths.versions)
        self.registry = Registry(
            self.store,
            self.checkpoints,
            self.paths.production,
            notifier,
            self._export_shelf(),
            self.config.training.imgsz,
        )
        self.trainer: Trainer = trainer or build_trainer(self.config, self.paths)
        self.observer: Observer = observer or NullObserver()
        self.workspace = Workspace(self.paths.root, self.objects, self.datasets, self.paths.runs)

    def _export_shelf(self) -> ExportShelf | None:
        p, t = self.config.production, self.config.training
        if not p.export_formats():
            return None

        def val_of(model: Model) -> dict[str, str]:  # a promotion by hand: the model's own val split
            version = self.store.version(model.version_id)
            manifest = self.store.manifest(model.version_id)
            return {"val": str(self.datasets.materialize(model.version_id, version.class_names, manifest))}

        # TensorRT builds on the GPU; the other runtimes are scored (and served) on the CPU
        device = t.device if "engine" in p.export_formats() else "cpu"
        policy = ExportPolicy(
            p.export_formats(), p.export_tolerance, p.on_export_failure, t.batch, p.serving_batch, device
        )
        return ExportShelf(SubprocessExporter(self.paths.ultralytics), policy, self.checkpoints.path, val_of)

    def ingest(self, batch_dir: Path, move: bool, again: bool = False) -> IngestResult:
        """Ingest a batch folder or archive; `again`: even if its content was ingested before."""
        started = time.monotonic()
        paths = IngestPaths(self.objects, self.paths.versions, self.paths.quarantine, self.paths.done)
        inbox, ing = self.config.inbox, self.config.ingest
        options = IngestOptions(
            ing.max_image_pixels,
            ing.coordinate_tolerance,
            ing.allow_unlabeled,
            ing.max_archive_bytes,
            ing.keep_done,
            ing.link_outside == "batch",
        )
        result = ingest_batch(
            self.store,
            paths,
            batch_dir,
            val_fraction=self.config.dataset.val_fraction,
            marker=inbox.marker,
            ignore=inbox.ignore,
            move=move,
            options=options,
            again=again,
        )
        # codes, not sentences: a bounded set (flywheel.ingest.reasons.Code), fit for a metric label
        self.observer.batch_processed(time.monotonic() - started, result.codes)
        return result

    def deps(self) -> FlowDeps:
        """What the flows need, built at each call: a test or the daemon may swap the trainer or
        the observer after the App was made."""
        return FlowDeps(self.store, self.registry, self.workspace, self.config, self.trainer, self.observer)

    def train(self, version_id: int, start_from: str | None = None) -> CycleResult:
        """`start_from`: `flywheel train --from` (production, base, a model id, a .yaml or .pt)."""
        return run_cycle(self.deps(), version_id, start_from=start_from)

    def resume_interrupted(self) -> list[CycleResult]:
        """Continue the runs a dead process left interrupted (training.on_interrupt)."""
        return resume_interrupted(self.deps())


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


@dataclass(frozen=True)
class DaemonAdapters:
    """What the daemon runs on besides its App, all built by `build_daemon`. Those that take
    hold of something (the lock, the port, a watchdog thread) are factories the daemon calls
    when it starts, in the order it always did."""

    metrics_registry: CollectorRegistry  # Prometheus's, served on /metrics (not the model registry)
    live: LiveMetrics  # the metrics the work loop sets as it goes
    status: StatusObserver  # the App's observer: STATUS lines and heartbeat, then `live`
    notifier: ServiceNotifier  # systemd's notify protocol (a no-op outside systemd)
    heartbeat: Heartbeat
    degraded: Degraded
    tracker: SettleTracker
    ready: threading.Event  # start-up done: /readyz may say ready
    stopping: threading.Event
    lock: Callable[[], DataRootLock]
    http_server: Callable[[], HttpServer]  # binds the metrics port, /healthz and /readyz
    inbox_watcher: Callable[[Callable[[], None]], InboxWatcher]  # given the daemon's wake


def build_daemon(root: Path, trainer: Trainer | None = None) -> Daemon:
    """The daemon, its App and every adapter it runs on: metrics, health, HTTP, systemd, the
    inbox watcher. Imported here, not at the top, so that the other commands never load
    prometheus_client, watchdog or APScheduler."""
    from flywheel.ingest.watcher import InboxWatcher, SettleTracker
    from flywheel.service import train_queue
    from flywheel.service.daemon import Daemon
    from flywheel.service.health import Degraded, Health, Heartbeat
    from flywheel.service.http import HEALTHZ, READYZ, HttpServer
    from flywheel.service.metrics import build_registry
    from flywheel.service.systemd import ServiceNotifier, StatusObserver

    app = App(root, trainer)
    paths, config = app.paths, app.config
    metrics_registry, live = build_registry(app.store, app.objects, paths.root)
    degraded = Degraded(lambda on: live.degraded.set(1 if on else 0))
    notifier = ServiceNotifier.from_environment()
    heartbeat = Heartbeat(config.health.stall_seconds)
    status = StatusObserver(live, notifier, heartbeat)
    # set once, before anything runs: the metrics it passes each call on to read this App's store
    app.observer = status
    ready, stopping = threading.Event(), threading.Event()
    health = Health(heartbeat, app.engine, paths.root, ready, stopping, degraded=degraded)
    probes = {HEALTHZ: health.liveness, READYZ: health.readiness}
    tracker = SettleTracker(paths.inbox, config.inbox.marker, config.inbox.settle_seconds)
    adapters = DaemonAdapters(
        metrics_registry=metrics_registry,
        live=live,
        status=status,
        notifier=notifier,
        heartbeat=heartbeat,
        degraded=degraded,
        tracker=tracker,
        ready=ready,
        stopping=stopping,
        lock=lambda: DataRootLock(paths.root),
        http_server=lambda: HttpServer(config.metrics.host, config.metrics.port, metrics_registry, probes),
        inbox_watcher=lambda wake: InboxWatcher(tracker, wake, also=train_queue.queue_dir(paths.root)),
    )
    return Daemon(app, adapters)

"""The composition root: one place that builds the adapters from config and wires them to the
use cases (flywheel.flow). The CLI and the daemon both start here (`App`, `build_daemon`);
nothing else constructs an adapter, and nothing but those entry points imports this module."""

from __future__ import annotations

import sys
import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel import config_file
from flywheel.core.config import CONFIG_NAME, Config
from flywheel.core.errors import ConfigError, DataRootError
from flywheel.core.ports import NullMirror, NullObserver, Observer, Predictor, RegistryMirror, Trainer
from flywheel.core.records import Model
from flywheel.flow.deps import FlowDeps, Workspace
from flywheel.flow.exports import ExportPolicy, ExportShelf
from flywheel.flow.labeling import Labeling
from flywheel.flow.registry import Registry
from flywheel.flow.screening import ScreenDeps
from flywheel.flow.usecases import UseCases
from flywheel.ingest.drop import InboxFolder
from flywheel.ingest.pipeline import BatchPipeline, IngestOptions, IngestPaths
from flywheel.ingest.screen_files import ScreenFolders
from flywheel.service.notify import CommandWebhookNotifier
from flywheel.store import ObjectStore, Store, database_url, make_engine, upgrade_schema
from flywheel.store.data_root import DataRootLock, DataRootPaths
from flywheel.store.label_pulls import StoredLabelPulls
from flywheel.store.materialize import VersionFolders
from flywheel.training.export import SubprocessExporter
from flywheel.training.local_predictor import ChildPredictor
from flywheel.training.local_trainer import RunFolders, SubprocessTrainer

if TYPE_CHECKING:  # the daemon's adapters are imported in build_daemon, when the daemon runs
    from flywheel.service.daemon import Daemon


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
    config = config_file.load(root)
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


def build_mirror(config: Config, paths: DataRootPaths, store: Store, checkpoints: ObjectStore) -> RegistryMirror:
    """The registry's mirror in MLflow when `[mlflow] tracking_uri` is set; else none. MLflow is
    imported only then: the default install neither needs nor loads it."""
    m = config.mlflow
    if not m.tracking_uri:
        return NullMirror()
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            f"{paths.root / CONFIG_NAME}: key `mlflow.tracking_uri`: mirroring into MLflow needs its client, which "
            "is not installed: pip install 'flywheel[mlflow]', or set it to \"\" to mirror nothing"
        )
    from flywheel.flow.mirroring import StoreMirror
    from flywheel.mirror.mlflow import MlflowTracker
    from flywheel.mirror.state import MirrorStateFile

    tracker = MlflowTracker(m.tracking_uri, m.experiment, m.registered_model, m.timeout_seconds)
    state = MirrorStateFile(
        paths.root / "mirror" / "mlflow.json", f"{m.tracking_uri} {m.experiment} {m.registered_model}"
    )
    return StoreMirror("mlflow", store, tracker, state, checkpoints, paths.runs, m.retry_seconds, m.retry_max_seconds)


class App:
    """Every adapter of a data root, built from its config, and the use cases (flywheel.flow.usecases)
    wired over them. `ingest`, `train` and `resume_interrupted` are those use cases, named on the
    App for the entry points that built it."""

    def __init__(self, root: Path, trainer: Trainer | None = None, observer: Observer | None = None):
        self.paths = DataRootPaths(root.resolve())
        if not (self.paths.root / CONFIG_NAME).is_file():
            raise DataRootError(
                f"{self.paths.root} is not a flywheel data root (no {CONFIG_NAME}); "
                f"create one with `flywheel init {root}`"
            )
        self.config: Config = config_file.load(self.paths.root)
        self.engine = make_engine(database_url(self.paths.root, self.config.database.url))
        upgrade_schema(self.engine)  # creates or migrates the schema (flywheel/store/migrate.py)
        self.store = Store(self.engine)
        self.objects = ObjectStore(self.paths.objects)
        n = self.config.notify
        notifier = CommandWebhookNotifier(n.command, n.webhook, n.retries, n.retry_seconds)
        self.checkpoints = ObjectStore(self.paths.models, ".pt")  # models/<sha[:2]>/<sha>.pt
        self.datasets = VersionFolders(self.objects, self.paths.versions)
        self.registry = Registry(
            self.store,
            self.checkpoints,
            self.paths.production,
            notifier,
            self._export_shelf(),
            self.config.training.imgsz,
            mirror=build_mirror(self.config, self.paths, self.store, self.checkpoints),
        )
        self.trainer: Trainer = trainer or build_trainer(self.config, self.paths)
        self.predictor: Predictor = ChildPredictor(self.paths.ultralytics, self.paths.runs)
        self.observer: Observer = observer or NullObserver()
        self.workspace = Workspace(self.paths.root, self.objects, self.datasets, self.paths.runs)
        self.cases = UseCases(
            self.deps,
            build_ingester(self.store, self.config, self.paths, self.objects),
            lambda: DataRootLock(self.paths.root),
            RunFolders(self.paths.runs),
            self.screen_deps,
        )
        self.ingest = self.cases.ingest
        self.train = self.cases.train
        self.resume_interrupted = self.cases.resume_interrupted

    def labeling(self) -> Labeling:
        """The Label Studio round trip ([labelstudio]); ConfigError naming the key when it is not
        set up. httpx is imported only here: it is the `labelstudio` extra."""
        from flywheel.labeling.setup import build_label_studio

        tool = build_label_studio(self.config.labelstudio, self.paths.root)
        inbox = InboxFolder(self.paths.inbox, self.paths.done, self.config.inbox.marker)
        return Labeling(tool, StoredLabelPulls(self.engine), inbox, self.config.labelstudio.webhook_url)

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

    @property
    def mirror(self) -> RegistryMirror:
        """The registry's mirror ([mlflow]); the registry holds it, so a test swaps it there."""
        return self.registry.mirror

    def screen_deps(self) -> ScreenDeps:
        files = ScreenFolders(self.objects, self.paths.runs, self.paths.quarantine)
        return ScreenDeps(self.store, self.registry, self.predictor, files, self.config, self.paths.root)

    def deps(self) -> FlowDeps:
        """What the flows need, built at each call: a test or the daemon may swap the trainer or
        the observer after the App was made."""
        return FlowDeps(self.store, self.registry, self.workspace, self.config, self.trainer, self.observer)


def build_ingester(store: Store, config: Config, paths: DataRootPaths, objects: ObjectStore) -> BatchPipeline:
    """The ingest pipeline with the data root's folders and the `[ingest]`/`[inbox]` options."""
    ing, inbox = config.ingest, config.inbox
    options = IngestOptions(
        ing.max_image_pixels,
        ing.coordinate_tolerance,
        ing.allow_unlabeled,
        ing.max_archive_bytes,
        ing.keep_done,
        ing.link_outside == "batch",
    )
    ingest_paths = IngestPaths(objects, paths.versions, paths.quarantine, paths.done)
    return BatchPipeline(store, ingest_paths, options, config.dataset.val_fraction, inbox.marker, inbox.ignore)


def build_daemon(root: Path, trainer: Trainer | None = None) -> Daemon:
    """The daemon, its App and every adapter it runs on: metrics, health, HTTP, systemd, the
    inbox watcher, the scheduler. Imported here, not at the top, so that the other commands
    never load prometheus_client, watchdog or APScheduler."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from flywheel.ingest.watcher import InboxWatcher, SettleTracker
    from flywheel.service import train_queue
    from flywheel.service.daemon import Daemon
    from flywheel.service.daemon_parts import DaemonAdapters, DaemonWork
    from flywheel.service.health import Degraded, Health, Heartbeat
    from flywheel.service.http import HEALTHZ, READYZ, HttpServer
    from flywheel.service.metrics import build_registry
    from flywheel.service.systemd import ServiceNotifier, StatusObserver

    app = App(root, trainer)
    paths, config = app.paths, app.config
    metrics_registry, live = build_registry(app.store, app.objects, paths.root)
    if config.mlflow.tracking_uri:
        from flywheel.service.metrics_mirror import MirrorCollector

        metrics_registry.register(MirrorCollector(app.mirror))
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
        scheduler=BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1}),
        lock=lambda: DataRootLock(paths.root),
        http_server=lambda hooks: HttpServer(
            config.metrics.host, config.metrics.port, metrics_registry, probes, config.metrics.render_seconds, hooks
        ),
        inbox_watcher=lambda wake: InboxWatcher(tracker, wake, also=train_queue.queue_dir(paths.root)),
    )
    ls = config.labelstudio
    labeling = app.labeling() if ls.url and (ls.poll_seconds > 0 or ls.webhook_url) else None
    pull = labeling.pull if labeling else None
    hook = labeling.ensure_webhook if labeling and ls.webhook_url else None
    work = DaemonWork(app.cases, app.store, app.registry, app.trainer, config, paths.root, paths.inbox, pull, hook)
    return Daemon(work, adapters)

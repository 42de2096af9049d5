"""The composition root: one place that builds the adapters from config and wires them to the
core. The CLI and the daemon both start here; nothing else constructs an adapter."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from flywheel.core import config as config_mod
from flywheel.core.config import CONFIG_NAME, Config
from flywheel.core.errors import Busy, DataRootError
from flywheel.core.ports import NullObserver, Observer, Trainer
from flywheel.flow.cycle import CycleResult, Workspace, resume_interrupted, run_cycle
from flywheel.flow.registry import Registry
from flywheel.ingest.service import IngestOptions, IngestPaths, IngestResult, ingest_batch
from flywheel.service.notify import Notifier
from flywheel.store import ObjectStore, Store, database_url, make_engine, upgrade_schema
from flywheel.store.materialize import VersionFolders
from flywheel.training.export import SubprocessExporter
from flywheel.training.runner import SubprocessTrainer

log = logging.getLogger("flywheel")


@dataclass(frozen=True)
class Layout:
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
    layout = Layout(root)
    for folder in (
        layout.inbox,
        layout.done,
        layout.quarantine,
        layout.objects,
        layout.versions,
        layout.runs,
        layout.models,
        layout.ultralytics,
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


class App:
    def __init__(self, root: Path, trainer: Trainer | None = None, observer: Observer | None = None):
        self.layout = Layout(root.resolve())
        if not (self.layout.root / CONFIG_NAME).is_file():
            raise DataRootError(
                f"{self.layout.root} is not a flywheel data root (no {CONFIG_NAME}); "
                f"create one with `flywheel init {root}`"
            )
        self.config: Config = config_mod.load(self.layout.root)
        self.engine = make_engine(database_url(self.layout.root, self.config.database.url))
        upgrade_schema(self.engine)  # creates or migrates the schema (flywheel/store/migrate.py)
        self.store = Store(self.engine)
        self.objects = ObjectStore(self.layout.objects)
        n = self.config.notify
        notifier = Notifier(n.command, n.webhook, n.retries, n.retry_seconds)
        exporter = SubprocessExporter(self.layout.ultralytics) if self.config.production.export_onnx else None
        self.checkpoints = ObjectStore(self.layout.models, ".pt")  # models/<sha[:2]>/<sha>.pt
        self.registry = Registry(
            self.store, self.checkpoints, self.layout.production, notifier, exporter, self.config.training.imgsz
        )
        self.trainer: Trainer = trainer or SubprocessTrainer(
            self.layout.ultralytics, timeout_seconds=self.config.training.timeout_seconds
        )
        self.observer: Observer = observer or NullObserver()
        self.datasets = VersionFolders(self.objects, self.layout.versions)
        self.workspace = Workspace(self.layout.root, self.objects, self.datasets, self.layout.runs)

    def ingest(self, batch_dir: Path, move: bool, again: bool = False) -> IngestResult:
        """Ingest a batch folder or archive; `again`: even if its content was ingested before."""
        started = time.monotonic()
        paths = IngestPaths(self.objects, self.layout.versions, self.layout.quarantine, self.layout.done)
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

    def train(self, version_id: int, start_from: str | None = None) -> CycleResult:
        """`start_from`: `flywheel train --from` (production, base, a model id, a .yaml or .pt)."""
        return run_cycle(
            self.store,
            self.registry,
            self.workspace,
            self.config,
            self.trainer,
            self.observer,
            version_id,
            start_from=start_from,
        )

    def resume_interrupted(self) -> list[CycleResult]:
        """Continue the runs a dead process left interrupted (training.on_interrupt)."""
        return resume_interrupted(self.store, self.registry, self.workspace, self.config, self.trainer, self.observer)


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

"""What the daemon runs on, built by the composition root (flywheel.app.build_daemon) and
handed in, so the daemon builds nothing itself: its work (`DaemonWork`: the use cases and the
ports they share with the loop) and its adapters (`DaemonAdapters`: metrics, health, HTTP,
systemd, the inbox watcher, the scheduler)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from apscheduler.schedulers.base import BaseScheduler
from prometheus_client import CollectorRegistry

from flywheel.core.config import Config
from flywheel.core.labeling import PullResult
from flywheel.core.ports import StorePort, Trainer
from flywheel.flow.registry import Registry
from flywheel.flow.usecases import UseCases
from flywheel.ingest.watcher import InboxWatcher, SettleTracker
from flywheel.service.health import Degraded, Heartbeat
from flywheel.service.http import HttpServer
from flywheel.service.metrics import LiveMetrics
from flywheel.service.systemd import ServiceNotifier, StatusObserver


@dataclass(frozen=True)
class DaemonWork:
    """The use cases the work loop calls, and the ports it reads itself: the store (what
    waits), the registry (production's health), the trainer (where trainings run; cancelled on
    stop) and the config."""

    cases: UseCases
    store: StorePort
    registry: Registry
    trainer: Trainer
    config: Config
    data_root: Path
    inbox: Path
    pull_labels: Callable[[], PullResult] | None = None  # [labelstudio] with poll_seconds or webhook_url
    register_label_hook: Callable[[], bool] | None = None  # [labelstudio] webhook_url: the project posts to it


@dataclass(frozen=True)
class DaemonAdapters:
    """The adapters the daemon runs on. Those that take hold of something (the lock, the port,
    a watchdog thread) are factories the daemon calls when it starts, in the order it always
    did; the scheduler is started by the daemon once its jobs are added."""

    metrics_registry: CollectorRegistry  # Prometheus's, served on /metrics (not the model registry)
    live: LiveMetrics  # the metrics the work loop sets as it goes
    status: StatusObserver  # the flows' observer: STATUS lines and heartbeat, then `live`
    notifier: ServiceNotifier  # systemd's notify protocol (a no-op outside systemd)
    heartbeat: Heartbeat
    degraded: Degraded
    tracker: SettleTracker
    ready: threading.Event  # start-up done: /readyz may say ready
    stopping: threading.Event
    scheduler: BaseScheduler  # APScheduler's: the settle, rescan, cron and watchdog jobs
    lock: Callable[[], AbstractContextManager[object]]  # the data root's, held while the daemon runs
    http_server: Callable[[Mapping[str, Callable[[], None]]], HttpServer]  # metrics port, probes, given POST hooks
    inbox_watcher: Callable[[Callable[[], None]], InboxWatcher]  # given the daemon's wake

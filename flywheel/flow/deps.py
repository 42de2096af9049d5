"""What every flow needs, as one object: the store, the model registry, the folders, the
config, the trainer and the observer. Built by the composition root (flywheel.app) for each
call, so a test that swaps `app.trainer` is heard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flywheel.core.config import Config
from flywheel.core.ports import Datasets, Objects, Observer, StorePort, Trainer
from flywheel.flow.registry import Registry


@dataclass(frozen=True)
class Workspace:
    data_root: Path
    objects: Objects
    datasets: Datasets  # versions/<v>/: each dataset version laid out for the trainer
    runs: Path  # runs/<run>/: spec, events, log and weights of each training


@dataclass(frozen=True)
class FlowDeps:
    store: StorePort
    registry: Registry
    workspace: Workspace
    config: Config
    trainer: Trainer
    observer: Observer

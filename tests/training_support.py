"""Real, tiny Ultralytics trainings in the test process, with callbacks that look inside.

The child's `train()` is called directly (not through a subprocess) so a test can register
its own Ultralytics callbacks and read the live trainer: parameters, optimizer groups, the
data loader. Sizes are chosen for a 2-core CPU: 8 images of 32 px, batch 4 (2 steps per
epoch, one optimizer step each: nbs = batch).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from flywheel.cli.demo import synthetic_batch
from flywheel.core.config import parse
from flywheel.core.domain import StartKind
from flywheel.core.events import TrainingEvent
from flywheel.core.plan import Start, build_spec, resolve_params
from flywheel.core.spec import TrainSpec
from flywheel.training import fit
from flywheel.training.process import Reporter

IMGSZ = 32
TRAINING = {
    "epochs_scratch": 2,
    "epochs_warm": 2,
    "imgsz": IMGSZ,
    "batch": 4,
    "nbs": 4,
    "threads": 2,
    "device": "cpu",
}


class Recorder(Reporter):
    """A reporter that keeps the events instead of writing them to a pipe."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.events: list[TrainingEvent] = []

    def send(self, event: TrainingEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def dataset(folder: Path, names: list[str], count: int = 8, seed: int = 1) -> Path:
    """A YOLO dataset (train = val: the tests look at training, not at generalisation)."""
    synthetic_batch(folder, count, seed=seed, size=IMGSZ * 2)
    data = {"path": str(folder), "train": "images", "val": "images", "names": dict(enumerate(names))}
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml


def spec_for(
    data_yaml: Path, out_dir: Path, start: str, warm: bool, class_names: list[str], **training: Any
) -> TrainSpec:
    """The spec flywheel's planner makes from config (so the tests exercise the plan too)."""
    config = parse({"training": {**TRAINING, **training}})
    begin = Start(StartKind.WARM if warm else StartKind.SCRATCH, start, 1 if warm else None)
    return build_spec(1, data_yaml, out_dir, begin, resolve_params(config, begin), class_names, [])


def train(spec: TrainSpec, callbacks: dict[str, list[Callable[[Any], None]]] | None = None) -> tuple[Path, Recorder]:
    report = Recorder()
    best = fit.train(spec, report, callbacks)
    return best, report


class Abort(Exception):
    """Raised from a callback to end a training once the test has seen what it needs."""


def checkpoint_state(path: Path) -> dict[str, Any]:
    """A checkpoint's weights as float32 tensors, the way Ultralytics loads them."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v.clone() for k, v in (ckpt.get("ema") or ckpt["model"]).float().state_dict().items()}


def checkpoint_model(path: Path) -> Any:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).float()

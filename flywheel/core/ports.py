"""The ports the core's workflows call, in one file. Adapters implement them; the core never
imports an adapter (the composition root, `flywheel.daemon`, wires them in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flywheel.core.events import TrainingEvent
from flywheel.core.spec import TrainSpec


class Trainer(Protocol):
    """Trains and evaluates per a spec, somewhere other than the caller's process."""

    def run(self, spec: TrainSpec, on_event: Callable[[TrainingEvent], None]) -> list[TrainingEvent]: ...

    def cancel(self) -> None: ...


class Exporter(Protocol):
    """Converts a checkpoint for serving (ONNX), somewhere other than the caller's process."""

    def export_onnx(self, checkpoint: Path, out: Path, imgsz: int) -> Path: ...


class Observer(Protocol):
    """Told of what happens as it happens (the Prometheus adapter is one)."""

    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None: ...

    def training_started(self, run_id: int, start_kind: str, epochs: int) -> None: ...

    def training_event(self, event: TrainingEvent) -> None: ...

    def training_finished(self, outcome: str, seconds: float) -> None: ...


class NullObserver:
    def batch_processed(self, seconds: float, quarantined_reasons: list[str]) -> None:
        pass

    def training_started(self, run_id: int, start_kind: str, epochs: int) -> None:
        pass

    def training_event(self, event: TrainingEvent) -> None:
        pass

    def training_finished(self, outcome: str, seconds: float) -> None:
        pass

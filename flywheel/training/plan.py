"""Plan a training run: where it starts and with which resolved hyper-parameters.

Pure functions over config and records (no I/O, no torch): the cycle asks for a plan, records
it with the run, and hands the resulting spec to the trainer. Every argument Ultralytics
needs is resolved here and passed explicitly, because a warm start otherwise falls back to
Ultralytics' defaults for everything but imgsz.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.config import Config, resolve
from flywheel.domain import StartKind
from flywheel.training.spec import EvalTarget, TrainSpec


@dataclass(frozen=True)
class Start:
    kind: StartKind
    checkpoint: str  # a checkpoint path, or a model YAML (a path or a name Ultralytics ships)
    model_id: int | None  # the registered model it starts from, if any


def choose_start(config: Config, data_root: Path, production: tuple[int, Path] | None) -> Start:
    """Warm from production (id, verified checkpoint) when there is one, else from model.base."""
    if production is not None:
        model_id, checkpoint = production
        return Start(StartKind.WARM, str(checkpoint), model_id)
    base = resolve(data_root, config.model.base)
    return Start(StartKind.SCRATCH, str(base) if base.exists() else config.model.base, None)


def resolve_params(config: Config, start: Start) -> dict[str, Any]:
    """The hyper-parameters of a run, as recorded with it and passed to the child."""
    t = config.training
    return {
        "epochs": t.epochs_warm if start.kind is StartKind.WARM else t.epochs_scratch,
        "imgsz": t.imgsz,
        "batch": t.batch,
        "device": t.device,
        "threads": t.threads or os.cpu_count() or 1,
        "seed": t.seed,
        "patience": t.patience,
    }


def build_spec(
    run_id: int,
    data_yaml: Path,
    out_dir: Path,
    start: Start,
    params: dict[str, Any],
    class_names: list[str],
    evaluate: list[EvalTarget],
) -> TrainSpec:
    return TrainSpec(
        run_id=run_id,
        data_yaml=str(data_yaml),
        out_dir=str(out_dir),
        start=start.checkpoint,
        start_kind=start.kind,
        class_names=class_names,
        evaluate=evaluate,
        **params,
    )

"""What the daemon hands a training child, and what the child says back.

Kept free of torch and Ultralytics so the daemon can import it: the daemon writes a
`TrainSpec` as `runs/<run>/spec.json`; the child reads it, trains, evaluates, and writes
events as JSON lines on a pipe (kinds below) and its own log to `runs/<run>/train.log`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Event kinds on the pipe, in the order they come.
STARTED = "started"  # {pid, versions: {python, torch, ultralytics}}
WARM_START = "warm_start"  # {matched, total}: conv weights equal to the start checkpoint's
PROGRESS = "progress"  # {epoch, batch, batches}, at most a few per second
EPOCH = "epoch"  # {epoch, epochs, box_loss, cls_loss, dfl_loss, precision, recall, map50, map50_95, seconds}
TRAINED = "trained"  # {best, seconds}
EVALUATED = "evaluated"  # {role, eval_set, checkpoint, map50_95, map50, precision, recall, per_class,
#                           instances, seconds}
FAILED = "failed"  # {error}


@dataclass(frozen=True)
class EvalTarget:
    role: str  # "candidate" (the run's own best.pt) or "production"
    checkpoint: str  # empty for the candidate: the child fills in its best.pt
    eval_set: str = "val"  # the name scores are recorded under
    data_yaml: str = ""  # empty: the spec's data_yaml (the version's val split)


@dataclass(frozen=True)
class TrainSpec:
    run_id: int
    data_yaml: str
    out_dir: str
    start: str  # a model YAML (scratch) or a checkpoint path (warm start / user weights)
    start_kind: str
    epochs: int
    imgsz: int
    batch: int
    device: str
    threads: int
    seed: int
    patience: int
    class_names: list[str]
    evaluate: list[EvalTarget] = field(default_factory=list)
    evaluate_only: bool = False  # `flywheel compare`: score the given checkpoints, train nothing

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> TrainSpec:
        data: dict[str, Any] = json.loads(path.read_text())
        data["evaluate"] = [EvalTarget(**e) for e in data.get("evaluate", [])]
        return cls(**data)

"""What the daemon hands a training child, and what the child says back.

Kept free of torch and Ultralytics so the daemon can import it, and of files so it stays pure:
the trainer writes a `TrainSpec`'s `to_json()` as `runs/<run>/spec.json`; the child reads it with
`from_json`, trains, evaluates, and writes events as JSON lines on a pipe
(flywheel/core/events.py) and its own log to `runs/<run>/train.log`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

CANCELLED_EXIT = 3  # the child's exit code when it stopped on request


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
    bootstrap_samples: int = 0  # > 0: paired bootstrap of candidate vs production mAP per eval set
    bootstrap_confidence: float = 0.95
    # How it trains (resolved by flywheel.core.plan, every one passed to Ultralytics explicitly)
    optimizer: str = "auto"
    lr0: float = 0.01
    lrf: float = 0.01
    cos_lr: bool = False
    nbs: int = 64
    amp: bool = True  # mixed precision where native (training/precision.py decides, in the child); False: fp32
    warmup_epochs: float = 3.0
    close_mosaic: int = 10
    freeze_epochs: int = 0  # two-phase fine-tune: epochs with the backbone frozen first
    backbone_lr_scale: float = 1.0  # backbone LR = head LR x this
    strategy: str = "scratch"  # a name for the combination above, as recorded with the run
    budget: dict[str, Any] = field(default_factory=dict)  # {epochs, why}: how `epochs` was chosen
    plateau_patience: int = 0  # > 0: a final LR decay phase once val fitness stalls this many epochs
    plateau_min_epochs: int = 0  # no plateau stop before this many epochs
    plateau_decay_epochs: int = 3  # the length of that final decay phase
    shrink: float = 1.0  # shrink and perturb at train start: theta = shrink * theta + perturb * theta_fresh
    perturb: float = 0.0
    # Reproducibility and restarts
    dataset_sha256: str = ""  # the version's manifest hash (plus the replay sample's, when one is used)
    replay_sha256: str = ""  # hash of the replay sample's image list; empty: the whole version
    resume: str = ""  # a last.pt to continue (Ultralytics resume); empty: start from `start`

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        data: dict[str, Any] = json.loads(text)
        data["evaluate"] = [EvalTarget(**e) for e in data.get("evaluate", [])]
        return cls(**data)

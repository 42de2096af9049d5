"""Plan a training run: where it starts and with which resolved hyper-parameters.

Pure functions over config and records (no I/O, no torch): the cycle asks for a plan, records
it with the run, and hands the resulting spec to the trainer. Every argument Ultralytics
needs is resolved here and passed explicitly, because a warm start otherwise falls back to
Ultralytics' defaults for everything but imgsz.

Two kinds of start (`domain.StartKind`):
- scratch: `model.base` or `flywheel train --from X.yaml|X.pt`: a model YAML trains from random
  weights; a `.pt` the user provides (e.g. COCO weights) is loaded as given. Scratch settings:
  `epochs_scratch`, `warmup_epochs`, `close_mosaic`, all layers at one LR.
- warm: a registered model (production by default, `--from m0003` for another): the model
  already knows this data. Warm settings: `epochs_warm`, `warmup_epochs_warm` (0: a warm-up
  resets the schedule and costs mAP early), `close_mosaic_warm`, and the fine-tuning
  strategies `freeze_epochs` (two-phase) and `backbone_lr_scale` (parameter groups), and the
  replay budget `replay.max_images`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.core.budget import Budget, late_gain, warm_budget
from flywheel.core.config import Config, resolve
from flywheel.core.domain import StartKind, parse_id
from flywheel.core.errors import UsageError
from flywheel.core.spec import EvalTarget, TrainSpec

CANDIDATE = "candidate"  # a run whose model the gate compares with production
CHALLENGER = "scratch_challenger"  # the negative-transfer guard's run from model.base, same version


def training_threads(configured: int) -> int:
    """torch threads for a training: `training.threads`, or for 0 one fewer than the cores (at
    least one). Measured (docs/benchmarks.md, "Training threads"): on 2 cores, every core was
    17% faster on an idle machine but 2.1x slower while one other process kept a core busy;
    one fewer than the cores held its idle time under that load. A daemon shares its host."""
    return configured or max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True)
class Start:
    kind: StartKind
    checkpoint: str  # a checkpoint path, or a model YAML (a path or a name Ultralytics ships)
    model_id: int | None  # the registered model it starts from, if any


@dataclass(frozen=True)
class StartRequest:
    """What `flywheel train --from` asked for, parsed (nothing looked up yet)."""

    what: str  # "production" | "base" | "model" | "path"
    model_id: int | None = None
    path: str = ""


def parse_start(text: str) -> StartRequest:
    """`production`, `base` (= model.base), a model id (`m0003`, `3`), or a .yaml / .pt path."""
    raw = text.strip()
    if raw.lower() in ("production", "prod"):
        return StartRequest("production")
    if raw.lower() in ("base", "scratch"):
        return StartRequest("base")
    if raw.endswith((".yaml", ".yml", ".pt")):
        return StartRequest("path", path=raw)
    try:
        return StartRequest("model", model_id=parse_id(raw, "m"))
    except UsageError:
        raise UsageError(
            f"--from {text!r}: expected production, base, a model id like m0003, a model YAML "
            "(yolov8n.yaml) or a path to a .pt"
        ) from None


def choose_start(
    config: Config,
    data_root: Path,
    production: tuple[int, Path] | None,
    base: str | None = None,
    *,
    is_file: Callable[[Path], bool],
) -> Start:
    """Warm from a registered model (id, verified checkpoint) when given, else from `base`
    (default `model.base`): a YAML trains from scratch, a .pt the user provides is loaded.
    `is_file`: whether a path names a file (the caller looks; the plan reads no disk)."""
    if production is not None:
        model_id, checkpoint = production
        return Start(StartKind.WARM, str(checkpoint), model_id)
    value = base or config.model.base
    path = resolve(data_root, value)
    found = is_file(path)
    if value.endswith(".pt") and not found:
        raise UsageError(f"{path} does not exist; flywheel never downloads weights: put the .pt there")
    return Start(StartKind.SCRATCH, str(path) if found else value, None)


def strategy_name(
    freeze_epochs: int,
    backbone_lr_scale: float,
    warm: bool,
    pretrained: bool,
    shrink: float = 1.0,
    perturb: float = 0.0,
) -> str:
    if not warm:
        return "pretrained" if pretrained else "scratch"
    name = "two_phase" if freeze_epochs else "fine_tune"
    name += f"+backbone_lr_x{backbone_lr_scale:g}" if backbone_lr_scale != 1.0 else ""
    return name + (f"+shrink_perturb_{shrink:g}_{perturb:g}" if (shrink, perturb) != (1.0, 0.0) else "")


def resolve_params(config: Config, start: Start, budget: Budget | None = None) -> dict[str, Any]:
    """The hyper-parameters of a run, as recorded with it and passed to the child. `budget`:
    a warm start's epochs under `training.warm_budget = "auto"` (see `plan_budget`)."""
    t = config.training
    warm = start.kind is StartKind.WARM
    freeze = t.freeze_epochs if warm else 0
    scale = t.backbone_lr_scale if warm else 1.0
    if not warm:
        budget = Budget(t.epochs_scratch, f"epochs_scratch {t.epochs_scratch}")
    elif budget is None:
        budget = Budget(t.epochs_warm, f'epochs_warm {t.epochs_warm} (warm_budget = "fixed")')
    auto = warm and t.warm_budget == "auto"
    return {
        "epochs": budget.epochs,
        "budget": budget.record(),
        "plateau_patience": t.plateau_patience if auto else 0,
        "plateau_min_epochs": t.epochs_warm_min,
        "plateau_decay_epochs": t.plateau_decay_epochs,
        "shrink": t.shrink if warm else 1.0,
        "perturb": t.perturb if warm else 0.0,
        "imgsz": t.imgsz,
        "batch": t.batch,
        "nbs": t.nbs,
        "amp": t.amp,
        "device": t.device,
        "threads": training_threads(t.threads),
        "seed": t.seed,
        "patience": t.patience,
        "optimizer": t.optimizer,
        "lr0": t.lr0,
        "lrf": t.lrf,
        "cos_lr": t.cos_lr,
        "warmup_epochs": t.warmup_epochs_warm if warm else t.warmup_epochs,
        "close_mosaic": t.close_mosaic_warm if warm else t.close_mosaic,
        "freeze_epochs": freeze,
        "backbone_lr_scale": scale,
        "strategy": strategy_name(
            freeze, scale, warm, start.checkpoint.endswith(".pt"), t.shrink if warm else 1.0, t.perturb if warm else 0.0
        ),
    }


def plan_budget(
    config: Config, train_images: int, new_train_images: int, parent_curve: Sequence[float]
) -> Budget | None:
    """A warm start's budget under `warm_budget = "auto"`; None under "fixed" (epochs_warm).
    `parent_curve`: the parent's own run's val mAP50-95 per epoch."""
    t = config.training
    if t.warm_budget != "auto":
        return None
    return warm_budget(
        epochs_scratch=t.epochs_scratch,
        train_images=train_images,
        new_train_images=new_train_images,
        factor=t.warm_budget_factor,
        floor=t.epochs_warm_min,
        ceiling=t.epochs_warm_max,
        parent_gain=late_gain(parent_curve),
        boost=t.unconverged_boost,
    )


def build_spec(
    run_id: int,
    data_yaml: Path,
    out_dir: Path,
    start: Start,
    params: dict[str, Any],
    class_names: list[str],
    evaluate: list[EvalTarget],
    **extra: Any,
) -> TrainSpec:
    """`extra`: dataset_sha256, replay_sha256, resume (see TrainSpec)."""
    return TrainSpec(
        run_id=run_id,
        data_yaml=str(data_yaml),
        out_dir=str(out_dir),
        start=start.checkpoint,
        start_kind=start.kind,
        class_names=class_names,
        evaluate=evaluate,
        **params,
        **extra,
    )


# --- the negative-transfer guard --------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """A finished run that made a model, as the guard sees it."""

    start_kind: str
    purpose: str  # CANDIDATE or CHALLENGER
    rejected: bool  # the gate rejected its model
    train_images: int = 0  # in the version it trained on


def challenger_due(history: Sequence[Generation], every: int, after_rejections: int) -> str | None:
    """Why a scratch challenger should train beside the newest warm candidate, or None.

    `history`: runs that made a model, oldest first, the warm candidate just gated last. Counts
    restart at the newest run that trained from scratch (a challenger, or the first model).
    """
    if not history or history[-1].start_kind != StartKind.WARM or history[-1].purpose != CANDIDATE:
        return None
    since: list[Generation] = []
    for g in reversed(history):
        if g.start_kind == StartKind.SCRATCH:
            break
        since.append(g)
    warm = [g for g in since if g.purpose == CANDIDATE]  # newest first
    if every and len(warm) >= every:
        return f"{len(warm)} warm-started generations since the last training from scratch (every {every})"
    if after_rejections and len(warm) >= after_rejections and all(g.rejected for g in warm[:after_rejections]):
        return f"the last {after_rejections} warm-started candidates were rejected in a row"
    return None


def refresh_due(history: Sequence[Generation], growth: float) -> str | None:
    """Why a refresh from model.base should train beside the newest warm candidate, or None:
    the data grew `growth` x since the newest training from scratch (one the gate rejected
    counts too, so a lost refresh is not retried at every generation)."""
    if not growth or not history or history[-1].start_kind != StartKind.WARM or history[-1].purpose != CANDIDATE:
        return None
    scratch = next((g for g in reversed(history) if g.start_kind == StartKind.SCRATCH), None)
    now = history[-1].train_images
    if scratch is None or scratch.train_images <= 0 or now < growth * scratch.train_images:
        return None
    return (
        f"the train split grew x{now / scratch.train_images:.1f} ({scratch.train_images} -> {now} images) "
        f"since the newest training from scratch (refresh_growth {growth:g})"
    )


def refresh_outlook(history: Sequence[Generation], growth: float, every: int) -> str:
    """When the next refresh from model.base is due, in words (`flywheel status`)."""
    scratch_at = next((i for i in range(len(history) - 1, -1, -1) if history[i].start_kind == StartKind.SCRATCH), None)
    if scratch_at is None:
        return "no model trained from scratch yet: the first training starts from model.base"
    base = history[scratch_at].train_images
    warm = sum(1 for g in history[scratch_at + 1 :] if g.purpose == CANDIDATE)
    parts = []
    if growth:
        parts.append(
            f"when the train split reaches {growth * base:.0f} images (x{growth:g} the {base} of the newest "
            f"training from scratch; refresh_growth)"
        )
    if every:
        parts.append(f"after {max(every - warm, 0)} more warm generations (scratch_challenger_every {every})")
    if not parts:
        return "never on growth or depth (refresh_growth and scratch_challenger_every are 0)"
    return "next refresh from model.base: " + ", or ".join(parts)

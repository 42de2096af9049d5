"""A TrainSpec as the arguments and settings Ultralytics trains with."""

from __future__ import annotations

from typing import Any

from flywheel.core.spec import TrainSpec

# Ultralytics settings that turn an integration on (or go online) when its package is installed
INTEGRATIONS = {"sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard", "wandb"}


def ultralytics_args(spec: TrainSpec, backbone: int, amp: bool, resume: str = "") -> dict[str, Any]:
    """Every training argument, explicitly: a warm start otherwise gets Ultralytics' defaults.
    `amp`: what training/precision.py decided for spec.amp on this machine."""
    args: dict[str, Any] = {
        "data": spec.data_yaml,
        "epochs": spec.epochs,
        "imgsz": spec.imgsz,
        "batch": spec.batch,
        "nbs": spec.nbs,
        "amp": amp,
        "device": spec.device,
        "seed": spec.seed,
        "deterministic": True,
        "patience": spec.patience,
        "optimizer": spec.optimizer,
        "lr0": spec.lr0,
        "lrf": spec.lrf,
        "cos_lr": spec.cos_lr,
        "warmup_epochs": spec.warmup_epochs,
        "close_mosaic": spec.close_mosaic,
        "freeze": list(range(backbone)) if spec.freeze_epochs > 0 else None,
        "cls_remap": True,
        "pretrained": True,
        "workers": 0,
        "plots": False,
        "project": spec.out_dir,
        "name": "train",
        "exist_ok": True,
        "verbose": False,
    }
    if resume:
        args["resume"] = resume
    return args

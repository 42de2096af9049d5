"""Training in the child process: Ultralytics' trainer with flywheel's callbacks, which report
each step as an event (flywheel/core/events.py), stop between batches when asked, and run the
warm-start checks, the two-phase fine-tune and the plateau stop."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flywheel.core.events import (
    BackboneUnfrozen,
    BatchProgress,
    ChildStarted,
    EpochEnded,
    PlateauReached,
    Trained,
    WarmStarted,
)
from flywheel.core.spec import TrainSpec
from flywheel.training.precision import for_this_machine
from flywheel.training.process import STOP, Reporter
from flywheel.training.train_args import INTEGRATIONS, ultralytics_args


def library_versions() -> dict[str, str]:
    import numpy
    import torch
    import ultralytics

    from flywheel import __version__

    return {
        "python": sys.version.split()[0],
        "flywheel": __version__,
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "numpy": numpy.__version__,
        "cuda": str(torch.version.cuda or ""),
    }


def _resumable(last: Path) -> tuple[str, int]:
    """('resume', epochs done) for an unfinished last.pt; ('finished', -1); ('unusable', -1)."""
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception:
        return "unusable", -1
    epoch = int(ckpt.get("epoch", -1))
    epochs = int((ckpt.get("train_args") or {}).get("epochs", 0))
    if epoch < 0 or ckpt.get("optimizer") is None:
        return "finished", -1  # Ultralytics strips last.pt when a run ends
    if epoch + 1 >= epochs:
        return "finished", -1
    return "resume", epoch + 1


def train(spec: TrainSpec, report: Reporter, extra_callbacks: dict[str, list[Any]] | None = None) -> Path:
    """Train per `spec`; returns best.pt. `extra_callbacks` (event -> functions) are for tests."""
    import torch
    import ultralytics.engine.trainer as engine_trainer
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    from flywheel.core.budget import Plateau
    from flywheel.training.strategies import (
        Strategy,
        backbone_layers,
        enter_final_decay,
        head_rows_equal,
        make_trainer,
        shrink_perturb,
    )

    # Offline and quiet: no integration turns itself on because its package is installed.
    SETTINGS.update({k: False for k in SETTINGS if k in INTEGRATIONS})
    torch_utils.NUM_THREADS = spec.threads  # Ultralytics uses one thread less than the cores
    torch.set_num_threads(spec.threads)
    # Ultralytics' AMP self-check downloads yolo26n.pt on a GPU (flywheel never downloads) and
    # turns AMP off on CPU. flywheel decides instead (training/precision.py): bfloat16 autocast
    # on a CPU only where it has bfloat16 instructions (1.5x faster per batch there), fp32 on
    # one without (emulated bfloat16 was 9x slower), float16 on a GPU.
    engine_trainer.check_amp = lambda *_a, **_k: True
    precision = for_this_machine(spec.amp, spec.device)
    print(f"flywheel: precision: {precision.why}", flush=True)
    out = Path(spec.out_dir)
    weights_dir = out / "train" / "weights"
    resume_from, resume_epoch = "", 0
    if spec.resume and Path(spec.resume).is_file():
        status, resume_epoch = _resumable(Path(spec.resume))
        best = Path(spec.resume).with_name("best.pt")
        if status == "finished" and best.is_file():
            # the run was killed after its last epoch, maybe before Ultralytics stripped best.pt
            # of its optimizer state (what its final evaluation does): strip it here, as it would
            stripped = best.with_name("best.stripped.pt")  # beside, then renamed: never a torn best.pt
            if torch_utils.strip_optimizer(best, str(stripped)):
                os.replace(stripped, best)
            report.send(ChildStarted(pid=os.getpid(), versions=library_versions(), resumed_from_epoch=-1))
            report.send(Trained(best=str(best), seconds=0.0, resumed=True))
            return best
        if status == "resume":
            resume_from = spec.resume
    versions = library_versions()
    # resumed_from_epoch: the first epoch (1-based) this process trains, when it continues a run
    first = resume_epoch + 1 if resume_from else 0
    report.send(ChildStarted(pid=os.getpid(), versions=versions, resumed_from_epoch=first))
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / "spec.json").write_text(
        json.dumps({"spec": asdict(spec), "versions": versions, "precision": asdict(precision)}, indent=2) + "\n"
    )

    model = YOLO(resume_from or spec.start)
    source = model.model if spec.start.endswith(".pt") and not resume_from else None
    strategy = Strategy(spec.freeze_epochs, spec.backbone_lr_scale, backbone_layers(model.model))
    trainer_class = make_trainer(strategy)
    state: dict[str, int] = {}
    plateau = Plateau(spec.plateau_patience, spec.plateau_min_epochs, spec.plateau_decay_epochs)
    reshape = (spec.shrink, spec.perturb) != (1.0, 0.0) and not resume_from

    def on_train_start(trainer: Any) -> None:
        STOP.in_loop = True
        if source is not None:
            matched, total = _weights_from(trainer.model, Path(spec.start))
            equal, rows = head_rows_equal(trainer.model, source, dict(trainer.data["names"]))
            report.send(
                WarmStarted(
                    matched=matched,
                    total=total,
                    head_rows_kept=equal,
                    head_rows_total=rows,
                    head_rows_fixed=trainer.head_rows[1],
                    shrink=spec.shrink,
                    perturb=spec.perturb,
                )
            )
        if reshape:  # after the check above: the weights no longer equal the parent's
            shrink_perturb(trainer.model, spec.shrink, spec.perturb, spec.seed)
            trainer.ema.ema.load_state_dict(trainer.model.state_dict())
        trainer.snapshot_frozen()

    def on_epoch_start(trainer: Any) -> None:
        STOP.check()
        state["epoch"] = trainer.epoch
        state["batch"] = 0
        info = trainer.enter_phase_two()
        if info:
            report.send(BackboneUnfrozen(**info))

    def on_batch_end(trainer: Any) -> None:
        state["batch"] = state.get("batch", 0) + 1
        report.progress(
            BatchProgress(
                epoch=trainer.epoch + 1, epochs=trainer.epochs, batch=state["batch"], batches=len(trainer.train_loader)
            )
        )
        STOP.check()  # between batches: the cancelled run stops here

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch != state.get("epoch"):
            return  # the final re-validation of best.pt, not an epoch
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        m = trainer.metrics
        report.send(
            EpochEnded(
                epoch=trainer.epoch + 1,
                epochs=trainer.epochs,
                box_loss=float(losses.get("train/box_loss", 0.0)),
                cls_loss=float(losses.get("train/cls_loss", 0.0)),
                dfl_loss=float(losses.get("train/dfl_loss", 0.0)),
                precision=float(m.get("metrics/precision(B)", 0.0)),
                recall=float(m.get("metrics/recall(B)", 0.0)),
                map50=float(m.get("metrics/mAP50(B)", 0.0)),
                map50_95=float(m.get("metrics/mAP50-95(B)", 0.0)),
                seconds=float(trainer.epoch_time or 0.0),
            )
        )
        total = plateau.update(trainer.epoch + 1, float(trainer.fitness or 0.0), trainer.epochs)
        if total is not None:
            enter_final_decay(trainer, total)
            report.send(
                PlateauReached(
                    epoch=trainer.epoch + 1, best_epoch=plateau.best_epoch, best_fitness=plateau.best, epochs=total
                )
            )

    def on_train_end(_trainer: Any) -> None:
        STOP.in_loop = False

    # Several GPUs: Ultralytics pickles the callbacks into one worker process per GPU, where this
    # process's pipe does not exist; such a run reports its start and end, not its epochs.
    if "," not in spec.device:
        model.add_callback("on_train_start", on_train_start)
        model.add_callback("on_train_epoch_start", on_epoch_start)
        model.add_callback("on_train_batch_end", on_batch_end)
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        model.add_callback("on_train_end", on_train_end)
    for event, functions in (extra_callbacks or {}).items():
        for fn in functions:
            model.add_callback(event, fn)
    started = time.monotonic()
    try:
        model.train(
            trainer=trainer_class, **ultralytics_args(spec, strategy.backbone_layers, precision.amp, resume_from)
        )
    finally:
        STOP.in_loop = False
    best = Path(model.trainer.best)
    if not best.is_file():
        raise RuntimeError(f"Ultralytics finished without writing {best}")
    report.send(Trained(best=str(best), seconds=time.monotonic() - started, resumed=bool(resume_from)))
    return best


def _weights_from(model: Any, checkpoint: Path) -> tuple[int, int]:
    """How many conv weight tensors of `model` equal the checkpoint's (same name and shape).

    Random initialisation matches none; a warm start matches (nearly) all. Compared in FP16,
    the precision best.pt stores them in.
    """
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    source = (ckpt.get("ema") or ckpt["model"]).float().state_dict()
    matched = total = 0
    for name, tensor in model.state_dict().items():
        if tensor.ndim != 4 or name.endswith("dfl.conv.weight"):  # the DFL conv is a constant
            continue
        total += 1
        other = source.get(name)
        if (
            other is not None
            and other.shape == tensor.shape
            and torch.equal(other.half(), tensor.detach().cpu().half())
        ):
            matched += 1
    return matched, total

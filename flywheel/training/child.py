"""The training child process: `python -m flywheel.training.child SPEC_JSON`.

The only module that imports torch and Ultralytics. It trains per the spec, evaluates the
candidate (and the production checkpoint, when asked) on the version's val split, and
reports each step as a JSON line on the file descriptor named by FLYWHEEL_EVENT_FD. Its
stdout/stderr are the run's log. A crash here ends this process only, never the daemon.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from flywheel.training.spec import (
    EPOCH,
    EVALUATED,
    FAILED,
    PROGRESS,
    STARTED,
    TRAINED,
    WARM_START,
    EvalTarget,
    TrainSpec,
)


def _offline_environment(threads: int) -> None:
    # Must happen before `import ultralytics`: it reads these at import time.
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ["OMP_NUM_THREADS"] = str(threads)


class Reporter:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self._last_progress = 0.0

    def send(self, kind: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": kind, **data}) + "\n")
        self.stream.flush()

    def progress(self, **data: Any) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.send(PROGRESS, **data)


def train(spec: TrainSpec, report: Reporter) -> Path:
    import torch
    import ultralytics
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    # Offline and quiet: no integration turns itself on because its package is installed.
    SETTINGS.update({k: False for k in SETTINGS if k in _INTEGRATIONS})
    torch_utils.NUM_THREADS = spec.threads  # Ultralytics uses one thread less than the cores
    torch.set_num_threads(spec.threads)
    report.send(
        STARTED,
        pid=os.getpid(),
        versions={"python": sys.version.split()[0], "torch": torch.__version__, "ultralytics": ultralytics.__version__},
    )
    model = YOLO(spec.start)
    state: dict[str, int] = {}

    def on_train_start(trainer: Any) -> None:
        if spec.start_kind == "warm":
            matched, total = _weights_from(trainer.model, Path(spec.start))
            report.send(WARM_START, matched=matched, total=total)

    def on_epoch_start(trainer: Any) -> None:
        state["epoch"] = trainer.epoch

    def on_batch_end(trainer: Any) -> None:
        report.progress(
            epoch=trainer.epoch + 1,
            epochs=trainer.epochs,
            batch=state.get("batch", 0) + 1,
            batches=len(trainer.train_loader),
        )
        state["batch"] = state.get("batch", 0) + 1

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch != state.get("epoch"):
            return  # the final re-validation of best.pt, not an epoch
        state["batch"] = 0
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        m = trainer.metrics
        report.send(
            EPOCH,
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

    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_epoch_start", on_epoch_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    started = time.monotonic()
    model.train(
        data=spec.data_yaml,
        epochs=spec.epochs,
        imgsz=spec.imgsz,
        batch=spec.batch,
        device=spec.device,
        seed=spec.seed,
        deterministic=True,
        patience=spec.patience,
        workers=0,
        plots=False,
        project=spec.out_dir,
        name="train",
        exist_ok=True,
        verbose=False,
    )
    best = Path(model.trainer.best)
    if not best.is_file():
        raise RuntimeError(f"Ultralytics finished without writing {best}")
    report.send(TRAINED, best=str(best), seconds=time.monotonic() - started)
    return best


_INTEGRATIONS = {"sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard", "wandb"}


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


def evaluate(spec: TrainSpec, checkpoint: Path, target: EvalTarget, report: Reporter) -> None:
    from ultralytics import YOLO

    started = time.monotonic()
    role = target.role
    metrics = YOLO(str(checkpoint)).val(
        data=target.data_yaml or spec.data_yaml,
        split="val",
        imgsz=spec.imgsz,
        batch=spec.batch,
        device=spec.device,
        plots=False,
        project=spec.out_dir,
        name=f"eval-{role}-{target.eval_set}",
        exist_ok=True,
        verbose=False,
    )
    box = metrics.box
    names = metrics.names
    per_class = {names[int(c)]: float(ap) for c, ap in zip(box.ap_class_index, box.ap, strict=True)}
    counts = metrics.nt_per_class if metrics.nt_per_class is not None else []
    instances = {names[i]: int(n) for i, n in enumerate(counts) if n}
    report.send(
        EVALUATED,
        role=role,
        eval_set=target.eval_set,
        instances=instances,
        checkpoint=str(checkpoint),
        map50_95=float(box.map),
        map50=float(box.map50),
        precision=float(box.mp),
        recall=float(box.mr),
        per_class=per_class,
        seconds=time.monotonic() - started,
    )


def main(argv: list[str]) -> int:
    spec = TrainSpec.read(Path(argv[1]))
    fd = int(os.environ.get("FLYWHEEL_EVENT_FD", "1"))
    report = Reporter(os.fdopen(fd, "w", buffering=1))
    _offline_environment(spec.threads)
    try:
        best = None if spec.evaluate_only else train(spec, report)
        for target in spec.evaluate:
            checkpoint = Path(target.checkpoint) if target.checkpoint else best
            if checkpoint is None:
                raise ValueError(f"eval target {target.role}/{target.eval_set} names no checkpoint")
            evaluate(spec, checkpoint, target, report)
    except BaseException as exc:  # report any failure, then exit non-zero
        traceback.print_exc()
        report.send(FAILED, error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

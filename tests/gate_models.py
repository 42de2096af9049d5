"""Real tiny models for the gate's rules (test_gate_real.py): a YOLOv8n trained once on coloured
boxes, checkpoints of it, and one built from it that has forgotten one class.

Why a built checkpoint: fine-tuning with a class relabelled only dented that class's AP (0.284
-> 0.251), never below the gate's threshold; silencing the class in the detection head is a
real, reliable collapse: the class-score logits of that class are pushed to -50 (sigmoid ~1e-22,
under any confidence threshold), every other weight is the trained model's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from flywheel.core.events import Trained, TrainingEvent
from flywheel.core.spec import TrainSpec
from flywheel.training.local_trainer import SubprocessTrainer

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}
NAMES = list(COLOURS)
IMGSZ = 64
# Measured (Ultralytics 8.4.190, torch 2.14 CPU) on the test's val split (27 images, 54 boxes):
# epoch 28 mAP50-95 0.301 (red 0.399), epoch 40 0.564 (red 0.553), epoch 40 without red 0.379.
# Shorter runs stop on the steep part of the curve (30 epochs: 0.341 on all images), where
# the checkpoints are too close together for clear margins. 40 epochs: about a minute on 2 cores.
EPOCHS = 40
WEAK_EPOCH = 28  # a real checkpoint of the same training, clearly worse than the last
KEEP = (WEAK_EPOCH,)


def shapes_batch(folder: Path, count: int, seed: int, size: int = IMGSZ) -> Path:
    """A YOLO batch: two boxes per image in red, green or blue on dark noise, exact labels."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for i in range(count):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        lines = []
        for _ in range(2):
            cls = int(rng.integers(0, len(NAMES)))
            w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            img[y : y + h, x : x + w] = COLOURS[NAMES[cls]]
            lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        Image.fromarray(img).save(folder / "images" / f"c{seed}_{i:04d}.png")
        (folder / "labels" / f"c{seed}_{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return folder


@dataclass(frozen=True)
class Checkpoints:
    weak: Path  # epoch WEAK_EPOCH
    strong: Path  # the last epoch
    collapsed: Path  # `strong` with class `collapsed_class` silenced
    collapsed_class: str


def train(batch: Path, out: Path, collapse: str) -> Checkpoints:
    """Train a YOLOv8n from scratch on `batch` (train = val: these models are for the gate, not
    for generalisation), keeping the checkpoints of WEAK_EPOCH and the last epoch."""
    import torch
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    torch_utils.NUM_THREADS = 2
    torch.set_num_threads(2)
    data = {"path": str(batch), "train": "images", "val": "images", "names": dict(enumerate(NAMES))}
    (batch / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    model = YOLO("yolov8n.yaml")
    keep = {epoch: out / f"epoch{epoch}.pt" for epoch in (*KEEP, EPOCHS)}

    def on_fit_epoch_end(trainer: Any) -> None:
        epoch = trainer.epoch + 1
        if epoch in keep and epoch != EPOCHS:  # save=False: Ultralytics saves the last epoch only
            trainer.save_model()
        if epoch in keep:
            shutil.copy(trainer.last, keep[epoch])

    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    model.train(
        data=str(batch / "data.yaml"),
        epochs=EPOCHS,
        imgsz=IMGSZ,
        batch=16,
        nbs=16,
        optimizer="AdamW",
        lr0=0.01,
        warmup_epochs=1,
        val=False,  # no validation, no checkpoint per epoch: a third of the time, and nothing reads them
        save=False,
        plots=False,
        workers=0,
        device="cpu",
        seed=0,
        deterministic=True,
        project=str(out),
        name="train",
        verbose=False,
    )
    collapsed = silence_class(keep[EPOCHS], NAMES.index(collapse), out / f"epoch{EPOCHS}-without-{collapse}.pt")
    return Checkpoints(keep[WEAK_EPOCH], keep[EPOCHS], collapsed, collapse)


def silence_class(checkpoint: Path, cls: int, out: Path) -> Path:
    """A copy of `checkpoint` whose detection head never scores class `cls`: the bias of that
    class's channel in each scale's final class conv (Detect.cv3[i][-1]) set to -50."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        model = ckpt.get(key)
        if model is None:
            continue
        head = model.model[-1]
        with torch.no_grad():
            for branch in head.cv3:
                final = branch[-1]
                assert isinstance(final, torch.nn.Conv2d) and final.out_channels == head.nc
                final.bias[cls] = -50.0
    torch.save(ckpt, out)
    return out


class HandedCheckpoint:
    """A Trainer that trains nothing: it hands over a prepared checkpoint as the run's best.pt,
    and the evaluations the cycle asks for run for real, in flywheel's training child process
    (an evaluate-only spec, as `flywheel compare` uses)."""

    def __init__(self, ultralytics_dir: Path, checkpoint: Path):
        self.inner = SubprocessTrainer(ultralytics_dir)
        self.checkpoint = checkpoint

    def run(self, spec: TrainSpec, on_event: Callable[[TrainingEvent], None]) -> list[TrainingEvent]:
        evaluate = [replace(t, checkpoint=t.checkpoint or str(self.checkpoint)) for t in spec.evaluate]
        trained = Trained(best=str(self.checkpoint), seconds=0.0, resumed=False)
        on_event(trained)
        return [trained, *self.inner.run(replace(spec, evaluate=evaluate, evaluate_only=True), on_event)]

    def cancel(self) -> None:
        self.inner.cancel()

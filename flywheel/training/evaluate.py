"""Evaluation in the child process: a checkpoint's scores on an eval set, and the paired
bootstrap interval of candidate - production from the per-image matches kept meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

from flywheel.core.events import BootstrapInterval, ClassInterval, Evaluated
from flywheel.core.gate import Score
from flywheel.core.spec import EvalTarget, TrainSpec
from flywheel.training import bootstrap
from flywheel.training.process import Reporter


def evaluate(spec: TrainSpec, checkpoint: Path, target: EvalTarget, report: Reporter) -> None:
    from ultralytics import YOLO

    started = time.monotonic()
    role = target.role
    recorder = bootstrap.recording_validator() if spec.bootstrap_samples else None
    metrics = YOLO(str(checkpoint)).val(
        validator=recorder,
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
    if recorder is not None:  # keep each image's matches for the paired bootstrap
        bootstrap.save(Path(spec.out_dir) / f"stats-{role}-{target.eval_set}.npz", recorder.last.per_image)
    counts = metrics.nt_per_class if metrics.nt_per_class is not None else []
    instances = {names[i]: int(n) for i, n in enumerate(counts) if n}
    report.send(
        Evaluated(
            role=role,
            eval_set=target.eval_set,
            checkpoint=str(checkpoint),
            score=Score(
                map50_95=float(box.map),
                map50=float(box.map50),
                precision=float(box.mp),
                recall=float(box.mr),
                per_class=per_class,
                instances=instances,
            ),
            seconds=time.monotonic() - started,
        )
    )


def bootstrap_intervals(spec: TrainSpec, report: Reporter) -> None:
    out = Path(spec.out_dir)
    for target in spec.evaluate:
        cand, prod = out / f"stats-candidate-{target.eval_set}.npz", out / f"stats-production-{target.eval_set}.npz"
        if target.role != "candidate" or not (cand.is_file() and prod.is_file()):
            continue
        interval = bootstrap.paired(
            bootstrap.load(cand), bootstrap.load(prod), spec.bootstrap_samples, spec.bootstrap_confidence, spec.seed
        )
        names = spec.class_names
        classes = {
            names[c] if c < len(names) else str(c): ClassInterval(float(v["observed"]), v["low"], v["high"])
            for c, v in interval["classes"].items()
        }
        report.send(
            BootstrapInterval(
                eval_set=target.eval_set,
                observed=float(interval["observed"]),
                mean=interval["mean"],
                low=interval["low"],
                high=interval["high"],
                samples=interval["samples"],
                confidence=interval["confidence"],
                classes=classes,
            )
        )

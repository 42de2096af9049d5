"""The training child process: `python -m flywheel.training.child SPEC_JSON`.

The only module that imports torch and Ultralytics. It trains per the spec, evaluates the
candidate (and the production checkpoint, when asked) on the version's val split, and
reports each step as a JSON line on the file descriptor named by FLYWHEEL_EVENT_FD. Its
stdout/stderr are the run's log. A crash here ends this process only, never the daemon.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from flywheel.core.spec import (
    BOOTSTRAP,
    CANCELLED,
    CANCELLED_EXIT,
    EPOCH,
    EVALUATED,
    FAILED,
    PHASE,
    PLATEAU,
    PROGRESS,
    STARTED,
    TRAINED,
    WARM_START,
    EvalTarget,
    TrainSpec,
)
from flywheel.training import bootstrap


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
        try:
            self.stream.write(json.dumps({"event": kind, **data}) + "\n")
            self.stream.flush()
        except BrokenPipeError:  # the daemon is gone: nobody will use this run's result
            STOP.requested = "the process that started this run is gone (its pipe is closed)"
            raise Cancelled(STOP.requested) from None

    def progress(self, **data: Any) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.5:
            self._last_progress = now
            self.send(PROGRESS, **data)


class Cancelled(Exception):
    """The run was asked to stop (SIGTERM, or the daemon that started it is gone)."""


class _Stop:
    """SIGTERM: stop after the current batch while training, at once otherwise."""

    def __init__(self) -> None:
        self.requested = ""
        self.in_loop = False
        self.parent = os.getppid()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        _term_with_parent()
        if os.getppid() != self.parent:  # the parent died before the kernel could be told
            self.requested = "the process that started this run is gone"

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if os.getppid() != self.parent:  # the kernel's PR_SET_PDEATHSIG signal: say what it means
            self.requested = "the process that started this run is gone"
        else:
            self.requested = f"stopped by {signal.Signals(signum).name}"
        if not self.in_loop:
            raise Cancelled(self.requested)

    def check(self) -> None:
        if not self.requested and os.getppid() != self.parent:
            self.requested = "the process that started this run is gone"
        if self.requested:
            raise Cancelled(self.requested)


STOP = _Stop()


def _term_with_parent() -> None:
    """Ask Linux for a SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG), so a SIGKILLed
    daemon leaves no training behind it for long; elsewhere, `check()`'s ppid test does it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
    SETTINGS.update({k: False for k in SETTINGS if k in _INTEGRATIONS})
    torch_utils.NUM_THREADS = spec.threads  # Ultralytics uses one thread less than the cores
    torch.set_num_threads(spec.threads)
    # Ultralytics' AMP self-check downloads yolo26n.pt on a GPU (flywheel never downloads) and
    # turns AMP off on CPU. With training.amp (the default) flywheel keeps it on: on CPU that is
    # bfloat16 autocast, 1.5x faster per batch on the 2-core machine of docs/benchmarks.md, at
    # the same mAP there. training.amp = false trains in fp32, as Ultralytics does on CPU.
    engine_trainer.check_amp = lambda *_a, **_k: True
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
            report.send(STARTED, pid=os.getpid(), versions=library_versions(), resumed_from_epoch=-1)
            report.send(TRAINED, best=str(best), seconds=0.0, resumed=True)
            return best
        if status == "resume":
            resume_from = spec.resume
    versions = library_versions()
    # resumed_from_epoch: the first epoch (1-based) this process trains, when it continues a run
    report.send(STARTED, pid=os.getpid(), versions=versions, resumed_from_epoch=resume_epoch + 1 if resume_from else 0)
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / "spec.json").write_text(json.dumps({"spec": asdict(spec), "versions": versions}, indent=2) + "\n")

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
                WARM_START,
                matched=matched,
                total=total,
                head_rows_kept=equal,
                head_rows_total=rows,
                head_rows_fixed=trainer.head_rows[1],
                shrink=spec.shrink,
                perturb=spec.perturb,
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
            report.send(PHASE, **info)

    def on_batch_end(trainer: Any) -> None:
        state["batch"] = state.get("batch", 0) + 1
        report.progress(
            epoch=trainer.epoch + 1,
            epochs=trainer.epochs,
            batch=state["batch"],
            batches=len(trainer.train_loader),
        )
        STOP.check()  # between batches: the cancelled run stops here

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch != state.get("epoch"):
            return  # the final re-validation of best.pt, not an epoch
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
        total = plateau.update(trainer.epoch + 1, float(trainer.fitness or 0.0), trainer.epochs)
        if total is not None:
            enter_final_decay(trainer, total)
            report.send(
                PLATEAU, epoch=trainer.epoch + 1, best_epoch=plateau.best_epoch, best_fitness=plateau.best, epochs=total
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
        model.train(trainer=trainer_class, **ultralytics_args(spec, strategy.backbone_layers, resume_from))
    finally:
        STOP.in_loop = False
    best = Path(model.trainer.best)
    if not best.is_file():
        raise RuntimeError(f"Ultralytics finished without writing {best}")
    report.send(TRAINED, best=str(best), seconds=time.monotonic() - started, resumed=bool(resume_from))
    return best


def ultralytics_args(spec: TrainSpec, backbone: int, resume: str = "") -> dict[str, Any]:
    """Every training argument, explicitly: a warm start otherwise gets Ultralytics' defaults."""
    args: dict[str, Any] = {
        "data": spec.data_yaml,
        "epochs": spec.epochs,
        "imgsz": spec.imgsz,
        "batch": spec.batch,
        "nbs": spec.nbs,
        "amp": spec.amp,
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


def _bootstrap(spec: TrainSpec, report: Reporter) -> None:
    out = Path(spec.out_dir)
    for target in spec.evaluate:
        cand, prod = out / f"stats-candidate-{target.eval_set}.npz", out / f"stats-production-{target.eval_set}.npz"
        if target.role != "candidate" or not (cand.is_file() and prod.is_file()):
            continue
        interval = bootstrap.paired(
            bootstrap.load(cand), bootstrap.load(prod), spec.bootstrap_samples, spec.bootstrap_confidence, spec.seed
        )
        names = spec.class_names
        interval["classes"] = {names[c] if c < len(names) else str(c): v for c, v in interval["classes"].items()}
        report.send(BOOTSTRAP, eval_set=target.eval_set, **interval)


def main(argv: list[str]) -> int:
    spec = TrainSpec.read(Path(argv[1]))
    fd = int(os.environ.get("FLYWHEEL_EVENT_FD", "1"))
    report = Reporter(os.fdopen(fd, "w", buffering=1))
    _offline_environment(spec.threads)
    STOP.install()
    try:
        best = None if spec.evaluate_only else train(spec, report)
        for target in spec.evaluate:
            checkpoint = Path(target.checkpoint) if target.checkpoint else best
            if checkpoint is None:
                raise ValueError(f"eval target {target.role}/{target.eval_set} names no checkpoint")
            evaluate(spec, checkpoint, target, report)
        if spec.bootstrap_samples:
            _bootstrap(spec, report)
    except Cancelled as exc:
        print(f"flywheel: run cancelled: {exc}", file=sys.stderr)
        with contextlib.suppress(Cancelled):
            report.send(CANCELLED, reason=str(exc))
        return CANCELLED_EXIT
    except BaseException as exc:  # report any failure, then exit non-zero
        traceback.print_exc()
        with contextlib.suppress(Cancelled):
            report.send(FAILED, error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

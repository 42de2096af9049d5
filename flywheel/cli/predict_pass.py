"""What `flywheel predict` and `flywheel suggest` share: their options, one pass of the model
over the images (resolve the model and a new output folder, collect the images, predict
through the Predictor port with flywheel.flow.predicting, with a progress bar), and the
summary and skipped-image lines both report. This process only reads images with Pillow,
shows progress and writes files; the commands are in cli/predict.py and cli/suggest.py."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from flywheel.app import App
from flywheel.cli.common import call, err, out, styled
from flywheel.cli.jsonout import Json
from flywheel.core.errors import FlywheelError, UsageError
from flywheel.core.predict_events import ImageFailed, ImagePredicted, PredictEvent, PredictStarted
from flywheel.core.prediction import Prediction, PredictOutcome
from flywheel.flow.predicting import PredictOptions, chosen_model, predict_images
from flywheel.ingest import archives
from flywheel.ingest.images import IMAGE_SUFFIXES
from flywheel.prelabel import inputs as inputs_mod
from flywheel.prelabel import writers
from flywheel.prelabel.inputs import Inputs

Paths = Annotated[
    list[Path], typer.Argument(help="Images to run on: a folder, a .zip/.tar.* archive, or image files.", exists=True)
]
Model = Annotated[
    str | None,
    typer.Option("--model", help="A model id (m0007) or, with --trust, a .pt file (default: the production model)."),
]
Trust = Annotated[bool, typer.Option(help="Allow loading a .pt file the registry did not write (it is a pickle).")]
Format = Annotated[
    str, typer.Option("--format", help=f"Pre-label format: {', '.join(writers.FORMATS)}.", case_sensitive=False)
]
Conf = Annotated[float, typer.Option(help="Keep boxes with confidence >= this (Ultralytics' conf).", min=0, max=1)]
Iou = Annotated[float, typer.Option(help="NMS IoU threshold (Ultralytics' iou).", min=0, max=1)]
Imgsz = Annotated[
    int | None, typer.Option(help="Inference size in pixels (default: the size the model was trained at).", min=32)
]
Device = Annotated[str | None, typer.Option(help="cpu, 0, cuda:0, mps (default: training.device from config).")]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Output folder; must be new or empty (default: a new folder next to PATH).", file_okay=False
    ),
]
Prefix = Annotated[
    str,
    typer.Option(
        help="labelstudio: put before images/NAME in data.image, e.g. '/data/local-files/?d=batch7/' for a "
        "local-files storage."
    ),
]


@dataclass
class PredictPass:
    """One pass of the model: the images read, what the child made of them, and where to write."""

    inputs: Inputs
    outcome: PredictOutcome
    model: str  # m0007, or the .pt file's name
    out: Path


def checked_format(fmt: str) -> str:
    """--format, lower-cased; a UsageError through `call` (message, exit code) if unknown."""
    return call(lambda: checked_choice("--format", fmt, writers.FORMATS))


def checked_choice(option: str, value: str, choices: Sequence[str]) -> str:
    value = value.lower()
    if value not in choices:
        raise UsageError(f"{option} {value}: expected one of {', '.join(choices)}")
    return value


@contextmanager
def run_pass(
    paths: list[Path],
    model: str | None,
    trust: bool,
    child_conf: float,
    iou: float,
    imgsz: int | None,
    device: str | None,
    out_dir: Path | None,
    root: Path,
    what: str,
    embed: bool = False,
) -> Iterator[PredictPass]:
    """Resolve the model and the output folder, read the images, run the child (with `embed`,
    also for what the model saw of each image); the staging folder of unpacked archives lives
    until the caller has written the package."""
    application = call(lambda: App(root))
    contender = call(lambda: chosen_model(application.store, application.registry, model, trust))
    label = Path(contender.label).name if contender.label.endswith(".pt") else contender.label
    target = call(lambda: _out_dir(paths, out_dir, what))
    staging = application.paths.runs / f"predict-input-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    config = application.config
    try:
        found = call(
            lambda: inputs_mod.collect(
                [p.resolve() for p in paths], staging, config.ingest.max_image_pixels, config.ingest.max_archive_bytes
            )
        )
        if not found.images:
            for name, why in found.skipped:
                err.print(_skipped_line(name, why), highlight=False)
            call(lambda: _no_images(paths, len(found.skipped)))
        options = PredictOptions(child_conf, iou, imgsz, device, embed)
        bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=err,
        )
        with bar:
            task = bar.add_task(f"{label}", total=len(found.images), status="loading the model")

            def on_event(event: PredictEvent) -> None:
                if isinstance(event, PredictStarted):
                    bar.update(task, status=f"imgsz {event.imgsz}")
                elif isinstance(event, ImagePredicted | ImageFailed):
                    bar.update(task, completed=event.index + 1)

            outcome = call(
                lambda: predict_images(application.predictor, config, contender, options, found.images, on_event)
            )
        target.mkdir(parents=True, exist_ok=True)
        yield PredictPass(found, outcome, label, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a failure the predictor keeps its predict.log


def _no_images(paths: list[Path], skipped: int) -> None:
    where = ", ".join(str(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    why = f"{skipped} file(s) skipped, each named above with its reason" if skipped else "no image file found"
    raise FlywheelError(f"no readable image in {where} ({why}); give images in {', '.join(sorted(IMAGE_SUFFIXES))}")


def _out_dir(paths: list[Path], given: Path | None, what: str) -> Path:
    if given is not None:
        if given.exists() and (not given.is_dir() or any(given.iterdir())):
            raise UsageError(f"--out {given} is not empty; give a new or empty folder (nothing is overwritten)")
        return given
    first = paths[0].resolve()
    stem = inputs_mod.archive_stem(first) if archives.is_archive(first) else first.name
    if first.is_file() and not archives.is_archive(first):
        stem = first.parent.name or "images"
    parent = first.parent if os.access(first.parent, os.W_OK) else Path.cwd()
    for n in range(1, 1000):
        candidate = parent / (f"{stem}-{what}" + (f"-{n}" if n > 1 else ""))
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate
    raise UsageError(f"no free output folder name next to {first}; pass --out")


def pass_summary(run: PredictPass, fmt: str, conf: float, iou: float, predictions: Sequence[Prediction]) -> Json:
    """What predict and suggest both report: the model, where and how the package was
    written, the boxes in it per class, and the images skipped with the reason."""
    names = run.outcome.names
    per_class = dict.fromkeys(names, 0)
    for p in predictions:
        for b in p.boxes:
            name = names[b.cls] if 0 <= b.cls < len(names) else str(b.cls)
            per_class[name] = per_class.get(name, 0) + 1
    return {
        "model": run.model,
        "out": str(run.out.resolve()),
        "format": fmt,
        "imgsz": run.outcome.imgsz,
        "conf": conf,
        "iou": iou,
        "classes": list(names),
        "images": len(predictions),
        "boxes": sum(per_class.values()),
        "boxes_per_class": per_class,
        "skipped": [{"image": name, "reason": why} for name, why in [*run.inputs.skipped, *run.outcome.failed]],
    }


def report_skipped(run: PredictPass) -> None:
    for name, why in [*run.inputs.skipped, *run.outcome.failed]:
        out.print(_skipped_line(name, why), highlight=False)


def _skipped_line(name: str, why: str) -> Text:
    return styled("  ", ("skipped", "yellow"), f" {name}: {why}")

"""`flywheel predict PATH...` (pre-labels for the labeling tool) and `flywheel suggest PATH...`
(which images to label next, most useful first, with their pre-labels). Registered on the
main CLI by `register(app)`. The model runs in a child process (flywheel.training.predict);
this process only reads images with Pillow, shows progress and writes files.
Over 300 lines: two commands that share one pass of the child, its progress bar and the
output folder rules; suggest is predict plus a ranking."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flywheel.app import App
from flywheel.cli.common import Root, call, err, out
from flywheel.cli.jsonout import Json, JsonFlag, emit
from flywheel.core.domain import model_name
from flywheel.core.errors import UsageError
from flywheel.core.plan import training_threads
from flywheel.core.predict_events import ImageFailed, ImagePredicted, PredictEvent, PredictStarted
from flywheel.flow.compare import resolve
from flywheel.ingest import archives
from flywheel.prelabel import inputs as inputs_mod
from flywheel.prelabel import runner, uncertainty, writers
from flywheel.prelabel.inputs import Inputs
from flywheel.prelabel.records import Prediction

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
class _Run:
    inputs: Inputs
    outcome: runner.Outcome
    model: str  # m0007, or the .pt file's name
    out: Path


def predict(
    paths: Paths,
    model: Model = None,
    trust: Trust = False,
    fmt: Format = "yolo",
    conf: Conf = 0.25,
    iou: Iou = 0.7,
    imgsz: Imgsz = None,
    device: Device = None,
    out_dir: Out = None,
    image_prefix: Prefix = "",
    root: Root = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Pre-label images with the production model (or --model) in the labeling tool's format.

    The output is a folder with images/ and the boxes: `yolo` (labels/ + data.yaml: a flywheel
    batch as it is, once checked), `coco`, `labelstudio` (tasks.json with predictions) or `cvat`
    (CVAT for images 1.1 XML). Unreadable images are listed with the reason and skipped.
    """
    fmt = _format(fmt)
    with _run(paths, model, trust, conf, iou, imgsz, device, out_dir, root, "prelabels") as run:
        predictions = [p.above(conf) for p in run.outcome.predictions]
        written = writers.write(fmt, run.out, predictions, run.outcome.names, run.model, image_prefix)
    if as_json:
        emit("predict", predict_data(run, fmt, conf, iou, predictions, written))
        return
    boxes = sum(len(p.boxes) for p in predictions)
    out.print(
        f"{len(predictions)} images pre-labeled by {run.model} (imgsz {run.outcome.imgsz}, conf {conf}): "
        f"{boxes} boxes -> {written}",
        highlight=False,
        soft_wrap=True,
    )
    _report_skipped(run)


def suggest(
    paths: Paths,
    top: Annotated[int, typer.Option("--top", help="How many images to pre-label for labeling next.", min=1)] = 50,
    model: Model = None,
    trust: Trust = False,
    fmt: Format = "yolo",
    conf: Conf = 0.25,
    iou: Iou = 0.7,
    imgsz: Imgsz = None,
    device: Device = None,
    out_dir: Out = None,
    image_prefix: Prefix = "",
    root: Root = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Rank unlabeled images by how much labeling them would likely teach the model.

    One pass of the model at confidence 0.01 scores each image by its detections' uncertainty
    (mean binary entropy of the boxes, the share of boxes in the 0.1-0.5 band, and 1 - the top
    confidence; see flywheel/prelabel/uncertainty.py). Writes ranking.csv and ranking.json (every
    image, its score and the terms of it) and prelabels/: the top K, pre-labeled with boxes at
    --conf, in --format, ready to import.
    """
    fmt = _format(fmt)
    scoring = min(uncertainty.SCORING_CONF, conf)
    with _run(paths, model, trust, scoring, iou, imgsz, device, out_dir, root, "suggest") as run:
        ranking, rows, written, chosen = _rank_and_write(run, top, fmt, conf, image_prefix)
    if as_json:
        emit("suggest", suggest_data(run, fmt, conf, iou, top, scoring, rows, chosen, written))
        return
    out.print(
        f"ranked {len(ranking)} images by uncertainty under {run.model}: {run.out / 'ranking.csv'}", soft_wrap=True
    )
    for i, (name, u) in enumerate(ranking[: min(5, top)], start=1):
        out.print(f"  {i:>3}. {name}  score {u.score:.3f}", highlight=False, soft_wrap=True)
    out.print(f"top {len(chosen)} pre-labeled (conf {conf}) -> {written}", highlight=False, soft_wrap=True)
    _report_skipped(run)


def _rank_and_write(
    run: _Run, top: int, fmt: str, conf: float, image_prefix: str
) -> tuple[list[tuple[str, uncertainty.Uncertainty]], list[dict[str, Any]], Path, list[Prediction]]:
    by_name = {p.name: p for p in run.outcome.predictions}
    origin = {f.name: f.origin for f in run.inputs.images}
    ranking = uncertainty.rank({p.name: [b.conf for b in p.boxes] for p in run.outcome.predictions})
    rows: list[dict[str, Any]] = [
        {"rank": i, "image": name, "source": origin[name], "score": round(u.score, 4), "why": u.why()}
        for i, (name, u) in enumerate(ranking, start=1)
    ]
    (run.out / "ranking.json").write_text(json.dumps(rows, indent=1))
    with (run.out / "ranking.csv").open("w", newline="") as fh:
        terms = list(rows[0]["why"]) if rows else []
        writer = csv.writer(fh)
        writer.writerow(["rank", "image", "score", *terms, "source"])
        for r in rows:
            writer.writerow([r["rank"], r["image"], r["score"], *(r["why"][t] for t in terms), r["source"]])
    chosen = [by_name[name].above(conf) for name, _ in ranking[:top]]
    written = writers.write(fmt, run.out / "prelabels", chosen, run.outcome.names, run.model, image_prefix)
    return ranking, rows, written, chosen


def _summary(run: _Run, fmt: str, conf: float, iou: float, predictions: Sequence[Prediction]) -> Json:
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


def predict_data(
    run: _Run, fmt: str, conf: float, iou: float, predictions: Sequence[Prediction], written: Path
) -> Json:
    """`flywheel predict --json` (flywheel.predict/1 in docs/cli-json.md)."""
    return {**_summary(run, fmt, conf, iou, predictions), "written": str(written.resolve())}


def suggest_data(
    run: _Run,
    fmt: str,
    conf: float,
    iou: float,
    top: int,
    scoring_conf: float,
    rows: list[dict[str, Any]],
    chosen: Sequence[Prediction],
    written: Path,
) -> Json:
    """`flywheel suggest --json` (flywheel.suggest/1 in docs/cli-json.md): the summary of the
    top-K package, with the ranking's top K (every image's row is in ranking.json)."""
    summary = _summary(run, fmt, conf, iou, chosen)
    return {
        **summary,
        "images": len(rows),
        "top": top,
        "prelabeled": len(chosen),
        "scoring_conf": scoring_conf,
        "ranking_csv": str((run.out / "ranking.csv").resolve()),
        "ranking_json": str((run.out / "ranking.json").resolve()),
        "prelabels": str((run.out / "prelabels").resolve()),
        "written": str(written.resolve()),
        "ranking": rows[:top],
    }


def _format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in writers.FORMATS:
        err.print(
            f"[red]error:[/red] --format {fmt}: expected one of {', '.join(writers.FORMATS)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(UsageError.exit_code)
    return fmt


@contextmanager
def _run(
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
) -> Iterator[_Run]:
    """Resolve the model and the output folder, read the images, run the child; the staging
    folder of unpacked archives lives until the caller has written the package."""
    application = call(lambda: App(root))
    store = application.store
    if model is None:
        production = store.production()
        if production is None:
            err.print("error: no production model yet: train one first, or pass --model m0003 (or a .pt with --trust)")
            raise typer.Exit(1)
        model = model_name(production.id or 0)
    contender = call(lambda: resolve(store, application.registry, model, trust))
    label = Path(contender.label).name if contender.label.endswith(".pt") else contender.label
    target = call(lambda: _out_dir(paths, out_dir, what))
    work = application.paths.runs / f"predict-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    staging = work / "input"
    config, training = application.config, application.config.training
    try:
        found = call(
            lambda: inputs_mod.collect(
                [p.resolve() for p in paths], staging, config.ingest.max_image_pixels, config.ingest.max_archive_bytes
            )
        )
        if not found.images:
            for name, why in found.skipped:
                err.print(f"  [yellow]skipped[/yellow] {name}: {why}", highlight=False, soft_wrap=True)
            err.print("error: no readable image to run on")
            raise typer.Exit(1)
        request = runner.Request(
            checkpoint=contender.checkpoint,
            conf=child_conf,
            iou=iou,
            imgsz=imgsz or 0,
            fallback_imgsz=training.imgsz,
            device=device or training.device,
            threads=training_threads(training.threads),
        )
        bar = Progress(
            TextColumn("{task.description}"),
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

            outcome = call(lambda: runner.predict(request, found.images, work, application.paths.ultralytics, on_event))
        target.mkdir(parents=True, exist_ok=True)
        yield _Run(found, outcome, label, target)
        shutil.rmtree(work, ignore_errors=True)  # done: nothing in it is needed any more
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a failure, predict.log stays in `work`


def _report_skipped(run: _Run) -> None:
    for name, why in [*run.inputs.skipped, *run.outcome.failed]:
        out.print(f"  [yellow]skipped[/yellow] {name}: {why}", highlight=False, soft_wrap=True)


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


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("suggest")(suggest)

"""`flywheel label push|pull`: the Label Studio round trip ([labelstudio] in config.toml).

push ranks the images the way `flywheel suggest` does (cli/predict_pass.py's pass of the model,
prelabel/uncertainty.py's score) and sends the top K as tasks, production's boxes as their
pre-annotations; pull turns the annotations people finished into an inbox batch (flow/labeling.py).
Registered on the main CLI by `register(app)`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from flywheel.app import App
from flywheel.cli.common import Root, call, out
from flywheel.cli.jsonout import Json, JsonFlag, emit
from flywheel.cli.predict_pass import (
    Conf,
    Device,
    Imgsz,
    Iou,
    Model,
    Paths,
    PredictPass,
    Trust,
    report_skipped,
    run_pass,
)
from flywheel.cli.suggest import picked
from flywheel.core.labeling import PullResult
from flywheel.flow.labeling import PushResult
from flywheel.prelabel import uncertainty

label_app = typer.Typer(
    help="Label Studio: push images to label (with pre-annotations), pull finished labels into the inbox.",
    no_args_is_help=True,
)


@label_app.command("push")
def push(
    paths: Paths,
    top: Annotated[int, typer.Option("--top", help="How many of the most uncertain images to send.", min=1)] = 50,
    model: Model = None,
    trust: Trust = False,
    conf: Conf = 0.25,
    iou: Iou = 0.7,
    imgsz: Imgsz = None,
    device: Device = None,
    root: Root = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Send the K images the model is least sure of to the Label Studio project, as tasks.

    PATH is a folder, an archive or image files (e.g. the data root's captured/). The images are
    ranked as `flywheel suggest` ranks them; each task carries the model's boxes at --conf as a
    pre-annotation (model_version = the model id, and its score). The project ([labelstudio]
    project) is made with the model's classes when its title names none; an image the project
    has already is not sent twice. Images are uploaded through Label Studio's API.
    """
    application = call(lambda: App(root))
    labeling = call(application.labeling)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = application.paths.runs / f"label-push-{stamp}"
    scoring = min(uncertainty.SCORING_CONF, conf)
    with run_pass(paths, model, trust, scoring, iou, imgsz, device, out_dir, root, "label-push") as run:
        ranking = uncertainty.rank({p.name: [b.conf for b in p.boxes] for p in run.outcome.predictions})
        by_name = {p.name: p for p in run.outcome.predictions}
        names = picked(ranking, run.outcome.embeddings, top, "top").names
        chosen = [(by_name[n].above(conf), by_name[n].source.read_bytes()) for n in names]
        result = call(lambda: labeling.push(run.outcome.names, run.model, chosen))
        rows = [{"rank": i, "image": n, "score": round(u.score, 4)} for i, (n, u) in enumerate(ranking, start=1)]
        (run.out / "ranking.json").write_text(json.dumps(rows, indent=1))
    if as_json:
        emit("label.push", push_data(run, result, top, conf, len(ranking)))
        return
    out.print(f"ranked {len(ranking)} images under {run.model}: {run.out / 'ranking.json'}", highlight=False)
    out.print(f"pushed {len(result.tasks)} tasks to {result.project}", highlight=False)
    if result.already:
        out.print(f"  {len(result.already)} of the top {top} were in the project already, not sent again")
    report_skipped(run)


def push_data(run: PredictPass, result: PushResult, top: int, conf: float, ranked: int) -> Json:
    """`flywheel label push --json` (flywheel.label.push/1 in docs/cli-json.md)."""
    return {
        "model": run.model,
        "project": result.project,
        "classes": list(run.outcome.names),
        "conf": conf,
        "images": ranked,
        "top": top,
        "tasks": [{"task": t, "image": n} for t, n in zip(result.tasks, result.pushed, strict=True)],
        "already": list(result.already),
        "ranking_json": str((run.out / "ranking.json").resolve()),
        "skipped": [{"image": name, "reason": why} for name, why in [*run.inputs.skipped, *run.outcome.failed]],
    }


@label_app.command("pull")
def pull(root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """Turn the annotations finished in Label Studio since the last pull into an inbox batch.

    Each finished annotation is taken once; one edited later is taken again as a relabel; a
    skipped task is left for later (a skip is not a negative image). The batch is a YOLO batch
    (images/, labels/, data.yaml with the project's labels) with its READY marker: the daemon
    ingests it, or run `flywheel ingest` on it. The daemon also pulls every labelstudio.poll_seconds.
    """
    application = call(lambda: App(root))
    labeling = call(application.labeling)
    result = call(labeling.pull)
    if as_json:
        emit("label.pull", pull_data(result, application.paths.inbox))
        return
    say(result, application.paths.inbox)


def pull_data(result: PullResult, inbox: Path) -> Json:
    """`flywheel label pull --json` (flywheel.label.pull/1 in docs/cli-json.md)."""
    return {
        "batch": result.batch,
        "folder": str((inbox / result.batch).resolve()) if result.batch else None,
        "tasks": list(result.tasks),
        "relabels": list(result.relabels),
        "waiting": result.waiting,
        "unknown_labels": [{"task": t, "labels": list(labels)} for t, labels in result.unknown_labels.items()],
    }


def say(result: PullResult, inbox: Path) -> None:
    if result.batch is None:
        out.print(f"nothing new to pull ({result.waiting} tasks wait for a finished annotation)", highlight=False)
        return
    out.print(
        f"pulled {len(result.tasks)} new and {len(result.relabels)} relabelled tasks into "
        f"{inbox / result.batch} ({result.waiting} tasks still wait)",
        highlight=False,
    )
    for task, labels in result.unknown_labels.items():
        out.print(
            f"  task {task}: {', '.join(map(repr, labels))} is no class of the project; ingest quarantines it",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(label_app, name="label")

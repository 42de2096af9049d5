"""`flywheel predict PATH...`: pre-labels for the labeling tool, in its format, from one pass
of the model (cli/predict_pass.py). Registered on the main CLI by `register(app)`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from flywheel.cli.common import Root, out
from flywheel.cli.jsonout import Json, JsonFlag, emit
from flywheel.cli.predict_pass import (
    Conf,
    Device,
    Format,
    Imgsz,
    Iou,
    Model,
    Out,
    Paths,
    PredictPass,
    Prefix,
    Trust,
    checked_format,
    pass_summary,
    report_skipped,
    run_pass,
)
from flywheel.core.prediction import Prediction
from flywheel.prelabel import writers


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
    fmt = checked_format(fmt)
    with run_pass(paths, model, trust, conf, iou, imgsz, device, out_dir, root, "prelabels") as run:
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
    )
    report_skipped(run)


def predict_data(
    run: PredictPass, fmt: str, conf: float, iou: float, predictions: Sequence[Prediction], written: Path
) -> Json:
    """`flywheel predict --json` (flywheel.predict/1 in docs/cli-json.md)."""
    return {**pass_summary(run, fmt, conf, iou, predictions), "written": str(written.resolve())}


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)

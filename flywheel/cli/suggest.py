"""`flywheel suggest PATH...`: which images to label next, most useful first, with their
pre-labels. It is predict (cli/predict_pass.py's pass of the model, at a low confidence) plus a
ranking by uncertainty, written as ranking.csv and ranking.json. Registered on the main CLI
by `register(app)`."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

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
from flywheel.prelabel import uncertainty, writers
from flywheel.prelabel.records import Prediction


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
    fmt = checked_format(fmt)
    scoring = min(uncertainty.SCORING_CONF, conf)
    with run_pass(paths, model, trust, scoring, iou, imgsz, device, out_dir, root, "suggest") as run:
        ranking, rows, written, chosen = _rank_and_write(run, top, fmt, conf, image_prefix)
    if as_json:
        emit("suggest", suggest_data(run, fmt, conf, iou, top, scoring, rows, chosen, written))
        return
    out.print(f"ranked {len(ranking)} images by uncertainty under {run.model}: {run.out / 'ranking.csv'}")
    for i, (name, u) in enumerate(ranking[: min(5, top)], start=1):
        out.print(f"  {i:>3}. {name}  score {u.score:.3f}", highlight=False)
    out.print(f"top {len(chosen)} pre-labeled (conf {conf}) -> {written}", highlight=False)
    report_skipped(run)


def _rank_and_write(
    run: PredictPass, top: int, fmt: str, conf: float, image_prefix: str
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


def suggest_data(
    run: PredictPass,
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
    summary = pass_summary(run, fmt, conf, iou, chosen)
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


def register(app: typer.Typer) -> None:
    app.command("suggest")(suggest)

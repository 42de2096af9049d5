"""`flywheel suggest PATH...`: which images to label next, most useful first, with their
pre-labels. It is predict (cli/predict_pass.py's pass of the model, at a low confidence) plus a
ranking by uncertainty, written as ranking.csv and ranking.json. Registered on the main CLI
by `register(app)`."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from flywheel.cli.common import Root, call, err, out, styled
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
    checked_choice,
    checked_format,
    pass_summary,
    report_skipped,
    run_pass,
)
from flywheel.core.prediction import Prediction
from flywheel.prelabel import diversity, uncertainty, writers


def suggest(
    paths: Paths,
    top: Annotated[int, typer.Option("--top", help="How many images to pre-label for labeling next.", min=1)] = 50,
    pick: Annotated[
        str,
        typer.Option(
            "--pick",
            help="top: the K most uncertain. diverse: the most uncertain of K clusters of look-alike images "
            "among the 3K most uncertain, so the batch does not repeat itself.",
            case_sensitive=False,
        ),
    ] = "top",
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
    image, its score, the terms of it, and its place in the batch if picked) and prelabels/: the
    K images picked, pre-labeled with boxes at --conf, in --format, ready to import.

    --pick diverse spreads the K over the pool: the same pass also reads what the model saw of
    each image, and the K come from K clusters of look-alikes among the 3K most uncertain, the
    most uncertain of each (flywheel/prelabel/diversity.py).

    What it is worth, measured (docs/benchmarks.md, "Suggest vs random"; same K, same training,
    four seeds): the top K taught 1.04x what K random images did on Aquarium (7 classes, varied
    photos) and 1.00x on BCCD (3 classes, alike photos); --pick diverse taught 1.02x random on
    BCCD and 0.89x on Aquarium (two seeds). Where images look alike, expect little over random.
    """
    fmt = checked_format(fmt)
    pick = _checked_pick(pick)
    scoring = min(uncertainty.SCORING_CONF, conf)
    embed = pick == "diverse"
    with run_pass(paths, model, trust, scoring, iou, imgsz, device, out_dir, root, "suggest", embed) as run:
        batch = _rank_and_write(run, top, pick, fmt, conf, image_prefix)
    if batch.by_rank:
        err.print(
            styled(
                ("warning:", "yellow"),
                f" --pick diverse: {batch.by_rank} of the {len(batch.chosen)} were taken by rank, not from a "
                "cluster: the model gave no usable embedding for enough images (an exported, non-PyTorch model "
                "gives none; pass its .pt)",
            ),
            highlight=False,
        )
    if as_json:
        emit("suggest", suggest_data(run, fmt, conf, iou, top, scoring, batch.rows, batch.chosen, batch.written, pick))
        return
    out.print(f"ranked {len(batch.rows)} images by uncertainty under {run.model}: {run.out / 'ranking.csv'}")
    in_batch = [r for r in batch.rows if r["pick"] is not None]
    for r in in_batch[: min(5, top)]:
        out.print(f"  {r['rank']:>3}. {r['image']}  score {r['score']:.3f}", highlight=False)
    out.print(f"{pick} {len(batch.chosen)} pre-labeled (conf {conf}) -> {batch.written}", highlight=False)
    report_skipped(run)


PICKS = ("top", "diverse")


def _checked_pick(pick: str) -> str:
    return call(lambda: checked_choice("--pick", pick, PICKS))


def picked(
    ranking: Sequence[tuple[str, uncertainty.Uncertainty]],
    embeddings: Mapping[str, Sequence[float]],
    top: int,
    pick: str,
) -> diversity.Picked:
    """The K names to pre-label, in rank order: the top K, or diversity.pick's K."""
    if pick == "diverse":
        return diversity.pick([(name, u.score) for name, u in ranking], embeddings, top)
    return diversity.Picked([name for name, _u in ranking[:top]], 0)


@dataclass(frozen=True)
class _Batch:
    rows: list[dict[str, Any]]  # every image, in rank order
    chosen: list[Prediction]  # the K picked, with their boxes at --conf
    written: Path  # the package's annotation file
    by_rank: int  # --pick diverse: how many of the K came by rank, not from a cluster


def _rank_and_write(run: PredictPass, top: int, pick: str, fmt: str, conf: float, image_prefix: str) -> _Batch:
    by_name = {p.name: p for p in run.outcome.predictions}
    origin = {f.name: f.origin for f in run.inputs.images}
    ranking = uncertainty.rank({p.name: [b.conf for b in p.boxes] for p in run.outcome.predictions})
    batch = picked(ranking, run.outcome.embeddings, top, pick)
    order = {name: i for i, name in enumerate(batch.names, start=1)}
    rows: list[dict[str, Any]] = [
        {
            "rank": i,
            "image": name,
            "source": origin[name],
            "score": round(u.score, 4),
            "pick": order.get(name),
            "why": u.why(),
        }
        for i, (name, u) in enumerate(ranking, start=1)
    ]
    (run.out / "ranking.json").write_text(json.dumps(rows, indent=1))
    with (run.out / "ranking.csv").open("w", newline="") as fh:
        terms = list(rows[0]["why"]) if rows else []
        writer = csv.writer(fh)
        writer.writerow(["rank", "image", "score", *terms, "source", "pick"])
        for r in rows:
            pick_cell = "" if r["pick"] is None else r["pick"]
            writer.writerow([r["rank"], r["image"], r["score"], *(r["why"][t] for t in terms), r["source"], pick_cell])
    chosen = [by_name[name].above(conf) for name in batch.names]
    written = writers.write(fmt, run.out / "prelabels", chosen, run.outcome.names, run.model, image_prefix)
    return _Batch(rows, chosen, written, batch.by_rank)


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
    pick: str = "top",
) -> Json:
    """`flywheel suggest --json` (flywheel.suggest/1 in docs/cli-json.md): the summary of the
    top-K package, with the rows of the K images picked (every image's row is in ranking.json)."""
    summary = pass_summary(run, fmt, conf, iou, chosen)
    return {
        **summary,
        "images": len(rows),
        "top": top,
        "pick": pick,
        "prelabeled": len(chosen),
        "scoring_conf": scoring_conf,
        "ranking_csv": str((run.out / "ranking.csv").resolve()),
        "ranking_json": str((run.out / "ranking.json").resolve()),
        "prelabels": str((run.out / "prelabels").resolve()),
        "written": str(written.resolve()),
        "ranking": [r for r in rows if r.get("pick") is not None] if pick != "top" else rows[:top],
    }


def register(app: typer.Typer) -> None:
    app.command("suggest")(suggest)

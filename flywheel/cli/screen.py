"""`flywheel screen BATCH` (the data engine's findings for a batch: show them, `--run` screen it
again, `--review DIR` write them for a labeling tool) and `flywheel approve BATCH` (release a
batch its screening holds). Registered on the main CLI by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.app import App
from flywheel.cli.common import Root, call, out, setup_logging
from flywheel.cli.jsonout import Json, JsonFlag, emit, iso, ref
from flywheel.core.domain import batch_name, model_name, parse_id, version_name
from flywheel.core.errors import NotFound
from flywheel.core.prediction import Box, Prediction
from flywheel.core.screening import Screening
from flywheel.flow.screen_release import latest
from flywheel.flow.screening import batch_version
from flywheel.ingest.screen_files import ScreenFolders
from flywheel.prelabel import writers

BatchArg = Annotated[str, typer.Argument(help="The batch, e.g. b0003 (see `flywheel status`).")]


def screen(
    batch: BatchArg,
    root: Root = Path("."),
    run: Annotated[bool, typer.Option("--run", help="Screen it again now (a new record; the newest counts).")] = False,
    review: Annotated[
        Path | None,
        typer.Option(help="Write the suspect images here for review: the given boxes and the model's, as pre-labels."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="The review file's form: labelstudio or cvat.")] = "labelstudio",
    as_json: JsonFlag = False,
) -> None:
    """A batch's screening with the production model: likely label errors (missing, swapped,
    misplaced, spurious boxes), near copies of val or golden images, the class-mix shift, and
    what its policy did (`[screen]` in config.toml). Without --run it shows the recorded one.

    Review the suspects in Label Studio: `flywheel screen b0003 --review review-b0003`, then
    import review-b0003/tasks.json into a project (each class twice: given:NAME and model:NAME).
    Fix the labels, drop the fixed batch into the inbox again (a relabel), and `flywheel approve
    b0003` if the batch is held."""
    setup_logging()
    application = call(lambda: App(root))
    batch_id = call(lambda: parse_id(batch, "b"))
    found = call(lambda: application.cases.screen(batch_id)) if run else latest(application.store, batch_id)
    if found is None:
        call(lambda: _never(batch_id))
        return
    written = call(lambda: write_review(application, found, review, fmt)) if review else None
    if as_json:
        emit("screen", screening_json(found) | {"review": str(written) if written else None})
        return
    _print(found)
    if written:
        out.print(f"review file: {written}")


def _never(batch_id: int) -> None:
    raise NotFound(f"batch {batch_name(batch_id)} was never screened; screen it with `flywheel screen --run`")


def approve(
    batch: BatchArg,
    root: Root = Path("."),
    actor: Annotated[str, typer.Option(help="Who approves, for the record.")] = "cli",
    as_json: JsonFlag = False,
) -> None:
    """Release a batch its screening holds: its version (and the ones after) may train now."""
    application = call(lambda: App(root))
    batch_id = call(lambda: parse_id(batch, "b"))
    released = call(lambda: application.cases.approve(batch_id, actor))
    if as_json:
        emit("screen", screening_json(released))
        return
    out.print(f"{batch_name(batch_id)} approved by {actor}: the daemon trains it at its next step")


def _print(s: Screening) -> None:
    model = model_name(s.model_id) if s.model_id else "none"
    out.print(f"{batch_name(s.batch_id)} ({version_name(s.version_id)}), screened with {model}: {s.state}")
    out.print(f"  {s.note}", highlight=False)
    labels = s.checks.get("label_errors", {})
    if labels.get("thresholds"):
        c = labels["calibration"]
        flags = ", ".join(f"{k} {v:.2f}" for k, v in labels["thresholds"].items())
        source = f"{c['images']} val images ({c['boxes']} boxes)" if c["images"] else "nothing (no val boxes: fixed)"
        out.print(
            f"  label thresholds {flags}: calibrated on {source} at false_positive_rate {c['false_positive_rate']}",
            highlight=False,
        )
    table = Table("check", "kind", "image", "split", "score", "why", title=f"{len(s.suspects)} suspects")
    for x in s.suspects:
        table.add_row(str(x.check), x.kind, x.image_sha256[:12] or "(batch)", x.split, f"{x.score:.2f}", x.why)
    if s.suspects:
        out.print(table)


def screening_json(s: Screening) -> Json:
    """`flywheel screen --json` (flywheel.screen/1 in docs/cli-json.md)."""
    return {
        "batch": batch_name(s.batch_id),
        "version": version_name(s.version_id),
        "model": ref(model_name, s.model_id),
        "state": str(s.state),
        "note": s.note,
        "images": s.images,
        "checks": s.checks,
        "quarantined": list(s.quarantined),
        "created_at": iso(s.created_at),
        "decided_at": iso(s.decided_at),
        "decided_by": s.decided_by or None,
        "suspects": [
            {
                "check": str(x.check),
                "kind": x.kind,
                "image": x.image_sha256 or None,
                "split": x.split or None,
                "score": x.score,
                "why": x.why,
                "box": list(x.box) or None,
                "class": x.cls if x.cls >= 0 else None,
                "predicted": list(x.predicted) or None,
            }
            for x in s.suspects
        ],
    }


def write_review(application: App, s: Screening, out_dir: Path, fmt: str) -> Path:
    """The suspect images as a pre-label package (prelabel/writers.py): each class twice,
    `given:NAME` for the boxes in the batch and `model:NAME` for the model's boxes behind the
    findings, so the reviewer sees both and keeps the right one."""
    if fmt not in ("labelstudio", "cvat"):
        raise NotFound(f"--format {fmt}: the review file is labelstudio or cvat")
    version = batch_version(application.store, s.batch_id)
    names = version.class_names
    wanted = {x.image_sha256 for x in s.suspects if x.image_sha256}
    items = [i for sha, i in application.store.manifest(version.id).items() if sha in wanted]
    files = ScreenFolders(application.objects, out_dir.parent, application.paths.quarantine)
    images, labels = files.stage(f".stage-{out_dir.name}", items)
    predictions = []
    for image in images:
        sha = Path(image.name).stem
        given = [_given(b, image.width, image.height) for b in labels.get(sha, [])]
        behind = {x.predicted for x in s.suspects if x.image_sha256 == sha and x.predicted}
        model = [Box(len(names) + int(p[0]), p[1], p[2], p[3], p[4], p[5]) for p in behind]
        predictions.append(Prediction(image.name, image.path, image.width, image.height, tuple(given + model)))
    both = [f"given:{n}" for n in names] + [f"model:{n}" for n in names]
    try:
        return writers.write(fmt, out_dir, predictions, both, f"screen {batch_name(s.batch_id)}")
    finally:
        files.clear(f".stage-{out_dir.name}")


def _given(b: tuple[int, float, float, float, float], width: int, height: int) -> Box:
    cls, cx, cy, w, h = b
    return Box(cls, 1.0, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)


def register(app: typer.Typer) -> None:
    app.command()(screen)
    app.command()(approve)

"""The data a data root holds, as it comes in: `flywheel ingest PATH` (a batch by hand),
`flywheel versions` (the dataset versions it made), `flywheel quarantine` (the files refused,
with their reasons) and `flywheel quarantine retry BATCH` (send the fixed files back in).
Registered on the main CLI by `register(app)`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.app import App
from flywheel.cli.common import Root, call, out, setup_logging, styled
from flywheel.cli.jsonout import Json, JsonFlag, emit, version_json
from flywheel.cli.screen import screening_json
from flywheel.cli.status import screened
from flywheel.core.domain import batch_name, version_name
from flywheel.core.errors import Busy, ExitCode
from flywheel.ingest import quarantine
from flywheel.store.data_root import DataRootLock

quarantine_app = typer.Typer(
    help="Quarantined files and why: list them, or `retry BATCH` once they are fixed in quarantine/BATCH/."
)


def ingest(
    path: Annotated[
        Path,
        typer.Argument(help="A batch: a folder, .zip or .tar.gz in YOLO, COCO or Pascal VOC form.", exists=True),
    ],
    root: Root = Path("."),
) -> None:
    """Ingest a batch folder by hand, exactly as the daemon would. The folder is left as it is
    (bad files are copied to quarantine/); the daemon must not be running on the same root."""
    setup_logging()
    application = call(lambda: App(root))
    lock = call(lambda: DataRootLock(application.paths.root).__enter__())  # Busy: exit 5, no traceback
    try:
        result = call(lambda: application.ingest(path.resolve(), move=False))
    finally:
        lock.close()
    b = result.batch
    out.print(
        f"{batch_name(b.id)} {b.state}: {result.accepted} images accepted, {result.new_images} new, "
        f"{len(result.quarantined)} files quarantined"
    )
    for rel, why in result.quarantined:
        out.print(styled("  ", ("quarantined", "yellow"), f" {rel}: {why}"), highlight=False)
    if b.reason:
        out.print(styled("  ", ("rejected", "red"), f": {b.reason}"), highlight=False)
    out.print(f"  version: {version_name(result.version.id) if result.version else 'unchanged'}")
    if b.state == "rejected":
        raise typer.Exit(ExitCode.FAILED)


def versions(root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """Dataset versions: parent, sizes, classes."""
    store = call(lambda: App(root)).store
    if as_json:
        emit("versions", {"versions": [version_json(v) for v in store.versions()]})
        return
    table = Table("version", "parent", "created (UTC)", "train", "val", "boxes", "classes")
    for v in store.versions():
        table.add_row(
            version_name(v.id),
            version_name(v.parent_id) if v.parent_id else "-",
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
            str(v.train_images),
            str(v.val_images),
            str(v.boxes),
            ", ".join(v.class_names),
        )
    out.print(table)


@quarantine_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """Every quarantined file, by batch, with its reason code and what is wrong."""
    if ctx.invoked_subcommand is not None:
        return
    application = call(lambda: App(root))
    entries = quarantine.list_quarantine(application.paths.quarantine)
    held_out = [s for s in screened(application.store) if s.quarantined]
    if as_json:
        emit("quarantine", quarantine_data(entries) | {"screened": [screening_json(s) for s in held_out]})
        return
    for s in held_out:  # versioned, but left out of training by the screening's policy
        b = batch_name(s.batch_id)
        out.print(f"{b}: {len(s.quarantined)} train images left out by its screening ({s.note});")
        out.print(f"  their copies and reasons: quarantine/{b}/screen/; `flywheel screen {b}`")
    if not entries:
        out.print("nothing in quarantine")
        return
    for entry in entries:
        table = Table("file", "code", "reason", title=f"{entry.label} ({entry.folder})", title_justify="left")
        for f in entry.files:
            table.add_row(f["path"], f.get("code", ""), f["reason"])
        for n in entry.notes:  # kept, but changed on the way: worth a look
            table.add_row(n["path"], n.get("code", ""), f"kept: {n['detail']}")
        out.print(table)
        if entry.reason:
            out.print(f"  batch refused: {entry.reason}", highlight=False)
    out.print("fix the files in place, then: flywheel quarantine retry BATCH")


def quarantine_data(entries: list[quarantine.Quarantined]) -> Json:
    """`flywheel quarantine --json` (flywheel.quarantine/1 in docs/cli-json.md)."""
    return {
        "batches": [
            {
                "batch": m.group(0) if (m := re.match(r"b\d+(?=-)", e.label)) else None,
                "folder": str(e.folder),
                "refused": e.reason,
                "files": [{"path": f["path"], "code": f.get("code"), "reason": f["reason"]} for f in e.files],
                "notes": [{"path": n["path"], "code": n.get("code"), "detail": n["detail"]} for n in e.notes],
            }
            for e in entries
        ]
    }


@quarantine_app.command()
def retry(
    batch: Annotated[str, typer.Argument(help="The batch, e.g. b0003 (see `flywheel quarantine`).")],
    root: Root = Path("."),
) -> None:
    """Re-ingest a batch after fixing its files in quarantine/BATCH/: the batch as dropped, with
    the fixed files laid over it, goes into the inbox as a new batch."""
    application = call(lambda: App(root))
    paths, marker = application.paths, application.config.inbox.marker
    staged = call(lambda: quarantine.retry(paths.quarantine, paths.done, paths.inbox, batch, marker))
    try:
        with DataRootLock(paths.root):
            result = call(lambda: application.ingest(staged, move=True))
    except Busy:
        out.print(f"staged as {staged}; the running daemon ingests it")
        return
    b = result.batch
    out.print(
        f"{staged.name}: batch {b.id} {b.state}, {result.accepted} images accepted, "
        f"{len(result.quarantined)} files quarantined"
    )


def register(app: typer.Typer) -> None:
    for command in (ingest, versions):
        app.command()(command)
    app.add_typer(quarantine_app, name="quarantine")

"""`flywheel quarantine` (list quarantined files with their reasons) and `flywheel quarantine
retry BATCH` (send the fixed files back in). Registered on the main CLI by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.app import App, DataRootLock
from flywheel.cli.common import Root, call, out
from flywheel.core.errors import Busy
from flywheel.ingest import quarantine

quarantine_app = typer.Typer(
    help="Quarantined files and why: list them, or `retry BATCH` once they are fixed in quarantine/BATCH/."
)


@quarantine_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, root: Root = Path(".")) -> None:
    """Every quarantined file, by batch, with its reason code and what is wrong."""
    if ctx.invoked_subcommand is not None:
        return
    application = call(lambda: App(root))
    entries = quarantine.list_quarantine(application.paths.quarantine)
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
    app.add_typer(quarantine_app, name="quarantine")

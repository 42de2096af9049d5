"""`flywheel mirror`: the registry's mirror in MLflow ([mlflow] in config.toml), by hand."""

from __future__ import annotations

from pathlib import Path

import typer

from flywheel.app import App
from flywheel.cli.common import Root, call, err, out
from flywheel.cli.jsonout import Json, JsonFlag, emit
from flywheel.core.errors import ExitCode
from flywheel.core.mirror import MirrorStatus

mirror_app = typer.Typer(
    help="The mirror of runs, models and the production alias in MLflow ([mlflow] tracking_uri): "
    "`sync` catches up what waits."
)


@mirror_app.command()
def sync(root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """Bring MLflow up to flywheel's registry now: log the finished runs it lacks, register the
    models, move the `production` and `candidate` aliases. The daemon does this at each step;
    this is for when it is stopped, or to see at once what still waits and why. Exit 1 when
    something still waits (MLflow unreachable), 0 when MLflow holds everything; with --json the
    document is printed either way."""
    application = call(lambda: App(root))
    uri = application.config.mlflow.tracking_uri
    if not uri:
        if as_json:
            emit("mirror.sync", sync_data(MirrorStatus(target="", up=None), uri))
            return
        out.print("no mirror: [mlflow] tracking_uri is empty in config.toml (nothing to sync)")
        return
    status = call(lambda: application.cases.sync_mirror(force=True))
    if as_json:
        emit("mirror.sync", sync_data(status, uri))
        if status.pending:
            raise typer.Exit(ExitCode.FAILED)
        return
    if not status.pending:
        out.print(f"{status.target}: up to date ({application.config.mlflow.tracking_uri})")
        return
    for item in status.pending:
        out.print(f"waiting: {item}")
    err.print(f"{status.target}: {len(status.pending)} waiting: {status.error or 'not reached'}")
    raise typer.Exit(ExitCode.FAILED)


def sync_data(status: MirrorStatus, uri: str) -> Json:
    """`flywheel mirror sync --json` (flywheel.mirror.sync/1 in docs/cli-json.md)."""
    return {
        "target": status.target or None,
        "tracking_uri": uri or None,
        "up": status.up,
        "pending": list(status.pending),
        "error": status.error or None,
    }


def register(app: typer.Typer) -> None:
    app.add_typer(mirror_app, name="mirror")

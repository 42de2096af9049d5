"""`flywheel mirror`: the registry's mirror in MLflow ([mlflow] in config.toml), by hand."""

from __future__ import annotations

from pathlib import Path

import typer

from flywheel.app import App
from flywheel.cli.common import Root, call, err, out
from flywheel.core.errors import ExitCode

mirror_app = typer.Typer(
    help="The mirror of runs, models and the production alias in MLflow ([mlflow] tracking_uri): "
    "`sync` catches up what waits."
)


@mirror_app.command()
def sync(root: Root = Path(".")) -> None:
    """Bring MLflow up to flywheel's registry now: log the finished runs it lacks, register the
    models, move the `production` and `candidate` aliases. The daemon does this at each step;
    this is for when it is stopped, or to see at once what still waits and why. Exit 1 when
    something still waits (MLflow unreachable), 0 when MLflow holds everything."""
    application = call(lambda: App(root))
    if not application.config.mlflow.tracking_uri:
        out.print("no mirror: [mlflow] tracking_uri is empty in config.toml (nothing to sync)")
        return
    status = call(lambda: application.cases.sync_mirror(force=True))
    if not status.pending:
        out.print(f"{status.target}: up to date ({application.config.mlflow.tracking_uri})")
        return
    for item in status.pending:
        out.print(f"waiting: {item}")
    err.print(f"{status.target}: {len(status.pending)} waiting: {status.error or 'not reached'}")
    raise typer.Exit(ExitCode.FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(mirror_app, name="mirror")

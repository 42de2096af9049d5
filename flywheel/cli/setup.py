"""`flywheel init`, `flywheel run` and `flywheel demo`: make a data root and run the daemon on it
(the demo does both, with a sample batch). Registered on the main CLI by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.app import App, build_daemon, init_data_root
from flywheel.cli.common import Root, call, out, setup_logging


def init(directory: Annotated[Path, typer.Argument(help="Folder to create (or complete).")]) -> None:
    """Create a data root: config.toml (every key documented), inbox/, an empty SQLite database."""
    root = call(lambda: init_data_root(directory))
    out.print(f"data root ready: {root}\n  edit {root / 'config.toml'}, then: flywheel run --root {root}")


def run(root: Root = Path(".")) -> None:
    """Run the daemon in the foreground: watch inbox/, ingest, train, gate, serve /metrics.

    Stops cleanly on SIGTERM or Ctrl-C (a running training is stopped and recorded as cancelled);
    a second signal exits at once.
    """
    from flywheel.service.daemon import serve

    application = call(lambda: App(root))
    setup_logging(application.config.log_level)
    call(lambda: serve(build_daemon(root)))


def demo(
    directory: Annotated[Path, typer.Argument(help="Data root to create for the demo.")] = Path("demo-data"),
    sample: Annotated[
        Path | None,
        typer.Option(
            help="A YOLO dataset (images/, labels/, data.yaml) to take the two batches and the new "
            "images from, instead of generated ones (trained at 160 px: expect lower scores in the demo's budget)."
        ),
    ] = None,
    images: Annotated[int, typer.Option(help="Images in each demo batch.")] = 60,
) -> None:
    """Set up a data root, run the daemon, drop two batches (the second adds a class), show what
    the gate decided for each, and pre-label new images with the production model."""
    from flywheel.cli.demo import run_demo

    setup_logging()
    call(lambda: run_demo(directory, sample, images, out))


def register(app: typer.Typer) -> None:
    for command in (init, run, demo):
        app.command()(command)

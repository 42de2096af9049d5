"""The `flywheel` command: each subcommand is one call into the core, errors become exit codes.

This module only makes the typer app (its help, with the exit codes written from
flywheel.core.errors.EXIT_CODE_MEANINGS, and --version) and registers the command groups, one
module each: setup (init, run, demo), data (ingest, versions, quarantine), train, status,
models (the registry and the gate), predict and suggest (pre-labels and what to label next),
label (the Label Studio round trip).
"""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel import __version__
from flywheel.cli import data, gc, label, mirror, models, predict, screen, serve, setup, status, suggest, train
from flywheel.cli.common import out
from flywheel.core.errors import EXIT_CODE_MEANINGS

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\nA data root holds config.toml, inbox/, the database and every "
    "version and model. Start with `flywheel init DIR`, then `flywheel run --root DIR` and drop labeled "
    "batches (images + YOLO labels + data.yaml or classes.txt) into DIR/inbox/.\n\nExit codes: "
    + "; ".join(f"{int(code)} {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())
    + ".",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
)

# The order `flywheel --help` lists the commands in (typer lists them as registered, commands
# before groups): fixed here, so moving a command between modules does not reorder the help.
HELP_ORDER = (
    "init", "run", "ingest", "train", "rollback", "status", "versions", "demo",
    "promote", "pin", "unpin", "history", "compare", "predict", "suggest", "label",
    "gc", "models", "audit", "quarantine", "screen", "approve", "serve", "mirror",
)  # fmt: skip


def version_callback(value: bool) -> None:
    if value:
        out.print(f"flywheel {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _listed_at(name: str | None) -> int:
    return HELP_ORDER.index(name) if name in HELP_ORDER else len(HELP_ORDER)


for group in (setup, data, train, status, models, predict, suggest, label, gc, screen, serve, mirror):
    group.register(app)
app.registered_commands.sort(key=lambda c: _listed_at(c.name or (c.callback.__name__ if c.callback else None)))
app.registered_groups.sort(key=lambda g: _listed_at(g.name))

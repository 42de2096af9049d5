"""What every CLI module shares: the --root option, consoles, logging, error → exit code."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from flywheel.core.errors import ExitCode, FlywheelError

# soft_wrap: messages name files, and a path broken over two lines cannot be pasted back (nor
# found by grep); the terminal wraps long lines itself. Tables still fit the terminal's width.
# markup=False: messages interpolate paths, reasons and foreign errors, and a "[bold]" in any
# of them would be read as Rich markup and vanish; a styled word goes in as Text (`styled`).
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
T = TypeVar("T")

Root = Annotated[
    Path,
    typer.Option(
        "--root", "-r", envvar="FLYWHEEL_ROOT", help="The data root (made by `flywheel init`).", file_okay=False
    ),
]


def styled(*parts: str | tuple[str, str]) -> Text:
    """A message from plain strings and (text, style) pairs: `styled("  ", ("skipped", "yellow"),
    f" {name}: {why}")`. Only the pairs are styled; every string prints as written."""
    return Text.assemble(*parts)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise


def call(fn: Callable[[], T]) -> T:
    """Run one call into the core; a FlywheelError becomes its message and its exit code."""
    try:
        return fn()
    except FlywheelError as exc:
        # The message goes in as Text, not markup: a path or a foreign error's "[...]" stays as written.
        err.print(Text.assemble(("error:", "red"), " ", str(exc)), highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.INTERRUPTED) from None

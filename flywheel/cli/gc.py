"""`flywheel gc`: free what the retention policy ([retention] in config.toml) says may go."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.app import App
from flywheel.cli.common import Root, call, out
from flywheel.cli.jsonout import JsonFlag, emit
from flywheel.flow.gc import human_bytes, usage_by_area
from flywheel.flow.registry import current_actor
from flywheel.store.data_root import DataRootLock


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="List what would go and why; remove nothing.")
    ] = False,
    root: Root = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Remove what the retention policy allows: copies the registry already holds, checkpoints
    only a resume could read, old rejected models' weights, old logs, quarantine and processed
    batches ([retention] in config.toml says which and how old). Never a model that was ever
    production, a candidate, the ledger, a dataset version or anything a resume needs. Safe to
    kill at any moment. The running daemon does this every retention.gc_interval_hours; a real
    gc here needs the daemon stopped (`--dry-run` does not)."""
    application = call(lambda: App(root))
    lock = None if dry_run else call(lambda: DataRootLock(application.paths.root).__enter__())
    try:
        result = call(lambda: application.cases.collect_garbage(current_actor(), dry_run=dry_run))
    finally:
        if lock is not None:
            lock.close()
    if as_json:
        emit(
            "gc",
            {
                "dry_run": dry_run,
                "freed_bytes": result.freed,
                "removals": [
                    {"path": r.path, "area": r.area.value, "bytes": r.size, "why": r.why} for r in result.removals
                ],
                "usage_bytes": usage_by_area(application.paths.root),
            },
        )
        return
    if not result.removals:
        out.print("nothing to remove under the retention policy ([retention] in config.toml)")
        return
    table = Table("path", "size", "why", title="would remove" if dry_run else "removed")
    for r in result.removals:
        table.add_row(r.path, human_bytes(r.size), r.why)
    out.print(table)
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {human_bytes(result.freed)} in {len(result.removals)} paths")


def register(app: typer.Typer) -> None:
    app.command()(gc)

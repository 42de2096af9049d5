"""`flywheel status`: the production model, the newest version, the last runs and batches.
Registered on the main CLI by `register(app)`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from flywheel.app import App
from flywheel.cli.common import Root, call, out, styled
from flywheel.cli.jsonout import Json, JsonFlag, batch_json, emit, iso, model_json, run_json, version_json
from flywheel.cli.screen import screening_json
from flywheel.cli.train import progress_of
from flywheel.core.domain import batch_name, model_name, run_name, version_name
from flywheel.core.events import placement_text
from flywheel.core.plan import refresh_outlook
from flywheel.core.ports import StorePort
from flywheel.core.screening import Screening
from flywheel.flow.cycle import generations

LAST = 10  # runs and batches shown


def status(root: Root = Path("."), as_json: JsonFlag = False) -> None:
    """Production model, newest version, last runs and batches."""
    application = call(lambda: App(root))
    if as_json:
        emit("status", status_data(application))
        return
    store = application.store
    prod = store.production()
    latest = store.latest_version()
    out.print(f"data root: {application.paths.root}")
    out.print(f"production: {model_name(prod.id) + ' (' + version_name(prod.version_id) + ')' if prod else 'none'}")
    out.print(
        f"newest version: {version_name(latest.id) if latest else 'none'}"
        + (f" ({latest.train_images} train / {latest.val_images} val images)" if latest else "")
    )
    problem = application.registry.production_problem()
    if problem:
        out.print(
            styled(
                ("production is damaged", "red"),
                f": {problem}. The daemon restores a damaged copy from the intact one at its next step; if "
                "both are damaged, `flywheel rollback --reason '...'` serves the previous model, or restore "
                "the file from a backup",
            ),
            highlight=False,
        )
    held = export_held(application)
    if held:
        out.print(styled(("promotion held: export_failed", "red"), f": {held}"), highlight=False)
    out.print(f"refresh: {_refresh(application)}")
    table = Table("run", "version", "state", "start", "epochs", "model", "where", "error", title="training runs")
    for r in store.runs()[-LAST:]:
        table.add_row(
            run_name(r.id),
            version_name(r.version_id),
            r.state,
            r.start_kind,
            progress_of(r),
            model_name(r.model_id) if r.model_id else "-",
            placement_text(r.environment or {}) or "-",
            r.error or "",
        )
    out.print(table)
    batches = Table("batch", "name", "state", "accepted", "new", "quarantined", "version", title="batches")
    for b in store.batches()[-LAST:]:
        batches.add_row(
            batch_name(b.id),
            b.name,
            b.state,
            str(b.images_ok),
            str(b.images_new),
            str(b.quarantined),
            version_name(b.version_id) if b.version_id else "-",
        )
    out.print(batches)
    for s in screened(store):
        out.print(f"screening {batch_name(s.batch_id)}: {s.state}, {s.note}", highlight=False)


def _refresh(application: App) -> str:
    t = application.config.training
    return refresh_outlook(generations(application.store), t.refresh_growth, t.scratch_challenger_every)


def export_held(application: App) -> str:
    """Why the newest candidate the gate passed is not production (its exports), and what to
    do; "" when it is not held for that."""
    store = application.store
    decisions = store.gate_decisions()
    last = decisions[-1] if decisions else None
    if last is None or not last.held or last.details.export_failed is None:
        return ""
    if store.model(last.candidate_model_id).status != "candidate":
        return ""  # promoted or rejected since
    return last.details.export_failed.message


def status_data(application: App) -> Json:
    """`flywheel status --json` (flywheel.status/1 in docs/cli-json.md)."""
    store = application.store
    prod, latest, pin = store.production(), store.latest_version(), store.pin()
    score = store.evaluation(prod.sha256, store.version(prod.version_id).val_sha256) if prod else None
    return {
        "root": str(application.paths.root),
        "production": model_json(prod, score) if prod else None,
        "production_problem": application.registry.production_problem() or None,
        "pinned": {"at": iso(pin.at), "actor": pin.actor, "reason": pin.reason} if pin else None,
        "export_held": export_held(application) or None,
        "newest_version": version_json(latest) if latest else None,
        "refresh": _refresh(application),
        "runs": [run_json(r) for r in store.runs()[-LAST:]],
        "batches": [batch_json(b) for b in store.batches()[-LAST:]],
        "screenings": [screening_json(s) for s in screened(store)],
    }


def screened(store: StorePort) -> list[Screening]:
    """The newest screening of each of the last batches."""
    newest = {s.batch_id: s for s in store.screenings()}
    return [newest[k] for k in sorted(newest)[-LAST:]]


def register(app: typer.Typer) -> None:
    app.command()(status)

"""The `flywheel` command: each subcommand is one call into the core, errors become exit codes.

The exit codes `--help` lists are written from flywheel.core.errors.EXIT_CODE_MEANINGS.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel import __version__
from flywheel.app import App, DataRootLock, build_daemon, init_data_root
from flywheel.cli import ingest as ingest_commands
from flywheel.cli import models as cli_models
from flywheel.cli import predict as predict_commands
from flywheel.cli.common import Root, call, err, out, setup_logging
from flywheel.cli.train import progress_of, run_ending
from flywheel.core.domain import batch_name, model_name, parse_id, run_name, version_name
from flywheel.core.errors import EXIT_CODE_MEANINGS, Busy, ExitCode
from flywheel.core.plan import refresh_outlook
from flywheel.flow.cycle import generations
from flywheel.flow.registry import current_actor

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
_logging = setup_logging
_call = call


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to create (or complete).")]) -> None:
    """Create a data root: config.toml (every key documented), inbox/, an empty SQLite database."""
    root = _call(lambda: init_data_root(directory))
    out.print(f"data root ready: {root}\n  edit {root / 'config.toml'}, then: flywheel run --root {root}")


@app.command()
def run(root: Root = Path(".")) -> None:
    """Run the daemon in the foreground: watch inbox/, ingest, train, gate, serve /metrics.

    Stops cleanly on SIGTERM or Ctrl-C (a running training is stopped and recorded as cancelled);
    a second signal exits at once.
    """
    from flywheel.service.daemon import serve

    application = _call(lambda: App(root))
    _logging(application.config.log_level)
    _call(lambda: serve(build_daemon(root)))


@app.command()
def ingest(
    path: Annotated[
        Path,
        typer.Argument(help="A batch: a folder, .zip or .tar.gz in YOLO, COCO or Pascal VOC form.", exists=True),
    ],
    root: Root = Path("."),
) -> None:
    """Ingest a batch folder by hand, exactly as the daemon would. The folder is left as it is
    (bad files are copied to quarantine/); the daemon must not be running on the same root."""
    _logging()
    application = _call(lambda: App(root))
    lock = _call(lambda: DataRootLock(application.paths.root).__enter__())  # Busy: exit 5, no traceback
    try:
        result = _call(lambda: application.ingest(path.resolve(), move=False))
    finally:
        lock.close()
    b = result.batch
    out.print(
        f"{batch_name(b.id or 0)} {b.state}: {result.accepted} images accepted, {result.new_images} new, "
        f"{len(result.quarantined)} files quarantined"
    )
    for rel, why in result.quarantined:
        out.print(f"  [yellow]quarantined[/yellow] {rel}: {why}", highlight=False)
    if b.reason:
        out.print(f"  [red]rejected[/red]: {b.reason}", highlight=False)
    out.print(f"  version: {version_name(result.version.id or 0) if result.version else 'unchanged'}")
    if b.state == "rejected":
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def train(
    root: Root = Path("."),
    version: Annotated[str | None, typer.Option(help="Version to train (default: the newest).")] = None,
    start_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start point: `production` (the default once there is one), `base` (model.base), a model "
            "id such as m0003, a model YAML (yolov8n.yaml: from scratch) or a .pt path (weights you provide).",
        ),
    ] = None,
    cancel: Annotated[
        bool,
        typer.Option(
            "--cancel",
            help="Stop the training running now (the daemon's or another `flywheel train`'s) after its "
            "current batch; it is recorded as cancelled.",
        ),
    ] = False,
    wait: Annotated[float, typer.Option(help="With --cancel: seconds to wait for it to stop.")] = 120.0,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="When the daemon runs: wait for the training it starts for you (default), or only queue it.",
        ),
    ] = True,
) -> None:
    """Train now on the newest version (or --version), then gate and promote or reject.

    While the daemon runs (it holds the data root), the training is asked of the daemon and
    goes through its one queue: it starts at the daemon's next step, after any batch being
    ingested and any training already running, whatever min_new_images or the schedule say.
    """
    from flywheel.cli.train import TrainProgress, cancel_running, through_daemon

    _logging()
    if cancel:
        application = _call(lambda: App(root))
        runs = _call(lambda: cancel_running(application, current_actor(), wait))
        if not runs:
            err.print("no training is running")
            raise typer.Exit(ExitCode.FAILED)
        for r in runs:
            out.print(f"run {run_name(r.id or 0)}: {r.state}" + (f" ({r.error})" if r.error else ""))
        raise typer.Exit(ExitCode.OK if all(r.state != "running" for r in runs) else ExitCode.FAILED)
    progress = TrainProgress(err)
    application = _call(lambda: App(root, observer=progress))
    lock = DataRootLock(application.paths.root)
    try:
        lock.__enter__()
    except Busy:
        vid_asked = _call(lambda: parse_id(version, "v")) if version else None
        run = through_daemon(application, vid_asked, start_from, current_actor(), err, follow)
        if run is not None:  # the same ending as a local training: the model and the gate's word on it
            for line in run_ending(application.store, run):
                out.print(line, highlight=False)
            raise typer.Exit(ExitCode.OK if run.state == "succeeded" else ExitCode.FAILED) from None
        if follow:
            err.print(
                "error: the daemon made no run for this request (no dataset version, or a bad --from): see its log"
            )
            raise typer.Exit(ExitCode.FAILED) from None
        return
    with contextlib.closing(lock), progress:  # the lock is held already: only released here
        latest = application.store.latest_version()
        if version is None and latest is None:
            err.print("error: no dataset version yet: ingest a batch first (`flywheel ingest PATH`)")
            raise typer.Exit(ExitCode.FAILED)
        vid = _call(lambda: parse_id(version, "v")) if version else latest.id  # type: ignore[union-attr]
        result = _call(lambda: application.train(vid or 0, start_from=start_from))
    for line in run_ending(application.store, result.run):
        out.print(line, highlight=False)


@app.command()
def rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the production ledger).")],
    to: Annotated[str | None, typer.Option("--to", help="A retired model id, e.g. m0003.")] = None,
    root: Root = Path("."),
) -> None:
    """Make the previous production model production again (or --to MODEL_ID). Instant: no
    training and no evaluation; recorded with who, when and why."""
    application = _call(lambda: App(root))
    target = _call(lambda: parse_id(to, "m")) if to else None
    entry = _call(lambda: application.registry.rollback(reason, to=target, actor=current_actor()))
    out.print(
        f"production is now {model_name(entry.model_id or 0)} (was {model_name(entry.previous_model_id or 0)}); "
        f"recorded for {entry.actor}: {entry.reason}"
    )


@app.command()
def status(root: Root = Path(".")) -> None:
    """Production model, newest version, last runs and batches."""
    application = _call(lambda: App(root))
    store = application.store
    prod = store.production()
    latest = store.latest_version()
    out.print(f"data root: {application.paths.root}")
    out.print(
        f"production: {model_name(prod.id or 0) + ' (' + version_name(prod.version_id) + ')' if prod else 'none'}"
    )
    out.print(
        f"newest version: {version_name(latest.id or 0) if latest else 'none'}"
        + (f" ({latest.train_images} train / {latest.val_images} val images)" if latest else "")
    )
    problem = application.registry.production_problem()
    if problem:
        out.print(
            f"[red]production is damaged[/red]: {problem}. The daemon restores a damaged copy from the intact "
            "one at its next step; if both are damaged, `flywheel rollback --reason '...'` serves the previous "
            "model, or restore the file from a backup",
            highlight=False,
        )
    t = application.config.training
    out.print(f"refresh: {refresh_outlook(generations(store), t.refresh_growth, t.scratch_challenger_every)}")
    table = Table("run", "version", "state", "start", "epochs", "model", "error", title="training runs")
    for r in store.runs()[-10:]:
        table.add_row(
            run_name(r.id or 0),
            version_name(r.version_id),
            r.state,
            r.start_kind,
            progress_of(r),
            model_name(r.model_id) if r.model_id else "-",
            r.error or "",
        )
    out.print(table)
    batches = Table("batch", "name", "state", "accepted", "new", "quarantined", "version", title="batches")
    for b in store.batches()[-10:]:
        batches.add_row(
            batch_name(b.id or 0),
            b.name,
            b.state,
            str(b.images_ok),
            str(b.images_new),
            str(b.quarantined),
            version_name(b.version_id) if b.version_id else "-",
        )
    out.print(batches)


@app.command()
def versions(root: Root = Path(".")) -> None:
    """Dataset versions: parent, sizes, classes."""
    store = _call(lambda: App(root)).store
    table = Table("version", "parent", "created (UTC)", "train", "val", "boxes", "classes")
    for v in store.versions():
        table.add_row(
            version_name(v.id or 0),
            version_name(v.parent_id) if v.parent_id else "-",
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
            str(v.train_images),
            str(v.val_images),
            str(v.boxes),
            ", ".join(v.class_names),
        )
    out.print(table)


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Data root to create for the demo.")] = Path("demo-data"),
    sample: Annotated[
        Path | None,
        typer.Option(
            help="A YOLO dataset (images/, labels/, data.yaml) to take the "
            "batch from; default: BCCD if found, else generated images."
        ),
    ] = None,
    images: Annotated[int, typer.Option(help="Images in the demo batch.")] = 40,
) -> None:
    """Set up a data root, run the daemon, drop one sample batch, wait for a promoted model."""
    from flywheel.cli.demo import run_demo

    _logging()
    _call(lambda: run_demo(directory, sample, images, out))


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


cli_models.register(app)
ingest_commands.register(app)
predict_commands.register(app)

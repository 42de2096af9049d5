"""`flywheel demo`: two turns of the flywheel on this machine in under a minute (2 idle cores).

Creates a data root with small, fast settings, runs the daemon in this process, and drops two
generated batches into the inbox: red and blue rectangles on noise, then a batch that adds a
green class. Each is versioned, trained, gated and promoted (or not) by the daemon, and the
demo prints what the gate saw: the first model detects the shapes (mAP50 well above zero on its
val split), the second is scored beside the first on the same val images. Then `flywheel
predict` pre-labels a few new images with the production model. A YOLO dataset can stand in
for the generated batches (`--sample`); nothing is downloaded.
"""

from __future__ import annotations

import logging
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from flywheel.app import App, init_data_root
from flywheel.cli.common import styled
from flywheel.core.domain import RunState, model_name, version_name
from flywheel.core.errors import FlywheelError
from flywheel.core.records import Run
from flywheel.ingest.layout import read_class_names

# Measured on 2 CPU cores (docs/benchmarks.md, "The demo"): 12 epochs of AdamW at a small fixed
# LR with one warm-up epoch and no mosaic is enough for 60 images of 64 px to be detected;
# Ultralytics' defaults (SGD or an auto LR, 3 warm-up epochs, mosaic) spend that whole budget
# warming up and score 0.
DEMO_CONFIG = """\
# Demo settings: small and fast. The documented defaults are in the repository's config.toml.
[inbox]
settle_seconds = 1.0

[schedule]
debounce_seconds = 0.0             # the demo drops one batch at a time and waits for its model

[training]
epochs_scratch = 12
imgsz = {imgsz}
batch = 8
nbs = 8
optimizer = "AdamW"
lr0 = 0.002
warmup_epochs = 1.0
close_mosaic = 12
close_mosaic_warm = 12

[metrics]
port = 0
"""

COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}
FIRST_CLASSES = ("red", "blue")
SECOND_CLASSES = ("red", "blue", "green")  # the second batch adds a class


def synthetic_batch(
    folder: Path, count: int, seed: int, size: int = 64, classes: Sequence[str] = FIRST_CLASSES
) -> Path:
    """Images of coloured rectangles on noise (two per image, classes from `classes`, names in
    COLOURS), with exact YOLO labels and classes.txt."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    colours = [list(COLOURS[name]) for name in classes]
    for i in range(count):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        lines = []
        for _ in range(2):
            cls = int(rng.integers(0, len(classes)))
            w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            img[y : y + h, x : x + w] = colours[cls]
            lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        Image.fromarray(img).save(folder / "images" / f"s{seed}_{i:04d}.png")
        (folder / "labels" / f"s{seed}_{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return folder


def yolo_subset(source: Path, folder: Path, images: list[Path], names: list[str]) -> Path:
    """Copy `images` of a YOLO dataset and their labels into a batch folder."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    for image in images:
        label = Path(str(image.parent).replace("/images", "/labels")) / (image.stem + ".txt")
        shutil.copy2(image, folder / "images" / image.name)
        shutil.copy2(label, folder / "labels" / label.name)
    return folder


def drop(batch: Path, inbox: Path, marker: str = "READY") -> Path:
    """Move a finished batch into the inbox in one rename, then mark it complete."""
    target = inbox / batch.name
    shutil.move(str(batch), str(target))
    (target / marker).touch()
    return target


def run_demo(directory: Path, sample: Path | None, images: int, console: Console) -> None:
    from flywheel.app import build_daemon

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its migration lines are not the demo
    root = init_data_root(directory, DEMO_CONFIG.format(imgsz=160 if sample else 64))
    staging = root / ".demo-staging"
    shutil.rmtree(staging, ignore_errors=True)
    batches, new_images = _batches(sample, images, staging, root)
    daemon = build_daemon(root)
    thread = threading.Thread(target=daemon.run, name="flywheel-daemon", daemon=True)
    thread.start()
    if not daemon.ready.wait(60):
        raise FlywheelError("the daemon did not start within 60 s; see the log above")
    console.print(f"daemon up; metrics at http://127.0.0.1:{daemon.metrics_port}/metrics")
    app = App(root)
    try:
        for batch in batches:
            run = _turn(app, batch, root, thread, console)
            if run.state != RunState.SUCCEEDED:
                raise FlywheelError(f"demo training failed: {run.error}")
    finally:
        daemon.stop()
        thread.join(60)
    production = app.store.production()
    if production is None:
        raise FlywheelError("demo ended without a production model")
    console.print(f"production: {model_name(production.id)} -> {root / 'production' / 'model.pt'}")
    _predict(root, new_images, console)
    shutil.rmtree(staging, ignore_errors=True)
    console.print(
        f"next: flywheel models show {model_name(production.id)} --root {root}  (the gate, class by class)\n"
        f"      flywheel status --root {root}   |   flywheel rollback --root {root} --reason 'demo'"
    )


def _batches(sample: Path | None, images: int, staging: Path, root: Path) -> tuple[list[Path], Path]:
    """The two batches to drop, and a folder of new unlabeled images for `flywheel predict`."""
    new_images = root / "new-images"
    if sample is not None:
        names = read_class_names(sample / "data.yaml")
        pool = sorted(sample.glob("images/*/*.jpg")) + sorted(sample.glob("images/*/*.png"))
        random.Random(0).shuffle(pool)
        batches = [
            yolo_subset(sample, staging / f"batch{n + 1}", pool[n * images : (n + 1) * images], names) for n in range(2)
        ]
        new_images.mkdir(parents=True, exist_ok=True)
        for image in pool[2 * images : 2 * images + 5]:
            shutil.copy2(image, new_images / image.name)
        return batches, new_images
    batches = [
        synthetic_batch(staging / "batch1", images, seed=1, classes=FIRST_CLASSES),
        synthetic_batch(staging / "batch2", images, seed=2, classes=SECOND_CLASSES),
    ]
    unlabeled = synthetic_batch(staging / "new", 5, seed=3, classes=SECOND_CLASSES)
    shutil.copytree(unlabeled / "images", new_images)
    return batches, new_images


def _turn(app: App, batch: Path, root: Path, daemon: threading.Thread, console: Console) -> Run:
    """Drop one batch, wait for the daemon to train on it, print what the gate saw."""
    classes = (batch / "classes.txt").read_text().split()
    count = len(list((batch / "images").iterdir()))
    dropped = f": {count} images of {', '.join(classes)} dropped into {root / 'inbox'}"
    console.print(styled((batch.name, "bold"), dropped))
    started = time.monotonic()
    runs_before = len(app.store.runs())
    drop(batch, root / "inbox")
    while True:
        runs = app.store.runs()
        if len(runs) > runs_before and runs[runs_before].state not in (RunState.QUEUED, RunState.RUNNING):
            break
        if not daemon.is_alive():
            raise FlywheelError("the daemon stopped unexpectedly; see the log above")
        time.sleep(0.5)
    run = runs[runs_before]
    if run.state != RunState.SUCCEEDED or run.model_id is None:
        return run
    model = app.store.model(run.model_id)
    gate = next((g for g in app.store.gate_decisions() if g.run_id == run.id), None)
    how = f"{run.start_kind} from {model_name(run.start_model_id)}" if run.start_model_id else run.start_kind
    console.print(
        f"  {model_name(model.id)}: {run.epochs_done} epochs ({how}) in {time.monotonic() - started:.0f}s, "
        f"on {version_name(run.version_id)}"
    )
    if gate is None:
        console.print(styled("  ", (str(model.status), "bold")))
    elif gate.production_model_id is None:
        score = app.store.evaluation(model.sha256, gate.eval_sha256)
        map50 = f"mAP50 {score.score.map50:.3f}, " if score is not None else ""
        console.print(
            styled(
                f"  {map50}mAP50-95 {gate.candidate_map:.3f} on {version_name(run.version_id)}/val; ",
                (f"{gate.outcome}d", "bold"),
                " (the first model)",
            )
        )
    else:
        console.print(
            styled(
                f"  mAP50-95 {gate.candidate_map:.3f} vs {model_name(gate.production_model_id)}'s "
                f"{gate.production_map:.3f} on the same val images ({version_name(run.version_id)}/val): ",
                (f"{gate.outcome}d", "bold"),
                f" ({gate.rule}, margin {gate.margin:+.3f})",
            )
        )
    return run


def _predict(root: Path, images: Path, console: Console) -> None:
    """`flywheel predict` on the new images, as a user would run it."""
    out = root / "prelabels"
    command = [sys.executable, "-m", "flywheel", "predict", str(images), "--root", str(root), "--out", str(out)]
    console.print(f"pre-labelling {len(list(images.iterdir()))} new images: flywheel predict {images} --out {out}")
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise FlywheelError(f"flywheel predict failed (exit {done.returncode}); see the lines above")

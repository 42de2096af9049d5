"""`flywheel demo`: a whole turn of the flywheel on this machine in about a minute.

Creates a data root with small, fast settings, runs the daemon in this process, drops two
batches into the inbox (from BCCD's YOLO copy when found, else generated images), waits for
each to be versioned, trained, gated and promoted, and prints what happened.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

from rich.console import Console

from flywheel.app import App, build_daemon, init_data_root
from flywheel.core.domain import RunState, model_name
from flywheel.core.errors import FlywheelError
from flywheel.ingest.layout import read_class_names

DEMO_CONFIG = """\
# Demo settings: small and fast. The documented defaults are in the repository's config.toml.
[inbox]
settle_seconds = 1.0

[schedule]
debounce_seconds = 0.0             # the demo drops one batch at a time and waits for its model

[training]
epochs_scratch = 3
epochs_warm = 2
imgsz = {imgsz}
batch = 8

[metrics]
port = 0
"""

BCCD_CANDIDATES = (Path("../shared/datasets/bccd/yolo"), Path("shared/datasets/bccd/yolo"))


def synthetic_batch(folder: Path, count: int, seed: int, size: int = 64) -> Path:
    """Images of red and blue rectangles on noise, with exact YOLO labels and classes.txt."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("red\nblue\n")
    colours = ([220, 40, 40], [40, 40, 220])
    for i in range(count):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        lines = []
        for _ in range(2):
            cls = int(rng.integers(0, 2))
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
    sample = sample or next((p for p in BCCD_CANDIDATES if (p / "data.yaml").is_file()), None)
    root = init_data_root(directory, DEMO_CONFIG.format(imgsz=160 if sample else 64))
    staging = root / ".demo-staging"
    shutil.rmtree(staging, ignore_errors=True)
    batches = []
    if sample is not None:
        names = read_class_names(sample / "data.yaml")
        pool = sorted(sample.glob("images/*/*.jpg"))
        random.Random(0).shuffle(pool)
        for n in range(2):
            batches.append(yolo_subset(sample, staging / f"batch{n + 1}", pool[n * images : (n + 1) * images], names))
        console.print(f"demo batches: 2 x {images} images from {sample.resolve()}")
    else:
        for n in range(2):
            batches.append(synthetic_batch(staging / f"batch{n + 1}", images, seed=n + 1))
        console.print(f"demo batches: 2 x {images} generated images")

    daemon = build_daemon(root)
    thread = threading.Thread(target=daemon.run, name="flywheel-daemon", daemon=True)
    thread.start()
    if not daemon.ready.wait(60):
        raise FlywheelError("the daemon did not start within 60 s; see the log above")
    console.print(f"daemon up; metrics at http://127.0.0.1:{daemon.metrics_port}/metrics")
    app = App(root)
    try:
        for batch in batches:
            started = time.monotonic()
            runs_before = len(app.store.runs())
            drop(batch, root / "inbox")
            while True:
                runs = app.store.runs()
                if len(runs) > runs_before and runs[-1].state not in (RunState.QUEUED, RunState.RUNNING):
                    break
                if not thread.is_alive():
                    raise FlywheelError("the daemon stopped unexpectedly; see the log above")
                time.sleep(0.5)
            run = runs[-1]
            model = app.store.model(run.model_id) if run.model_id else None
            console.print(
                f"[bold]{batch.name}[/bold]: run finished {run.state} in {time.monotonic() - started:.1f}s, "
                f"model {model_name(model.id or 0) if model else '-'} is {model.status if model else '-'}"
            )
            if run.state != RunState.SUCCEEDED:
                raise FlywheelError(f"demo training failed: {run.error}")
    finally:
        daemon.stop()
        thread.join(60)
        shutil.rmtree(staging, ignore_errors=True)
    production = app.store.production()
    if production is None:
        raise FlywheelError("demo ended without a production model")
    console.print(f"production: {model_name(production.id or 0)} -> {root / 'production' / 'model.pt'}")
    console.print(f"try: flywheel status --root {root}   |   flywheel rollback --root {root} --reason 'demo'")

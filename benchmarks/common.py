"""Helpers shared by the benchmarks: the BCCD copy, a real `flywheel run` daemon in a child
process, read-only looks at its database, flywheel's own child for scoring and scratch runs.

Plain functions over explicit arguments; nothing here imports torch (the benchmarks' own
process stays as light as the daemon's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BCCD = ROOT.parent / "shared" / "datasets" / "bccd" / "yolo"
NAMES = ["Platelets", "RBC", "WBC"]
FLYWHEEL = Path(sys.executable).with_name("flywheel")


def machine() -> dict[str, Any]:
    """What a timing depends on: cores and the load average at the moment (1, 5, 15 min)."""
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def bccd_copy(work: Path) -> Path:
    """A private copy of BCCD's YOLO folder: the shared one is read-only, and Ultralytics
    writes `*.cache` files beside label folders."""
    data = work / "bccd"
    if not (data / "data.yaml").is_file():
        if not (BCCD / "data.yaml").is_file():
            sys.exit(f"BCCD not found at {BCCD}")
        shutil.copytree(BCCD, data)
    return data


def label_of(image: Path) -> Path:
    return image.parent.parent.parent / "labels" / image.parent.name / f"{image.stem}.txt"


def yolo_batch(folder: Path, images: list[Path], names: list[str], label: Callable[[Path], Path] = label_of) -> Path:
    """A batch folder as a labelling tool exports it: images/, labels/, classes.txt. `label`:
    where an image's label is (default: BCCD's layout, images/<split>/ beside labels/<split>/)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    for image in images:
        shutil.copy2(image, folder / "images" / image.name)
        shutil.copy2(label(image), folder / "labels" / f"{image.stem}.txt")
    return folder


def drop(batch: Path, inbox: Path, marker: str = "READY") -> float:
    """Move a finished batch into the inbox in one rename and mark it complete; returns the
    wall-clock time (Unix seconds) at which it became complete."""
    target = inbox / batch.name
    os.rename(batch, target)  # same file system: atomic, the daemon never sees half a batch
    (target / marker).touch()
    return time.time()


def write_config(
    root: Path,
    training: dict[str, Any],
    debounce_seconds: float | None = 0.0,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A data root (flywheel init) whose [training] keys are `training`; metrics on a free port,
    batches complete one second after their last change (READY makes it immediate anyway).

    `debounce_seconds`: the daemon's wait for more batches of a burst before it trains
    ([schedule], default 30 s). 0 here: each benchmark drops one batch and waits for its
    decision, so the wait would only add a constant; None keeps the default. Set only where
    this version of flywheel has the key (an unknown key stops start-up). `extra`: other
    sections, by name."""
    from flywheel.app import default_config_text, init_data_root

    lines = ["[inbox]", "settle_seconds = 1.0", "", "[metrics]", "port = 0", "", "[training]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in training.items()]
    if debounce_seconds is not None and "debounce_seconds" in default_config_text():
        lines += ["", "[schedule]", f"debounce_seconds = {float(debounce_seconds)}"]
    for section, keys in (extra or {}).items():
        lines += ["", f"[{section}]"] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return init_data_root(root, "\n".join(lines) + "\n")


def stop_on_sigterm() -> None:
    """SIGTERM ends the benchmark through `finally:` blocks, so its daemon is stopped too."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def start_daemon(root: Path, log: Path) -> subprocess.Popen[bytes]:
    """`flywheel run --root ROOT` as its own process, its log (stderr) to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as fh:
        return subprocess.Popen(
            [str(FLYWHEEL), "run", "--root", str(root)], stdout=fh, stderr=subprocess.STDOUT, env=env
        )


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> float:
    """Wait for the daemon's "flywheel running on" line; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}; see {log}")
        if log.is_file() and "flywheel running on" in log.read_text(errors="replace"):
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"the daemon was not up after {timeout:.0f}s; see {log}")


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def query(root: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a read-only query on the data root's SQLite database (the daemon keeps writing)."""
    con = sqlite3.connect(f"file:{root / 'flywheel.db'}?mode=ro", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, args)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the daemon has not made its schema yet
            return []
        raise
    finally:
        con.close()


def utc(value: str | None) -> float | None:
    """A stored timestamp (UTC, written without a zone) as Unix seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes] | None, timeout: float) -> Any:
    """Poll `check` until it returns something truthy; fail if the daemon dies or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode} while waiting for {what}")
        time.sleep(0.25)
    raise TimeoutError(f"no {what} after {timeout:.0f}s")


def score(
    work: Path,
    checkpoints: dict[str, Path],
    data_yaml: Path,
    imgsz: int,
    batch: int,
    threads: int,
    names: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score checkpoints on one held-out set with flywheel's own child (`evaluate_only`, the code
    the gate uses): name -> {map50_95, map50, precision, recall, per_class}."""
    from flywheel.core.domain import StartKind
    from flywheel.core.events import Evaluated
    from flywheel.core.spec import EvalTarget, TrainSpec
    from flywheel.training.local_trainer import SubprocessTrainer

    out = work / "scores"
    out.mkdir(parents=True, exist_ok=True)
    names = list(checkpoints)
    targets = [EvalTarget(name, str(checkpoints[name]), "heldout", str(data_yaml)) for name in names]
    spec = TrainSpec(
        run_id=0,
        data_yaml=str(data_yaml),
        out_dir=str(out),
        start="",
        start_kind=StartKind.SCRATCH,
        epochs=0,
        imgsz=imgsz,
        batch=batch,
        device="cpu",
        threads=threads,
        seed=0,
        patience=0,
        class_names=names or NAMES,
        evaluate=targets,
        evaluate_only=True,
    )
    events = SubprocessTrainer(work / ".ultralytics").run(spec, lambda _e: None)
    keys = ("map50_95", "map50", "precision", "recall", "per_class")
    return {e.role: {k: getattr(e.score, k) for k in keys} for e in events if isinstance(e, Evaluated)}


def write_json(out: Path, name: str, data: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (the same text goes to the terminal and to docs/benchmarks.md)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

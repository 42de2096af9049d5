"""What the `flywheel serve` tests share: two tiny trained models with their exports, laid out
as the registry lays out production (`production` -> `.production/mNNNN/`), and a real server
process on 127.0.0.1, stopped by its pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.gate_models import NAMES, shapes_batch, train

IMGSZ = 64
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Exports:
    weak: Path  # a folder laid out like .production/mNNNN/: model.pt, model.onnx, model_openvino_model/
    strong: Path


def train_and_export(tmp: Path) -> Exports:
    """Two real checkpoints of one tiny YOLOv8n training (tests/gate_models.py: 40 epochs at
    64 px on coloured rectangles, about a minute), each exported by Ultralytics' exporters."""
    checkpoints = train(shapes_batch(tmp / "batch", 48, seed=1), tmp, collapse="red")
    exports = Exports(tmp / "weak", tmp / "strong")
    export_all(checkpoints.weak, exports.weak)
    export_all(checkpoints.strong, exports.strong)
    return exports


def export_all(pt: Path, target: Path) -> None:
    """target/model.pt, model.onnx, model_openvino_model/ (Ultralytics' exporters, static 64 px)."""
    from ultralytics import YOLO

    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pt, target / "model.pt")
    YOLO(str(target / "model.pt")).export(format="onnx", imgsz=IMGSZ, simplify=False, verbose=False)
    YOLO(str(target / "model.pt")).export(format="openvino", imgsz=IMGSZ, verbose=False)


def publish(root: Path, source: Path, model_id: str, version: str) -> Path:
    """Lay out `.production/<model_id>/` as the registry does and swap the link to it atomically."""
    folder = root / ".production" / model_id
    if not folder.exists():
        shutil.copytree(source, folder)
        meta = {"id": model_id, "version": version, "classes": NAMES, "sha256": "0" * 64}
        (folder / "model.json").write_text(json.dumps(meta))
    tmp = root / ".production-link.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.relative_to(root))
    os.replace(tmp, root / "production")
    return folder


def write_config(root: Path, extra: str = "") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(f"[training]\nimgsz = {IMGSZ}\n{extra}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running(root: Path, runtime: str, env: dict[str, str] | None = None, timeout: float = 180) -> Iterator[Server]:
    """`flywheel serve ROOT` as its own process; yields once /readyz answers 200."""
    port = free_port()
    log = root / f"serve-{port}.log"
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flywheel", "serve", str(root), "--port", str(port), "--runtime", runtime],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"flywheel serve exited {process.returncode}:\n{server.output()}"
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2, headers=_auth(env)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"flywheel serve not ready in {timeout} s:\n{server.output()}"
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def _auth(env: dict[str, str] | None) -> dict[str, str]:
    token = (env or {}).get("FLYWHEEL_SERVE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}

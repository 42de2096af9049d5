"""What `<data_root>/production` holds, read without the database.

`production` is a symlink to `.production/mNNNN/`, swapped atomically by the registry on promote
and rollback. The folder has `model.pt`, `model.json` ("id", "version", "classes", "sha256"; from
the verified-export step also "imgsz" and "artifacts": {format: {"path", "sha256", ...}}) and one
file or folder per exported format. Everything is resolved through the link once, so a model is
loaded from one folder even if the link moves during the load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.core.errors import FlywheelError

# The formats `serve.runtime` names, fastest on a CPU first: "auto" serves the first one present.
RUNTIMES = ("openvino", "onnx", "torchscript", "pt")
# Where each format is when model.json has no "artifacts" (the names Ultralytics' exporters give).
DEFAULT_NAMES = {
    "openvino": "model_openvino_model",
    "onnx": "model.onnx",
    "torchscript": "model.torchscript",
    "pt": "model.pt",
}


class ProductionError(FlywheelError):
    """`production/` is missing, incomplete, or lacks the runtime serve.runtime names."""


@dataclass(frozen=True)
class Production:
    folder: Path  # the resolved .production/mNNNN/
    id: str  # m0003
    version: str  # v0004
    classes: list[str]
    imgsz: int | None  # from model.json; None: use training.imgsz
    artifacts: dict[str, Path] = field(default_factory=dict)  # format -> file or folder, present ones only

    @property
    def stamp(self) -> str:
        """Changes whenever what production serves changes: the folder and its model.json."""
        return f"{self.folder}:{(self.folder / 'model.json').stat().st_mtime_ns}"


def current_stamp(link: Path) -> str | None:
    """A cheap check of which production is on disk (no JSON parsing); None when there is none."""
    try:
        folder = Path(os.path.realpath(link))
        return f"{folder}:{(folder / 'model.json').stat().st_mtime_ns}"
    except OSError:
        return None


def read(link: Path) -> Production:
    folder = Path(os.path.realpath(link))
    described = folder / "model.json"
    try:
        meta: dict[str, Any] = json.loads(described.read_text())
    except FileNotFoundError:
        raise ProductionError(
            f"{link} has no model.json: no model is in production yet (promote one, or wait for the first training)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ProductionError(f"{described}: unreadable ({exc}); `flywheel run` rewrites it at start-up") from None
    artifacts: dict[str, Path] = {}
    listed = meta.get("artifacts") or {}
    for fmt in RUNTIMES:
        entry = listed.get(fmt)
        path = folder / (entry["path"] if isinstance(entry, dict) and "path" in entry else DEFAULT_NAMES[fmt])
        if path.exists():
            artifacts[fmt] = path
    imgsz = meta.get("imgsz")
    return Production(
        folder=folder,
        id=str(meta.get("id", folder.name)),
        version=str(meta.get("version", "")),
        classes=[str(c) for c in meta.get("classes", [])],
        imgsz=int(imgsz[0] if isinstance(imgsz, list) else imgsz) if imgsz else None,
        artifacts=artifacts,
    )


def choose(production: Production, runtime: str) -> tuple[str, Path]:
    """The (format, path) to serve for `serve.runtime`."""
    if runtime == "auto":
        for fmt in RUNTIMES:
            if fmt in production.artifacts:
                return fmt, production.artifacts[fmt]
    elif runtime in production.artifacts:
        return runtime, production.artifacts[runtime]
    present = ", ".join(production.artifacts) or "nothing"
    raise ProductionError(
        f"{production.folder} ({production.id}) has no {runtime!r} artifact (it has {present}): set "
        f"`serve.runtime` to one it has, or add {runtime!r} to `production.formats` so promotion exports it"
    )

"""Exports of a checkpoint, verified, in a child process (torch stays out of the daemon):
`python -m flywheel.training.export CHECKPOINT OUT_DIR JOB.json`.

The child exports each asked-for format with Ultralytics' own exporter into OUT_DIR (model.onnx,
model_openvino_model/, model.torchscript, model.engine beside a copy model.pt), scores the .pt
and every artifact on each eval set the same way, measures latency, and writes
OUT_DIR/report.json. Exports are dynamic (batch and image size free): the validator then scores
an artifact with the gate's rectangular letterbox shapes and batch, exactly as it scores the
.pt, and a server can batch (docs/exports.md). Needs the `export` extra; nothing is installed at
run time (YOLO_AUTOINSTALL=false).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flywheel.core.errors import TrainingError
from flywheel.core.exports import ARTIFACT_NAMES, Artifact, ExportJob
from flywheel.core.hashing import sha256_file

REPORT = "report.json"


class SubprocessExporter:
    def __init__(self, config_dir: Path, python: str = sys.executable, timeout_seconds: float = 1800):
        self.config_dir = config_dir
        self.python = python
        self.timeout_seconds = timeout_seconds

    def export(
        self, checkpoint: Path, out_dir: Path, job: ExportJob
    ) -> tuple[Artifact, dict[str, Artifact], dict[str, str]]:
        """The .pt as scored, the artifacts that were exported and scored, and per format the
        error of those that were not. TrainingError when the child itself fails."""
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        job_file = out_dir / "job.json"
        job_file.write_text(json.dumps(asdict(job)))
        env = {
            **os.environ,
            "YOLO_CONFIG_DIR": str(self.config_dir),
            "YOLO_OFFLINE": "true",
            "YOLO_AUTOINSTALL": "false",  # a missing runtime is an export failure, never a pip install
            "MPLCONFIGDIR": str(self.config_dir / "matplotlib"),
        }
        try:
            done = subprocess.run(
                [self.python, "-m", "flywheel.training.export", str(checkpoint), str(out_dir), str(job_file)],
                capture_output=True,
                text=True,
                env=env,
                timeout=self.timeout_seconds,
            )
        except subprocess.TimeoutExpired:
            raise TrainingError(
                f"export of {checkpoint} took over {self.timeout_seconds:.0f} s and was stopped"
            ) from None
        if done.returncode != 0 or not (out_dir / REPORT).is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise TrainingError(f"export of {checkpoint} failed: {' | '.join(tail)}")
        report = json.loads((out_dir / REPORT).read_text())
        artifacts = {fmt: Artifact(**a) for fmt, a in report["artifacts"].items()}
        return Artifact(**report["pt"]), artifacts, dict(report["errors"])


def main(argv: list[str]) -> int:
    checkpoint, out_dir, job = Path(argv[1]), Path(argv[2]), ExportJob(**json.loads(Path(argv[3]).read_text()))
    from flywheel.training import export_runtime as runtime

    local = out_dir / ARTIFACT_NAMES["pt"]
    shutil.copyfile(checkpoint, local)  # Ultralytics writes each export beside its input, named after it
    pt = runtime.measure("pt", local, {"imgsz": job.imgsz}, job)
    artifacts: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for fmt in job.formats:
        options = runtime.export_options(fmt, job.imgsz)
        try:
            exported = runtime.export(local, fmt, options, job.device)
            artifacts[fmt] = asdict(runtime.measure(fmt, exported, options, job))
        except Exception as exc:  # any exporter or runtime failure is this format's failure, said in its record
            errors[fmt] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    report = {"pt": asdict(pt), "artifacts": artifacts, "errors": errors}
    (out_dir / f".{REPORT}").write_text(json.dumps(report, indent=2))
    os.replace(out_dir / f".{REPORT}", out_dir / REPORT)
    return 0


def digest(path: Path) -> tuple[str, dict[str, str]]:
    """A file's sha256; a folder's: sha256 of its `sha256sum`-style listing (sorted relative
    paths), with each file's own sha256 so a reader can check them one by one."""
    if path.is_file():
        return sha256_file(path), {}
    files = {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
    import hashlib

    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), files


if __name__ == "__main__":
    sys.exit(main(sys.argv))

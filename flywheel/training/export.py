"""ONNX export of a checkpoint, in a child process (torch stays out of the daemon):
`python -m flywheel.training.export CHECKPOINT OUT.onnx IMGSZ`.

Needs the `onnx` package (`pip install flywheel[onnx]`); nothing is installed at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from flywheel.core.errors import TrainingError


class SubprocessExporter:
    def __init__(self, config_dir: Path, python: str = sys.executable, timeout_seconds: float = 600):
        self.config_dir = config_dir
        self.python = python
        self.timeout_seconds = timeout_seconds

    def export_onnx(self, checkpoint: Path, out: Path, imgsz: int) -> Path:
        env = {
            **os.environ,
            "YOLO_CONFIG_DIR": str(self.config_dir),
            "YOLO_OFFLINE": "true",
            "YOLO_AUTOINSTALL": "false",
            "MPLCONFIGDIR": str(self.config_dir / "matplotlib"),
        }
        done = subprocess.run(
            [self.python, "-m", "flywheel.training.export", str(checkpoint), str(out), str(imgsz)],
            capture_output=True,
            text=True,
            env=env,
            timeout=self.timeout_seconds,
        )
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise TrainingError(
                f"ONNX export of {checkpoint} failed: {' | '.join(tail)}. Is the `onnx` package installed "
                "(pip install 'flywheel[onnx]')? Set production.export_onnx = false to stop exporting"
            )
        return out


def main(argv: list[str]) -> int:
    checkpoint, out, imgsz = Path(argv[1]), Path(argv[2]), int(argv[3])
    from ultralytics import YOLO

    work = out.parent / f".export-{out.stem}"
    work.mkdir(parents=True, exist_ok=True)
    local = work / "model.pt"
    shutil.copyfile(checkpoint, local)  # Ultralytics writes the .onnx beside its input
    exported = Path(YOLO(str(local)).export(format="onnx", imgsz=imgsz, simplify=False, dynamic=False))
    os.replace(exported, out)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

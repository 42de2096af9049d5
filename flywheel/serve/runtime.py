"""One loaded model in one runtime, behind the one interface the batcher needs.

The runtimes (PyTorch .pt, TorchScript, ONNX Runtime, OpenVINO) are Ultralytics' own backends
(`ultralytics.nn.autobackend.AutoBackend`): the very code `YOLO(artifact).predict` and `val`
run, so what serve answers is what the gate and the export check scored, and the exports'
metadata (input size, stride, static or dynamic shapes, class names) is read the same way.
`Runtime` is the seam: a batch of letterboxed images in, the raw head output out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.serve.production import ProductionError

os.environ.setdefault("YOLO_OFFLINE", "true")  # no network probes from a server
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # a missing runtime is an error to name, never a pip run


@dataclass
class Runtime:
    format: str  # openvino | onnx | torchscript | pt
    path: Path
    imgsz: tuple[int, int]  # (height, width) the model takes
    stride: int
    dynamic: bool  # accepts other input shapes than imgsz: letterbox pads only to the stride
    end2end: bool
    backend: Any  # AutoBackend
    compiled: Any = None  # OpenVINO: our own compiled model (fp32, any batch), used instead of the backend's

    def forward(self, batch: Any) -> Any:
        """(N, 3, H, W) float tensor in [0, 1], RGB -> the head's raw output (N, 4 + classes, anchors)."""
        if self.compiled is not None:
            import torch

            return torch.from_numpy(self.compiled(batch.numpy())[0])
        output = self.backend(batch)
        return output[0] if isinstance(output, list | tuple) else output


def load(fmt: str, path: Path, imgsz: int, threads: int) -> Runtime:
    """Load `path` (a file or an OpenVINO folder) in its runtime; `imgsz` is the training size,
    used for the .pt (exports carry their own)."""
    import torch
    from ultralytics.nn.autobackend import AutoBackend

    if threads and fmt in ("pt", "torchscript"):
        torch.set_num_threads(threads)
    try:
        backend = AutoBackend(str(path), device=torch.device("cpu"), fp16=False, fuse=True, verbose=False)
    except ModuleNotFoundError as exc:
        raise ProductionError(
            f"{path}: the {fmt} runtime is not installed ({exc.name}): pip install 'flywheel[serve]'"
        ) from None
    except Exception as exc:  # a foreign error from the runtime: translated at this boundary
        raise ProductionError(f"{path}: the {fmt} runtime could not load it: {exc}") from exc
    backend.eval()
    exported = getattr(backend, "imgsz", None) if fmt != "pt" else None
    size = (int(exported[0]), int(exported[1])) if exported else (imgsz, imgsz)
    dynamic = fmt == "pt" or bool(getattr(backend, "dynamic", False))
    stride = int(max(backend.stride)) if isinstance(backend.stride, list | tuple) else int(backend.stride)
    compiled = _openvino_fp32(path, None if dynamic else size) if fmt == "openvino" else None
    return Runtime(fmt, path, size, stride, dynamic, bool(getattr(backend, "end2end", False)), backend, compiled)


def _openvino_fp32(path: Path, size: tuple[int, int] | None) -> Any:
    """The OpenVINO model compiled at fp32 with a free batch dimension.

    OpenVINO's CPU plugin infers in bfloat16 by default on CPUs that have it (AVX512_BF16, AMX),
    and AutoBackend keeps that default: on this project's CI CPU that moved class scores by up to
    1e-3 and boxes by pixels against the .pt (measured: ONNX Runtime 1e-7). fp32 is what the gate
    scored, so serve asks for it. The free batch dimension lets one call take a whole batch
    (Ultralytics' static export is batch 1, which AutoBackend would split image by image); a
    dynamic export (`size` None) keeps its free height and width too."""
    import openvino as ov

    core = ov.Core()
    xml = path if path.is_file() else next(path.glob("*.xml"))
    model = core.read_model(str(xml), str(xml.with_suffix(".bin")))
    height, width = size or (-1, -1)
    model.reshape({model.input().get_any_name(): ov.PartialShape([-1, 3, height, width])})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": ov.Type.f32}
    return core.compile_model(model, "CPU", config)


def warm(runtime: Runtime, batch: int) -> None:
    """Run the model once at batch 1 and once at `batch` so the first requests pay no set-up."""
    import torch

    height, width = runtime.imgsz
    with torch.inference_mode():
        for size in sorted({1, batch}):
            runtime.forward(torch.from_numpy(np.zeros((size, 3, height, width), np.float32)))

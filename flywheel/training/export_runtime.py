"""Inside the export child (imports Ultralytics and torch): export one format, score a model on
the eval sets through its own runtime (Ultralytics' AutoBackend), time it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from flywheel.core.exports import ARTIFACT_NAMES, Artifact, ExportJob

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def export_options(fmt: str, imgsz: int) -> dict[str, Any]:
    """fp32, dynamic batch and image size, NMS outside the model (the validator's own NMS, the
    same as the .pt's); ONNX unsimplified (onnxslim not needed) at Ultralytics' chosen opset."""
    options: dict[str, Any] = {"imgsz": imgsz, "half": False, "dynamic": True}
    if fmt in ("onnx", "engine"):
        options["simplify"] = False
    if fmt == "engine":
        options["batch"] = 16  # TensorRT's dynamic profile needs a largest batch
    if fmt == "openvino":
        options["runtime"] = dict(OPENVINO_FP32)  # how it was scored: a server must compile it so too
    return options


# OpenVINO's CPU plugin runs an fp32 IR in bfloat16 on CPUs with AVX512_BF16 or AMX (its
# default INFERENCE_PRECISION_HINT there), which moved mAP50-95 by 0.0007 on BCCD here
# (docs/exports.md); Ultralytics' backend asks for f32 only on Windows and ARM. Scored and
# timed in f32, as a server should compile it.
OPENVINO_FP32 = {"INFERENCE_PRECISION_HINT": "f32"}
NOT_EXPORTER_ARGS = ("half", "runtime")  # recorded, not passed: fp32 is the exporter's default


@contextmanager
def openvino_fp32() -> Iterator[None]:
    """Every OpenVINO CPU compilation in this process at f32 (AutoBackend compiles its own)."""
    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(self: Any, model: Any, device_name: Any = None, config: Any = None, **kw: Any) -> Any:
        if device_name in (None, "CPU"):
            config = {**(config or {}), **OPENVINO_FP32}
        return original(self, model, device_name, config, **kw)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def export(local_pt: Path, fmt: str, options: dict[str, Any], device: str) -> Path:
    from ultralytics import YOLO

    passed = {k: v for k, v in options.items() if k not in NOT_EXPORTER_ARGS}
    exported = Path(YOLO(str(local_pt)).export(format=fmt, device=device, **passed))
    expected = local_pt.parent / ARTIFACT_NAMES[fmt]
    if exported.resolve() != expected.resolve():
        raise RuntimeError(f"Ultralytics wrote {exported}, not {expected}")
    return expected


def measure(fmt: str, path: Path, options: dict[str, Any], job: ExportJob) -> Artifact:
    from flywheel.training.export import digest

    with openvino_fp32() if fmt == "openvino" else nullcontext():
        scores = {name: score(path, Path(data_yaml), job) for name, data_yaml in job.eval_sets.items()}
        timed = latency(path, job, next(iter(job.eval_sets.values()), ""))
    sha, files = digest(path)
    recorded = {**options, **({"opset": _onnx_opset(path)} if fmt == "onnx" else {})}
    return Artifact(fmt, path.name, recorded, scores, timed, sha, files)


def score(path: Path, data_yaml: Path, job: ExportJob) -> float:
    """mAP50-95 as the gate scores a .pt: Ultralytics' validator at the gate's imgsz and batch,
    rectangular letterbox shapes (dynamic exports keep them), its NMS and thresholds."""
    from ultralytics import YOLO

    metrics = YOLO(str(path), task="detect").val(
        data=str(data_yaml),
        split="val",
        imgsz=job.imgsz,
        batch=job.batch,
        device=job.device,
        plots=False,
        verbose=False,
        project=str(path.parent / ".val"),
        name=path.name,
        exist_ok=True,
    )
    return float(metrics.box.map)


def latency(path: Path, job: ExportJob, data_yaml: str) -> dict[str, float]:
    """Milliseconds per image (forward + NMS, after a warm-up) at batch 1 and at the serving
    batch, on the eval set's own images letterboxed to imgsz x imgsz."""
    import numpy as np
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.patches import imread

    model = AutoBackend(str(path), device=torch.device(job.device), verbose=False)
    box = LetterBox((job.imgsz, job.imgsz), auto=False)
    files = _images(Path(data_yaml))[: max(job.serving_batch, 1)] if data_yaml else []
    arrays = [box(image=imread(str(f))) for f in files] or [np.full((job.imgsz, job.imgsz, 3), 114, np.uint8)]
    out: dict[str, float] = {}
    for batch in sorted({1, job.serving_batch}):
        chosen = [arrays[i % len(arrays)] for i in range(batch)]
        im = torch.from_numpy(np.stack([a[..., ::-1].transpose(2, 0, 1) for a in chosen]).copy()).float() / 255
        runs = job.latency_runs if batch == 1 else max(3, job.latency_runs // batch)
        times = []
        for i in range(runs + 2):  # two warm-up runs: first-call allocations and kernel choice
            start = time.perf_counter()
            non_max_suppression(model(im.to(model.device)), 0.25, 0.7)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1000 / batch)
        key = "batch1" if batch == 1 else f"batch{batch}"
        out[f"{key}_p50"] = statistics.median(times)
        out[f"{key}_p95"] = _percentile(times, 0.95)
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _images(data_yaml: Path) -> list[Path]:
    import yaml

    spec = yaml.safe_load(data_yaml.read_text())
    base = Path(spec.get("path") or data_yaml.parent)
    val = Path(spec["val"]) if Path(spec["val"]).is_absolute() else base / spec["val"]
    if val.suffix == ".txt":
        return [Path(line) for line in val.read_text().split() if line]
    return sorted(p for p in val.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _onnx_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

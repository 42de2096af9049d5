"""Exports of a checkpoint for serving (ONNX, OpenVINO, TorchScript, TensorRT) and the parity
policy that decides whether one may be published.

An export is verified the way the gate scores a `.pt`: the artifact and the `.pt` are scored in
the same child on the same eval sets with the same letterbox shapes, batch and NMS settings, so
what is left between the two is the runtime's float arithmetic (docs/exports.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Where each format lives in production/ (Ultralytics' own names for an input called model.pt);
# `flywheel serve` reads exactly these.
ARTIFACT_NAMES = {
    "pt": "model.pt",
    "onnx": "model.onnx",
    "openvino": "model_openvino_model",
    "torchscript": "model.torchscript",
    "engine": "model.engine",
}
PRIMARY_EVAL_SET = "val"


@dataclass(frozen=True)
class ExportJob:
    """What the export child is asked to do (JSON between the processes)."""

    formats: list[str]
    imgsz: int
    eval_sets: dict[str, str]  # name -> data.yaml scored on (val, golden)
    batch: int  # the scoring batch (the gate's)
    serving_batch: int  # latency is measured at batch 1 and at this batch
    device: str = "cpu"
    latency_runs: int = 20


@dataclass(frozen=True)
class Artifact:
    """One exported (or the .pt itself) model, as the child measured it."""

    format: str
    path: str  # relative to the export folder: ARTIFACT_NAMES[format]
    options: dict[str, Any]  # imgsz, half, dynamic, opset ... as passed to the exporter
    scores: dict[str, float]  # eval set -> mAP50-95
    latency_ms: dict[str, float]  # per image: batch1_p50, batch1_p95, batchN_p50, batchN_p95
    sha256: str = ""
    files: dict[str, str] = field(default_factory=dict)  # a folder artifact: relative file -> sha256

    @property
    def map50_95(self) -> float | None:
        return self.scores.get(PRIMARY_EVAL_SET)


@dataclass(frozen=True)
class ExportFailure:
    """Why a format may not be published: its export failed, or it missed parity."""

    format: str
    reason: str  # "export failed: ..." or "parity"
    eval_set: str = ""
    map50_95: float | None = None
    pt_map50_95: float | None = None
    tolerance: float = 0.0

    def explain(self) -> str:
        if self.reason != "parity":
            return f"{self.format}: {self.reason}"
        return (
            f"{self.format}: mAP50-95 {self.map50_95:.4f} on {self.eval_set} vs the .pt's {self.pt_map50_95:.4f} "
            f"(off by {abs((self.map50_95 or 0) - (self.pt_map50_95 or 0)):.4f}, tolerance {self.tolerance})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "reason": self.reason,
            "eval_set": self.eval_set,
            "map50_95": self.map50_95,
            "pt_map50_95": self.pt_map50_95,
            "tolerance": self.tolerance,
            "message": self.explain(),
        }


def parity_failures(
    pt: Artifact, artifacts: dict[str, Artifact], errors: dict[str, str], formats: list[str], tolerance: float
) -> list[ExportFailure]:
    """Each asked-for format that failed to export or is off the .pt by more than `tolerance`
    on any eval set the .pt was scored on."""
    failures: list[ExportFailure] = []
    for fmt in formats:
        if fmt in errors or fmt not in artifacts:
            failures.append(ExportFailure(fmt, f"export failed: {errors.get(fmt, 'no artifact was written')}"))
            continue
        scores = artifacts[fmt].scores
        for eval_set, pt_map in pt.scores.items():
            got = scores.get(eval_set)
            if got is None or abs(got - pt_map) > tolerance:
                failures.append(ExportFailure(fmt, "parity", eval_set, got, pt_map, tolerance))
                break
    return failures

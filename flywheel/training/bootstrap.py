"""Paired bootstrap of the mAP50-95 difference between two models on the same images.

Runs in the training child (it needs Ultralytics' matching and AP code, hence torch). While a
model is validated, a recording validator keeps each image's matches (true-positive flags at
the ten IoU thresholds, confidences, classes); the bootstrap then resamples images with
replacement, the same images for both models, and recomputes both mAPs with Ultralytics' own
`ap_per_class`. The spread of the differences is the confidence interval the gate can require
to lie above -tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STAT_KEYS = ("tp", "conf", "pred_cls", "target_cls")


def recording_validator() -> Any:
    """A DetectionValidator subclass that keeps per-image stats in `self.per_image`."""
    from ultralytics.models.yolo.detect import DetectionValidator

    class RecordingValidator(DetectionValidator):  # type: ignore[misc]
        last: Any = None  # Model.val() does not return the validator: find it here

        def init_metrics(self, model: Any) -> None:
            super().init_metrics(model)
            RecordingValidator.last = self
            self.per_image: list[dict[str, np.ndarray]] = []
            update = self.metrics.update_stats

            def record(stat: dict[str, Any]) -> None:
                self.per_image.append({k: np.asarray(stat[k]) for k in STAT_KEYS})
                update(stat)

            self.metrics.update_stats = record

    return RecordingValidator


def save(path: Path, per_image: list[dict[str, np.ndarray]]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for key in STAT_KEYS:
        parts = [img[key] for img in per_image]
        arrays[key] = np.concatenate(parts, 0) if parts else np.zeros(0)
        arrays[f"{key}_count"] = np.array([len(p) for p in parts], dtype=np.int64)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load(path: Path) -> list[dict[str, np.ndarray]]:
    data = np.load(path)
    out: list[dict[str, np.ndarray]] = [{} for _ in range(len(data["tp_count"]))]
    for key in STAT_KEYS:
        bounds = np.concatenate([[0], np.cumsum(data[f"{key}_count"])])
        for i in range(len(out)):
            out[i][key] = data[key][bounds[i] : bounds[i + 1]]
    return out


def _map(per_image: list[dict[str, np.ndarray]], index: np.ndarray) -> float:
    from ultralytics.utils.metrics import ap_per_class

    picked = [per_image[i] for i in index]
    target_cls = np.concatenate([p["target_cls"] for p in picked])
    if len(target_cls) == 0:
        return 0.0
    tp = np.concatenate([p["tp"].reshape(-1, 10) for p in picked])
    if len(tp) == 0:
        return 0.0
    conf = np.concatenate([p["conf"] for p in picked])
    pred_cls = np.concatenate([p["pred_cls"] for p in picked])
    ap = ap_per_class(tp, conf, pred_cls, target_cls)[5]
    return float(ap.mean()) if len(ap) else 0.0


def paired(
    candidate: list[dict[str, np.ndarray]],
    production: list[dict[str, np.ndarray]],
    samples: int,
    confidence: float,
    seed: int = 0,
) -> dict[str, float]:
    """Mean and two-sided percentile interval of mAP(candidate) - mAP(production)."""
    if len(candidate) != len(production) or not candidate:
        raise ValueError(f"paired bootstrap needs the same images: {len(candidate)} vs {len(production)}")
    rng = np.random.default_rng(seed)
    n = len(candidate)
    diffs = np.empty(samples)
    for s in range(samples):
        index = rng.integers(0, n, n)
        diffs[s] = _map(candidate, index) - _map(production, index)
    alpha = (1 - confidence) / 2
    full = np.arange(n)
    return {
        "observed": _map(candidate, full) - _map(production, full),
        "mean": float(diffs.mean()),
        "low": float(np.quantile(diffs, alpha)),
        "high": float(np.quantile(diffs, 1 - alpha)),
        "samples": samples,
        "confidence": confidence,
    }

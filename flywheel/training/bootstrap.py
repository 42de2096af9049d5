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


def _class_aps(per_image: list[dict[str, np.ndarray]], index: np.ndarray) -> dict[int, float]:
    """AP50-95 per class id (classes with a box in the picked images)."""
    from ultralytics.utils.metrics import ap_per_class

    picked = [per_image[i] for i in index]
    target_cls = np.concatenate([p["target_cls"] for p in picked])
    if len(target_cls) == 0:
        return {}
    tp = np.concatenate([p["tp"].reshape(-1, 10) for p in picked])
    if len(tp) == 0:
        return {int(c): 0.0 for c in np.unique(target_cls)}
    conf = np.concatenate([p["conf"] for p in picked])
    pred_cls = np.concatenate([p["pred_cls"] for p in picked])
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    ap, classes = result[5], result[6]
    return {int(c): float(a) for c, a in zip(classes, ap.mean(1), strict=True)}


def _map(per_image: list[dict[str, np.ndarray]], index: np.ndarray) -> float:
    aps = _class_aps(per_image, index)
    return float(np.mean(list(aps.values()))) if aps else 0.0


def paired(
    candidate: list[dict[str, np.ndarray]],
    production: list[dict[str, np.ndarray]],
    samples: int,
    confidence: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean and two-sided percentile interval of mAP(candidate) - mAP(production), and the same
    for each class's AP50-95 (`classes`: class id -> {observed, low, high}), on the same resamples."""
    if len(candidate) != len(production) or not candidate:
        raise ValueError(f"paired bootstrap needs the same images: {len(candidate)} vs {len(production)}")
    rng = np.random.default_rng(seed)
    n = len(candidate)
    diffs = np.empty(samples)
    per_class: dict[int, list[float]] = {}
    for s in range(samples):
        index = rng.integers(0, n, n)
        cand, prod = _class_aps(candidate, index), _class_aps(production, index)
        diffs[s] = (np.mean(list(cand.values())) if cand else 0.0) - (np.mean(list(prod.values())) if prod else 0.0)
        for c in cand.keys() | prod.keys():
            per_class.setdefault(c, []).append(cand.get(c, 0.0) - prod.get(c, 0.0))
    alpha = (1 - confidence) / 2
    full = np.arange(n)
    cand_full, prod_full = _class_aps(candidate, full), _class_aps(production, full)
    classes = {
        c: {
            "observed": cand_full.get(c, 0.0) - prod_full.get(c, 0.0),
            "low": float(np.quantile(d, alpha)),
            "high": float(np.quantile(d, 1 - alpha)),
        }
        for c, d in sorted(per_class.items())
    }
    return {
        "observed": _map(candidate, full) - _map(production, full),
        "mean": float(diffs.mean()),
        "low": float(np.quantile(diffs, alpha)),
        "high": float(np.quantile(diffs, 1 - alpha)),
        "samples": samples,
        "confidence": confidence,
        "classes": classes,
    }

"""The label check of a screening (flywheel/flow/screening.py): the production model predicts
the batch's new images, and, once per production model and val set, the val images of its own
version, whose labels calibrate each kind's threshold (core/label_check.calibrate). The
calibration is recorded in the screening's `label_errors` summary and reused from there."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flywheel.core.config import Config
from flywheel.core.domain import ManifestItem, batch_name, model_name, version_name
from flywheel.core.label_check import (
    BoxFinding,
    Calibration,
    LabelIssue,
    LabelThresholds,
    Rect,
    calibrate,
    check_image,
)
from flywheel.core.plan import training_threads
from flywheel.core.ports import Predictor, ScreenFiles, StorePort
from flywheel.core.prediction import PredictRequest
from flywheel.core.records import Model
from flywheel.core.screening import Check, Suspect
from flywheel.flow.registry import Registry

log = logging.getLogger(__name__)

Pair = tuple[list[Rect], list[Rect]]  # an image's given boxes and the model's


@dataclass(frozen=True)
class LabelScreen:
    suspects: list[Suspect]
    summary: dict[str, Any]  # the thresholds and what they were calibrated on


def label_suspects(
    store: StorePort,
    registry: Registry,
    predictor: Predictor,
    files: ScreenFiles,
    config: Config,
    batch_id: int,
    production: Model,
    new: Sequence[ManifestItem],
) -> LabelScreen:
    if not new:
        return LabelScreen([], {})
    cfg = config.screen
    base = LabelThresholds(match_iou=cfg.match_iou, overlap_iou=cfg.overlap_iou)
    val_sha = store.version(production.version_id).val_sha256
    known = _recorded(store, production.id, val_sha, cfg.false_positive_rate, base)
    mine = {i.image_sha256 for i in new}
    manifest = store.manifest(production.version_id).values() if known is None else ()
    val = [i for i in manifest if i.split == "val" and i.image_sha256 not in mine]
    pairs = _predict(registry, predictor, files, config, batch_id, production, [*new, *val])
    clean = [pairs[i.image_sha256] for i in val if i.image_sha256 in pairs]
    calibration = known or calibrate(clean, cfg.false_positive_rate, base)
    if calibration.images == 0:
        log.warning(
            "screening %s: %s's version %s has no val boxes to calibrate on: fixed thresholds for a confident model",
            batch_name(batch_id),
            model_name(production.id),
            version_name(production.version_id),
        )
    t = replace(base, flag=calibration.flag)
    split = {i.image_sha256: i.split for i in new}
    out = [_suspect(f, sha, split[sha]) for sha in split if sha in pairs for f in check_image(*pairs[sha], t)]
    return LabelScreen(out, _summary(calibration, val_sha, base, known is not None))


def _predict(
    registry: Registry,
    predictor: Predictor,
    files: ScreenFiles,
    config: Config,
    batch_id: int,
    production: Model,
    items: Sequence[ManifestItem],
) -> dict[str, Pair]:
    """Each image's given and predicted boxes, by sha256 (one predict child for all)."""
    training = config.training
    work = f"screen-{batch_name(batch_id)}"
    images, labels = files.stage(work, items)
    try:
        request = PredictRequest(
            checkpoint=registry.checkpoint(production),
            conf=LabelThresholds().floor_conf,
            iou=0.7,
            imgsz=0,
            fallback_imgsz=training.imgsz,
            device=training.device,
            threads=training_threads(training.threads),
        )
        outcome = predictor.predict(request, images)
    finally:
        files.clear(work)
    for name, why in outcome.failed:
        log.warning("screening %s: the model could not read %s: %s", batch_name(batch_id), name, why)
    pairs: dict[str, Pair] = {}
    for p in outcome.predictions:
        sha = Path(p.name).stem
        given = [_pixels(b, p.width, p.height) for b in labels.get(sha, [])]
        pairs[sha] = (given, [Rect(b.cls, b.x1, b.y1, b.x2, b.y2, b.conf) for b in p.boxes])
    return pairs


def _pixels(box: tuple[int, float, float, float, float], width: int, height: int) -> Rect:
    cls, cx, cy, w, h = box
    return Rect(cls, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)


def _suspect(f: BoxFinding, sha: str, split: str) -> Suspect:
    o = f.other
    behind = (o.cls, o.conf, o.x1, o.y1, o.x2, o.y2) if o is not None else ()
    box = (f.box.x1, f.box.y1, f.box.x2, f.box.y2)
    return Suspect(Check.LABEL_ERRORS, str(f.issue), sha, round(f.score, 4), f.why, split, box, f.box.cls, behind)


def _summary(c: Calibration, val_sha: str, t: LabelThresholds, reused: bool) -> dict[str, Any]:
    return {
        "thresholds": {str(k): v for k, v in c.flag.items()},
        "calibration": {
            "val_sha256": val_sha,
            "images": c.images,
            "boxes": c.boxes,
            "false_positive_rate": c.fpr,
            "match_iou": t.match_iou,
            "overlap_iou": t.overlap_iou,
            "reused": reused,
        },
    }


def _recorded(store: StorePort, model_id: int, val_sha: str, fpr: float, t: LabelThresholds) -> Calibration | None:
    """The calibration an earlier screening made with this model on this val set, if any."""
    for s in reversed(store.screenings()):
        summary: Mapping[str, Any] = s.checks.get(str(Check.LABEL_ERRORS), {})
        c = summary.get("calibration") or {}
        same = (c.get("val_sha256"), c.get("false_positive_rate"), c.get("match_iou"), c.get("overlap_iou"))
        if s.model_id == model_id and same == (val_sha, fpr, t.match_iou, t.overlap_iou) and c.get("images"):
            flag = {LabelIssue(k): float(v) for k, v in summary["thresholds"].items()}
            return Calibration(flag, int(c["images"]), int(c["boxes"]), fpr)
    return None

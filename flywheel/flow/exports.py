"""A model's verified exports, stored beside its checkpoint: `models/<sha[:2]>/<sha>.exports/`
holds model.onnx, model_openvino_model/, model.torchscript … and `artifacts.json`, their record.

Content-addressed by the checkpoint's sha256 (an export is a function of the checkpoint and its
options), so a model is exported and verified once; a rollback publishes what is stored and
never re-exports. The record lives in a file beside the files it describes rather than in a
database table: the two cannot disagree after a copy or restore of `models/`, and `production/`
is rebuilt from the folder alone (docs/exports.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.core.domain import model_name
from flywheel.core.exports import ARTIFACT_NAMES, Artifact, ExportFailure, ExportJob, parity_failures
from flywheel.core.ports import Exporter
from flywheel.core.records import Model

log = logging.getLogger("flywheel.flow.exports")
RECORD = "artifacts.json"


@dataclass(frozen=True)
class ExportPolicy:
    formats: list[str]
    tolerance: float
    on_failure: str  # "hold" | "promote_pt"
    batch: int  # the gate's scoring batch
    serving_batch: int
    device: str = "cpu"


class ExportShelf:
    def __init__(
        self,
        exporter: Exporter,
        policy: ExportPolicy,
        checkpoint_path: Callable[[str], Path],  # sha256 -> the stored .pt
        eval_sets: Callable[[Model], dict[str, str]],  # a model -> its eval sets when none are given
    ):
        self.exporter = exporter
        self.policy = policy
        self.checkpoint_path = checkpoint_path
        self.default_eval_sets = eval_sets
        self._failed: dict[str, list[ExportFailure]] = {}  # this process's failures, not retried by promote_pt

    def folder(self, sha256: str) -> Path:
        return self.checkpoint_path(sha256).with_suffix(".exports")

    def records(self, sha256: str) -> dict[str, Any]:
        """format -> its record (path, sha256, map50_95, pt_map50_95, imgsz, options, latency_ms)."""
        path = self.folder(sha256) / RECORD
        return dict(json.loads(path.read_text())) if path.is_file() else {}

    def verify(self, model: Model, imgsz: int, eval_sets: dict[str, str] | None = None) -> list[ExportFailure]:
        """Export and score each configured format not yet stored; store those within tolerance.
        Returns the formats that failed or missed parity (empty: all verified)."""
        stored = self.records(model.sha256)
        missing = [f for f in self.policy.formats if f not in stored]
        if not missing:
            return []
        if model.sha256 in self._failed:
            return self._failed[model.sha256]
        p = self.policy
        sets = eval_sets if eval_sets is not None else self.default_eval_sets(model)
        job = ExportJob(missing, imgsz, sets, p.batch, p.serving_batch, p.device)
        work = self.folder(model.sha256).with_name(f".{model.sha256}.exports-tmp")
        log.info("model %s: exporting %s and scoring each on %s", model_name(model.id or 0), missing, sorted(sets))
        try:
            pt, artifacts, errors = self.exporter.export(self.checkpoint_path(model.sha256), work, job)
        except Exception as exc:  # the child itself died: every format failed, said once
            failures = [ExportFailure(f, f"export failed: {exc}") for f in missing]
        else:
            failures = parity_failures(pt, artifacts, errors, missing, p.tolerance)
            failed = {f.format for f in failures}
            self._keep(model.sha256, work, pt, {f: a for f, a in artifacts.items() if f not in failed}, stored)
        shutil.rmtree(work, ignore_errors=True)
        if failures:
            self._failed[model.sha256] = failures
        return failures

    def _keep(self, sha256: str, work: Path, pt: Artifact, passed: dict[str, Artifact], stored: dict[str, Any]) -> None:
        folder = self.folder(sha256)
        folder.mkdir(exist_ok=True)
        records = dict(stored)
        records["pt"] = _record(pt, pt)
        for fmt, artifact in passed.items():
            target = folder / ARTIFACT_NAMES[fmt]
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            os.replace(work / artifact.path, target)
            records[fmt] = _record(artifact, pt)
        tmp = folder / f".{RECORD}"
        tmp.write_text(json.dumps(records, indent=2) + "\n")
        os.replace(tmp, folder / RECORD)

    def published(self, sha256: str) -> dict[str, Any]:
        """The stored exports that exist on disk (the .pt's own record included)."""
        folder = self.folder(sha256)
        return {f: r for f, r in self.records(sha256).items() if f == "pt" or (folder / r["path"]).exists()}


def _record(artifact: Artifact, pt: Artifact) -> dict[str, Any]:
    return {
        "path": ARTIFACT_NAMES[artifact.format],
        "sha256": artifact.sha256,
        **({"files": artifact.files} if artifact.files else {}),
        "map50_95": artifact.map50_95,
        "pt_map50_95": pt.map50_95,
        "scores": {name: {"artifact": s, "pt": pt.scores.get(name)} for name, s in artifact.scores.items()},
        "imgsz": artifact.options.get("imgsz"),
        "options": artifact.options,
        "latency_ms": artifact.latency_ms,
    }


def copy_artifact(source: Path, target: Path) -> None:
    """A copy (never a link: damage to one must not be damage to both), made durable."""
    if source.is_dir():
        shutil.copytree(source, target)
        files = [p for p in target.rglob("*") if p.is_file()]
    else:
        shutil.copyfile(source, target)
        files = [target]
    for f in files:
        with f.open("rb") as fh:
            os.fsync(fh.fileno())

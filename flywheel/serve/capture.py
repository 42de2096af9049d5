"""Capture: the images production doubts come back as pre-labeled candidates for labeling.

For every answered image the batcher hands over, the uncertainty score `flywheel suggest` ranks
by (flywheel/prelabel/uncertainty.py, from every box at its scoring threshold) decides: an image
at or above `serve.capture.threshold` is kept as "doubt"; of the others a random
`control_share` is kept as "control", so what the score is worth can be measured in the field
(label both, compare the errors found). Kept images are written by a thread of their own, off the
request path, into a folder `flywheel predict` and `suggest` read like any other:

    captured/data.yaml                class names of the model that answered
    captured/images/<sha256>.<ext>    the bytes as sent (one file per content: duplicates are skipped)
    captured/labels/<sha256>.txt      the answer as YOLO pre-labels (class cx cy w h, normalised)
    captured/meta/<sha256>.json       why, score and its terms, model, version, time, every scored box

The folder stays under `quota_mb`: above it the oldest images (with their labels and meta) go
first. A full write queue drops the image (counted) rather than slow the answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.prelabel.uncertainty import score_image
from flywheel.serve.batcher import Answer, Job
from flywheel.serve.detect import Box
from flywheel.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)
PENDING = 256  # images waiting to be written; beyond it capture drops (never the answer)
_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


@dataclass(frozen=True)
class _Keep:
    data: bytes
    suffix: str
    width: int
    height: int
    why: str
    answer: Answer
    score: dict[str, float | int]


class Capturer:
    def __init__(
        self,
        folder: Path,
        threshold: float,
        control_share: float,
        quota_bytes: int,
        metrics: ServeMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.folder = folder
        self.threshold = threshold
        self.control_share = control_share
        self.quota_bytes = quota_bytes
        self.metrics = metrics
        self.rng = rng or random.Random()
        self._pending: queue.Queue[_Keep | None] = queue.Queue(PENDING)
        self._sizes: dict[str, tuple[float, int]] = {}  # sha -> (mtime, bytes of its three files)
        self._thread = threading.Thread(target=self._write_loop, name="serve-capture", daemon=True)

    def start(self) -> None:
        for sub in ("images", "labels", "meta"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        for image in (self.folder / "images").iterdir():
            if image.name.startswith("."):  # a write cut short by a crash
                image.unlink(missing_ok=True)
                continue
            sha = image.stem
            self._sizes[sha] = (image.stat().st_mtime, sum(self._size(p) for p in self._files(sha, image.suffix)))
        self._enforce_quota()
        self._thread.start()

    def stop(self) -> None:
        self._pending.put(None)
        self._thread.join(timeout=10)

    def offer(self, job: Job, answer: Answer) -> None:
        """Called by the batcher for every answered image; decides, and queues a keeper."""
        uncertainty = score_image(box.score for box in answer.scored)
        if uncertainty.score >= self.threshold:
            why = "doubt"
        elif self.rng.random() < self.control_share:
            why = "control"
        else:
            return
        height, width = job.image.shape[:2]
        score = {"score": round(uncertainty.score, 4), **uncertainty.why()}
        keep = _Keep(job.data, _SUFFIX.get(job.fmt, ".img"), width, height, why, answer, score)
        try:
            self._pending.put_nowait(keep)
        except queue.Full:
            self.metrics.capture_dropped.inc()

    def _write_loop(self) -> None:
        while (keep := self._pending.get()) is not None:
            try:
                self._write(keep)
            except OSError as exc:  # a full disk must not stop the answers: counted, logged, skipped
                self.metrics.capture_dropped.inc()
                log.error("capture could not write to %s: %s", self.folder, exc)

    def _write(self, keep: _Keep) -> None:
        sha = hashlib.sha256(keep.data).hexdigest()
        if sha in self._sizes:
            return
        served = keep.answer.served.production
        names = served.classes
        data_yaml = self.folder / "data.yaml"
        text = "names:\n" + "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(names))
        if not data_yaml.is_file() or data_yaml.read_text() != text:
            _atomic(data_yaml, text.encode())
        _atomic(self.folder / "labels" / f"{sha}.txt", _yolo(keep.answer.boxes, keep.width, keep.height).encode())
        meta = {
            "sha256": sha,
            "why": keep.why,
            **keep.score,
            "model": served.id,
            "version": served.version,
            "runtime": keep.answer.served.runtime.format,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "width": keep.width,
            "height": keep.height,
            "boxes": [
                {"class": _label(names, b.class_id), "score": round(b.score, 4), "xyxy": [round(v, 1) for v in b.xyxy]}
                for b in keep.answer.scored
            ],
        }
        _atomic(self.folder / "meta" / f"{sha}.json", json.dumps(meta, indent=1).encode())
        _atomic(self.folder / "images" / f"{sha}{keep.suffix}", keep.data)  # last: an image present is complete
        self._sizes[sha] = (time.time(), sum(self._size(p) for p in self._files(sha, keep.suffix)))
        self.metrics.captured.labels(keep.why).inc()
        self._enforce_quota()

    def _enforce_quota(self) -> None:
        total = sum(size for _, size in self._sizes.values())
        for sha, (_, size) in sorted(self._sizes.items(), key=lambda item: item[1][0]):
            if total <= self.quota_bytes:
                break
            for path in [*self.folder.joinpath("images").glob(f"{sha}.*"), *self._files(sha, "")[1:]]:
                path.unlink(missing_ok=True)
            del self._sizes[sha]
            total -= size
        self.metrics.capture_bytes.set(total)

    def _files(self, sha: str, suffix: str) -> list[Path]:
        return [
            self.folder / "images" / f"{sha}{suffix}",
            self.folder / "labels" / f"{sha}.txt",
            self.folder / "meta" / f"{sha}.json",
        ]

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0


def _label(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def _yolo(boxes: list[Box], width: int, height: int) -> str:
    lines = []
    for box in boxes:
        x1, y1, x2, y2 = box.xyxy
        cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{box.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(line + "\n" for line in lines)


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

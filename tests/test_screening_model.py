"""The label check with a real model: a YOLOv8n trained from scratch on coloured rectangles (the
class is the colour) screens a batch whose labels carry injected class swaps. The thresholds
are calibrated on production's own val images, so the test holds the check to what the config
states: swaps found, and no more false findings on clean boxes than `false_positive_rate` per kind
allows (with a margin for a batch of 40 images drawn apart from the val set)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.label_check import LabelIssue, Rect, iou
from flywheel.core.screening import Check

CONFIG = """\
[dataset]
val_fraction = 0.25

[training]
epochs_scratch = 40
imgsz = 64
batch = 16
threads = 2

[metrics]
port = 0

[screen]
false_positive_rate = 0.01
"""
SIZE = 64  # synthetic_batch's image size: labels in pixels are these times the normalised ones


def inject_swaps(batch: Path, count: int) -> dict[str, Rect]:
    """The first box of the first `count` images given the other class; the truth by image sha256."""
    truth = {}
    for label in sorted((batch / "labels").glob("*.txt"))[:count]:
        lines = label.read_text().splitlines()
        cls, cx, cy, w, h = int(lines[0].split()[0]), *map(float, lines[0].split()[1:])
        lines[0] = f"{1 - cls} {cx} {cy} {w} {h}"
        label.write_text("\n".join(lines) + "\n")
        image = batch / "images" / f"{label.stem}.png"
        box = Rect(1 - cls, (cx - w / 2) * SIZE, (cy - h / 2) * SIZE, (cx + w / 2) * SIZE, (cy + h / 2) * SIZE)
        truth[hashlib.sha256(image.read_bytes()).hexdigest()] = box
    return truth


@pytest.mark.slow  # a real training of 40 tiny epochs (under a minute), then real predict children
def test_a_real_model_flags_injected_swaps_and_few_clean_boxes(tmp_path: Path) -> None:
    root = init_data_root(tmp_path / "root", CONFIG)
    app = App(root)
    first = app.ingest(synthetic_batch(tmp_path / "b1", 120, seed=1), move=False).version
    assert first is not None
    app.train(first.id)
    assert app.store.production() is not None
    batch = synthetic_batch(tmp_path / "b2", 40, seed=2)
    truth = inject_swaps(batch, 8)
    result = app.ingest(batch, move=False)
    s = app.cases.screen(result.batch.id)
    summary = s.checks["label_errors"]
    assert summary["calibration"]["images"] > 0 and not summary["calibration"]["reused"]
    found = [x for x in s.flagged(Check.LABEL_ERRORS)]
    hits = {x.image_sha256 for x in found if x.kind == LabelIssue.SWAPPED and _is(x.box, truth.get(x.image_sha256))}
    assert len(hits) >= 4, (len(hits), summary, found)  # of 8 swaps
    wrong = [x for x in found if x.image_sha256 not in truth]
    clean_boxes = 2 * (40 - 8)
    # at most fpr per kind of the clean boxes, four kinds, and the batch is not the val set: x2
    assert len(wrong) <= max(2, 2 * 4 * 0.01 * clean_boxes), wrong
    again = app.cases.screen(result.batch.id)  # the calibration is the model's: reused, same thresholds
    assert again.checks["label_errors"]["calibration"]["reused"]
    assert again.checks["label_errors"]["thresholds"] == summary["thresholds"]
    # the review file through the real command: each suspect image once, given and model boxes both
    review = tmp_path / "review"
    shown = subprocess.run(
        [sys.executable, "-m", "flywheel", "screen", "b0002", "--root", str(root), "--review", str(review), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["schema"] == "flywheel.screen/1" and len(doc["suspects"]) == len(again.suspects)
    tasks = json.loads(Path(doc["review"]).read_text())
    assert len(tasks) == len({x.image_sha256 for x in again.suspects if x.image_sha256})
    labels = {r["value"]["rectanglelabels"][0] for t in tasks for p in t["predictions"] for r in p["result"]}
    assert {"given:red", "model:blue"} <= labels or {"given:blue", "model:red"} <= labels, labels


def _is(box: tuple[float, ...], truth: Rect | None) -> bool:
    return truth is not None and iou(Rect(0, *box), Rect(0, truth.x1, truth.y1, truth.x2, truth.y2)) > 0.99

"""Real data: BCCD blood-cell images (../shared/datasets/bccd, read-only: copied first)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import yolo_subset
from flywheel.core.domain import ModelStatus, StartKind
from flywheel.ingest.layout import read_class_names

BCCD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "bccd" / "yolo"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BCCD / "data.yaml").is_file(), reason=f"BCCD not found at {BCCD}"),
]

CONFIG = """\
[training]
epochs_scratch = 3
epochs_warm = 2
imgsz = 160
batch = 16
"""


def test_two_bccd_batches_version_train_and_warm_start(tmp_path):
    root = init_data_root(tmp_path / "root", CONFIG)
    names = read_class_names(BCCD / "data.yaml")
    pool = sorted(BCCD.glob("images/train/*.jpg"))
    random.Random(0).shuffle(pool)
    app = App(root)
    expected_boxes = 0
    for n, images in enumerate((pool[:60], pool[60:120]), start=1):
        batch = yolo_subset(BCCD, tmp_path / f"batch{n}", images, names)
        expected_boxes += sum(
            len([ln for ln in p.read_text().splitlines() if ln.strip()]) for p in (batch / "labels").glob("*.txt")
        )
        result = app.ingest(batch, move=True)
        assert result.accepted == 60 and not result.quarantined
        version = result.version
        assert version.boxes == expected_boxes
        assert version.class_names == ["Platelets", "RBC", "WBC"]
        cycle = app.train(version.id)
        assert cycle.run.start_kind == (StartKind.SCRATCH if n == 1 else StartKind.WARM)
    run2 = app.store.runs()[-1]
    assert run2.warm_tensors_matched == run2.warm_tensors_total > 0
    assert app.store.production() is not None
    assert {m.status for m in app.store.models()} <= {ModelStatus.PRODUCTION, ModelStatus.RETIRED, ModelStatus.REJECTED}
    scores = [app.store.evaluation(m.sha256, app.store.version(m.version_id).val_sha256) for m in app.store.models()]
    assert all(s is not None and 0.0 <= s.score.map50_95 <= 1.0 for s in scores)

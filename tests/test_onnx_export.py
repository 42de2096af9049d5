"""production.export_onnx (deprecated: formats = ["onnx"]): a promoted model is exported once, and
a rollback reuses the export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx  # the dev extra has it: a broken install fails, not skips
import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch

pytestmark = pytest.mark.slow

CONFIG = """\
[dataset]
val_fraction = 0.25
[training]
epochs_scratch = 1
epochs_warm = 1
imgsz = 64
batch = 8
[production]
export_onnx = true
[gate]
# a 1-epoch 64 px model scores about 0: no mAP or class drop can exceed 1, so both promote
tolerance = 1.0
max_class_drop = 1.0
"""


def test_promoted_models_carry_an_onnx_export_and_rollback_reuses_it(tmp_path):
    root = init_data_root(tmp_path / "root", CONFIG)
    app = App(root)
    for seed in (1, 2):
        result = app.train(app.ingest(synthetic_batch(tmp_path / f"b{seed}", 16, seed=seed), move=False).version.id)
        assert result.decision.outcome == "promote", result.decision.explain()
    shelf = app.registry.exports
    assert shelf is not None and shelf.policy.formats == ["onnx"]

    def stored(model_id: int) -> Path:
        return shelf.folder(app.store.model(model_id).sha256) / "model.onnx"

    exported = root / "production" / "model.onnx"
    onnx.checker.check_model(onnx.load(str(exported)))
    # a copy of the registry's export (production never shares an inode with the registry)
    assert exported.read_bytes() == stored(2).read_bytes()
    assert not os.path.samefile(exported, stored(2))
    app.registry.rollback("check the export follows", actor="test")
    assert json.loads((root / "production" / "model.json").read_text())["id"] == "m0001"
    assert (root / "production" / "model.onnx").read_bytes() == stored(1).read_bytes()

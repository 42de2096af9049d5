"""`flywheel demo` as `make demo` runs it: a first model that detects the shapes, a second
generation (a batch that adds a class) scored beside it on the same val images and better,
and `flywheel predict` pre-labelling new images with the production model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.app import App

pytestmark = pytest.mark.slow  # two real trainings: under a minute on 2 idle cores, more under load


def test_the_demo_learns_and_shows_what_the_gate_saw(tmp_path: Path):
    root = tmp_path / "demo-data"
    done = subprocess.run(
        [sys.executable, "-m", "flywheel", "demo", str(root)],
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ | {"COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    first = re.search(r"mAP50 ([0-9.]+), mAP50-95 ([0-9.]+) on v0001/val; promoted", out)
    assert first is not None, out
    assert float(first.group(1)) > 0.3  # it detects the shapes, not a 0.0000 model
    second = re.search(r"mAP50-95 ([0-9.]+) vs m0001's ([0-9.]+) on the same val images \(v0002/val\): promoted", out)
    assert second is not None, out
    assert float(second.group(1)) > float(second.group(2))
    assert "alembic" not in done.stderr.lower() and "Context impl" not in done.stderr

    app = App(root)
    production = app.store.production()
    assert production is not None and production.id == 2
    assert app.store.version(2).class_names == ["red", "blue", "green"]
    labels = sorted((root / "prelabels" / "labels").glob("*.txt"))
    assert len(labels) == 5 and sum(len(p.read_text().split("\n")) - 1 for p in labels) > 0
    assert "images pre-labeled by m0002" in out

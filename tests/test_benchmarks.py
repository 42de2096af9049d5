"""The benchmarks still run and still report their figures (benchmarks/*.py, smallest forms).

Each runs its `--smoke` form (a small cut of the `--quick` one) as a user would, and the test
checks the JSON it writes: the figures docs/benchmarks.md quotes must be there and sane. Not a
speed test: timings depend on the machine and its load. About 4 minutes in all on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "datasets" / "bccd" / "yolo"

pytestmark = pytest.mark.slow
needs_bccd = pytest.mark.skipif(not (BCCD / "data.yaml").is_file(), reason=f"BCCD not found at {BCCD}")


def run(script: str, out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = script.removesuffix(".py")
    data: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["form"] == "smoke"
    assert len(data["machine"]["load_average"]) == 3
    return data


@needs_bccd
def test_overhead_reports_both_walls_the_ratio_and_the_daemons_steps(tmp_path: Path) -> None:
    data = run("overhead.py", tmp_path)
    kinds = [r["kind"] for r in data["runs"]]
    assert kinds == ["A", "B", "B1"]
    byhand, daemon, one_thread = data["runs"]
    assert byhand["wall_s"] > 0 and daemon["wall_s"] > 0 and one_thread["wall_s"] > 0
    assert byhand["threads"] == one_thread["threads"] == 1  # Ultralytics' default on 2 cores; training.threads 1
    assert data["ratio_flywheel_to_byhand_defaults"] == pytest.approx(daemon["wall_s"] / byhand["wall_s"], rel=1e-2)
    assert data["ratio_same_threads_one"] == pytest.approx(one_thread["wall_s"] / byhand["wall_s"], rel=1e-2)
    steps = daemon["split_s"]
    assert set(steps) >= {
        "detect (inbox watcher)",
        "ingest (validate, store)",
        "child start-up (python, torch, ultralytics)",
        "training (incl. final val)",
        "gate + promotion",
    }
    assert all(v >= 0 for v in steps.values()), steps
    # the steps cover the whole wall time, nothing counted twice
    assert sum(steps.values()) == pytest.approx(daemon["wall_s"], abs=0.1)
    assert daemon["epochs"] == data["settings"]["epochs"]
    assert daemon["gate"].startswith("promote")
    assert (daemon["train_images"], daemon["val_images"]) == (data["train_images"], data["val_images"])


@needs_bccd
def test_generations_reports_map_decisions_and_compute_for_both(tmp_path: Path) -> None:
    data = run("generations.py", tmp_path)
    fly, scratch = data["flywheel"], data["scratch"]
    assert [g["generation"] for g in fly] == [s["generation"] for s in scratch] == [1, 2]
    assert fly[0]["decisions"][0]["outcome"] == "promote"  # the first model: nothing to beat
    for g in fly:
        assert g["decisions"] and all(d["outcome"] in ("promote", "reject") for d in g["decisions"])
        assert 0.0 <= g["production_map50_95"] <= 1.0
        assert g["image_epochs"] > 0 and g["wall_s"] > 0
    # warm generation 2: epochs_warm on the whole version, against epochs_scratch from scratch
    t = data["settings"]["training"]
    assert fly[1]["image_epochs"] == fly[1]["train_images"] * t["epochs_warm"]
    assert scratch[1]["image_epochs"] == scratch[1]["train_images"] * t["epochs_scratch"]
    assert fly[1]["runs"][0]["start"] == "warm"
    c = data["cumulative"]
    assert c["flywheel_image_epochs"] < c["scratch_image_epochs"]


def test_ingest_reports_throughput_growth_and_daemon_memory(tmp_path: Path) -> None:
    data = run("ingest.py", tmp_path)
    (first,) = data["throughput"]
    assert first["images"] == 200 and first["images_per_s"] > 0 and first["peak_rss_mib"] > 0
    assert len(data["growth"]) == 5
    before = [r["dataset_images_before"] for r in data["growth"]]
    assert before == [200, 400, 600, 800, 1000]
    assert all(r["create_version_s"] > 0 for r in data["growth"])
    assert data["first_training_folder"]["version_images"] == 1200 and data["first_training_folder"]["seconds"] > 0
    idle = data["daemon_idle"]
    assert idle["idle_rss_mib"] > 0
    assert not idle["torch_loaded"], idle["torch_libraries"]  # torch belongs in the training child only

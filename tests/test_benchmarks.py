"""The benchmarks still run and still report their figures (benchmarks/*.py).

Each runs its `--smoke` form as a user would, the cut each script's --help calls "the test":
every arm's code path at 96-128 px in a few minutes, and the test checks the JSON it writes:
the figures docs/benchmarks.md quotes must be there and sane. Not a speed or quality test:
timings depend on the machine and its load, and a smoke run's mAP says nothing.
FLYWHEEL_BENCH_FORM=quick runs the larger quick forms instead (about 16 minutes in all on 2
idle cores; CI ran them until they brought the slow suite to 38 minutes of CI's 60).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flywheel.app import App

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "datasets" / "bccd" / "yolo"

FORM = os.environ.get("FLYWHEEL_BENCH_FORM", "smoke")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
needs_bccd = pytest.mark.skipif(not (BCCD / "data.yaml").is_file(), reason=f"BCCD not found at {BCCD}")


def run(script: str, out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), f"--{FORM}", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=2300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = script.removesuffix(".py")
    data: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["form"] == FORM
    assert len(data["machine"]["load_average"]) == 3
    return data


@needs_bccd
def test_overhead_reports_both_walls_the_ratio_and_the_daemons_steps(tmp_path: Path) -> None:
    data = run("overhead.py", tmp_path)
    kinds = [r["kind"] for r in data["runs"]]
    settings = data["settings"]
    assert kinds[:2] == ["A", "B"] and set(kinds) == {"A", "B", *settings["extra"]}
    assert kinds.count("A") == kinds.count("B") == settings["rounds"]  # interleaved A/B rounds
    byhand, daemon = data["runs"][0], data["runs"][1]
    one_thread = next(r for r in data["runs"] if r["kind"] == "B1")
    assert byhand["wall_s"] > 0 and daemon["wall_s"] > 0 and one_thread["wall_s"] > 0
    from ultralytics.utils import NUM_THREADS  # Ultralytics' own count on this machine

    assert byhand["threads"] == NUM_THREADS and one_thread["threads"] == 1  # training.threads = 1
    # the ratios themselves are checked on known walls in test_benchmark_figures.py
    assert data["ratio_flywheel_to_byhand_defaults"] > 0 and data["ratio_same_threads_one"] > 0
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
    generations = list(range(1, data["settings"]["batches"] + 1))
    assert [g["generation"] for g in fly] == [s["version"] for s in scratch] == generations
    assert fly[0]["decisions"][0]["outcome"] == "promote"  # the first model: nothing to beat
    # each generation's decisions are the daemon's own, as its store reads them back
    recorded = App(tmp_path / "work" / "flywheel").store.gate_decisions()
    for g in fly:
        mine = [d for d in recorded if d.version_id == g["generation"]]
        assert [(d["model"], d["outcome"], d["rule"]) for d in g["decisions"]] == [
            (d.candidate_model_id, _text(d.outcome), _text(d.rule)) for d in mine
        ]
        assert mine and 0.0 <= g["production_map50_95"] <= 1.0
        assert g["image_epochs"] > 0 and g["wall_s"] > 0
    # warm generation 2: the budget it chose, on the whole version, against epochs_scratch from scratch
    t = data["settings"]["training"]
    warm = fly[1]["runs"][0]
    assert warm["start"] == "warm" and warm["budget"]["epochs"] == warm["planned_epochs"] >= warm["epochs"] > 0
    assert "train images new" in warm["budget"]["why"]
    # the scratch arm trained the whole version for epochs_scratch, as its settings say
    assert [s["epochs"] for s in scratch] == [t["epochs_scratch"]] * len(scratch)
    c = data["cumulative"]
    # the totals and ratios are checked on known inputs in test_benchmark_figures.py; whether
    # flywheel's compute is the smaller is the benchmark's finding, not a property of the code
    assert c["flywheel_image_epochs"] > 0 and c["scratch_image_epochs"] > 0 and c["compute_ratio"] > 0
    assert len(c["map_ratios"]) == len(fly)
    rules = data["gate_vs_heldout"]  # how often held-out truth contradicts each rule's decisions
    assert rules["first_model"] == {"decisions": 1, "contradicted": 0}
    assert sum(r["decisions"] for r in rules.values()) == sum(len(g["decisions"]) for g in fly)

    # the two arms run as two processes (`--arms scratch`, `--arms flywheel`) report as one
    scratch_only, fly_only = tmp_path / "scratch.json", tmp_path / "flywheel.json"
    scratch_only.write_text(json.dumps({**data, "flywheel": None, "scratch": scratch}))
    fly_only.write_text(json.dumps({**data, "scratch": [], "cumulative": None}))
    merged = tmp_path / "merged-here"
    proc = merge(scratch_only, fly_only, merged)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = json.loads((merged / "generations.json").read_text())
    assert both["cumulative"] == c and both["scratch"] == scratch and both["flywheel"] == fly
    assert (merged / "generations.md").read_text().startswith(f"bccd train split in {len(fly)} batches")
    # without --out the report goes beside the flywheel run's JSON, which stays as it was
    before = fly_only.read_text()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "generations.py"), "--merge", str(scratch_only), str(fly_only)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fly_only.read_text() == before
    assert json.loads((tmp_path / "merged" / "generations.json").read_text())["cumulative"] == c
    # and refuse two runs that trained on different versions, saying how to make them agree
    scratch_only.write_text(json.dumps({"scratch": [{**s, "manifest_sha256": "0" * 64} for s in scratch]}))
    proc = merge(scratch_only, fly_only, merged)
    assert proc.returncode != 0 and "trained on different versions" in proc.stderr
    assert "same --data, --batches and --seed" in proc.stderr

    # a run stopped after its daemon had finished (a lent machine's time limit): the chain read
    # back from the daemon's root and scored again is the one the run reported
    again = run("generations.py", tmp_path / "recovered", "--recover", str(tmp_path / "work" / "flywheel"))
    assert again["recovered_from"] == str(tmp_path / "work" / "flywheel") and again["scratch"] == []
    keys = ("generation", "production_model", "decisions", "runs", "image_epochs", "manifest_sha256")
    assert [{k: g[k] for k in keys} for g in again["flywheel"]] == [{k: g[k] for k in keys} for g in fly]
    assert [g["production_map50_95"] for g in again["flywheel"]] == pytest.approx(
        [g["production_map50_95"] for g in fly], abs=1e-4
    )


def _text(value: object) -> str:
    """An enum's value, or the text itself (a store may give either)."""
    return str(getattr(value, "value", value))


def merge(scratch: Path, flywheel: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "benchmarks" / "generations.py"), "--merge", str(scratch), str(flywheel)]
    return subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)


def test_ingest_reports_throughput_growth_and_daemon_memory(tmp_path: Path) -> None:
    data = run("ingest.py", tmp_path)
    settings = data["settings"]
    (first,) = data["throughput"]
    assert first["images"] == settings["sizes"][0] and first["images_per_s"] > 0 and first["peak_rss_mib"] > 0
    assert len(data["growth"]) == settings["versions"]
    before = [r["dataset_images_before"] for r in data["growth"]]
    assert before == [first["images"] + i * settings["growth"] for i in range(settings["versions"])]
    assert all(r["create_version_s"] > 0 for r in data["growth"])
    folder = data["first_training_folder"]
    assert folder["version_images"] == before[-1] + settings["growth"] and folder["seconds"] > 0
    idle = data["daemon_idle"]
    assert idle["idle_rss_mib"] > 0
    assert not idle["torch_loaded"], idle["torch_libraries"]  # torch belongs in the training child only


@needs_bccd
def test_transfer_reports_every_arm_with_its_compute_and_strategy(tmp_path: Path) -> None:
    data = run("transfer.py", tmp_path)
    arms = data["arms"]
    assert list(arms) == ["A", "a", "b", "c"]
    t = data["settings"]
    assert arms["A"]["train_images"] < arms["a"]["train_images"] == arms["b"]["train_images"]
    assert arms["a"]["image_epochs"] == arms["a"]["train_images"] * t["epochs_scratch"]
    assert arms["b"]["image_epochs"] == arms["b"]["train_images"] * t["epochs_warm"]
    assert (arms["a"]["strategy"], arms["b"]["strategy"]) == ("scratch", "fine_tune+backbone_lr_x0.3")
    assert arms["c"]["strategy"].startswith("two_phase") and arms["c"]["params"]["freeze_epochs"] >= 1
    for arm in arms.values():
        assert 0.0 <= arm["map50_95"] <= 1.0 and arm["wall_seconds"] > 0
    assert "mAP50-95 / (a)" in (tmp_path / "transfer.md").read_text()


@needs_bccd
def test_shrink_copies_a_data_set_with_smaller_photos_and_the_same_labels(tmp_path: Path) -> None:
    from PIL import Image

    script = [sys.executable, str(REPO / "benchmarks" / "shrink.py"), "bccd", str(tmp_path), "--size", "200"]
    proc = subprocess.run(script, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    copy = tmp_path / "bccd" / "yolo"
    assert "test" not in (copy / "data.yaml").read_text()  # the benchmarks read train and val only
    for split in ("train", "valid"):
        photos = sorted((copy / "images" / split).iterdir())
        assert [p.name for p in photos] == sorted(p.name for p in (BCCD / "images" / split).iterdir())
        with Image.open(photos[0]) as image:
            assert max(image.size) == 200
        for label in (BCCD / "labels" / split).iterdir():
            assert (copy / "labels" / split / label.name).read_bytes() == label.read_bytes()
    again = subprocess.run(script, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode != 0 and "exists: remove it first" in again.stderr


@needs_bccd
def test_suggest_trains_every_arm_on_its_own_k_from_one_pool(tmp_path: Path) -> None:
    # the smallest cut that runs every arm: val 10, seed set 12, K 4 of the rest, 1 epoch at 64 px
    command = [sys.executable, str(REPO / "benchmarks" / "suggest.py"), "--data", "bccd", "--seeds", "0"]
    command += ["--imgsz", "64", "--epochs", "1", "--sizes", "10", "12", "4", "--threads", "1", "--work", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads((tmp_path / "suggest-bccd.json").read_text())["runs"]
    assert result["seed"] == 0 and result["sizes"] == {"val": 10, "seed": 12, "pool": result["sizes"]["pool"], "k": 4}
    assert result["sizes"]["pool"] == len(list((BCCD / "images" / "train").iterdir())) - 22
    picks = {arm: result[arm]["picked"] for arm in ("suggest", "random", "diverse")}
    for arm, picked in picks.items():
        assert len(set(picked)) == 4, arm  # K distinct images each
        assert 0.0 <= result[arm]["map50_95"] <= 1.0 and result[arm]["epochs"] == 1
    assert result["overlap"] == len(set(picks["suggest"]) & set(picks["random"]))
    assert result["diverse_top_overlap"] == len(set(picks["diverse"]) & set(picks["suggest"]))
    assert "| seed | seed model | suggest K | random K | diverse K |" in proc.stdout

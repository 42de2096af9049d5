"""The figures the benchmarks report, computed from hand-made results with answers worked out
here: the medians and ratios of benchmarks/overhead.py, the compute and mAP ratios of
benchmarks/generations_report.py. The smoke runs (test_benchmarks.py) check that real runs
report them; this checks that they are the right numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_overhead_ratios_are_of_the_median_walls() -> None:
    walls = {"A": [10.0, 30.0, 20.0], "B": [12.0, 15.0, 60.0], "B1": [40.0, 50.0, 45.0], "A2": [5.0, 8.0, 6.0]}
    results = [{"kind": kind, "wall_s": w} for kind, ws in walls.items() for w in ws]
    assert script("overhead").summarise(results) == {
        "median_wall_s": {"A": 20.0, "B": 15.0, "B1": 45.0, "A2": 6.0},
        "ratio_flywheel_to_byhand_defaults": 0.75,  # 15 / 20
        "ratio_same_threads_one": 2.25,  # 45 / 20
        "ratio_same_threads_all": 2.5,  # 15 / 6
    }


def test_a_run_record_counts_the_images_it_trained_on() -> None:
    report = script("generations_report")
    run: dict[str, Any] = {
        "id": 3,
        "start_kind": "warm",
        "purpose": "candidate",
        "epochs_done": 4,
        "epochs": 5,
        "params": '{"strategy": "fine_tune"}',
        "replay": None,
        "version_id": 2,
        "model_id": 7,
        "state": "succeeded",
    }
    versions = {2: {"train_images": 30}}
    assert report.run_record(run, versions)["image_epochs"] == 120  # 4 epochs of the version's 30
    replayed = {**run, "replay": '{"train_images": 12}'}
    assert report.run_record(replayed, versions)["image_epochs"] == 48  # 4 epochs of the replay's 12


def _generation(image_epochs: int, refresh: int, production: float, wall: float) -> dict[str, Any]:
    runs = [{"purpose": "candidate", "image_epochs": image_epochs - refresh}]
    runs += [{"purpose": "refresh", "image_epochs": refresh}] if refresh else []
    return {"image_epochs": image_epochs, "runs": runs, "production_map50_95": production, "wall_s": wall}


def test_cumulative_compute_and_map_ratios() -> None:
    flywheel = [_generation(100, 0, 0.3, 10.0), _generation(80, 30, 0.4, 20.0), _generation(60, 0, 0.2, 5.0)]
    scratch = [
        {"image_epochs": 100, "map50_95": 0.3, "wall_s": 9.0},
        {"image_epochs": 200, "map50_95": 0.5, "wall_s": 18.0},
        {"image_epochs": 100, "map50_95": 0.0, "wall_s": 3.0},  # a reference that scored 0: no ratio
    ]
    assert script("generations_report").cumulative(flywheel, scratch) == {
        "flywheel_image_epochs": 240,
        "scratch_image_epochs": 400,
        "compute_ratio": 0.6,
        "refresh_image_epochs": 30,
        "refresh_compute_ratio": 0.075,
        "flywheel_wall_s": 35.0,
        "scratch_wall_s": 30.0,
        "map_ratios": [1.0, 0.8, None],
        "lowest_map_ratio": 0.8,
        "last_map_ratio": None,
    }


def test_held_out_truth_contradicts_a_rejected_better_and_a_promoted_worse_candidate() -> None:
    def decision(model: int, outcome: str, rule: str) -> dict[str, Any]:
        return {"model": model, "outcome": outcome, "rule": rule}

    generations = [
        {"decisions": [decision(1, "promote", "first_model")]},
        {"decisions": [decision(2, "reject", "map_regressed")]},  # 0.5 on held-out > production 1's 0.4
        {"decisions": [decision(3, "promote", "passed")]},  # 0.3 < 0.4: promoted worse
        {"decisions": [decision(4, "reject", "map_regressed")]},  # 0.2 < production 3's 0.3: right
    ]
    heldout = {str(m): {"map50_95": v} for m, v in ((1, 0.4), (2, 0.5), (3, 0.3), (4, 0.2))}
    assert script("generations_report").gate_vs_heldout(generations, heldout) == {
        "first_model": {"decisions": 1, "contradicted": 0},
        "map_regressed": {"decisions": 2, "contradicted": 1},
        "passed": {"decisions": 1, "contradicted": 1},
    }


@pytest.fixture(autouse=True)
def _no_leftover_modules() -> Any:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("bench_"):
            del sys.modules[name]

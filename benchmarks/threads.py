"""How many torch threads should a training use when other work may share the machine?

The same training (flywheel's own child, BCCD's train split, fixed epochs, imgsz and seed),
timed under each thread setting, first on the idle machine, then with a competing load: one
bounded busy loop, a process that keeps one core at 100% for as long as the training runs
(an inference server, an exporter, another job). Settings:

  all         training.threads = every core, OpenMP's default (active) wait policy
  all-passive every core, OMP_WAIT_POLICY=PASSIVE (idle threads sleep instead of spinning)
  cores-1     one core fewer than the machine has (Ultralytics' own default)

Rounds are interleaved (idle, loaded, idle, loaded) so a drift in the machine hits every
setting. Prints wall times, each with the load average, and the ratios to `cores-1` idle.

    .venv/bin/python benchmarks/threads.py [--epochs 3 --imgsz 160 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import datasets
from common import load_text, machine, table

SETTINGS = ("all", "all-passive", "cores-1")


def busy(stop_at: float) -> None:
    """One core at 100% until `stop_at` (bounded: never outlives the benchmark)."""
    x = 0
    while time.time() < stop_at:
        x = (x * 31 + 7) % 1_000_003


def train_once(work: Path, name: str, data_yaml: Path, names: list[str], setting: str, form: dict[str, Any]) -> float:
    from flywheel.core.config import parse
    from flywheel.core.domain import StartKind
    from flywheel.core.plan import Start, build_spec, resolve_params
    from flywheel.training.local_trainer import SubprocessTrainer

    cores = os.cpu_count() or 1
    threads = max(1, cores - 1) if setting == "cores-1" else cores
    config = parse({"training": {**form, "threads": threads}})
    start = Start(StartKind.SCRATCH, "yolov8n.yaml", None)
    spec = build_spec(0, data_yaml, work / name, start, resolve_params(config, start), names, [])
    os.environ.pop("OMP_WAIT_POLICY", None)
    if setting == "all-passive":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # inherited by the child
    began = time.monotonic()
    SubprocessTrainer(work / ".ultralytics").run(spec, lambda _e: None)
    os.environ.pop("OMP_WAIT_POLICY", None)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flywheel-bench-threads"))
    args = parser.parse_args()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.work / ".ultralytics"))
    data = datasets.copy(args.work, "bccd")
    import yaml

    listing = args.work / "train.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in data.train))
    spec = {"path": str(args.work), "train": str(listing), "val": str(listing), "names": dict(enumerate(data.names))}
    data_yaml = args.work / "threads.yaml"
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    form = {"epochs_scratch": args.epochs, "imgsz": args.imgsz, "batch": 16}
    results: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for loaded in (False, True):
            for setting in SETTINGS:
                load_proc = None
                if loaded:
                    load_proc = multiprocessing.Process(target=busy, args=(time.time() + 3600,), daemon=True)
                    load_proc.start()
                    time.sleep(1)  # the loop is running before the training starts
                before = machine()["load_average"][0]
                wall = train_once(args.work, f"r{r}-{setting}-{int(loaded)}", data_yaml, data.names, setting, form)
                if load_proc is not None:
                    load_proc.terminate()
                    load_proc.join()
                row = {
                    "round": r,
                    "loaded": loaded,
                    "setting": setting,
                    "wall_s": round(wall, 1),
                    "load_before": before,
                }
                results.append(row)
                print(f"[{setting}, {'loaded' if loaded else 'idle'}] {wall:.1f}s; {load_text()}", flush=True)
    base = [x["wall_s"] for x in results if x["setting"] == "cores-1" and not x["loaded"]]
    ref = sum(base) / len(base)
    rows = []
    for loaded in (False, True):
        for setting in SETTINGS:
            walls = [x["wall_s"] for x in results if x["setting"] == setting and x["loaded"] == loaded]
            mean = sum(walls) / len(walls)
            rows.append(
                [
                    setting,
                    "one core busy" if loaded else "idle",
                    " / ".join(f"{w:.1f}" for w in walls),
                    f"{mean / ref:.2f}",
                ]
            )
    print(table(["threads", "machine", "wall s (rounds)", "mean / cores-1 idle"], rows))
    (args.work / "threads.json").write_text(
        json.dumps({"form": form, "cpus": os.cpu_count(), "runs": results}, indent=2)
    )


if __name__ == "__main__":
    main()

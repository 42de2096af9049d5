"""What does a Ray job add to a training? The same tiny training, local and as a Ray job.

L  `SubprocessTrainer`: the child as a subprocess of this process, events on a pipe.
R  `RayJobTrainer`: the same child as a Ray job on a real two-node cluster on 127.0.0.1
   (tests/ray_cluster.py: a head, and a trainer node with `flywheel-trainer`), events through
   runs/<run>/events.jsonl, followed every 0.5 s (the default poll).

Per run: submit -> `started` (process up, torch/Ultralytics imported), submit -> first epoch
event, last epoch event -> `run` returned, and wall time; the load average is printed with
each row (the machine is shared: compare rows of the same round). Runs are interleaved
L, R, L, R, ... Same spec both ways: synthetic images (8, 32 px), yolov8n.yaml, batch 4,
1 thread, no evaluation.

    PYTHONPATH=. .venv/bin/python benchmarks/ray_overhead.py [--rounds 2] [--epochs 2]

Measured once (2 shared cores, load ~7, Ray 2.60, 2 rounds x 2 epochs; cluster up in 24 s):
Ray adds ~3.3 s before `started` (the job's supervisor actor and a worker process start),
the same ~3.4 s to the first epoch, ~0.5 s from the last epoch to `run` returning (the
0.5 s poll), ~3.9 s wall per training (local 13.5 s, Ray 15.9-18.9 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from flywheel.core.events import TrainingEvent  # noqa: E402
from flywheel.core.spec import TrainSpec  # noqa: E402
from flywheel.training.local_trainer import SubprocessTrainer  # noqa: E402
from flywheel.training.ray_jobs import RayJobTrainer  # noqa: E402
from tests import ray_cluster  # noqa: E402
from tests.training_support import dataset, spec_for  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(trainer: Any, spec: TrainSpec) -> dict[str, float]:
    stamps: dict[str, float] = {}

    def on_event(event: TrainingEvent) -> None:
        now = time.monotonic()
        stamps.setdefault(event.kind, now)
        if event.kind == "epoch":
            stamps["last_epoch"] = now

    began = time.monotonic()
    trainer.run(spec, on_event)
    ended = time.monotonic()
    return {
        "to_started": stamps["started"] - began,
        "to_first_epoch": stamps["epoch"] - began,
        "last_epoch_to_return": ended - stamps["last_epoch"],
        "wall": ended - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-ray-"))
    os.environ["YOLO_CONFIG_DIR"] = str(work / "ultralytics")
    data_yaml = dataset(work / "data", ["a", "b"])
    base = spec_for(data_yaml, work / "runs" / "r0001", "yolov8n.yaml", False, ["a", "b"], threads=1)
    base = dataclasses.replace(base, epochs=args.epochs, evaluate=[])

    print(f"starting a two-node Ray cluster on 127.0.0.1 (load {load()})", flush=True)
    began = time.monotonic()
    with ray_cluster.running_cluster() as cluster:
        print(f"cluster up in {time.monotonic() - began:.1f}s at {cluster.address}", flush=True)
        local = SubprocessTrainer(work / "ultralytics")
        remote = RayJobTrainer(
            cluster.address, work / "ultralytics", resources={ray_cluster.TRAINER_RESOURCE: 1}, prefix="bench-"
        )
        header = f"{'run':<8}{'->started':>11}{'->epoch 1':>11}{'last->ret':>11}{'wall':>8}   load (1/5/15 min)"
        print(header, flush=True)
        rows: dict[str, list[dict[str, float]]] = {"local": [], "ray": []}
        run_id = 0
        for _ in range(args.rounds):
            for name, trainer in (("local", local), ("ray", remote)):
                run_id += 1
                spec = dataclasses.replace(base, run_id=run_id, out_dir=str(work / "runs" / f"r{run_id:04d}"))
                t = timed(trainer, spec)
                rows[name].append(t)
                print(
                    f"{name:<8}{t['to_started']:>10.2f}s{t['to_first_epoch']:>10.2f}s"
                    f"{t['last_epoch_to_return']:>10.2f}s{t['wall']:>7.1f}s   {load()}",
                    flush=True,
                )
        print("mean difference ray - local:")
        for key in ("to_started", "to_first_epoch", "last_epoch_to_return", "wall"):
            mean = {k: sum(r[key] for r in v) / len(v) for k, v in rows.items()}
            print(f"  {key:<22}{mean['ray'] - mean['local']:>+8.2f}s  (local {mean['local']:.2f}s)")


if __name__ == "__main__":
    main()

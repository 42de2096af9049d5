"""Four batches, one after another: flywheel's warm-started generations vs retraining from scratch.

BCCD's train split (copied first) is cut into 4 batches (shuffled with a fixed seed). They
arrive one after another at a real daemon (`flywheel run` in its own process, on a fresh data
root): each is dropped into the inbox and the benchmark waits for the gate's decision on it
(and on the negative-transfer guard's scratch challenger, if one is due) before dropping the
next. So generation 1 trains from `model.base`, generations 2-4 warm-start from production,
and the gate decides each time, exactly as in service.

The reference retrains from scratch on everything at each step: `epochs_scratch` from
`model.base` on the very dataset version the daemon made (same train images, same seed, same
threads), through flywheel's own training child. Generation 1 is the same training both ways
(from scratch, same data, seed and threads: bit-identical), so it is run once.

Every model is scored on a fixed held-out set the daemon never sees: BCCD's `valid` split (87
images), with flywheel's own evaluation code. Reported per generation: production's mAP50-95
(and the candidate's), the gate's decision, compute (training images x epochs run, cumulative)
and wall time (flywheel: batch complete -> gate decision; scratch: the training child's run,
start-up and scoring included), for both.

    .venv/bin/python benchmarks/generations.py --smoke   # 2 batches of 24 images, 96 px, 2 / 1 epochs
    .venv/bin/python benchmarks/generations.py --quick   # 4 batches, 128 px, 12 / 4 epochs
    .venv/bin/python benchmarks/generations.py           # 4 batches, 160 px, 30 / 6 epochs

Run times on the shared 2-core CPU machine: smoke 2.3 min at load 6-10, quick 3.5 min at load
2.7, full 12.6 min at load 5-11. Both arms train with the same thread count, `--threads`
(default 1, so wall times on a shared machine compare; 0 = every core). `--set key=value`
overrides a [training] key (e.g. `--set imgsz=320 --set epochs_scratch=50 --set
epochs_warm=10` for flywheel's defaults at 320 px: several hours here).

Prints a table and writes `<out>/generations.json` (default out: /tmp/flywheel-bench-generations).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    NAMES,
    bccd_copy,
    drop,
    load_text,
    machine,
    query,
    score,
    start_daemon,
    stop_daemon,
    stop_on_sigterm,
    table,
    utc,
    wait_for,
    wait_ready,
    write_config,
    write_json,
    yolo_batch,
)

FORMS: dict[str, dict[str, Any]] = {
    "smoke": {
        "batches": 2,
        "images": 48,
        "heldout": 20,
        "training": {"imgsz": 96, "epochs_scratch": 2, "epochs_warm": 1},
    },
    "quick": {
        "batches": 4,
        "images": 205,
        "heldout": 87,
        "training": {"imgsz": 128, "epochs_scratch": 12, "epochs_warm": 4},
    },
    "full": {
        "batches": 4,
        "images": 205,
        "heldout": 87,
        "training": {"imgsz": 160, "epochs_scratch": 30, "epochs_warm": 6},
    },
}
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def cut(images: list[Path], batches: int, seed: int) -> list[list[Path]]:
    """`batches` near-equal parts of the shuffled images."""
    pool = sorted(images)
    random.Random(seed).shuffle(pool)
    size = -(-len(pool) // batches)
    return [pool[i * size : (i + 1) * size] for i in range(batches)]


def heldout_yaml(data: Path, count: int) -> Path:
    """A data YAML whose val split is the first `count` images of BCCD's valid split."""
    images = sorted((data / "images" / "valid").glob("*.jpg"))[:count]
    listing = data / "heldout.txt"
    listing.write_text("".join(f"{p.resolve()}\n" for p in images))
    spec = {"path": str(data.resolve()), "train": str(listing), "val": str(listing), "names": dict(enumerate(NAMES))}
    path = data / "heldout.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def settled(root: Path, version_id: int) -> list[dict[str, Any]] | None:
    """The gate decisions on `version_id` once every run is finished, else None."""
    decisions = query(root, "SELECT * FROM gate_decision WHERE version_id = ? ORDER BY id", (version_id,))
    runs = query(root, "SELECT id, state FROM training_run")
    if not decisions or any(r["state"] not in TERMINAL for r in runs):
        return None
    return decisions


def run_flywheel(work: Path, batches: list[list[Path]], training: dict[str, Any], threads: int) -> dict[str, Any]:
    """Drop each batch into a running daemon, one at a time; what it decided and when."""
    root = work / "flywheel"
    shutil.rmtree(root, ignore_errors=True)
    write_config(root, {**training, "batch": 16, "seed": 0, "threads": threads})
    staging = work / "staging"  # not root/.staging: flywheel unpacks archives there and clears it
    shutil.rmtree(staging, ignore_errors=True)
    for k, images in enumerate(batches, start=1):
        yolo_batch(staging / f"batch{k}", images, NAMES)
    log = work / "flywheel.log"
    log.unlink(missing_ok=True)
    proc = start_daemon(root, log)
    generations = []
    try:
        wait_ready(proc, log)
        for k in range(1, len(batches) + 1):
            load = machine()["load_average"]
            print(f"[gen {k}] dropping batch{k} ({len(batches[k - 1])} images); {load_text()}", flush=True)
            complete = drop(staging / f"batch{k}", root / "inbox")
            check = functools.partial(settled, root, k)
            wait_for(f"gate decision on v{k:04d}", check, proc, 4 * 3600)
            time.sleep(2.0)  # the guard's challenger run is created right after the warm run's decision
            decisions: list[dict[str, Any]] = wait_for(f"runs on v{k:04d} to finish", check, proc, 4 * 3600)
            production = query(root, "SELECT id FROM model WHERE status = 'production'")
            decided = max(utc(d["created_at"]) or 0.0 for d in decisions)
            generations.append(
                {
                    "generation": k,
                    "load_average": load,
                    "complete": complete,
                    "wall_s": round(decided - complete, 2),
                    "production_model": production[0]["id"] if production else None,
                    "decisions": [
                        {
                            "model": d["candidate_model_id"],
                            "outcome": d["outcome"],
                            "rule": d["rule"],
                            "candidate_map_val": round(d["candidate_map"], 4),
                            "production_map_val": d["production_map"] and round(d["production_map"], 4),
                        }
                        for d in decisions
                    ],
                }
            )
            g = generations[-1]
            print(f"[gen {k}] {g['wall_s']:.1f}s: {[d['outcome'] for d in g['decisions']]}", flush=True)
    finally:
        code = stop_daemon(proc)
    if code != 0:
        raise RuntimeError(f"the daemon exited with {code}; see {log}")
    runs = query(root, "SELECT * FROM training_run ORDER BY id")
    versions = {v["id"]: v for v in query(root, "SELECT * FROM dataset_version")}
    models = {m["id"]: m for m in query(root, "SELECT * FROM model")}
    for g in generations:
        mine = [r for r in runs if r["version_id"] == g["generation"]]
        g["runs"] = [
            {
                "run": r["id"],
                "start": r["start_kind"],
                "purpose": r["purpose"],
                "epochs": r["epochs_done"],
                "train_images": versions[r["version_id"]]["train_images"],
                "image_epochs": r["epochs_done"] * versions[r["version_id"]]["train_images"],
                "model": r["model_id"],
            }
            for r in mine
        ]
        g["image_epochs"] = sum(r["image_epochs"] for r in g["runs"])
        g["train_images"] = versions[g["generation"]]["train_images"]
        g["val_images"] = versions[g["generation"]]["val_images"]
    checkpoints = {m["id"]: root / "models" / m["sha256"][:2] / f"{m['sha256']}.pt" for m in models.values()}
    return {"root": str(root), "generations": generations, "checkpoints": checkpoints}


def run_scratch(
    work: Path, root: Path, version_id: int, training: dict[str, Any], heldout: Path, threads: int
) -> dict[str, Any]:
    """Retrain from `model.base` on the daemon's version `version_id`, `epochs_scratch` epochs,
    in flywheel's training child; scored on the held-out set in the same child."""
    from flywheel.config import parse
    from flywheel.domain import StartKind
    from flywheel.training.plan import Start, build_spec, resolve_params
    from flywheel.training.runner import SubprocessTrainer
    from flywheel.training.spec import EPOCH, EVALUATED, EvalTarget

    config = parse({"training": {**training, "batch": 16, "seed": 0, "threads": threads, "device": "cpu"}})
    start = Start(StartKind.SCRATCH, config.model.base, None)
    params = resolve_params(config, start)
    out = work / f"scratch-v{version_id}"
    shutil.rmtree(out, ignore_errors=True)
    data_yaml = root / "versions" / f"v{version_id:04d}" / "data.yaml"
    target = EvalTarget("scratch", "", "heldout", str(heldout))
    spec = build_spec(version_id, data_yaml, out, start, params, NAMES, [target])
    load = machine()["load_average"]
    started = time.monotonic()
    events = SubprocessTrainer(work / ".ultralytics").run(spec, lambda _e: None)
    wall = time.monotonic() - started
    scored = next(e for e in events if e["event"] == EVALUATED)
    epochs = sum(1 for e in events if e["event"] == EPOCH)
    version = query(root, "SELECT train_images FROM dataset_version WHERE id = ?", (version_id,))[0]
    train_images = int(version["train_images"])
    return {
        "generation": version_id,
        "load_average": load,
        "wall_s": round(wall, 2),
        "epochs": epochs,
        "train_images": train_images,
        "image_epochs": epochs * train_images,
        "map50_95": round(scored["map50_95"], 4),
        "map50": round(scored["map50"], 4),
    }


def report(data: dict[str, Any]) -> str:
    rows = []
    fly_compute = fly_wall = scratch_compute = scratch_wall = 0.0
    for g, s in zip(data["flywheel"], data["scratch"], strict=True):
        fly_compute += g["image_epochs"]
        fly_wall += g["wall_s"]
        scratch_compute += s["image_epochs"]
        scratch_wall += s["wall_s"]
        decisions = ", ".join(f"m{d['model']:04d} {d['outcome']} ({d['rule']})" for d in g["decisions"])
        rows.append(
            [
                g["generation"],
                g["train_images"],
                decisions,
                f"m{g['production_model']:04d}",
                f"{g['production_map50_95']:.4f}",
                f"{s['map50_95']:.4f}",
                f"{g['image_epochs']} / {fly_compute:.0f}",
                f"{s['image_epochs']} / {scratch_compute:.0f}",
                f"{g['wall_s']:.0f} / {fly_wall:.0f}",
                f"{s['wall_s']:.0f} / {scratch_wall:.0f}",
                g["load_average"][0],
            ]
        )
    t = data["settings"]["training"]
    scores = sorted(data["models"].items(), key=lambda x: int(x[0]))
    lines = [
        f"BCCD train split in {len(data['flywheel'])} batches, yolov8n, imgsz {t['imgsz']}, "
        f"epochs_scratch {t['epochs_scratch']}, epochs_warm {t['epochs_warm']}; "
        f"mAP50-95 on a held-out set of {data['heldout_images']} images (BCCD valid)",
        "",
        table(
            [
                "gen",
                "train images",
                "gate",
                "production",
                "production mAP50-95",
                "scratch mAP50-95",
                "flywheel image-epochs (gen / cum.)",
                "scratch image-epochs (gen / cum.)",
                "flywheel wall s (gen / cum.)",
                "scratch wall s (gen / cum.)",
                "load (1 min)",
            ],
            rows,
        ),
        "",
        f"cumulative compute flywheel / scratch: {fly_compute / scratch_compute:.3f}; "
        f"wall: {fly_wall / scratch_wall:.3f}",
        "candidates on the held-out set: " + ", ".join(f"m{int(k):04d} {v['map50_95']:.4f}" for k, v in scores),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="128 px, 12 / 4 epochs: a few minutes")
    size.add_argument("--smoke", action="store_true", help="2 small batches, 96 px (the test)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flywheel-bench-generations"), help="results and work")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a [training] override")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cut into batches")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="training threads, both arms (default 1: on a shared machine every-core runs swing with the load; "
        "0 = every core, flywheel's default)",
    )
    args = parser.parse_args()
    stop_on_sigterm()
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    form = json.loads(json.dumps(FORMS[name]))
    for item in args.set:
        key, value = item.split("=", 1)
        form["training"][key] = yaml.safe_load(value)
    training: dict[str, Any] = form["training"]
    out: Path = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = bccd_copy(work)
    batches = cut(sorted((data / "images" / "train").glob("*.jpg"))[: form["images"]], form["batches"], args.seed)
    heldout = heldout_yaml(data, form["heldout"])
    threads: int = args.threads or os.cpu_count() or 1
    print(f"{name} form: {json.dumps(form)}; batches of {[len(b) for b in batches]}; {load_text()}", flush=True)
    began = time.time()
    fly = run_flywheel(work, batches, training, threads)
    root = Path(fly["root"])
    scratch = []
    for k in range(1, len(batches) + 1):
        if k == 1:
            continue  # filled in below from flywheel's generation 1: the same training
        print(f"[scratch v{k}] {training['epochs_scratch']} epochs from scratch; {load_text()}", flush=True)
        scratch.append(run_scratch(work, root, k, training, heldout, threads))
        print(f"[scratch v{k}] {scratch[-1]['wall_s']:.1f}s mAP50-95 {scratch[-1]['map50_95']}", flush=True)
    print(f"scoring {len(fly['checkpoints'])} models on the held-out set; {load_text()}", flush=True)
    models = score(work, {str(k): v for k, v in fly["checkpoints"].items()}, heldout, training["imgsz"], 16, threads)
    for g in fly["generations"]:
        g["production_map50_95"] = models[str(g["production_model"])]["map50_95"]
    first = fly["generations"][0]
    scratch.insert(
        0,
        {
            "generation": 1,
            "load_average": first["load_average"],
            "wall_s": first["wall_s"],
            "epochs": first["runs"][0]["epochs"],
            "train_images": first["train_images"],
            "image_epochs": first["image_epochs"],
            "map50_95": round(models[str(first["runs"][0]["model"])]["map50_95"], 4),
            "same_as_flywheel": True,
        },
    )
    result = {
        "benchmark": "generations",
        "threads": threads,
        "form": name,
        "settings": form,
        "heldout_images": form["heldout"],
        "machine": machine(),
        "seconds": 0.0,
        "flywheel": fly["generations"],
        "scratch": scratch,
        "models": {k: {"map50_95": round(v["map50_95"], 4), "map50": round(v["map50"], 4)} for k, v in models.items()},
    }
    result["cumulative"] = {
        "flywheel_image_epochs": sum(g["image_epochs"] for g in fly["generations"]),
        "scratch_image_epochs": sum(s["image_epochs"] for s in scratch),
        "flywheel_wall_s": round(sum(g["wall_s"] for g in fly["generations"]), 1),
        "scratch_wall_s": round(sum(s["wall_s"] for s in scratch), 1),
    }
    result["seconds"] = round(time.time() - began, 1)
    text = report(result)
    path = write_json(out, "generations.json", result)
    (out / "generations.md").write_text(text + "\n")
    print("\n" + text + f"\n\n{load_text()}; took {result['seconds']:.0f}s; written to {path}")


if __name__ == "__main__":
    main()

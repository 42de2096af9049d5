"""Generations: flywheel's chain of models against retraining from scratch at every step.

A real data set's train split (BCCD, or Aquarium: `--data`) is cut into `--batches` batches
(shuffled with a fixed seed; the cut into 4 is the cut into 8 with neighbours merged). They
arrive one after another at a real daemon (`flywheel run` in its own process, fresh data
root): each is dropped into the inbox and the benchmark waits until every run on its version
is finished (the warm candidate, and a refresh or challenger if one is due) before dropping
the next. Generation 1 trains from `model.base`; later ones warm-start from production with
flywheel's defaults, and the gate decides each time, exactly as in service.

The reference retrains from scratch at every step: `model.base`, flywheel's scratch settings,
on the very version the daemon made (same images, same split by hash, same seed and threads),
through flywheel's own training child (`refs.py`: cached by content and settings, so every
variant of the flywheel arm is measured against the same references).

Every model is scored on a held-out split the daemon never sees (the data set's `valid`),
with flywheel's own evaluation code. Reported per generation: production / scratch mAP50-95,
the gate's decisions and which start won, the budget each run chose and why, compute
(training images x epochs run, refresh trainings included) and wall time of both arms.

    .venv/bin/python benchmarks/generations.py --smoke                  # 2 small batches, 96 px (the test)
    .venv/bin/python benchmarks/generations.py --quick                  # 4 batches, 128 px, short runs
    .venv/bin/python benchmarks/generations.py --data bccd --batches 8  # 320 px, flywheel's defaults
    .venv/bin/python benchmarks/generations.py --data aquarium --batches 4 --seed 1

`--arms scratch` trains only the references, `--arms flywheel` only the chain; run side by side
(on a machine with room for both), `--merge SCRATCH_JSON FLYWHEEL_JSON` reports them together.
`--scratch-versions 7,8` splits the references between processes that share a `--cache`. Both
arms train with the same thread count, `--threads` (default 1, so wall times compare on a shared
machine; 0 = every core). `--set key=value` overrides a [training] key, `--gate key=value` a
[gate] key. Writes `<out>/generations.json` and `.md` (default out:
/tmp/flywheel-bench-generations/<data>-<batches>-s<seed>).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets
from common import (
    drop,
    load_text,
    machine,
    query,
    score,
    start_daemon,
    stop_daemon,
    stop_on_sigterm,
    utc,
    wait_for,
    wait_ready,
    write_config,
    write_json,
)
from generations_report import cumulative, decision_record, gate_vs_heldout, merge, read_back, recover, report
from refs import ingest_only, reference

FORMS: dict[str, dict[str, Any]] = {
    "smoke": {
        "batches": 2,
        "images": 48,
        "heldout": 20,
        "training": {"imgsz": 96, "epochs_scratch": 2, "epochs_warm": 1},
    },
    "quick": {
        "batches": 4,
        "images": 0,
        "heldout": 0,
        "training": {"imgsz": 128, "epochs_scratch": 12, "epochs_warm": 4},
    },
    "full": {"batches": 8, "images": 0, "heldout": 0, "training": {"imgsz": 320}},
}
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
CACHE = Path("/tmp/flywheel-bench-cache")


def settled(root: Path, version_id: int, quiet_s: float) -> list[dict[str, Any]] | None:
    """The gate decisions on `version_id` once every run is finished and nothing new has been
    created for `quiet_s` (a refresh is created right after the warm candidate's decision)."""
    decisions = query(root, "SELECT * FROM gate_decision WHERE version_id = ? ORDER BY id", (version_id,))
    runs = query(root, "SELECT id, state, created_at FROM training_run")
    if not decisions or any(r["state"] not in TERMINAL for r in runs):
        return None
    newest = max([utc(d["created_at"]) or 0.0 for d in decisions] + [utc(r["created_at"]) or 0.0 for r in runs])
    return decisions if time.time() - newest >= quiet_s else None


def run_flywheel(
    work: Path, data: datasets.Dataset, batches: list[list[Path]], config: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Drop each batch into a running daemon, one at a time; what it decided and when."""
    root = work / "flywheel"
    shutil.rmtree(root, ignore_errors=True)
    write_config(root, config["training"], extra={k: v for k, v in config.items() if k != "training"})
    staging = work / "staging"  # not root/.staging: flywheel unpacks archives there and clears it
    shutil.rmtree(staging, ignore_errors=True)
    for k, images in enumerate(batches, start=1):
        datasets.yolo_batch(staging / f"batch{k}", images, data.names)
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
            check = functools.partial(settled, root, k, 3.0)
            decisions: list[dict[str, Any]] = wait_for(f"runs on v{k:04d} to finish", check, proc, 12 * 3600)
            production = query(root, "SELECT id FROM model WHERE status = 'production'")
            decided = max(utc(d["created_at"]) or 0.0 for d in decisions)
            generations.append(
                {
                    "generation": k,
                    "load_average": load,
                    "load_after": machine()["load_average"],
                    "complete": complete,
                    "wall_s": round(decided - complete, 2),
                    "production_model": production[0]["id"] if production else None,
                    "decisions": [decision_record(d) for d in decisions],
                }
            )
            g = generations[-1]
            print(f"[gen {k}] {g['wall_s']:.1f}s: {[(d['model'], d['outcome']) for d in g['decisions']]}", flush=True)
    finally:
        code = stop_daemon(proc)
    if code != 0:
        raise RuntimeError(f"the daemon exited with {code}; see {log}")
    return read_back(root, generations)


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="4 batches, 128 px, 12 / 4 epochs")
    size.add_argument("--smoke", action="store_true", help="2 small batches, 96 px (the test)")
    parser.add_argument("--data", choices=datasets.KNOWN, default="bccd")
    parser.add_argument("--batches", type=int, default=0, help="batches (default: 8 full, 4 quick, 2 smoke)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (training.seed), both arms")
    parser.add_argument(
        "--generations", type=int, default=0, help="stop after this many of the batches (the chain's first N)"
    )
    parser.add_argument("--arms", default="scratch,flywheel", help="scratch, flywheel or both")
    parser.add_argument(
        "--scratch-versions",
        default="",
        metavar="K,K",
        help="train only these references (e.g. 7,8), so that processes sharing one --cache split the "
        "scratch arm between them; a later run without it reads them all back from the cache",
    )
    parser.add_argument("--out", type=Path, default=None, help="results and work")
    parser.add_argument("--cache", type=Path, default=CACHE, help="scratch references, by content and settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a [training] override")
    parser.add_argument("--gate", action="append", default=[], metavar="KEY=VALUE", help="a [gate] override")
    parser.add_argument("--threads", type=int, default=1, help="training threads, both arms (0 = every core)")
    parser.add_argument(
        "--merge",
        nargs=2,
        type=Path,
        metavar=("SCRATCH_JSON", "FLYWHEEL_JSON"),
        help="train nothing: report an --arms scratch and an --arms flywheel run of the same chain together",
    )
    parser.add_argument(
        "--recover",
        type=Path,
        metavar="ROOT",
        help="train nothing: score and report the chain in a daemon root an --arms flywheel run left "
        "(its work/flywheel) when the benchmark was stopped after the daemon had finished",
    )
    parser.add_argument("--recover-log", type=Path, metavar="LOG", help="that run's own output, for wall and load")
    args = parser.parse_args()
    if args.recover:
        args.arms = "flywheel"
    if args.merge:
        # beside the flywheel run's JSON, never over it: its own report stays as it was written
        merge(args.merge[0], args.merge[1], args.out or args.merge[1].parent / "merged")
        return
    stop_on_sigterm()
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    form = json.loads(json.dumps(FORMS[name]))
    form["batches"] = args.batches or form["batches"]
    threads: int = args.threads or os.cpu_count() or 1
    form["training"].update(parse_sets(args.set))
    training: dict[str, Any] = {**form["training"], "batch": 16, "seed": args.seed, "threads": threads}
    config: dict[str, dict[str, Any]] = {"training": training}
    if args.gate:
        config["gate"] = parse_sets(args.gate)
    out: Path = args.out or Path(
        f"/tmp/flywheel-bench-generations/{args.data}-{form['batches']}-s{args.seed}"
        + (f"-g{args.generations}" if args.generations else "")
    )
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = datasets.copy(work, args.data)
    train = data.train[: form["images"]] if form["images"] else data.train
    batches = datasets.cut(train, form["batches"])
    if args.generations:  # a prefix of the same cut: its versions (and references) are the full chain's first N
        batches = batches[: args.generations]
    heldout = datasets.heldout_yaml(data, form["heldout"] or None)
    heldout_images = form["heldout"] or len(data.heldout)
    arms = set(args.arms.split(","))
    print(
        f"{name} form, {args.data}: {json.dumps(config)}; batches of {[len(b) for b in batches]}; {load_text()}",
        flush=True,
    )
    began = time.time()
    refs_root = work / "refs"
    ingest_only(refs_root, work / "staging-refs", batches, data, training)
    scratch = []
    if "scratch" in arms:
        wanted = {int(k) for k in args.scratch_versions.split(",") if k} or set(range(1, len(batches) + 1))
        for k in sorted(wanted):
            scratch.append(reference(work, args.cache, refs_root, k, training, heldout, data.names))
    result: dict[str, Any] = {
        "benchmark": "generations",
        "data": args.data,
        "seed": args.seed,
        "threads": threads,
        "form": name,
        "settings": {**form, "config": config},
        "heldout_images": heldout_images,
        "machine": machine(),
        "scratch": scratch,
    }
    if "flywheel" in arms:
        if args.recover:
            fly = recover(args.recover, args.recover_log)
            result["recovered_from"] = str(args.recover)
        else:
            fly = run_flywheel(work, data, batches, config)
        print(f"scoring {len(fly['checkpoints'])} models on the held-out set; {load_text()}", flush=True)
        checkpoints = {str(k): v for k, v in fly["checkpoints"].items()}
        models = score(work, checkpoints, heldout, training["imgsz"], 16, threads, data.names)
        runs = {r["model"]: r for g in fly["generations"] for r in g["runs"]}
        for g in fly["generations"]:
            g["production_map50_95"] = models[str(g["production_model"])]["map50_95"]
            for d in g["decisions"]:
                d["purpose"] = runs.get(d["model"], {}).get("purpose", "?")
                d["heldout_map50_95"] = round(models[str(d["model"])]["map50_95"], 4)
        result["flywheel"] = fly["generations"]
        result["models"] = {
            k: {"map50_95": round(v["map50_95"], 4), "map50": round(v["map50"], 4)} for k, v in models.items()
        }
        result["gate_vs_heldout"] = gate_vs_heldout(fly["generations"], result["models"])
        if scratch:
            result["cumulative"] = cumulative(fly["generations"], scratch)
    result["seconds"] = round(time.time() - began, 1)
    path = write_json(out, "generations.json", result)
    text = (
        report(result)
        if scratch and "flywheel" in result
        else json.dumps(
            scratch and [{k: s[k] for k in ("version", "train_images", "map50_95", "wall_s")} for s in scratch]
        )
    )
    (out / "generations.md").write_text(text + "\n")
    print("\n" + text + f"\n\n{load_text()}; took {result['seconds']:.0f}s; written to {path}")


if __name__ == "__main__":
    main()

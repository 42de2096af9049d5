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
(on a machine with room for both), `--merge SCRATCH_JSON FLYWHEEL_JSON` reports them together. Both arms
train with the same thread count, `--threads` (default 1, so wall times compare on a shared
machine; 0 = every core). `--set key=value` overrides a [training] key, `--gate key=value` a
[gate] key. Writes `<out>/generations.json` and `.md` (default out:
/tmp/flywheel-bench-generations/<data>-<batches>-s<seed>).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
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
    table,
    utc,
    wait_for,
    wait_ready,
    write_config,
    write_json,
)
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


def decision_record(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": d["candidate_model_id"],
        "outcome": d["outcome"],
        "rule": d["rule"],
        "candidate_map_val": round(d["candidate_map"], 4),
        "production_map_val": d["production_map"] and round(d["production_map"], 4),
    }


def read_back(root: Path, generations: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs, versions and checkpoints of a finished chain, from the daemon's database."""
    runs = query(root, "SELECT * FROM training_run ORDER BY id")
    versions = {v["id"]: v for v in query(root, "SELECT * FROM dataset_version")}
    models = {m["id"]: m for m in query(root, "SELECT * FROM model")}
    for g in generations:
        mine = [r for r in runs if r["version_id"] == g["generation"]]
        g["runs"] = [run_record(r, versions) for r in mine]
        g["image_epochs"] = sum(r["image_epochs"] for r in g["runs"])
        g["train_images"] = versions[g["generation"]]["train_images"]
        g["val_images"] = versions[g["generation"]]["val_images"]
        g["manifest_sha256"] = versions[g["generation"]]["manifest_sha256"]
    checkpoints = {m["id"]: root / "models" / m["sha256"][:2] / f"{m['sha256']}.pt" for m in models.values()}
    return {"root": str(root), "generations": generations, "checkpoints": checkpoints}


def recover(root: Path, log: Path | None) -> dict[str, Any]:
    """The chain a daemon root holds, when the benchmark that drove it was stopped after the
    daemon had finished (a lent machine's time limit, say): each version's decisions and the
    production model after it, read from the database. Wall and load per generation come from
    the benchmark's own log (its "[gen k] dropping ... load" and "[gen k] 70.5s:" lines) when
    given, else wall is from the version's creation to its last decision."""
    text = log.read_text() if log else ""
    generations, production = [], None
    for v in query(root, "SELECT * FROM dataset_version ORDER BY id"):
        k = v["id"]
        decisions = query(root, "SELECT * FROM gate_decision WHERE version_id = ? ORDER BY id", (k,))
        if not decisions:
            break  # the chain stopped before this version's candidate was gated
        production = next(
            (d["candidate_model_id"] for d in reversed(decisions) if d["outcome"] == "promote"), production
        )
        wall = re.search(rf"^\[gen {k}\] ([0-9.]+)s:", text, re.M)
        load = re.search(rf"^\[gen {k}\] dropping .*; load ([0-9.]+) ([0-9.]+) ([0-9.]+)", text, re.M)
        last = max(utc(d["created_at"]) or 0.0 for d in decisions)
        generations.append(
            {
                "generation": k,
                "load_average": [float(x) for x in load.groups()] if load else [None, None, None],
                "wall_s": float(wall.group(1)) if wall else round(last - (utc(v["created_at"]) or last), 2),
                "production_model": production,
                "decisions": [decision_record(d) for d in decisions],
            }
        )
    return read_back(root, generations)


def run_record(r: dict[str, Any], versions: dict[int, dict[str, Any]]) -> dict[str, Any]:
    params = json.loads(r["params"]) if isinstance(r["params"], str) else (r["params"] or {})
    replay = json.loads(r["replay"]) if isinstance(r.get("replay"), str) else (r.get("replay") or {})
    images = int(replay.get("train_images") or versions[r["version_id"]]["train_images"])
    return {
        "run": r["id"],
        "start": r["start_kind"],
        "purpose": r["purpose"],
        "epochs": r["epochs_done"],
        "planned_epochs": r["epochs"],
        "train_images": images,
        "image_epochs": r["epochs_done"] * images,
        "model": r["model_id"],
        "strategy": params.get("strategy"),
        "budget": params.get("budget"),
        "state": r["state"],
    }


def report(data: dict[str, Any]) -> str:
    rows = []
    fly_compute = fly_wall = scratch_compute = scratch_wall = 0.0
    for g, s in zip(data["flywheel"], data["scratch"], strict=True):
        fly_compute += g["image_epochs"]
        fly_wall += g["wall_s"]
        scratch_compute += s["image_epochs"]
        scratch_wall += s["wall_s"]
        decisions = ", ".join(f"m{d['model']:04d} {d['purpose']} {d['outcome']}" for d in g["decisions"])
        budgets = ", ".join(f"{r['epochs']}/{r['planned_epochs']}" for r in g["runs"])
        rows.append(
            [
                g["generation"],
                g["train_images"],
                decisions,
                budgets,
                f"{g['production_map50_95']:.4f}",
                f"{s['map50_95']:.4f}",
                f"{g['production_map50_95'] / s['map50_95']:.3f}" if s["map50_95"] else "-",
                f"{g['image_epochs']} / {fly_compute:.0f}",
                f"{s['image_epochs']} / {scratch_compute:.0f}",
                f"{fly_compute / scratch_compute:.3f}",
                f"{g['wall_s']:.0f} / {fly_wall:.0f}",
                f"{s['wall_s']:.0f} / {scratch_wall:.0f}",
                g["load_average"][0],
            ]
        )
    t = data["settings"]["training"]
    lines = [
        f"{data['data']} train split in {len(data['flywheel'])} batches, seed {data['seed']}, yolov8n, "
        f"imgsz {t['imgsz']}; mAP50-95 on the held-out split ({data['heldout_images']} images)",
        "",
        table(
            [
                "gen",
                "train images",
                "gate (model, purpose, decision)",
                "epochs run / planned",
                "production mAP50-95",
                "scratch mAP50-95",
                "production / scratch",
                "flywheel image-epochs (gen / cum.)",
                "scratch image-epochs (gen / cum.)",
                "compute ratio (cum.)",
                "flywheel wall s (gen / cum.)",
                "scratch wall s (gen / cum.)",
                "load (1 min)",
            ],
            rows,
        ),
        "",
        f"cumulative compute flywheel / scratch: {fly_compute / scratch_compute:.3f}; "
        f"wall: {fly_wall / scratch_wall:.3f}",
        "gate rules against held-out truth (decisions, of them contradicted by held-out): "
        + ", ".join(f"{k} {v['decisions']} ({v['contradicted']})" for k, v in data.get("gate_vs_heldout", {}).items()),
    ]
    return "\n".join(lines)


def gate_vs_heldout(generations: list[dict[str, Any]], heldout: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per gate rule: decisions made, and how many of them the held-out split contradicts (a
    rejected candidate that scored higher than the production model it was compared with, or
    a promoted one that scored lower)."""
    out: dict[str, dict[str, int]] = {}
    production: int | None = None
    for g in generations:
        for d in g["decisions"]:
            rule = out.setdefault(d["rule"], {"decisions": 0, "contradicted": 0})
            rule["decisions"] += 1
            if production is not None:
                cand, prod = heldout[str(d["model"])]["map50_95"], heldout[str(production)]["map50_95"]
                rejected_better = d["outcome"] == "reject" and cand > prod
                promoted_worse = d["outcome"] == "promote" and cand < prod
                rule["contradicted"] += int(rejected_better or promoted_worse)
            if d["outcome"] == "promote":
                production = d["model"]
    return out


def cumulative(flywheel: list[dict[str, Any]], scratch: list[dict[str, Any]]) -> dict[str, Any]:
    fly_ie = sum(g["image_epochs"] for g in flywheel)
    scratch_ie = sum(s["image_epochs"] for s in scratch)
    return {
        "flywheel_image_epochs": fly_ie,
        "scratch_image_epochs": scratch_ie,
        "compute_ratio": round(fly_ie / scratch_ie, 4),
        "flywheel_wall_s": round(sum(g["wall_s"] for g in flywheel), 1),
        "scratch_wall_s": round(sum(s["wall_s"] for s in scratch), 1),
        "map_ratios": [
            round(g["production_map50_95"] / s["map50_95"], 4) if s["map50_95"] else None
            for g, s in zip(flywheel, scratch, strict=True)
        ],
    }


def merge(scratch_json: Path, flywheel_json: Path, out: Path) -> None:
    """One result from an `--arms scratch` run and an `--arms flywheel` run of the same chain
    (two processes side by side, or two machines): the report as if they had run together.
    Refuses two runs whose versions differ, since the ratios would then compare different data."""
    scratch, fly = json.loads(scratch_json.read_text()), json.loads(flywheel_json.read_text())
    mine = [g["manifest_sha256"] for g in fly["flywheel"]]
    theirs = [s["manifest_sha256"] for s in scratch["scratch"]][: len(mine)]  # a chain cut short: its prefix
    if mine != theirs:
        sys.exit(f"{scratch_json} and {flywheel_json} trained on different versions: {theirs} against {mine}")
    references = scratch["scratch"][: len(mine)]
    result = {**fly, "scratch": references, "merged_from": [str(scratch_json), str(flywheel_json)]}
    if "recovered_from" in fly:  # scored elsewhere: the machine that trained is the references' one
        result["machine"] = scratch["machine"]
    result["cumulative"] = cumulative(result["flywheel"], result["scratch"])
    path = write_json(out, "generations.json", result)
    text = report(result)
    (out / "generations.md").write_text(text + "\n")
    print(text + f"\n\nwritten to {path}")


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
        merge(args.merge[0], args.merge[1], args.out or args.merge[1].parent)
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
        for k in range(1, len(batches) + 1):
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

"""What a generations chain did, read back from the daemon's database and reported.

`benchmarks/generations.py` drives the chain (a real daemon, one batch at a time) and the
references; this module turns a finished daemon root into the per-generation record
(decisions, production after each version, runs and their budgets, compute), scores nothing,
and writes the report: the table docs/benchmarks.md quotes, the cumulative figures, how often
held-out truth contradicts each gate rule. `recover` reads back a root whose benchmark process
was cut off after the daemon finished; `merge` joins an `--arms scratch` and an `--arms
flywheel` run of the same chain.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import query, table, utc, write_json


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
    fly_compute = fly_wall = scratch_compute = scratch_wall = refresh_compute = 0.0
    for g, s in zip(data["flywheel"], data["scratch"], strict=True):
        fly_compute += g["image_epochs"]
        refresh_compute += sum(r["image_epochs"] for r in g["runs"] if r["purpose"] != "candidate")
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
        f"cumulative compute flywheel / scratch: {fly_compute / scratch_compute:.3f} "
        f"(refresh trainings {refresh_compute / scratch_compute:.3f} of it); wall: {fly_wall / scratch_wall:.3f}",
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
    """The chain's totals and the three figures the targets read: the lowest and the last
    generation's production / scratch, and compute. The refresh's share is its own figure: a
    refresh trains after the warm candidate is promoted, so on a short chain it can cost
    more than it could change, and the trade-off is read with and without it."""
    fly_ie = sum(g["image_epochs"] for g in flywheel)
    scratch_ie = sum(s["image_epochs"] for s in scratch)
    refresh_ie = sum(r["image_epochs"] for g in flywheel for r in g["runs"] if r["purpose"] != "candidate")
    ratios = [
        round(g["production_map50_95"] / s["map50_95"], 4) if s["map50_95"] else None
        for g, s in zip(flywheel, scratch, strict=True)
    ]
    known = [r for r in ratios if r is not None]
    return {
        "flywheel_image_epochs": fly_ie,
        "scratch_image_epochs": scratch_ie,
        "compute_ratio": round(fly_ie / scratch_ie, 4),
        "refresh_image_epochs": refresh_ie,
        "refresh_compute_ratio": round(refresh_ie / scratch_ie, 4),
        "flywheel_wall_s": round(sum(g["wall_s"] for g in flywheel), 1),
        "scratch_wall_s": round(sum(s["wall_s"] for s in scratch), 1),
        "map_ratios": ratios,
        "lowest_map_ratio": min(known) if known else None,
        "last_map_ratio": ratios[-1] if ratios else None,
    }


def merge(scratch_json: Path, flywheel_json: Path, out: Path) -> None:
    """One result from an `--arms scratch` run and an `--arms flywheel` run of the same chain
    (two processes side by side, or two machines): the report as if they had run together.
    Refuses two runs whose versions differ, since the ratios would then compare different data."""
    scratch, fly = json.loads(scratch_json.read_text()), json.loads(flywheel_json.read_text())
    mine = [g["manifest_sha256"] for g in fly["flywheel"]]
    theirs = [s["manifest_sha256"] for s in scratch["scratch"]][: len(mine)]  # a chain cut short: its prefix
    if mine != theirs:
        sys.exit(
            f"{scratch_json} and {flywheel_json} trained on different versions (manifests {theirs} against "
            f"{mine}): run both arms with the same --data, --batches and --seed, on the same copy of the data"
        )
    references = scratch["scratch"][: len(mine)]
    result = {**fly, "scratch": references, "merged_from": [str(scratch_json), str(flywheel_json)]}
    if "recovered_from" in fly:  # scored elsewhere: the machine that trained is the references' one
        result["machine"] = scratch["machine"]
    result["cumulative"] = cumulative(result["flywheel"], result["scratch"])
    path = write_json(out, "generations.json", result)
    text = report(result)
    (out / "generations.md").write_text(text + "\n")
    print(text + f"\n\nwritten to {path}")

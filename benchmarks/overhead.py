"""What does flywheel cost over plain Ultralytics? One training + evaluation, both ways.

A  by hand: the script a user (or a cron job) would write, plain Ultralytics calls:
   `YOLO("yolov8n.yaml").train(data, epochs, imgsz, batch, seed)`, `YOLO(best).val(...)`, copy
   best.pt to where inference reads it. Ultralytics' defaults for everything else: on this
   2-core machine that is one torch thread (`min(8, cores - 1)`), workers 0 on CPU.
A2 the same script with every core (`training.threads` set to the core count in flywheel).
B  the real daemon: `flywheel run` in its own process on a fresh data root, the same images
   dropped into its inbox as one batch; timed from the moment the batch is complete (READY
   written) to the model's promotion (its `promoted_at`), split into its steps from the
   database records (batch, version, run, epochs, evaluation, gate decision, model) and the
   run's files (the child writes weights/spec.json once torch and Ultralytics are imported;
   Ultralytics makes the eval folder when the candidate's scoring starts).
B1 the daemon with `training.threads = 1`, Ultralytics' own count here: B1 / A compares at
   one thread each. flywheel's default (`training.threads = 0`) is one core fewer than the
   machine has, as Ultralytics' `min(8, cores - 1)`: on up to 9 cores B and A train on as
   many threads, and A2 is every core on the by-hand side only.

Same data: BCCD's train split (copied first), split train/val exactly as flywheel splits it
(by image hash, `dataset.val_fraction` 0.2), so both train on the same images and score on
the same val images; same epochs, imgsz, batch, seed; plots off in both (flywheel never
plots). Everything else is each side's defaults: flywheel's differ from Ultralytics' in `nbs`
(16: an optimizer step per batch, against 64) and, on CPU, in mixed precision (flywheel's child
skips Ultralytics' AMP check, so autocast is on, in bfloat16), so the two need not train the
same model; at a few epochs both score ~0 anyway: this benchmark is about time.

Runs are interleaved A, B, [B1, A2,] A, B, ... so a change in the machine's load hits both;
the variants in brackets run in the first round only. `schedule.debounce_seconds` is 0 here
(default 30 s: the daemon waits that long for more batches of a burst before it trains).

    .venv/bin/python benchmarks/overhead.py --smoke   # 60 images, 128 px, 2 epochs; A B B1: ~1-2 min
    .venv/bin/python benchmarks/overhead.py --quick   # 205 images, 160 px, 3 epochs; A B B1 A2 A B
    .venv/bin/python benchmarks/overhead.py           # 205 images, 320 px, 3 epochs; A B B1 A B

Run times on the shared 2-core CPU machine: full form 5 min at load ~2, 16 min at load ~6;
quick form 20 min at load 7-10 (A2 and B alone took 8 and 6 min of it). They grow with the
load, every-core runs most: two torch threads on two busy cores wait on each other at every
step.

Prints a table and writes `<out>/overhead.json` (default out: /tmp/flywheel-bench-overhead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
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

# rounds: A, B interleaved; extra: more variants, run in the first round only (they cost as much).
FORMS: dict[str, dict[str, Any]] = {
    "smoke": {"images": 60, "imgsz": 128, "epochs": 2, "batch": 16, "rounds": 1, "extra": ["B1"]},
    "quick": {"images": 205, "imgsz": 160, "epochs": 3, "batch": 16, "rounds": 2, "extra": ["B1", "A2"]},
    "full": {"images": 205, "imgsz": 320, "epochs": 3, "batch": 16, "rounds": 2, "extra": ["B1"]},
}
TITLES = {
    "A": "by hand, Ultralytics defaults",
    "A2": "by hand, every core",
    "B": "flywheel daemon, defaults (threads: one core fewer than the machine)",
    "B1": "flywheel daemon, training.threads = 1 (as Ultralytics)",
}
VAL_FRACTION = 0.2  # flywheel's default dataset.val_fraction

# The by-hand script, as a user would write it (plus timestamps for the split). Run as its own
# process, like a cron job: python byhand.py DATA_YAML OUT_DIR EPOCHS IMGSZ BATCH SEED THREADS
BYHAND = """\
import os, sys, json, time, shutil
t0 = time.time()
data, out, epochs, imgsz, batch, seed, threads = sys.argv[1:8]
if int(threads):  # 0: Ultralytics' defaults; N: N torch threads (what flywheel's training.threads does)
    os.environ["OMP_NUM_THREADS"] = threads
    import ultralytics.utils.torch_utils as torch_utils
    torch_utils.NUM_THREADS = int(threads)
from ultralytics import YOLO
t1 = time.time()
model = YOLO("yolov8n.yaml")
model.train(data=data, epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), seed=int(seed),
            project=out, name="train", exist_ok=True, plots=False, verbose=False)
best = model.trainer.best
t2 = time.time()
m = YOLO(best).val(data=data, split="val", imgsz=int(imgsz), batch=int(batch), plots=False,
                   project=out, name="val", exist_ok=True, verbose=False)
t3 = time.time()
os.makedirs(os.path.join(out, "deploy"), exist_ok=True)
shutil.copy(best, os.path.join(out, "deploy", "model.tmp"))
os.replace(os.path.join(out, "deploy", "model.tmp"), os.path.join(out, "deploy", "model.pt"))
t4 = time.time()
import torch
print(json.dumps({"start": t0, "imported": t1, "trained": t2, "evaluated": t3, "deployed": t4,
                  "threads": torch.get_num_threads(), "map50_95": float(m.box.map), "map50": float(m.box.map50)}))
"""


def split_images(images: list[Path]) -> dict[str, list[Path]]:
    """Flywheel's split, computed the way ingest computes it (the image file's sha256)."""
    from flywheel.core.domain import split_of

    splits: dict[str, list[Path]] = {"train": [], "val": []}
    for image in images:
        splits[split_of(hashlib.sha256(image.read_bytes()).hexdigest(), VAL_FRACTION)].append(image)
    return splits


def byhand_dataset(folder: Path, splits: dict[str, list[Path]]) -> Path:
    """The user's own dataset folder: the same images, in the same train/val split."""
    for split, images in splits.items():
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(image, folder / "images" / split / image.name)
            label = image.parent.parent.parent / "labels" / image.parent.name / f"{image.stem}.txt"
            shutil.copy2(label, folder / "labels" / split / label.name)
    spec = {"path": str(folder), "train": "images/train", "val": "images/val", "names": dict(enumerate(NAMES))}
    (folder / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "data.yaml"


def run_byhand(work: Path, name: str, data_yaml: Path, form: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run the by-hand script in a fresh process; its wall time and its own split."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    script = work / "byhand.py"
    script.write_text(BYHAND)
    env = {**os.environ, "YOLO_CONFIG_DIR": str(work / ".ultralytics-byhand"), "MPLCONFIGDIR": str(work / ".mpl")}
    env["YOLO_OFFLINE"] = "true"  # this machine has no internet: without it Ultralytics waits on probes
    env.pop("OMP_NUM_THREADS", None)  # Ultralytics' own default, unless the script sets it
    load = machine()["load_average"]
    args = [str(data_yaml), str(out), form["epochs"], form["imgsz"], form["batch"], 0, threads]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, env=env, check=False
    )
    wall = time.time() - started
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"by-hand run failed ({proc.returncode}); see {out / 'log.txt'}")
    t = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "name": name,
        "wall_s": round(wall, 2),
        "load_average": load,
        "threads": t["threads"],
        "map50_95": round(t["map50_95"], 4),
        "map50": round(t["map50"], 4),
        "split_s": {
            "start-up (python, torch, ultralytics)": round(t["imported"] - started, 2),
            "training (incl. final val)": round(t["trained"] - t["imported"], 2),
            "eval": round(t["evaluated"] - t["trained"], 2),
            "deploy": round(t["deployed"] - t["evaluated"], 2),
            "process exit": round(started + wall - t["deployed"], 2),
        },
    }


def run_daemon(work: Path, name: str, images: list[Path], form: dict[str, Any], threads: int) -> dict[str, Any]:
    """A fresh data root and daemon (`threads`: training.threads, 0 = one fewer than the cores); drop the
    batch; wait for the promotion; the split."""
    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    training = {
        "epochs_scratch": form["epochs"],
        "imgsz": form["imgsz"],
        "batch": form["batch"],
        "seed": 0,
        "threads": threads,
    }
    write_config(root, training)
    staging = work / f"staging-{name}"  # not root/.staging: flywheel unpacks archives there and clears it
    shutil.rmtree(staging, ignore_errors=True)
    batch = yolo_batch(staging / "bccd-train", images, NAMES)
    log = work / f"{name}.log"
    log.unlink(missing_ok=True)
    proc = start_daemon(root, log)
    try:
        wait_ready(proc, log)
        load = machine()["load_average"]
        complete = drop(batch, root / "inbox")

        def promoted() -> dict[str, Any] | None:
            rows = query(root, "SELECT * FROM model WHERE status = 'production'")
            return rows[0] if rows else None

        model = wait_for("promotion", promoted, proc, timeout=3 * 3600)
    finally:
        code = stop_daemon(proc)
    if code != 0:
        raise RuntimeError(f"the daemon exited with {code}; see {log}")
    return {"name": name, "load_average": load, **daemon_split(root, complete, model)}


def daemon_split(root: Path, complete: float, model: dict[str, Any]) -> dict[str, Any]:
    """The daemon's time from batch complete to promotion, by step, from its own records."""
    batch = query(root, "SELECT * FROM batch ORDER BY id")[0]
    version = query(root, "SELECT * FROM dataset_version ORDER BY id")[0]
    run = query(root, "SELECT * FROM training_run WHERE id = ?", (model["run_id"],))[0]
    epochs = query(root, "SELECT * FROM training_epoch WHERE run_id = ? ORDER BY epoch", (run["id"],))
    evaluations = query(root, "SELECT * FROM evaluation WHERE model_sha256 = ?", (model["sha256"],))
    gate = query(root, "SELECT * FROM gate_decision WHERE run_id = ?", (run["id"],))[0]
    run_dir = root / "runs" / f"r{run['id']:04d}"
    child_ready = (run_dir / "train" / "weights" / "spec.json").stat().st_mtime
    eval_start = min(p.stat().st_mtime for p in run_dir.glob("eval-candidate-*"))
    t = {
        "complete": complete,
        "received": utc(batch["received_at"]),
        "versioned": utc(version["created_at"]),
        "run_created": utc(run["created_at"]),
        "run_started": utc(run["started_at"]),
        "child_ready": child_ready,
        "eval_start": eval_start,
        "scored": min(utc(e["created_at"]) or 0.0 for e in evaluations),
        "decided": utc(gate["created_at"]),
        "promoted": utc(model["promoted_at"]),
    }
    steps = [
        ("detect (inbox watcher)", "complete", "received"),
        ("ingest (validate, store)", "received", "versioned"),
        ("version (records, hard-link folder, run record)", "versioned", "run_started"),
        ("child start-up (python, torch, ultralytics)", "run_started", "child_ready"),
        ("training (incl. final val)", "child_ready", "eval_start"),
        ("eval (candidate on val) + register", "eval_start", "scored"),
        ("gate + promotion", "scored", "promoted"),
    ]
    split = {label: round((t[b] or 0.0) - (t[a] or 0.0), 2) for label, a, b in steps}
    score = query(root, "SELECT * FROM evaluation WHERE model_sha256 = ? AND version_id = ?", (model["sha256"], 1))
    return {
        "wall_s": round((t["promoted"] or 0.0) - complete, 2),
        "threads": json.loads(run["params"] or "{}").get("threads"),
        "map50_95": round(score[0]["map50_95"], 4) if score else None,
        "map50": round(score[0]["map50"], 4) if score else None,
        "epochs_s": round(sum(e["seconds"] for e in epochs), 2),
        "epochs": len(epochs),
        "gate": f"{gate['outcome']} ({gate['rule']})",
        "train_images": version["train_images"],
        "val_images": version["val_images"],
        "split_s": split,
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r["wall_s"])
    med = {k: statistics.median(v) for k, v in by_kind.items()}
    summary: dict[str, Any] = {"median_wall_s": med}
    for key, fly, hand in (
        ("ratio_flywheel_to_byhand_defaults", "B", "A"),  # each with its own defaults
        ("ratio_same_threads_one", "B1", "A"),  # both one thread: flywheel's own overhead
        ("ratio_same_threads_all", "B", "A2"),  # flywheel's default threads against every core by hand
    ):
        if fly in med and hand in med:
            summary[key] = round(med[fly] / med[hand], 3)
    return summary


def report(results: list[dict[str, Any]], summary: dict[str, Any], form: dict[str, Any]) -> str:
    rows = [
        [r["kind"], TITLES[r["kind"]], r["threads"], f"{r['wall_s']:.1f}", f"{r['map50_95']:.4f}", r["load_average"][0]]
        for r in results
    ]
    text = [
        f"BCCD train split ({form['images']} images), yolov8n from scratch, imgsz {form['imgsz']}, "
        f"{form['epochs']} epochs, batch {form['batch']}, seed 0",
        "",
        table(["run", "", "threads", "wall s", "mAP50-95 (val)", "load (1 min)"], rows),
        "",
    ]
    for key, label in (
        ("ratio_flywheel_to_byhand_defaults", "B / A, flywheel / by hand, each with its defaults"),
        ("ratio_same_threads_one", "B1 / A, both one thread"),
        ("ratio_same_threads_all", "B / A2, flywheel's default threads / by hand on every core"),
    ):
        if key in summary:
            text.append(f"{label}: {summary[key]:.3f} (medians)")
    daemon = [r for r in results if r["kind"] in ("B", "B1")]
    if daemon:
        text += ["", "flywheel, batch complete -> model promoted, by step (s):", ""]
        steps = list(daemon[0]["split_s"])
        rows = [[s, *(f"{r['split_s'][s]:.2f}" for r in daemon)] for s in steps]
        rows.append(["(of training: the epochs themselves)", *(f"{r['epochs_s']:.2f}" for r in daemon)])
        rows.append(["total", *(f"{r['wall_s']:.2f}" for r in daemon)])
        text.append(table(["step", *(r["name"] for r in daemon)], rows))
    byhand = [r for r in results if r["kind"] in ("A", "A2")]
    if byhand:
        text += ["", "by hand, by step (s):", ""]
        steps = list(byhand[0]["split_s"])
        rows = [[s, *(f"{r['split_s'][s]:.2f}" for r in byhand)] for s in steps]
        rows.append(["total", *(f"{r['wall_s']:.2f}" for r in byhand)])
        text.append(table(["step", *(r["name"] for r in byhand)], rows))
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="160 px, 3 epochs, 2 rounds: a few minutes")
    size.add_argument("--smoke", action="store_true", help="60 images, 128 px, 2 epochs, 1 round (the test)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flywheel-bench-overhead"), help="results and work")
    parser.add_argument("--rounds", type=int, help="A/B rounds (default: the form's)")
    args = parser.parse_args()
    stop_on_sigterm()
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    form = dict(FORMS[name])
    if args.rounds:
        form["rounds"] = args.rounds
    out: Path = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    images = sorted((bccd_copy(work) / "images" / "train").glob("*.jpg"))[: form["images"]]
    splits = split_images(images)
    data_yaml = byhand_dataset(work / "byhand-data", splits) if not (work / "byhand-data").exists() else None
    data_yaml = data_yaml or work / "byhand-data" / "data.yaml"
    threads = os.cpu_count() or 1
    print(f"{name} form: {json.dumps(form)}; {len(splits['train'])} train / {len(splits['val'])} val; {load_text()}")
    began = time.time()
    results: list[dict[str, Any]] = []
    for i in range(form["rounds"]):
        for kind in ["A", "B", *(form["extra"] if i == 0 else [])]:
            label = f"{kind}-{i + 1}"
            print(f"[{label}] {TITLES[kind]}; {load_text()}", flush=True)
            if kind.startswith("B"):
                r = run_daemon(work, f"daemon-{label}", images, form, 1 if kind == "B1" else 0)
                if (r["train_images"], r["val_images"]) != (len(splits["train"]), len(splits["val"])):
                    raise RuntimeError(f"flywheel split {r['train_images']}/{r['val_images']} differs from ours")
            else:
                r = run_byhand(work, f"byhand-{label}", data_yaml, form, threads if kind == "A2" else 0)
            r["kind"] = kind
            results.append(r)
            print(f"[{label}] {r['wall_s']:.1f}s, {r['threads']} threads, mAP50-95 {r['map50_95']}", flush=True)
            save(out, name, form, splits, began, results)  # after each run: a stopped benchmark keeps what it has
    data = save(out, name, form, splits, began, results)
    text = report(results, summarise(results), form)
    (out / "overhead.md").write_text(text + "\n")
    print("\n" + text + f"\n\n{load_text()}; took {data['seconds']:.0f}s; written to {out / 'overhead.json'}")


def save(
    out: Path, name: str, form: dict[str, Any], splits: dict[str, list[Path]], began: float, results: list[Any]
) -> dict[str, Any]:
    data = {
        "benchmark": "overhead",
        "form": name,
        "settings": form,
        "train_images": len(splits["train"]),
        "val_images": len(splits["val"]),
        "machine": machine(),
        "seconds": round(time.time() - began, 1),
        "runs": results,
        **summarise(results),
    }
    write_json(out, "overhead.json", data)
    return data


if __name__ == "__main__":
    main()

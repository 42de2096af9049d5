"""Does screening find the errors a batch carries? Known errors injected at the issue's rates,
each check's precision and recall against that truth (issue 33).

For a data set: its train images are shuffled; the first part is ingested and trained from
scratch into production (the real trainer child, small settings: imgsz and epochs as given);
the rest is the batch. Into the batch's labels go: 10% of boxes dropped (missing), 5% given
another class (swapped), 5% shifted by half their width (misplaced, IoU 1/3 with the truth);
and copies of 5% (of the batch's size) of production's val images, re-encoded (JPEG q80, 95%
size) so they are new files. The batch is ingested and screened through the App (the real
predict child); each finding is matched to the truth box by box: a missing finding to a dropped
box (IoU >= 0.5 with the model's box), a swapped or misplaced one to the box injected (the
given box itself), a leakage finding to a copied image.

    .venv/bin/python benchmarks/screen.py --data bccd --epochs 20 --imgsz 320
Results: <work>/screen-<data>.json; the table goes into docs/benchmarks/screen.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import datasets

from flywheel.app import App
from flywheel.core.label_check import Rect, iou

RATES = {"missing": 0.10, "swapped": 0.05, "misplaced": 0.05, "copies": 0.05}


def inject(batch: Path, names: list[str], rng: random.Random) -> list[tuple[str, str, Rect]]:
    """Rewrite the batch's labels with the errors; the truth as (image file, kind, pixel box)."""
    truth = []
    for label in sorted((batch / "labels").glob("*.txt")):
        image = next((batch / "images").glob(f"{label.stem}.*"))
        with Image.open(image) as im:
            w, h = im.size
        kept = []
        for line in label.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue
            cls, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:])
            px = Rect(cls, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            roll = rng.random()
            if roll < RATES["missing"]:
                truth.append((image.name, "missing", px))
                continue
            if roll < RATES["missing"] + RATES["swapped"] and len(names) > 1:
                cls = rng.choice([c for c in range(len(names)) if c != cls])
                truth.append((image.name, "swapped", px))
            elif roll < RATES["missing"] + RATES["swapped"] + RATES["misplaced"]:
                cx = cx + bw / 2 if cx + bw < 1 else cx - bw / 2
                truth.append((image.name, "misplaced", Rect(cls, (cx - bw / 2) * w, px.y1, (cx + bw / 2) * w, px.y2)))
            kept.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        label.write_text("".join(f"{k}\n" for k in kept))
    return truth


def copy_val(app: App, batch: Path, count: int, rng: random.Random) -> list[str]:
    """Re-encoded copies of `count` of production's val images (with their labels) in the batch."""
    manifest = app.store.manifest(app.store.latest_version().id)  # type: ignore[union-attr]
    val = sorted((i for i in manifest.values() if i.split == "val"), key=lambda i: i.image_sha256)
    names = []
    for k, item in enumerate(rng.sample(val, min(count, len(val)))):
        with Image.open(app.objects.path(item.image_sha256)) as im:
            small = im.convert("RGB").resize((int(im.width * 0.95), int(im.height * 0.95)))
            small.save(batch / "images" / f"valcopy{k}.jpg", quality=80)
        shutil.copyfile(app.objects.path(item.label_sha256), batch / "labels" / f"valcopy{k}.txt")
        names.append(f"valcopy{k}.jpg")
    return names


def score(found: list[tuple[str, str, Rect]], truth: list[tuple[str, str, Rect]], kind: str) -> dict[str, Any]:
    mine = [f for f in found if f[1] == kind]
    wanted = [t for t in truth if t[1] == kind]
    need = 0.5 if kind == "missing" else 0.9
    used: set[int] = set()
    hits = 0
    for sha, _, box in mine:
        for j, (tsha, _, tbox) in enumerate(wanted):
            if j not in used and tsha == sha and iou(box, tbox) >= need:
                used.add(j)
                hits += 1
                break
    p = hits / len(mine) if mine else None
    r = hits / len(wanted) if wanted else None
    return {"findings": len(mine), "truth": len(wanted), "hits": hits, "precision": p, "recall": r}


def run(
    name: str,
    work: Path,
    epochs: int,
    imgsz: int,
    batch_images: int,
    seed: int,
    base_cap: int,
    reuse: bool,
    fprs: list[float],
) -> dict[str, Any]:
    data = datasets.copy(work, name)
    rng = random.Random(seed)
    pool = sorted(data.train)
    rng.shuffle(pool)
    base, rest = pool[:-batch_images], pool[-batch_images:]
    base = base[:base_cap] if base_cap else base
    root, trained = work / f"root-{name}", work / f"root-{name}-trained"  # the root before the batch
    started = time.monotonic()
    decision = "reused"
    shutil.rmtree(root, ignore_errors=True)
    if reuse and (trained / "config.toml").is_file():
        shutil.copytree(trained, root, symlinks=True)
    else:
        shutil.rmtree(work / f"{name}-base", ignore_errors=True)
        training = {"imgsz": imgsz, "epochs_scratch": epochs, "batch": 16, "threads": 2, "device": "cpu"}
        common.write_config(root, training, extra={"production": {"formats": []}})
        first = App(root).ingest(datasets.yolo_batch(work / f"{name}-base", base, data.names), move=False)
        cycle = App(root).train(first.version.id)  # type: ignore[union-attr]
        decision = str(cycle.decision.outcome) if cycle.decision else "none"
        shutil.rmtree(trained, ignore_errors=True)
        shutil.copytree(root, trained, symlinks=True)
    app = App(root)
    train_seconds = time.monotonic() - started
    shutil.rmtree(work / f"{name}-batch", ignore_errors=True)
    batch = datasets.yolo_batch(work / f"{name}-batch", rest, data.names)
    truth = inject(batch, data.names, rng)
    copies = copy_val(app, batch, max(1, round(RATES["copies"] * batch_images)), rng)
    result = app.ingest(batch, move=False)
    sha_of = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (batch / "images").iterdir()}
    truth = [(sha_of[f], kind, box) for f, kind, box in truth]
    started = time.monotonic()
    s = app.cases.screen(result.batch.id)
    screened = time.monotonic() - started
    rows = label_rows(s, truth)
    leaked = {x.image_sha256 for x in s.suspects if x.check == "leakage"}
    copied = {sha_of[c] for c in copies}
    hits = len(leaked & copied)
    rows["val copies"] = {
        "findings": len(leaked),
        "truth": len(copied),
        "hits": hits,
        "precision": hits / len(leaked) if leaked else None,
        "recall": hits / len(copied) if copied else None,
    }
    config = (root / "config.toml").read_text()
    sweep = {}
    for rate in fprs:  # the same batch screened again at other false-positive rates
        (root / "config.toml").write_text(config + f"\n[screen]\nfalse_positive_rate = {rate}\n")
        sweep[str(rate)] = label_rows(App(root).cases.screen(result.batch.id), truth)
    (root / "config.toml").write_text(config)
    shift = s.checks.get("class_shift", {})
    return {
        "data": name,
        "epochs": epochs,
        "imgsz": imgsz,
        "base_images": len(base),
        "batch_images": len(rest) + len(copies),
        "production_decision": decision,
        "production_val_map50_95": production_map(app),
        "train_seconds": round(train_seconds, 1),
        "screen_seconds": round(screened, 1),
        "rows": rows,
        "thresholds": s.checks["label_errors"].get("thresholds"),
        "calibration": s.checks["label_errors"].get("calibration"),
        "sweep": sweep,
        "spurious_findings": sum(1 for x in s.suspects if x.kind == "spurious"),
        "class_shift": {k: shift.get(k) for k in ("p_value", "distance", "chi2", "flagged")},
        "state": str(s.state),
    }


def chain(name: str, work: Path, generations: int, batch_images: int, seed: int, imgsz: int) -> dict[str, Any]:
    """Both arms start from the trained root; each generation ingests the same batch with the
    same injected errors, is screened (the `screened` arm quarantines what label_errors and
    leakage flag, the other only reports) and trains warm; production is scored on the data
    set's held-out split after each generation."""
    data = datasets.copy(work, name)
    pool = sorted(data.train)
    random.Random(seed).shuffle(pool)
    rest = pool[-batch_images:]
    parts = [rest[k * len(rest) // generations : (k + 1) * len(rest) // generations] for k in range(generations)]
    heldout = datasets.heldout_yaml(data)
    arms: dict[str, Any] = {}
    for arm, policy in (("unscreened", "report"), ("screened", "quarantine")):
        root = work / f"chain-{name}-{arm}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(work / f"root-{name}-trained", root, symlinks=True)
        with (root / "config.toml").open("a") as config:
            config.write(f'\n[screen]\nlabel_errors = "{policy}"\nleakage = "{policy}"\n')
        app = App(root)
        checkpoints = {"g0": app.registry.checkpoint(app.store.production())}  # type: ignore[arg-type]
        steps = []
        for k, images in enumerate(parts, start=1):
            folder = work / f"chain-{name}-{arm}-batch{k}"
            shutil.rmtree(folder, ignore_errors=True)
            batch = datasets.yolo_batch(folder, images, data.names)
            rng = random.Random(seed * 1000 + k)
            inject(batch, data.names, rng)
            copy_val(app, batch, max(1, round(RATES["copies"] * len(images))), rng)
            ingested = app.ingest(batch, move=False)
            screened = app.cases.screen(ingested.batch.id)
            cycle = app.train(ingested.version.id)  # type: ignore[union-attr]
            production = app.store.production()
            assert production is not None
            checkpoints[f"g{k}"] = app.registry.checkpoint(production)
            steps.append(
                {
                    "generation": k,
                    "quarantined": len(screened.quarantined),
                    "decision": str(cycle.decision.outcome) if cycle.decision else "none",
                    "production": production.id,
                }
            )
        scores = common.score(work / f"chain-{name}-{arm}-scores", checkpoints, heldout, imgsz, 16, 2, data.names)
        first: dict[str, Any] = {"generation": 0, "heldout_map50_95": round(scores["g0"]["map50_95"], 4)}
        for step in steps:
            step["heldout_map50_95"] = round(scores[f"g{step['generation']}"]["map50_95"], 4)
        arms[arm] = [first, *steps]
    return {"generations": generations, "heldout_images": len(data.heldout), "arms": arms}


def label_rows(s: Any, truth: list[tuple[str, str, Rect]]) -> dict[str, Any]:
    found = []
    for x in s.suspects:
        if x.kind == "missing" and x.predicted:
            found.append((x.image_sha256, "missing", Rect(int(x.predicted[0]), *x.predicted[2:6])))
        elif x.box:
            found.append((x.image_sha256, x.kind, Rect(x.cls, *x.box)))
    return {k: score(found, truth, k) for k in ("missing", "swapped", "misplaced")}


def production_map(app: App) -> float | None:
    prod = app.store.production()
    if prod is None:
        return None
    score = app.store.evaluation(prod.sha256, app.store.version(prod.version_id).val_sha256)
    return round(score.score.map50_95, 4) if score else None


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["bccd", "aquarium"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/flywheel-bench-screen"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch-images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="start from the root trained before (root-DATA-trained)")
    parser.add_argument("--base-images", type=int, default=0, help="at most this many train images (0: all)")
    parser.add_argument("--sweep", default="0.005,0.02,0.05", help="false-positive rates to screen again at")
    parser.add_argument("--chain", type=int, default=0, help="then the chain with and without screening, N generations")
    args = parser.parse_args()
    out = []
    for name in args.data:
        fprs = [float(x) for x in args.sweep.split(",") if x]
        r = run(
            name, args.work, args.epochs, args.imgsz, args.batch_images, args.seed, args.base_images, args.reuse, fprs
        )
        if args.chain:
            r["chain"] = chain(name, args.work, args.chain, args.batch_images, args.seed, args.imgsz)
        common.write_json(args.work, f"screen-{name}.json", r)
        out.append(r)
        print(json.dumps(r, indent=1), flush=True)
    rows = [
        [r["data"], k, v["truth"], v["findings"], v["hits"], fmt(v["precision"]), fmt(v["recall"])]
        for r in out
        for k, v in r["rows"].items()
    ]
    print(common.table(["data", "check", "injected", "flagged", "matched", "precision", "recall"], rows))
    sweep = [
        [r["data"], rate, k, v["findings"], fmt(v["precision"]), fmt(v["recall"])]
        for r in out
        for rate, kinds in {str(r["calibration"]["false_positive_rate"]): r["rows"], **r["sweep"]}.items()
        for k, v in kinds.items()
        if k != "val copies"
    ]
    print(common.table(["data", "false_positive_rate", "check", "flagged", "precision", "recall"], sweep))
    for r in out:
        for arm, steps in r.get("chain", {}).get("arms", {}).items():
            maps = ", ".join(f"g{s['generation']} {s['heldout_map50_95']:.4f}" for s in steps)
            left_out = [s.get("quarantined") for s in steps[1:]]
            print(f"{r['data']} chain {arm}: held-out mAP50-95 {maps}; quarantined per generation {left_out}")


if __name__ == "__main__":
    main()

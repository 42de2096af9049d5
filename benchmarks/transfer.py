"""Does a warm start transfer? The seed's experiment, replayed with flywheel's training path.

On BCCD (`../shared/datasets/bccd`, copied first: it is read-only):

  A    from scratch on 60% of train (the model in production before the new data came)
  a    from scratch on all of train, `epochs_scratch`            (what starting over costs)
  b    warm start from A on all of train, the default strategy   (flywheel's default)
  c    warm start from A on all of train, the two-phase strategy (backbone frozen first)
  d    (optional) as b, with one LR for all layers (backbone_lr_scale 1, as Ultralytics does)
  e    (optional) as b, with replay.max_images = the size of A's training set

Every arm trains in flywheel's own child process (`flywheel.training.child`) from a spec that
flywheel's planner resolves from config, exactly as the daemon would. Each model is scored on
BCCD's `valid` split: mAP50-95, mAP50, precision, recall; compute = training images x epochs
run; wall = the child's training time (validation each epoch included, start-up excluded).
Printed with the ratios of each warm arm to (a), and written to `<work>/results.json`.

    .venv/bin/python benchmarks/transfer.py --smoke   # imgsz 96, 4 / 2 epochs: the code path, no reading
    .venv/bin/python benchmarks/transfer.py --quick   # imgsz 160, 30 / 6 epochs: a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/transfer.py           # the full form (imgsz 320; 40 min on an idle 2-core CPU)

A finished arm is kept in `<out>/<arm>/result.json` and not trained again with the same
settings, so an interrupted full run goes on where it stopped. Writes `<out>/transfer.json`
and `<out>/transfer.md`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BCCD, NAMES, load_text, machine, write_json  # noqa: E402

from flywheel.core.config import TrainingConfig, parse  # noqa: E402
from flywheel.core.domain import StartKind  # noqa: E402
from flywheel.core.events import ChildStarted, EpochEnded, Evaluated, Trained, TrainingEvent  # noqa: E402
from flywheel.core.plan import Start, build_spec, resolve_params  # noqa: E402
from flywheel.core.spec import EvalTarget  # noqa: E402
from flywheel.training.local_trainer import SubprocessTrainer  # noqa: E402


@dataclass(frozen=True)
class Arm:
    name: str
    title: str
    data: str  # "part" (60% of train) or "all"
    warm: bool
    training: dict[str, Any]  # config [training] overrides on top of the form's
    replay: int = 0  # replay.max_images


@dataclass
class Result:
    arm: str
    title: str
    map50_95: float
    map50: float
    precision: float
    recall: float
    train_images: int
    epochs: int
    image_epochs: int
    wall_seconds: float
    strategy: str
    params: dict[str, Any]


def forms(name: str) -> dict[str, Any]:
    """[training] settings of each form; everything else (epochs included, in the full form) is
    flywheel's default config: epochs_scratch 50, epochs_warm 10."""
    if name == "smoke":  # every arm's code path in a minute or two; the mAP says nothing
        return {"imgsz": 96, "epochs_scratch": 4, "epochs_warm": 2}
    if name == "quick":  # smaller images, fewer epochs: a rough reading in minutes
        return {"imgsz": 160, "epochs_scratch": 30, "epochs_warm": 6}
    return {"imgsz": 320}


def arms(base: dict[str, Any], part_images: int) -> dict[str, Arm]:
    warm = int(base.get("epochs_warm", TrainingConfig().epochs_warm))
    freeze = max(1, warm // 3)
    return {
        "A": Arm("A", "scratch, 60% of train", "part", False, {}),
        "a": Arm("a", "scratch, all of train", "all", False, {}),
        "b": Arm("b", "warm from A, default strategy", "all", True, {}),
        "c": Arm("c", f"warm from A, two-phase ({freeze} frozen)", "all", True, {"freeze_epochs": freeze}),
        "d": Arm("d", "warm from A, one LR for all layers", "all", True, {"backbone_lr_scale": 1.0}),
        "e": Arm("e", f"warm from A, replay {part_images} images", "all", True, {}, replay=part_images),
    }


def prepare(work: Path, seed: int) -> tuple[Path, Path, int]:
    """Copy BCCD, split train 60/40 with a fixed seed; data YAMLs for 60% and for all."""
    data = work / "bccd"
    if not (data / "data.yaml").is_file():
        if not (BCCD / "data.yaml").is_file():
            sys.exit(f"BCCD not found at {BCCD}")
        shutil.copytree(BCCD, data)
    images = sorted((data / "images" / "train").glob("*.jpg"))
    random.Random(seed).shuffle(images)
    part = images[: int(len(images) * 0.6)]
    out = []
    for name, chosen in (("part", part), ("all", images)):
        listing = data / f"train_{name}.txt"
        listing.write_text("".join(f"{p.resolve()}\n" for p in sorted(chosen)))
        spec = {"path": str(data.resolve()), "train": str(listing.resolve()), "val": "images/valid", "names": NAMES}
        (data / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        out.append(data / f"{name}.yaml")
    return out[0], out[1], len(part)


def run_arm(
    arm: Arm, base: dict[str, Any], work: Path, data_yaml: Path, start: str, images: int, threads: int
) -> Result:
    training = {"batch": 16, **base, **arm.training, "threads": threads, "device": "cpu"}
    config = parse({"training": training, "replay": {"max_images": arm.replay}})
    begin = Start(StartKind.WARM if arm.warm else StartKind.SCRATCH, start, 1 if arm.warm else None)
    params = resolve_params(config, begin)
    key = hashlib.sha256(json.dumps([params, str(data_yaml), start, arm.replay], sort_keys=True).encode()).hexdigest()
    out = work / arm.name
    saved = out / "result.json"
    if saved.is_file() and json.loads(saved.read_text()).get("key") == key:
        print(f"[{arm.name}] already done: {saved}")
        return Result(**json.loads(saved.read_text())["result"])
    shutil.rmtree(out, ignore_errors=True)
    train_yaml, train_images = data_yaml, images
    if arm.replay:
        train_yaml, train_images = replay_yaml(work, data_yaml, arm.replay, out)
    target = EvalTarget("candidate", "", "valid", str(data_yaml))
    spec = build_spec(0, train_yaml, out, begin, params, NAMES, [target])
    print(f"[{arm.name}] {arm.title}: {params['epochs']} epochs on {train_images} images ({params['strategy']})")
    trainer = SubprocessTrainer(work / ".ultralytics")
    started = time.monotonic()

    def show(event: TrainingEvent) -> None:
        if isinstance(event, EpochEnded):
            print(
                f"[{arm.name}] epoch {event.epoch}/{event.epochs} mAP50-95 {event.map50_95:.4f} "
                f"({time.monotonic() - started:.0f}s)",
                flush=True,
            )
        elif isinstance(event, ChildStarted):
            print(f"[{arm.name}] child {event.pid}: {event.versions}", flush=True)

    events = trainer.run(spec, show)
    trained = next(e for e in events if isinstance(e, Trained))
    scored = next(e.score for e in events if isinstance(e, Evaluated))
    epochs = sum(1 for e in events if isinstance(e, EpochEnded))
    result = Result(
        arm.name,
        arm.title,
        scored.map50_95,
        scored.map50,
        scored.precision,
        scored.recall,
        train_images,
        epochs,
        train_images * epochs,
        trained.seconds,
        params["strategy"],
        params,
    )
    saved.write_text(json.dumps({"key": key, "result": asdict(result)}, indent=2) + "\n")
    return result


def replay_yaml(work: Path, data_yaml: Path, budget: int, out: Path) -> tuple[Path, int]:
    """The replay sample (flywheel.training.replay) of all-of-train for a model trained on 60%."""
    from flywheel.core.domain import ManifestItem
    from flywheel.training import replay

    data = work / "bccd"
    part = {Path(p).stem for p in (data / "train_part.txt").read_text().split()}
    every = [Path(p) for p in (data / "train_all.txt").read_text().split()]

    def item(p: Path) -> ManifestItem:
        return ManifestItem(p.stem, p.stem, p.suffix, "train", 0)

    manifest = {p.stem: item(p) for p in every}
    seen = {k: v for k, v in manifest.items() if k in part}
    labels = data / "labels" / "train"
    sample = replay.draw(
        manifest, seen, budget, 0, replay.classes_from_labels(lambda k: (labels / f"{k}.txt").read_text()), NAMES
    )
    listing = out / "replay.txt"
    out.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{p.resolve()}\n" for p in every if p.stem in set(sample.images)))
    spec = {**yaml.safe_load(data_yaml.read_text()), "train": str(listing.resolve())}
    path = out / "replay.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, len(sample.images)


def report(results: dict[str, Result], base: dict[str, Any]) -> str:
    lines = [
        f"BCCD, yolov8n, [training] {json.dumps(base)} over flywheel's defaults; scored on valid (87 images)",
        "",
        "| arm | | mAP50-95 | mAP50 | P | R | image-epochs | wall s | mAP50-95 / (a) | compute / (a) | wall / (a) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = results.get("a")
    for r in results.values():
        ratios = ["", "", ""]
        if ref is not None and r.arm not in ("A", "a"):
            ratios = [
                f"{r.map50_95 / ref.map50_95:.3f}" if ref.map50_95 else "-",
                f"{r.image_epochs / ref.image_epochs:.3f}",
                f"{r.wall_seconds / ref.wall_seconds:.3f}",
            ]
        lines.append(
            f"| {r.arm} | {r.title} | {r.map50_95:.4f} | {r.map50:.4f} | {r.precision:.3f} | {r.recall:.3f} | "
            f"{r.image_epochs} | {r.wall_seconds:.0f} | " + " | ".join(ratios) + " |"
        )
    if ref is not None:
        lines.append("")
        for r in results.values():
            if r.arm in ("A", "a"):
                continue
            ok = r.map50_95 >= ref.map50_95 and r.image_epochs <= 0.25 * ref.image_epochs
            ok_wall = r.wall_seconds <= 0.20 * ref.wall_seconds
            lines.append(
                f"{r.arm}: mAP {'>=' if r.map50_95 >= ref.map50_95 else '<'} scratch, compute "
                f"{100 * r.image_epochs / ref.image_epochs:.0f}%, wall {100 * r.wall_seconds / ref.wall_seconds:.0f}% "
                f"-> target (parity, <=25% compute, <=20% wall): {'met' if ok and ok_wall else 'not met'}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="imgsz 160 and few epochs: minutes, not hours")
    size.add_argument("--smoke", action="store_true", help="imgsz 96, 4 / 2 epochs: the code path only (the test)")
    parser.add_argument("--arms", default="A,a,b,c", help="which arms, of A,a,b,c,d,e (A is always trained)")
    parser.add_argument(
        "--out", type=Path, default=None, help="work and results folder (default: /tmp/flywheel-transfer-<form>)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for training")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 60/40 split of train")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a [training] override")
    args = parser.parse_args()
    form = "smoke" if args.smoke else "quick" if args.quick else "full"
    base = forms(form)
    for item in args.set:
        key, value = item.split("=", 1)
        base[key] = yaml.safe_load(value)
    work = args.out or Path(f"/tmp/flywheel-transfer-{form}")
    work.mkdir(parents=True, exist_ok=True)
    print(f"{form} form: [training] {json.dumps(base)}; {load_text()}", flush=True)
    began = time.time()
    part_yaml, all_yaml, part_images = prepare(work, args.seed)
    all_images = len((work / "bccd" / "train_all.txt").read_text().split())
    chosen = arms(base, part_images)
    wanted = ["A"] + [a for a in args.arms.split(",") if a != "A"]
    results: dict[str, Result] = {}
    model_a = ""
    for name in wanted:
        arm = chosen[name]
        data_yaml, images = (part_yaml, part_images) if arm.data == "part" else (all_yaml, all_images)
        start = model_a if arm.warm else "yolov8n.yaml"
        results[name] = run_arm(arm, base, work, data_yaml, start, images, args.threads)
        if name == "A":
            model_a = str(work / "A" / "train" / "weights" / "best.pt")
        print(report(results, base), flush=True)
    text = report(results, base)
    data = {
        "benchmark": "transfer",
        "form": form,
        "settings": base,
        "machine": machine(),
        "arms": {k: asdict(v) for k, v in results.items()},
        "seconds": round(time.time() - began, 1),
    }
    path = write_json(work, "transfer.json", data)
    (work / "transfer.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\n{load_text()}; took {data['seconds']:.0f}s; written to {path} and {work / 'transfer.md'}")


if __name__ == "__main__":
    main()

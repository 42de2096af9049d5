"""Does labelling what `flywheel suggest` ranks first teach the model more than labelling at random?

For each data set and seed: the train split is shuffled and cut into a fixed val part (used by
every training for its own val, never labelled), a labelled seed set, and an unlabelled pool.
A seed model trains from scratch on the seed set. It scores the pool with the predict child at
the scoring threshold, exactly as `flywheel suggest` does (flywheel.prelabel.uncertainty.rank),
and two arms then label K more images each, the top K of the ranking or K drawn at random from
the same pool, and warm-start from the seed model on seed set + K for the same epochs. A third
arm, diverse, labels the K that `flywheel suggest --pick diverse` picks from the same pass (the
most uncertain of K clusters of look-alikes, flywheel.prelabel.diversity). Every arm is scored
on the data set's held-out split (never trained on, never used to choose).

    .venv/bin/python benchmarks/suggest.py --data bccd --seeds 0 1
    .venv/bin/python benchmarks/suggest.py --data aquarium --seeds 0 1
    .venv/bin/python benchmarks/suggest.py --data aquarium --sizes 50 150 40  # a seed model that sees more

mAP and compute repeat exactly for a seed; wall times are printed with the load average.
Results: <work>/suggest-<data>.json and docs/benchmarks.md ("Suggest vs random").
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import datasets

ARMS = ("suggest", "random", "diverse")  # suggest: the top K; diverse: --pick diverse's K
SIZES = {  # val, seed set, K; the rest of train is the pool
    "bccd": (30, 40, 30),
    "aquarium": (50, 60, 40),
}


def listing(folder: Path, name: str, images: list[Path]) -> Path:
    path = folder / f"{name}.txt"
    path.write_text("".join(f"{p.resolve()}\n" for p in images))
    return path


def data_yaml(folder: Path, name: str, train: list[Path], val: list[Path], names: list[str]) -> Path:
    import yaml

    spec = {
        "path": str(folder.resolve()),
        "train": str(listing(folder, f"{name}-train", train)),
        "val": str(listing(folder, f"{name}-val", val)),
        "names": dict(enumerate(names)),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def train(
    work: Path, name: str, yaml_path: Path, names: list[str], settings: dict[str, Any], start: str, heldout: Path
) -> dict[str, Any]:
    """One training through flywheel's own child; scored on `heldout` by the same child."""
    from flywheel.core.config import parse
    from flywheel.core.domain import StartKind
    from flywheel.core.events import EpochEnded, Evaluated, Trained
    from flywheel.core.plan import Start, build_spec, resolve_params
    from flywheel.core.spec import EvalTarget
    from flywheel.training.local_trainer import SubprocessTrainer

    config = parse({"training": settings})
    kind = StartKind.WARM if start.endswith(".pt") else StartKind.SCRATCH
    begin = Start(kind, start, 1 if kind is StartKind.WARM else None)
    params = resolve_params(config, begin)
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    spec = build_spec(0, yaml_path, out, begin, params, names, [EvalTarget(name, "", "heldout", str(heldout))])
    print(f"[{name}] {kind} {params['epochs']} epochs; {common.load_text()}", flush=True)
    started = time.monotonic()
    events = SubprocessTrainer(work / ".ultralytics").run(spec, lambda _e: None)
    scored = next(e.score for e in events if isinstance(e, Evaluated))
    trained = sum(1 for e in events if isinstance(e, EpochEnded))
    return {
        "checkpoint": next(e.best for e in events if isinstance(e, Trained)),
        "epochs": trained,
        "map50_95": round(scored.map50_95, 4),
        "map50": round(scored.map50, 4),
        "wall_s": round(time.monotonic() - started, 1),
        "load": common.machine()["load_average"],
    }


def rank_pool(work: Path, checkpoint: str, pool: list[Path], imgsz: int, threads: int, k: int) -> dict[str, list[str]]:
    """What `flywheel suggest` would pick from the pool (image paths) with --pick top and with
    --pick diverse, from one pass of the model, as the CLI does."""
    from flywheel.cli.suggest import picked
    from flywheel.core.prediction import ImageInput, PredictRequest
    from flywheel.ingest.images import check_image
    from flywheel.prelabel.uncertainty import SCORING_CONF, rank
    from flywheel.training.local_predictor import ChildPredictor

    found = []
    for path in pool:
        info = check_image(path, 10**9)  # the data sets' images all decode; a Problem here is a bug
        found.append(ImageInput(str(path), path, info.width, info.height, str(path)))
    request = PredictRequest(Path(checkpoint), SCORING_CONF, 0.7, imgsz, imgsz, "cpu", threads, embed=True)
    outcome = ChildPredictor(work / ".ultralytics", work / "predict").predict(request, found)
    ranking = rank({p.name: [b.conf for b in p.boxes] for p in outcome.predictions})
    diverse = picked(ranking, outcome.embeddings, k, "diverse")
    if diverse.by_rank:
        print(f"[rank] diverse: {diverse.by_rank} of {k} filled in by rank", flush=True)
    return {"top": picked(ranking, outcome.embeddings, k, "top").names, "diverse": diverse.names}


def run(
    data_name: str,
    seed: int,
    work: Path,
    settings: dict[str, Any],
    threads: int,
    arm_names: list[str],
    sizes: tuple[int, int, int],
) -> dict[str, Any]:
    data = datasets.copy(work, data_name)
    val_n, seed_n, k = sizes
    order = sorted(data.train)
    random.Random(seed).shuffle(order)
    val, seeded, pool = order[:val_n], order[val_n : val_n + seed_n], order[val_n + seed_n :]
    heldout = datasets.heldout_yaml(data)
    folder = work / f"{data_name}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    first = dict(settings, seed=seed, threads=threads)
    base = train(
        folder, "seed", data_yaml(folder, "seed", seeded, val, data.names), data.names, first, "yolov8n.yaml", heldout
    )
    picks = rank_pool(folder, base["checkpoint"], pool, settings["imgsz"], threads, k)
    by_name = {p.resolve().as_posix(): p for p in pool}
    chosen = {
        "suggest": [by_name[Path(n).resolve().as_posix()] for n in picks["top"]],
        "random": random.Random(1000 + seed).sample(pool, k),
        "diverse": [by_name[Path(n).resolve().as_posix()] for n in picks["diverse"]],
    }
    arms = {}
    for arm in arm_names:
        picked = chosen[arm]
        yaml_path = data_yaml(folder, arm, seeded + picked, val, data.names)
        arms[arm] = train(folder, arm, yaml_path, data.names, first, base["checkpoint"], heldout)
        arms[arm]["picked"] = sorted(p.name for p in picked)
        # each arm as it ends (an Aquarium arm is 15 min here): a run stopped on a deadline keeps it
        partial = {"seed": seed, "base": base, **arms}
        common.write_json(work, f"suggest-{data_name}-s{seed}-partial.json", partial)
        print(f"[{arm}] held-out mAP50-95 {arms[arm]['map50_95']} (mAP50 {arms[arm]['map50']})", flush=True)
    overlap = len(set(chosen["suggest"]) & set(chosen["random"]))
    return {
        "seed": seed,
        "sizes": {"val": val_n, "seed": seed_n, "pool": len(pool), "k": k},
        "base": base,
        **arms,
        "overlap": overlap,
        "diverse_top_overlap": len(set(chosen["diverse"]) & set(chosen["suggest"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=datasets.KNOWN, default="bccd")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=20, help="the seed model's, and each arm's")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flywheel-bench-suggest"))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="which labelled K to train on")
    parser.add_argument(
        "--sizes", type=int, nargs=3, metavar=("VAL", "SEED", "K"), help="the cut (default: per data set, SIZES)"
    )
    args = parser.parse_args()
    sizes = (args.sizes[0], args.sizes[1], args.sizes[2]) if args.sizes else SIZES[args.data]
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.work / ".ultralytics"))
    # The demo's recipe (docs/benchmarks.md, "The demo"): with Ultralytics' defaults a seed model
    # on 40 images spends its few optimizer steps in the LR warm-up and scores 0, and a ranking
    # by a model that sees nothing says nothing.
    settings = {
        "imgsz": args.imgsz,
        "epochs_scratch": args.epochs,
        "epochs_warm": args.epochs,
        "warm_budget": "fixed",
        "batch": 8,
        "nbs": 8,
        "optimizer": "AdamW",
        "lr0": 0.002,
        "warmup_epochs": 1.0,
        "warmup_epochs_warm": 0.0,
        "close_mosaic": args.epochs,
        "close_mosaic_warm": args.epochs,
    }
    print(f"cut: val {sizes[0]}, seed set {sizes[1]}, K {sizes[2]}; the rest of train is the pool", flush=True)
    results: list[dict[str, Any]] = []
    for seed in args.seeds:  # written after each seed: a run stopped on a deadline keeps what it finished
        results.append(run(args.data, seed, args.work, settings, args.threads, args.arms, sizes))
        document = {"data": args.data, "settings": settings, "runs": results}
        common.write_json(args.work, f"suggest-{args.data}.json", document)
        print(f"[seed {seed}] " + ", ".join(f"{a} {results[-1][a]['map50_95']}" for a in args.arms), flush=True)
    rows = []
    for r in results:
        scores = {arm: r[arm]["map50_95"] for arm in args.arms}
        baseline = max(scores.get("random", 0.0), 1e-9)
        ratios = [f"{scores[a] / baseline:.3f}" if "random" in scores else "-" for a in args.arms if a != "random"]
        rows.append([r["seed"], r["base"]["map50_95"], *scores.values(), *ratios, r["overlap"]])
    others = [f"{a} / random" for a in args.arms if a != "random"]
    print(common.table(["seed", "seed model", *(f"{a} K" for a in args.arms), *others, "top/random overlap"], rows))
    path = common.write_json(
        args.work, f"suggest-{args.data}.json", {"data": args.data, "settings": settings, "runs": results}
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()

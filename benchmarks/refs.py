"""Scratch references: a model trained from `model.base` on each version of a chain, scored on
the held-out set, and cached.

The versions are made by flywheel's own ingest (a data root that only ingests: batch k makes
version k, split by image hash exactly as the daemon splits it), and each reference trains
through flywheel's own training child with the settings the planner resolves for a scratch
run. A reference depends only on the version's content (its manifest hash), the resolved
settings and the seed, so it is cached under that key (`<cache>/scratch-<key>.json`): the
4-batch chain's versions are versions of the 8-batch chain (nested cuts) and reuse them, and
every variant of the flywheel arm is compared with the same references.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import load_text, machine, write_config
from datasets import Dataset, yolo_batch


def ingest_only(root: Path, staging: Path, batches: list[list[Path]], data: Dataset, training: dict[str, Any]) -> None:
    """A data root holding one version per batch, made by flywheel's ingest (no training)."""
    from flywheel.app import App

    if (root / "versions.done").is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    write_config(root, training)
    app = App(root)
    for k, images in enumerate(batches, start=1):
        folder = yolo_batch(staging / f"ref-batch{k}", images, data.names)
        result = app.ingest(folder, move=False)
        made = result.version.id if result.version else None
        if made != k:
            raise RuntimeError(f"batch {k} made version {made}, expected {k}")
        shutil.rmtree(folder)
    app.engine.dispose()
    (root / "versions.done").write_text("ok\n")


WARM_ONLY = ("budget", "plateau_patience", "plateau_min_epochs", "plateau_decay_epochs", "shrink", "perturb")


def reference(
    work: Path, cache: Path, root: Path, version_id: int, training: dict[str, Any], heldout: Path, names: list[str]
) -> dict[str, Any]:
    """The scratch model on version `version_id` of `root`, scored on `heldout` (cached)."""
    from flywheel.app import App
    from flywheel.core.domain import StartKind
    from flywheel.core.events import EpochEnded, Evaluated
    from flywheel.core.plan import Start, build_spec, resolve_params
    from flywheel.core.spec import EvalTarget
    from flywheel.training.local_trainer import SubprocessTrainer

    app = App(root)
    version = app.store.version(version_id)
    start = Start(StartKind.SCRATCH, app.config.model.base, None)
    params = resolve_params(app.config, start)
    heldout_names = sorted(Path(line).name for line in (heldout.parent / "heldout.txt").read_text().split())
    # keyed by what a scratch training depends on: the warm-start-only keys (budget, plateau,
    # shrink and perturb) are left out, so references made before they existed still count
    same = {k: v for k, v in params.items() if k not in WARM_ONLY}
    key_text = json.dumps({"manifest": version.manifest_sha256, "params": same, "heldout": heldout_names})
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    path = cache / f"scratch-{key}.json"
    if path.is_file():
        app.engine.dispose()
        cached: dict[str, Any] = json.loads(path.read_text())
        return cached
    from flywheel.store.materialize import materialize

    data_yaml = materialize(
        app.objects, app.paths.versions, version_id, version.class_names, app.store.manifest(version_id)
    )
    out = work / f"scratch-{key}"
    shutil.rmtree(out, ignore_errors=True)
    target = EvalTarget("scratch", "", "heldout", str(heldout))
    spec = build_spec(version_id, data_yaml, out, start, params, names, [target])
    load = machine()["load_average"]
    print(
        f"[scratch v{version_id}] {params['epochs']} epochs on {version.train_images} images; {load_text()}", flush=True
    )
    started = time.monotonic()
    events = SubprocessTrainer(app.paths.ultralytics).run(spec, lambda _e: None)
    wall = time.monotonic() - started
    app.engine.dispose()
    scored = next(e.score for e in events if isinstance(e, Evaluated))
    curve = [round(e.map50_95, 4) for e in events if isinstance(e, EpochEnded)]
    result = {
        "key": key,
        "version": version_id,
        "manifest_sha256": version.manifest_sha256,
        "params": params,
        "load_average": load,
        "load_after": machine()["load_average"],
        "wall_s": round(wall, 2),
        "epochs": len(curve),
        "train_images": version.train_images,
        "val_images": version.val_images,
        "image_epochs": len(curve) * version.train_images,
        "map50_95": round(scored.map50_95, 4),
        "map50": round(scored.map50, 4),
        "per_class": {k: round(v, 4) for k, v in scored.per_class.items()},
        "val_curve": curve,  # mAP50-95 on the version's own val split, per epoch
        "checkpoint": str(out / "train" / "weights" / "best.pt"),
    }
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[scratch v{version_id}] {wall:.0f}s: held-out mAP50-95 {result['map50_95']}; {load_text()}", flush=True)
    return result

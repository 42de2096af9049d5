"""Ingest throughput: 1k and 10k small generated images, images/s and peak memory.

    .venv/bin/python benchmarks/bench_ingest.py [--sizes 1000 10000] [--keep DIR]

Each ingest runs in a fresh child process (so its peak RSS is its own) against a fresh data
root (SQLite, object store, version folders on the same disk), exactly as the daemon ingests
a dropped folder. A last run ingests 1k new images on top of the 10k-image data set, to show
what a version costs when the data set is large. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_batch(folder: Path, count: int, seed: int, size: int = 64) -> Path:
    """`count` JPEGs of coloured rectangles on noise, each with a YOLO label, and classes.txt."""
    import io

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "classes.txt").write_text("red\nblue\n")
    noise = [Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)) for _ in range(16)]
    for i in range(count):
        im = noise[i % 16].copy()
        draw = ImageDraw.Draw(im)
        lines = []
        for _ in range(2):
            cls = rng.randrange(2)
            w, h = rng.randrange(8, size // 2), rng.randrange(8, size // 2)
            x, y = rng.randrange(0, size - w), rng.randrange(0, size - h)
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=((220, 40, 40), (40, 40, 220))[cls])
            lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        draw.point([(rng.randrange(size), rng.randrange(size)) for _ in range(4)], fill=(i % 251, i // 251 % 251, 7))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        (folder / "images" / f"s{seed}_{i:05d}.jpg").write_bytes(buf.getvalue())
        (folder / "labels" / f"s{seed}_{i:05d}.txt").write_text("\n".join(lines) + "\n")
    return folder


def ingest_one(root: Path, batch: Path) -> dict[str, float]:
    """In this (child) process: ingest `batch` into the data root `root`; timings and peak RSS."""
    from flywheel.ingest.pipeline import IngestPaths, ingest_batch
    from flywheel.store import ObjectStore, Store, make_engine, upgrade_schema

    engine = make_engine(f"sqlite:///{root / 'flywheel.db'}")
    upgrade_schema(engine)
    store = Store(engine)
    paths = IngestPaths(ObjectStore(root / "objects"), root / "versions", root / "quarantine", root / "done")
    started, cpu = time.perf_counter(), time.process_time()
    result = ingest_batch(store, paths, batch, val_fraction=0.2, marker="READY", ignore=[], move=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    assert result.accepted == result.new_images and not result.quarantined, result.quarantined[:3]
    return {
        "images": result.accepted,
        "dataset_images": (result.version.train_images + result.version.val_images) if result.version else 0,
        "seconds": round(seconds, 3),
        "images_per_s": round(result.accepted / seconds, 1),
        # CPU time (user + system, all threads): on a busy machine wall time says more about the neighbours
        "cpu_seconds": round(cpu_seconds, 3),
        "images_per_cpu_s": round(result.accepted / cpu_seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def child(root: Path, batch: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(root), str(batch)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def disk_probe(folder: Path, count: int = 500) -> dict[str, float]:
    """What this disk charges per small-file creation and per hard link: ingest makes one new
    file per image (its label; the image itself is hard-linked) and two links per version item."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for i in range(count):
        (folder / f"f{i}").write_bytes(b"0 0.5 0.5 0.1 0.1\n" * 3)
    created = time.perf_counter()
    for i in range(count):
        os.link(folder / f"f{i}", folder / f"l{i}")
    linked = time.perf_counter()
    return {
        "create_us": round((created - started) / count * 1e6),
        "link_us": round((linked - created) / count * 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp folder)")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(ingest_one(*args.child)))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    print(f"work folder: {work}")
    print("this disk, per small file:", json.dumps(disk_probe(work / "probe")), flush=True)
    for n in args.sizes:
        batch = make_batch(work / f"batch{n}", n, seed=n)
        root = work / f"root{n}"
        root.mkdir()
        print(f"ingest {n:>6} images into an empty data root:", json.dumps(child(root, batch)), flush=True)
    largest = max(args.sizes)
    extra = make_batch(work / "extra1000", 1000, seed=1)
    print(f"ingest   1000 images on top of {largest}:", json.dumps(child(work / f"root{largest}", extra)), flush=True)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

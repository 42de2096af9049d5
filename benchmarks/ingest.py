"""Ingest at scale: images/s and peak memory, version cost as the data set grows, daemon idle RSS.

1. Throughput: a batch of N small generated images (64 px JPEGs, 2 boxes each, `bench_ingest.
   make_batch`) ingested into an empty data root, in a fresh child process per batch so its
   peak RSS (ru_maxrss) is its own: images/s (wall and CPU) and peak RSS.
2. Growth: 5 successive batches of N on top of the largest data set of (1), each its own
   version. Each ingest's wall time and its version step (`create_version`, the version's
   records), timed inside the child. Ingest must cost what the new images cost, not what the
   data set holds: the ratio to the same batch into an empty root is printed. Then the one
   cost that does grow with the data set, paid once by the first training of a version, not
   by each batch: `materialize`, its folder of hard links for Ultralytics.
3. Daemon idle RSS: `flywheel run` on an empty data root; VmRSS and VmHWM from
   /proc/<pid>/status after start-up and after one /metrics scrape (target: < 250 MB), and
   whether torch is mapped into the process (it must only be in the training child).

    .venv/bin/python benchmarks/ingest.py --smoke   # 200 images, 5 x 200 on top
    .venv/bin/python benchmarks/ingest.py --quick   # 1k images, 5 x 1k on top
    .venv/bin/python benchmarks/ingest.py           # 1k, 10k, 100k images, 5 x 1k on top of 100k

Run times on the shared 2-core machine: smoke 25 s, quick 20 s (load 2.6), full 4.5 min at
load 3-4.5 plus a minute to delete its 100k-image work folder (`--keep` keeps it).

Prints tables and writes `<out>/ingest.json` (default out: /tmp/flywheel-bench-ingest).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import disk_probe, make_batch
from common import (
    load_text,
    machine,
    start_daemon,
    stop_daemon,
    table,
    wait_ready,
    write_config,
    write_json,
)

FORMS: dict[str, dict[str, Any]] = {
    "smoke": {"sizes": [200], "growth": 200, "versions": 5},
    "quick": {"sizes": [1000], "growth": 1000, "versions": 5},
    "full": {"sizes": [1000, 10000, 100000], "growth": 1000, "versions": 5},
}
RSS_TARGET_MIB = 250


def ingest_child(root: Path, batch: Path) -> dict[str, Any]:
    """In this (child) process: ingest `batch` into the data root `root` (made if new) as the
    daemon does, timing the version steps too."""
    from flywheel.app import App, init_data_root
    from flywheel.store import Store

    steps = {"create_version_s": 0.0}

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                steps[key] += time.perf_counter() - started

        return wrapper

    Store.create_version = timed(Store.create_version, "create_version_s")  # type: ignore[method-assign]
    app = App(init_data_root(root))  # the daemon's own ingest path (App.ingest), default config
    before = app.store.latest_version()
    started, cpu = time.perf_counter(), time.process_time()
    result = app.ingest(batch, move=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    if result.quarantined or result.version is None:
        raise RuntimeError(f"unexpected ingest result: {result.quarantined[:3]}")
    return {
        "images": result.accepted,
        "dataset_images_before": (before.train_images + before.val_images) if before else 0,
        "dataset_images": result.version.train_images + result.version.val_images,
        "seconds": round(seconds, 3),
        "images_per_s": round(result.accepted / seconds, 1),
        # CPU time (user + system): on a busy machine wall time says more about the neighbours
        "cpu_seconds": round(cpu_seconds, 3),
        "images_per_cpu_s": round(result.accepted / cpu_seconds, 1),
        "create_version_s": round(steps["create_version_s"], 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def materialize_child(root: Path) -> dict[str, Any]:
    """In this (child) process: build the newest version's folder, as its first training does."""
    from flywheel.app import App
    from flywheel.store.materialize import materialize

    app = App(root)
    version = app.store.latest_version()
    assert version is not None and version.id is not None
    started = time.perf_counter()
    manifest = app.store.manifest(version.id)
    read = time.perf_counter() - started
    materialize(app.objects, app.paths.versions, version.id, version.class_names, manifest)
    return {
        "version_images": len(manifest),
        "read_manifest_s": round(read, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }


def ingest(root: Path, batch: Path) -> dict[str, Any]:
    return _child("--child", str(root), str(batch))


def _child(*args: str) -> dict[str, Any]:
    load = machine()["load_average"]
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ingest child failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "load_average": load}


def status_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def torch_mapped(pid: int) -> list[str]:
    """Shared objects of torch mapped into the process: non-empty means torch was imported."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines() if "/torch/" in line and line.endswith(".so")})


def daemon_idle(work: Path) -> dict[str, Any]:
    """Start `flywheel run` on an empty data root; its memory once idle, and after a scrape."""
    root = work / "idle-root"
    shutil.rmtree(root, ignore_errors=True)
    write_config(root, {})
    log = work / "idle.log"
    log.unlink(missing_ok=True)
    proc = start_daemon(root, log)
    try:
        startup = wait_ready(proc, log)
        time.sleep(3.0)  # let the first inbox scan and the scheduler's first ticks happen
        idle = status_kib(proc.pid)
        port = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", log.read_text())
        scraped: dict[str, int] = {}
        if port:
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=30) as resp:
                resp.read()
            scraped = status_kib(proc.pid)
        torch = torch_mapped(proc.pid)
    finally:
        stop_daemon(proc)
    return {
        "startup_s": round(startup, 2),
        "idle_rss_mib": round(idle["VmRSS"] / 1024, 1),
        "idle_hwm_mib": round(idle["VmHWM"] / 1024, 1),
        "after_scrape_rss_mib": round(scraped.get("VmRSS", 0) / 1024, 1),
        "torch_loaded": bool(torch),
        "torch_libraries": torch[:5],
        "target_mib": RSS_TARGET_MIB,
    }


def report(data: dict[str, Any]) -> str:
    rows = [
        [
            r["images"],
            f"{r['batch_make_s']:.0f}",
            f"{r['seconds']:.2f}",
            f"{r['images_per_s']:.0f}",
            f"{r['images_per_cpu_s']:.0f}",
            f"{r['peak_rss_mib']:.0f}",
            r["load_average"][0],
        ]
        for r in data["throughput"]
    ]
    lines = [
        "Ingest into an empty data root (64 px JPEGs, 2 boxes each; SQLite, objects and versions on one disk)",
        "",
        table(["images", "generate s", "ingest s", "images/s", "images/CPU-s", "peak RSS MiB", "load (1 min)"], rows),
        "",
        f"Versions on top of {data['growth_base']} images, {data['settings']['growth']} new images each:",
        "",
    ]
    rows = [
        [
            i + 1,
            r["dataset_images_before"],
            f"{r['seconds']:.2f}",
            f"{r['images_per_s']:.0f}",
            f"{r['create_version_s']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
            r["load_average"][0],
        ]
        for i, r in enumerate(data["growth"])
    ]
    lines.append(
        table(
            [
                "version",
                "images before",
                "ingest s",
                "images/s",
                "create_version s",
                "peak RSS MiB",
                "load (1 min)",
            ],
            rows,
        )
    )
    same = next((r for r in data["throughput"] if r["images"] == data["settings"]["growth"]), None)
    if same is not None:
        mean = sum(r["seconds"] for r in data["growth"]) / len(data["growth"])
        lines.append(
            f"\nmean ingest of {same['images']} images on top of {data['growth_base']}: {mean:.2f}s, "
            f"{mean / same['seconds']:.2f} x the same batch size into an empty root ({same['seconds']:.2f}s)"
        )
    m = data.get("first_training_folder")
    if m:
        lines.append(
            f"\nthe newest version's folder, built by its first training: {m['version_images']} images "
            f"in {m['seconds']:.2f}s (reading the manifest {m['read_manifest_s']:.2f}s, the rest hard links)"
        )
    d = data["daemon_idle"]
    lines.append(
        f"\ndaemon idle: VmRSS {d['idle_rss_mib']:.0f} MiB (peak {d['idle_hwm_mib']:.0f}), "
        f"{d['after_scrape_rss_mib']:.0f} MiB after a /metrics scrape; target < {d['target_mib']} MB; "
        f"torch loaded: {'yes: ' + ', '.join(d['torch_libraries']) if d['torch_loaded'] else 'no'}; "
        f"start-up {d['startup_s']:.1f}s"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1k images: a minute or two")
    size.add_argument("--smoke", action="store_true", help="200 images (the test)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flywheel-bench-ingest"), help="results and work")
    parser.add_argument("--keep", action="store_true", help="keep the generated batches and data roots")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--materialize-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(ingest_child(*args.child)))
        return
    if args.materialize_child:
        print(json.dumps(materialize_child(args.materialize_child)))
        return
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    form = FORMS[name]
    out: Path = args.out
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"{name} form: {json.dumps(form)}; {load_text()}", flush=True)
    began = time.time()
    disk = disk_probe(work / "probe")
    throughput = []
    for n in form["sizes"]:
        started = time.perf_counter()
        batch = make_batch(work / f"batch{n}", n, seed=n)
        made = time.perf_counter() - started
        root = work / f"root{n}"
        root.mkdir()
        r = {**ingest(root, batch), "batch_make_s": round(made, 1)}
        throughput.append(r)
        print(f"ingest {n:>6} images: {r['seconds']:.2f}s, {r['peak_rss_mib']:.0f} MiB; {load_text()}", flush=True)
    largest = max(form["sizes"])
    growth = []
    for i in range(form["versions"]):
        batch = make_batch(work / f"growth{i}", form["growth"], seed=10_000_000 + i)
        r = ingest(work / f"root{largest}", batch)
        growth.append(r)
        print(f"version {i + 1} on top of {r['dataset_images_before']}: {r['seconds']:.2f}s; {load_text()}", flush=True)
    folder = _child("--materialize-child", str(work / f"root{largest}"))
    print(f"folder of the newest version: {folder['seconds']:.2f}s; {load_text()}", flush=True)
    idle = daemon_idle(work)
    data = {
        "benchmark": "ingest",
        "form": name,
        "settings": form,
        "machine": machine(),
        "disk_per_file_us": disk,
        "throughput": throughput,
        "growth_base": largest,
        "growth": growth,
        "first_training_folder": folder,
        "daemon_idle": idle,
        "seconds": round(time.time() - began, 1),
    }
    text = report(data)
    path = write_json(out, "ingest.json", data)
    (out / "ingest.md").write_text(text + "\n")
    print("\n" + text + f"\n\n{load_text()}; took {data['seconds']:.0f}s; written to {path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Months of operation, compressed: N cycles of generated batches through a real `flywheel run`
daemon at tiny settings, with the default retention policy and gc every `--gc-seconds`.

    python benchmarks/soak.py [--cycles 60] [--gc-seconds 60] [--out benchmarks/results]

Per cycle: the daemon's RSS, open files, threads and children, the database's size, the data
root's size on disk and per area, and the cycle's seconds. Writes soak.json, prints a table,
and with matplotlib (the `bench` extra) draws docs/bench-soak.png.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from common import (
    ROOT,
    load_text,
    machine,
    query,
    start_daemon,
    stop_daemon,
    stop_on_sigterm,
    table,
    wait_for,
    wait_ready,
    write_config,
    write_json,
)

from flywheel.cli.demo import synthetic_batch
from flywheel.flow.gc import disk_bytes, usage_by_area

MIB = 2**20


def finished_runs(root: Path) -> int:
    rows = query(root, "SELECT count(*) AS n FROM training_run WHERE state IN ('succeeded', 'failed', 'cancelled')")
    return int(rows[0]["n"]) if rows else 0


def sample(proc: psutil.Process, root: Path) -> dict[str, Any]:
    with proc.oneshot():
        rss = proc.memory_info().rss
        files = proc.num_fds()
        threads = proc.num_threads()
    return {
        "rss_mib": round(rss / MIB, 1),
        "open_files": files,
        "threads": threads,
        "children": len(proc.children(recursive=True)),
        "db_mib": round(disk_bytes(root / "flywheel.db") / MIB, 2),
        "root_mib": round(disk_bytes(root) / MIB, 1),
        "areas_mib": {k: round(v / MIB, 1) for k, v in usage_by_area(root).items()},
    }


def soak(work: Path, cycles: int, gc_seconds: float) -> list[dict[str, Any]]:
    root = work / "root"
    write_config(root, {"epochs_scratch": 2, "imgsz": 64, "batch": 8, "device": "cpu"})
    config = root / "config.toml"
    text = config.read_text() + f"\n[retention]\ngc_interval_hours = {gc_seconds / 3600}\n"
    config.write_text(text + "\n[dataset]\nval_fraction = 0.25\n")  # 12 images a batch: about 3 in val
    log = work / "daemon.log"
    daemon = start_daemon(root, log)
    rows: list[dict[str, Any]] = []
    try:
        wait_ready(daemon, log)
        proc = psutil.Process(daemon.pid)
        for cycle in range(1, cycles + 1):
            started = time.monotonic()
            before = finished_runs(root)
            batch = synthetic_batch(work / f"batch-{cycle:03d}", 12, seed=cycle)
            batch.rename(root / "inbox" / batch.name)
            (root / "inbox" / batch.name / "READY").touch()
            wait_for(f"cycle {cycle}'s training", lambda b=before: finished_runs(root) > b, daemon, 600)
            row = {"cycle": cycle, "seconds": round(time.monotonic() - started, 1), **sample(proc, root)}
            rows.append(row)
            print(f"cycle {cycle}: {row} ({load_text()})", flush=True)
    finally:
        stop_daemon(daemon)
    return rows


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install 'flywheel[bench]'): no plot")
        return
    cycles = [r["cycle"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(cycles, [r["root_mib"] for r in rows], label="data root")
    for area in ("models", "runs", "objects", "versions"):
        left.plot(cycles, [r["areas_mib"][area] for r in rows], label=area, linewidth=1)
    left.set(xlabel="cycle", ylabel="MiB on disk", title="data root (default retention, gc running)")
    left.legend()
    right.plot(cycles, [r["rss_mib"] for r in rows], label="daemon RSS (MiB)")
    right.plot(cycles, [r["open_files"] for r in rows], label="open files")
    right.plot(cycles, [r["threads"] for r in rows], label="threads")
    right.set(xlabel="cycle", title="the daemon process")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--gc-seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench-soak.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-soak-") as tmp:
        rows = soak(Path(tmp), args.cycles, args.gc_seconds)
    shown = [r for r in rows if r["cycle"] in (1, 2, 5, 10) or r["cycle"] % 10 == 0 or r is rows[-1]]
    headers = ["cycle", "s", "RSS MiB", "files", "threads", "children", "db MiB", "root MiB"]
    headers += ["models", "runs", "objects"]
    keys = ["cycle", "seconds", "rss_mib", "open_files", "threads", "children", "db_mib", "root_mib"]
    areas = ["models", "runs", "objects"]
    print(table(headers, [[r[k] for k in keys] + [r["areas_mib"][a] for a in areas] for r in shown]))
    tail = rows[-50:] if len(rows) > 50 else rows
    summary = {
        "rss_growth_last_50_mib": round(tail[-1]["rss_mib"] - tail[0]["rss_mib"], 1),
        "root_growth_per_cycle_last_half_mib": round(
            (rows[-1]["root_mib"] - rows[len(rows) // 2]["root_mib"]) / max(len(rows) - 1 - len(rows) // 2, 1), 2
        ),
        "median_cycle_seconds": statistics.median(r["seconds"] for r in rows),
        "files": sorted({r["open_files"] for r in rows}),
        "threads": sorted({r["threads"] for r in rows}),
    }
    print(summary, load_text())
    write_json(args.out, "soak.json", {"machine": machine(), "rows": rows, "summary": summary})
    plot(rows, args.plot)


if __name__ == "__main__":
    main()

"""/metrics under a burst beside a training: N requests from K threads to a real `flywheel run`
daemon while it trains on BCCD, with /metrics rendered for each scrape (render_seconds = 0, as
before) and shared between concurrent scrapes (the default, 1 s), in one run.

    python benchmarks/burst.py [--requests 2000] [--threads 16] [--out benchmarks/results]

Prints p50/p99/max latency and requests/s per arm, with the load average; writes burst.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    NAMES,
    bccd_copy,
    drop,
    load_text,
    machine,
    start_daemon,
    stop_daemon,
    stop_on_sigterm,
    table,
    wait_for,
    wait_ready,
    write_config,
    write_json,
    yolo_batch,
)


def metrics_port(log: Path) -> int:
    for line in log.read_text(errors="replace").splitlines():
        if "metrics on http://" in line:
            return int(line.rsplit(":", 1)[1].split("/")[0])
    return 0


def training_runs(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return "flywheel_training_running 1.0" in response.read().decode()


def burst(port: int, requests: int, threads: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_thread = requests // threads
    start = threading.Barrier(threads)

    def client() -> None:
        start.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
                    response.read()
            except OSError:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "max_ms": round(1000 * latencies[-1], 1),
        "per_second": round(len(latencies) / wall, 1),
        "load": load_text(),
    }


def arm(work: Path, render_seconds: float, requests: int, threads: int) -> dict[str, Any]:
    root = work / f"root-{render_seconds:g}"
    training = {"epochs_scratch": 300, "imgsz": 320, "batch": 16, "device": "cpu"}
    write_config(root, training)
    config = root / "config.toml"  # [metrics] is written by write_config: add the key to it
    config.write_text(config.read_text().replace("port = 0\n", f"port = 0\nrender_seconds = {render_seconds}\n", 1))
    data = bccd_copy(work)
    images = sorted((data / "images" / "train").glob("*.jpg"))[:120]
    batch = yolo_batch(work / f"batch-{render_seconds:g}", images, NAMES)
    log = work / f"daemon-{render_seconds:g}.log"
    proc = start_daemon(root, log)
    try:
        wait_ready(proc, log)
        port = metrics_port(log)
        drop(batch, root / "inbox")
        wait_for("a running training", lambda: training_runs(port), proc, 300)
        result = burst(port, requests, threads)
        result["render_seconds"] = render_seconds
        print(f"render_seconds {render_seconds:g}: {result}", flush=True)
        return result
    finally:
        stop_daemon(proc)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-burst-") as tmp:
        work = Path(tmp)
        arms = [arm(work, seconds, args.requests, args.threads) for seconds in (0.0, 1.0)]
    before, after = arms
    rows = [
        [f"{a['render_seconds']:g}", a["requests"], a["errors"], a["p50_ms"], a["p99_ms"], a["max_ms"], a["per_second"]]
        for a in arms
    ]
    print(table(["render_seconds", "requests", "errors", "p50 ms", "p99 ms", "max ms", "req/s"], rows))
    ratio = round(before["p99_ms"] / after["p99_ms"], 1) if after["p99_ms"] else None
    print(f"p99 {before['p99_ms']} -> {after['p99_ms']} ms ({ratio}x); {load_text()}")
    write_json(args.out, "burst.json", {"machine": machine(), "arms": arms, "p99_ratio": ratio})


if __name__ == "__main__":
    main()

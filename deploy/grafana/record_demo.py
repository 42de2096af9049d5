"""Record a real run and draw the dashboard from it: docs/dashboard.png.

Starts Debian's Prometheus (deploy/prometheus/ensure-prometheus.sh) on loopback with the
shipped config and alert rules, a `flywheel run` daemon on a temporary data root, drops a
few generated batches (one with broken files), lets each train (real, small Ultralytics
trainings on the CPU), rolls production back from the CLI, and renders every panel of the
dashboard from what Prometheus scraped, with render.py. Nothing leaves 127.0.0.1.

    .venv/bin/python deploy/grafana/record_demo.py --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
PROMETHEUS_DIR = HERE.parent / "prometheus"
FLYWHEEL = [sys.executable, "-m", "flywheel"]

CONFIG = """\
[inbox]
settle_seconds = 0.5
rescan_seconds = 2.0

[dataset]
val_fraction = 0.25

[training]
epochs_scratch = {scratch}
epochs_warm = {warm}
imgsz = 64
batch = 8

[metrics]
port = {port}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(what: str, check: object, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--epochs-scratch", type=int, default=12)
    parser.add_argument("--epochs-warm", type=int, default=6)
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import render

    from flywheel.app import App
    from flywheel.cli.demo import drop, synthetic_batch
    from flywheel.core.domain import RunState

    work = Path(tempfile.mkdtemp(prefix="flywheel-demo-"))
    root = work / "root"
    metrics_port, prom_port = free_port(), free_port()
    subprocess.run([*FLYWHEEL, "init", str(root)], check=True, capture_output=True)
    (root / "config.toml").write_text(
        CONFIG.format(scratch=args.epochs_scratch, warm=args.epochs_warm, port=metrics_port)
    )
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "2s"
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not installed: run deploy/prometheus/ensure-prometheus.sh")
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = (work / "daemon.log").open("w")
    daemon = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{prom_port}"
    started = time.time()
    try:
        query = render.prometheus(url)

        def scraped() -> bool:
            try:
                return bool(query("query", {"query": 'up{job="flywheel"} == 1'}))
            except OSError:
                return False

        wait("the first scrape", scraped, 120)
        time.sleep(20)
        app = App(root)
        for i in range(1, args.batches + 1):
            batch = synthetic_batch(work / "staging" / f"batch{i}", args.images, seed=i)
            if i == 3:  # some files for quarantine: a corrupt image, a label line with 4 fields
                (batch / "images" / f"s{i}_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
                (batch / "labels" / f"s{i}_0001.txt").write_text("0 0.5 0.5 0.2\n")
            drop(batch, root / "inbox")

            def trained(n: int = i) -> bool:
                runs = app.store.runs()
                return len(runs) >= n and runs[n - 1].state not in (RunState.QUEUED, RunState.RUNNING)

            wait(f"training {i}", trained)
            production = app.store.production()
            pid = production.id if production and production.id else 0
            print(f"batch {i}: run {app.store.runs()[i - 1].state}, production m{pid:04d}", flush=True)
            time.sleep(15)
        rollback = subprocess.run(
            [*FLYWHEEL, "rollback", "--root", str(root), "--reason", "recording the demo"],
            capture_output=True,
            text=True,
        )
        print(rollback.stdout.strip() or rollback.stderr.strip(), flush=True)
        time.sleep(30)
        drawn = render.render(query, started, time.time(), args.out)
        empty = [title for title, n in drawn.series.items() if n == 0]
        print(f"wrote {args.out}: {len(drawn.series)} panels, without data: {empty or 'none'}")
        with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=10) as response:
            print("alerts:", response.read().decode()[:500])
    finally:
        daemon.terminate()
        daemon.wait(120)
        prom.terminate()
        prom.wait(60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

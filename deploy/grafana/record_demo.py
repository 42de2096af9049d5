"""Record a real run and draw the dashboard from it: docs/dashboard.png.

Starts Debian's Prometheus (deploy/prometheus/ensure-prometheus.sh) on loopback with the
shipped config and alert rules, a `flywheel run` daemon on a temporary data root, drops a
few generated batches (red and blue rectangles, then green ones too; one batch with broken
files), lets each train (real, small Ultralytics trainings on the CPU), rolls production back
from the CLI, and renders every panel of the dashboard from what Prometheus scraped, with
render.py. Nothing leaves 127.0.0.1.

The training settings are ones that learn these images in a minute or two of CPU: 64 px,
mosaic off, one warm-up epoch, AdamW at lr0 0.002 with batch 8 = nbs. Measured on 60 images
of two classes: the first model scores mAP50 0.53 / mAP50-95 0.26 on its val split, and a warm
start on a batch that adds a third class reached mAP50-95 0.67. (With the default settings a
few optimizer steps inside the LR warm-up learn nothing and every panel reads 0%.)

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

[schedule]
debounce_seconds = 0.0     # one batch at a time: train on it at once

[training]
epochs_scratch = {scratch}
close_mosaic = {scratch}   # no mosaic: 64 px tiles of 64 px images are too small to learn from
warmup_epochs = 1
imgsz = 64
batch = 8
nbs = 8                    # an optimizer step per batch of 8, not per accumulated 16
optimizer = "AdamW"
lr0 = 0.002

[metrics]
port = {port}
"""
COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}


def rectangles(folder: Path, count: int, seed: int, classes: list[str], size: int = 64) -> Path:
    """Images of coloured rectangles on noise, one or two per image, with exact YOLO labels;
    flywheel.cli.demo.synthetic_batch's images with a choice of classes (and a third colour)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    for i in range(count):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        lines = []
        for _ in range(2):
            cls = int(rng.integers(0, len(classes)))
            w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            img[y : y + h, x : x + w] = COLOURS[classes[cls]]
            lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        Image.fromarray(img).save(folder / "images" / f"s{seed}_{i:04d}.png")
        (folder / "labels" / f"s{seed}_{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return folder


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
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--epochs-scratch", type=int, default=12)  # warm starts: the default budget, its share
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    import render

    from flywheel.app import App
    from flywheel.cli.demo import drop
    from flywheel.core.domain import RunState

    work = Path(tempfile.mkdtemp(prefix="flywheel-demo-"))
    root = work / "root"
    metrics_port, prom_port = free_port(), free_port()
    subprocess.run([*FLYWHEEL, "init", str(root)], check=True, capture_output=True)
    (root / "config.toml").write_text(CONFIG.format(scratch=args.epochs_scratch, port=metrics_port))
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
            classes = ["red", "blue"] if i == 1 else ["red", "blue", "green"]  # batch 2 adds a class
            batch = rectangles(work / "staging" / f"batch{i}", args.images, i, classes)
            if i == 3:  # some files for quarantine: a corrupt image, a label line with 4 fields
                (batch / "images" / f"s{i}_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
                (batch / "labels" / f"s{i}_0001.txt").write_text("0 0.5 0.5 0.2\n")
            drop(batch, root / "inbox")

            def trained(n: int = i) -> bool:
                runs = app.store.runs()
                return len(runs) >= n and runs[n - 1].state not in (RunState.QUEUED, RunState.RUNNING)

            wait(f"training {i}", trained)
            time.sleep(15)  # a few scrapes of the gate's outcome
            production = app.store.production()
            pid = production.id if production and production.id else 0
            score = query("query", {"query": 'flywheel_model_score{role="production",metric=~"map50|map50_95"}'})
            scores = ", ".join(f"{s['metric']['metric']} {float(s['value'][1]):.3f}" for s in score)
            run = app.store.runs()[i - 1]
            print(f"batch {i}: run {run.state}, production m{pid:04d} ({scores})", flush=True)
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

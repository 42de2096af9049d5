"""`flywheel serve` through HTTP against a plain `YOLO(pt).predict` loop, on BCCD and Aquarium.

For each data set: a yolov8n trained from its YAML for --epochs at --imgsz on the train split
(cached in the work folder), exported by Ultralytics (ONNX, OpenVINO; static, fp32) into a
production/ layout; then, in one run, over the held-out (valid) images:
  - the plain loop: `YOLO(pt).predict(image)` one image at a time (images/s, p50/p99 per image);
  - `flywheel serve` per runtime, --clients concurrent HTTP clients each posting one JPEG per
    request (images/s, p50/p99 request latency), load average printed with each timing;
  - mAP50-95 of the answers through HTTP (conf 0.001, as val) against the .pt's own predict
    scored by the same code (Ultralytics' matching and ap_per_class).
Writes docs/benchmarks/serve.md (table + command). Run it under the CPU lock:

    flock /work/wt/cpu.lock python benchmarks/serve.py --work /tmp/bench-serve
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import datasets

ROOT = common.ROOT
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")


def trained(work: Path, data: datasets.Dataset, epochs: int, imgsz: int) -> Path:
    from ultralytics import YOLO

    out = work / f"{data.name}-model"
    weights = out / "run" / "weights" / "last.pt"
    if weights.is_file():
        return weights
    YOLO("yolov8n.yaml").train(
        data=str(data.root / "data.yaml"), epochs=epochs, imgsz=imgsz, batch=16, workers=0, device="cpu",
        plots=False, val=False, project=str(out), name="run", exist_ok=True, seed=0, verbose=False,
        optimizer="AdamW", lr0=0.002, warmup_epochs=1, close_mosaic=max(1, epochs // 3),
    )  # fmt: skip
    return weights


def production(work: Path, data: datasets.Dataset, pt: Path, imgsz: int) -> Path:
    """A data root whose production/ is the model with its exports, as the registry lays it out."""
    from ultralytics import YOLO

    root = work / f"{data.name}-root"
    folder = root / ".production" / "m0001"
    if not (folder / "model.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pt, folder / "model.pt")
        YOLO(str(folder / "model.pt")).export(format="onnx", imgsz=imgsz, simplify=False, verbose=False)
        YOLO(str(folder / "model.pt")).export(format="openvino", imgsz=imgsz, verbose=False)
        meta = {"id": "m0001", "version": "v0001", "classes": data.names, "sha256": "", "imgsz": imgsz}
        (folder / "model.json").write_text(json.dumps(meta))
    link = root / "production"
    if not link.is_symlink():
        link.symlink_to(".production/m0001")
    return root


def plain_loop(pt: Path, images: list[Path], imgsz: int) -> tuple[float, list[float]]:
    from ultralytics import YOLO

    model = YOLO(str(pt))
    model.predict(str(images[0]), imgsz=imgsz, verbose=False)  # warm-up, as the server warms
    times = []
    started = time.perf_counter()
    for image in images:
        t = time.perf_counter()
        model.predict(str(image), imgsz=imgsz, verbose=False)
        times.append(time.perf_counter() - t)
    return len(images) / (time.perf_counter() - started), times


def serve_load(url: str, payloads: list[bytes], clients: int, rounds: int) -> tuple[float, list[float], int]:
    import httpx

    work = [payloads[i % len(payloads)] for i in range(len(payloads) * rounds)]
    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()
    cursor = iter(range(len(work)))

    def client() -> None:
        nonlocal failed
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                t = time.perf_counter()
                response = http.post(f"{url}/v1/detect", content=work[index], headers={"Content-Type": "image/jpeg"})
                with lock:
                    latencies.append(time.perf_counter() - t)
                    failed += response.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(work) / (time.perf_counter() - started), latencies, failed


def served_answers(url: str, images: list[Path]) -> list[list[tuple[int, float, list[float]]]]:
    import httpx

    out = []
    with httpx.Client(timeout=60) as http:
        for image in images:
            body = http.post(
                f"{url}/v1/detect", params={"conf": 0.001, "iou": 0.7, "max_det": 300}, content=image.read_bytes(),
                headers={"Content-Type": "image/jpeg"},
            ).json()  # fmt: skip
            out.append([(d["class_id"], d["score"], d["box"]) for d in body["images"][0]["detections"]])
    return out


def pt_answers(pt: Path, images: list[Path], imgsz: int) -> list[list[tuple[int, float, list[float]]]]:
    from ultralytics import YOLO

    model = YOLO(str(pt))
    out = []
    for image in images:
        r = model.predict(str(image), imgsz=imgsz, conf=0.001, iou=0.7, max_det=300, verbose=False)[0]
        out.append(list(zip(r.boxes.cls.int().tolist(), r.boxes.conf.tolist(), r.boxes.xyxy.tolist(), strict=True)))
    return out


def map50_95(answers: list[list[tuple[int, float, list[float]]]], images: list[Path]) -> float:
    """Ultralytics' own matching (BaseValidator.match_predictions) and ap_per_class."""
    import cv2
    import numpy as np
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    matcher = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    tps, confs, pcls, tcls = [], [], [], []
    for found, image in zip(answers, images, strict=True):
        h, w = cv2.imread(str(image)).shape[:2]
        rows = [line.split() for line in datasets.label_of(image).read_text().splitlines() if line.strip()]
        gt = torch.tensor([[float(v) for v in r[1:5]] for r in rows]).reshape(-1, 4)
        gt_boxes = torch.stack(
            [(gt[:, 0] - gt[:, 2] / 2) * w, (gt[:, 1] - gt[:, 3] / 2) * h, (gt[:, 0] + gt[:, 2] / 2) * w, (gt[:, 1] + gt[:, 3] / 2) * h],
            1,
        )  # fmt: skip
        gt_cls = torch.tensor([int(r[0]) for r in rows])
        found = sorted(found, key=lambda d: -d[1])
        p_cls = torch.tensor([d[0] for d in found])
        p_box = torch.tensor([d[2] for d in found]).reshape(-1, 4)
        correct = (
            BaseValidator.match_predictions(matcher, p_cls, gt_cls, box_iou(gt_boxes, p_box))  # type: ignore[arg-type]
            if len(found) and len(rows)
            else torch.zeros((len(found), 10), dtype=torch.bool)
        )
        tps.append(correct.numpy())
        confs.append(np.array([d[1] for d in found]))
        pcls.append(p_cls.numpy())
        tcls.append(gt_cls.numpy())
    ap = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls))[5]
    return float(ap.mean()) if len(ap) else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (the server's share of the 2 cores)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/flywheel-bench-serve"))
    parser.add_argument("--datasets", default="bccd,aquarium")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the held-out images per runtime")
    parser.add_argument("--runtimes", default="openvino,onnx,pt")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "serve.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from tests.serve_kit import running

    rows = []
    for name in args.datasets.split(","):
        data = datasets.copy(args.work, name)
        pt = trained(args.work, data, args.epochs, args.imgsz)
        root = production(args.work, data, pt, args.imgsz)
        (root / "config.toml").write_text(
            f"[training]\nimgsz = {args.imgsz}\n[serve]\nmax_batch = {args.max_batch}\nmax_wait_ms = {args.max_wait_ms}\n"
            "queue_size = 256\ntimeout = 60.0\n"
        )
        images = data.heldout
        payloads = [p.read_bytes() for p in images]
        loop_rate, loop_times = plain_loop(pt, images, args.imgsz)
        print(
            f"{name} plain loop: {loop_rate:.1f} images/s, p50 {pct(loop_times, 50):.1f} ms ({common.load_text()})",
            flush=True,
        )
        pt_map = map50_95(pt_answers(pt, images, args.imgsz), images)
        rows.append([name, "plain `YOLO(pt).predict` loop", 1, f"{loop_rate:.1f}", "1.00x", f"{pct(loop_times, 50):.1f}",
                     f"{pct(loop_times, 99):.1f}", f"{pt_map:.4f}", "", common.load_text()])  # fmt: skip
        for runtime in args.runtimes.split(","):
            with running(root, runtime, timeout=300) as server:
                serve_load(server.url, payloads[: args.clients * 2], args.clients, 1)  # warm the connections
                server_cpu, client_cpu, wall = cpu_seconds(server.process.pid), time.process_time(), time.time()
                rate, latencies, failed = serve_load(server.url, payloads, args.clients, args.rounds)
                wall = time.time() - wall
                server_cpu = (cpu_seconds(server.process.pid) - server_cpu) / wall
                client_cpu = (time.process_time() - client_cpu) / wall
                load = common.load_text()
                served_map = map50_95(served_answers(server.url, images), images)
            print(
                f"{name} serve {runtime}: {rate:.1f} images/s ({rate / loop_rate:.2f}x), p50 {pct(latencies, 50):.1f} ms, "
                f"p99 {pct(latencies, 99):.1f} ms, failed {failed}, cores busy: server {server_cpu:.2f} clients {client_cpu:.2f}, mAP50-95 {served_map:.4f} vs .pt {pt_map:.4f} ({load})",
                flush=True,
            )
            rows.append([name, f"`flywheel serve` {runtime}", args.clients, f"{rate:.1f}", f"{rate / loop_rate:.2f}x",
                         f"{pct(latencies, 50):.1f}", f"{pct(latencies, 99):.1f}", f"{served_map:.4f}",
                         f"{served_map - pt_map:+.4f}", load])  # fmt: skip
    write(args, rows)


def write(args: argparse.Namespace, rows: list[list[Any]]) -> None:
    head = ["data set", "what", "clients", "images/s", "vs loop", "p50 ms", "p99 ms", "mAP50-95", "Δ vs .pt", "load"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    command = "flock /work/wt/cpu.lock python benchmarks/serve.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = args.out.read_text() if args.out.is_file() else ""
    marker = "<!-- results -->"
    intro = text.split(marker)[0] if marker in text else "# `flywheel serve` benchmark\n\n"
    args.out.write_text(
        f"{intro}{marker}\n\nCommand: `{command}` (yolov8n from yolov8n.yaml, {args.epochs} epochs at {args.imgsz} px, "
        f"max_batch {args.max_batch}, max_wait_ms {args.max_wait_ms}; {time.strftime('%Y-%m-%d %H:%M')}; "
        f"{os.cpu_count()} cores)\n\n" + "\n".join(table) + "\n"
    )
    print("\n".join(table))
    subprocess.run(["true"], check=False)


if __name__ == "__main__":
    main()

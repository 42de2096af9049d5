"""`flywheel serve` as a real process on 127.0.0.1 with real runtimes (PyTorch, ONNX Runtime,
OpenVINO) and real tiny models: parity with Ultralytics' own predict per artifact, a hot swap
under concurrent load with no failed request, the queue bound, capture within its quota, bad
requests answered 4xx while the server stays up, and the bearer token."""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest

from tests.gate_models import NAMES, shapes_batch
from tests.serve_kit import IMGSZ, Exports, publish, running, train_and_export, write_config

pytestmark = pytest.mark.slow
CONF = 0.05


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return train_and_export(tmp_path_factory.mktemp("serve-models"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Unseen images (another seed than the training's)."""
    return sorted((shapes_batch(tmp_path_factory.mktemp("serve-images"), 12, seed=7) / "images").glob("*.png"))


def served_root(tmp_path: Path, exports: Exports, serve: str = "") -> Path:
    root = tmp_path / "root"
    write_config(root, f"[serve]\n{serve}")
    publish(root, exports.weak, "m0001", "v0001")
    return root


def detect(url: str, paths: list[Path], conf: float = CONF, **headers: str) -> httpx.Response:
    files = [("image", (path.name, path.read_bytes(), "image/png")) for path in paths]
    return httpx.post(f"{url}/v1/detect", params={"conf": conf}, files=files, timeout=30, headers=headers)


@pytest.mark.parametrize("runtime", ["pt", "onnx", "openvino"])
def test_each_runtime_answers_what_ultralytics_predicts_with_the_pt(
    tmp_path: Path, exports: Exports, images: list[Path], runtime: str
) -> None:
    from ultralytics import YOLO

    root = served_root(tmp_path, exports)
    paths = [str(p) for p in images]
    expected = YOLO(str(root / "production" / "model.pt")).predict(paths, imgsz=IMGSZ, conf=CONF, verbose=False)
    with running(root, runtime) as server:
        answer = detect(server.url, images)  # all at once: one dynamic batch
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"], body["runtime"]) == ("m0001", "v0001", runtime)
    total = 0
    for got, want in zip(body["images"], expected, strict=True):
        mine = sorted((d["class_id"], d["score"], d["box"]) for d in got["detections"])
        theirs = sorted(
            (int(c), float(s), [float(v) for v in box])
            for box, s, c in zip(
                want.boxes.xyxy.tolist(), want.boxes.conf.tolist(), want.boxes.cls.tolist(), strict=True
            )
        )
        assert len(mine) == len(theirs), got["name"]
        for (c1, s1, b1), (c2, s2, b2) in zip(mine, theirs, strict=True):
            # fp32 in every runtime: the same numbers up to float rounding (OpenVINO in bf16 was 1e-3 and pixels off)
            assert c1 == c2 and s1 == pytest.approx(s2, abs=1e-4) and b1 == pytest.approx(b2, abs=0.02)
        total += len(mine)
        assert all(d["class"] == NAMES[d["class_id"]] for d in got["detections"])
    assert total >= len(images)  # the model sees the rectangles: the comparison had boxes to compare


def test_a_swap_under_concurrent_load_fails_no_request(tmp_path: Path, exports: Exports, images: list[Path]) -> None:
    root = served_root(tmp_path, exports, "max_batch = 4\nmax_wait_ms = 2.0\npoll_seconds = 0.2\n")
    results: list[tuple[int, int, str]] = []  # (client, status, model)
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(timeout=30) as http:
            for i in range(400):  # bounded: 4 clients x 400 requests at most
                if stop.is_set():
                    return
                path = images[(number + i) % len(images)]
                response = http.post(
                    f"{server.url}/v1/detect", content=path.read_bytes(), headers={"Content-Type": "image/png"}
                )
                model = response.json().get("model", "") if response.status_code == 200 else response.text
                results.append((number, response.status_code, model))

    with running(root, "onnx") as server:
        clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 120
        while sum(1 for r in results if r[2] == "m0001") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        publish(root, exports.strong, "m0002", "v0002")  # what the registry does on promote
        while not any(r[2] == "m0002" for r in results[-8:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        settle = len(results) + 20
        while len(results) < settle and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
        ready = httpx.get(f"{server.url}/readyz").json()
        metrics = httpx.get(f"{server.url}/metrics").text
    assert [r for r in results if r[1] != 200] == []
    assert {r[2] for r in results} == {"m0001", "m0002"}
    for number in range(4):  # each client, in its own order, sees the old model and then only the new
        seen = [model for n, _, model in results if n == number]
        if "m0002" in seen:
            assert "m0001" not in seen[seen.index("m0002") :]
    assert ready["model"] == "m0002"
    assert 'flywheel_serve_model_info{model="m0002",runtime="onnx",version="v0002"} 1.0' in metrics
    assert "flywheel_serve_model_differs 0.0" in metrics


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )  # fmt: skip


def test_bad_requests_get_a_4xx_with_a_reason_and_the_server_stays_up(
    tmp_path: Path, exports: Exports, images: list[Path]
) -> None:
    root = served_root(tmp_path, exports, "queue_size = 2\nmax_request_mb = 0.25\n")
    (root / "config.toml").write_text((root / "config.toml").read_text() + "[ingest]\nmax_image_pixels = 1000000\n")
    token = {"FLYWHEEL_SERVE_TOKEN": "s3cret-token"}
    auth = {"Authorization": "Bearer s3cret-token"}
    good = images[0].read_bytes()
    cases = {
        "not an image": (b"just some text, not pixels", "image/png", 400, "image_not_image"),
        "empty": (b"", "image/png", 400, "empty"),
        "truncated": (good[: len(good) // 2], "image/png", 400, "image_corrupt"),
        "bomb above the cap": (_png_header(4000, 4000), "image/png", 413, "image_too_large"),
        "bomb above Pillow's own cap": (_png_header(30000, 30000), "image/png", 413, "image_too_large"),
        "oversized body": (good + b"\x00" * 300_000, "image/png", 413, "request_too_large"),
        "wrong media type": (good, "text/plain", 415, "unsupported_media_type"),
    }
    with running(root, "openvino", env=token) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # no token needed
        assert httpx.get(f"{server.url}/readyz").status_code == 401
        unauthorized = httpx.post(f"{server.url}/v1/detect", content=good, headers={"Content-Type": "image/png"})
        assert unauthorized.status_code == 401
        for name, (body, kind, status, code) in cases.items():
            response = httpx.post(
                f"{server.url}/v1/detect", content=body, headers={"Content-Type": kind, **auth}, timeout=30
            )
            assert (response.status_code, response.json()["error"]) == (status, code), name
            assert response.json()["detail"], name
        bad_conf = httpx.post(
            f"{server.url}/v1/detect?conf=2", content=good, headers={"Content-Type": "image/png", **auth}
        )
        assert bad_conf.status_code == 422 and "conf" in bad_conf.json()["detail"]
        # the queue bound: three images never fit a queue of two, and the answer says when to retry
        full = detect(server.url, images[:3], **auth)
        assert full.status_code == 503 and full.json()["error"] == "queue_full"
        assert int(full.headers["Retry-After"]) >= 1
        assert detect(server.url, images[:2], **auth).status_code == 200  # still up, still answering
        assert server.process.poll() is None
        assert "s3cret-token" not in server.output()  # the token is never logged


def test_capture_keeps_doubted_images_once_each_within_its_quota(
    tmp_path: Path, exports: Exports, images: list[Path]
) -> None:
    quota = 40_000
    root = served_root(
        tmp_path, exports, f"[serve.capture]\nenabled = true\nthreshold = 0.0\nquota_mb = {quota / 2**20}\n"
    )
    with running(root, "onnx") as server:
        for path in images:  # every image twice in a row (the quota evicts the oldest): kept once
            assert detect(server.url, [path]).status_code == 200
            assert detect(server.url, [path]).status_code == 200
        captured = root / "captured"
        deadline = time.monotonic() + 30
        kept = "0"
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{server.url}/metrics").text
            kept = next(
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith('flywheel_serve_captured_total{why="doubt"}')
            )
            if float(kept) >= len(images):
                break
            time.sleep(0.1)
    assert float(kept) == len(images)  # each content once, whatever the repeats
    files = [p for p in captured.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= quota
    stored = sorted(p.stem for p in (captured / "images").iterdir())
    assert 0 < len(stored) < len(images)  # the quota pushed the oldest out
    assert stored == sorted(p.stem for p in (captured / "labels").iterdir())
    meta = json.loads((captured / "meta" / f"{stored[0]}.json").read_text())
    assert meta["why"] == "doubt" and meta["model"] == "m0001" and meta["version"] == "v0001"
    assert "red" in (captured / "data.yaml").read_text()
    from flywheel.prelabel.inputs import collect

    found = collect([captured], tmp_path / "staging", 10**8, 10**9)
    assert len(found.images) == len(stored) and not found.skipped  # predict and suggest read it as any folder

"""`flywheel serve`'s parts that need no model: upload checks, reading production/, config, --help.
The real server, runtimes and models are in tests/test_serve.py (slow)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flywheel.cli.main import app
from flywheel.core.config import parse
from flywheel.core.errors import ConfigError
from flywheel.ingest.reasons import Code, Problem
from flywheel.serve import production
from flywheel.serve.decode import decode


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_upload_decodes_to_bgr_pixels_as_ultralytics_reads_a_file():
    pixels, fmt = decode(_png(40, 30), max_pixels=10_000)
    assert fmt == "PNG" and pixels.shape == (30, 40, 3)
    assert tuple(pixels[0, 0]) == (30, 200, 10)  # BGR, as cv2.imread gives Ultralytics


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", Code.IMAGE_EMPTY),
        (b"plain text", Code.IMAGE_NOT_IMAGE),
        (_png(200, 100), Code.IMAGE_TOO_LARGE),  # 20 000 pixels above a cap of 10 000
        (_png(40, 30)[:60], Code.IMAGE_CORRUPT),
    ],
)
def test_uploads_ingest_would_refuse_are_refused_with_its_code(data: bytes, code: Code):
    with pytest.raises(Problem) as refused:
        decode(data, max_pixels=10_000)
    assert refused.value.code == code and str(refused.value)


def test_a_gif_is_refused_by_name():
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, format="GIF")
    with pytest.raises(Problem, match="GIF"):
        decode(buf.getvalue(), max_pixels=10_000)


def _folder(root: Path, meta: dict[str, object], files: list[str]) -> Path:
    folder = root / ".production" / "m0003"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(meta))
    for name in files:
        (folder / name).mkdir() if name.endswith("_model") else (folder / name).write_bytes(b"x")
    os.symlink(".production/m0003", root / "production")
    return folder


def test_production_is_found_by_file_names_when_model_json_lists_no_artifacts(tmp_path: Path):
    folder = _folder(tmp_path, {"id": "m0003", "version": "v0004", "classes": ["a"]}, ["model.pt", "model.onnx"])
    found = production.read(tmp_path / "production")
    assert (found.id, found.version, found.imgsz, found.folder) == ("m0003", "v0004", None, folder)
    assert production.choose(found, "auto") == ("onnx", folder / "model.onnx")  # the fastest present
    assert production.choose(found, "pt") == ("pt", folder / "model.pt")
    with pytest.raises(production.ProductionError, match=r"serve.runtime.*production.formats"):
        production.choose(found, "openvino")


def test_production_follows_the_artifacts_model_json_lists(tmp_path: Path):
    meta = {"id": "m0003", "version": "v0004", "classes": [], "imgsz": 320,
            "artifacts": {"openvino": {"path": "ov_model", "sha256": "0"}}}  # fmt: skip
    folder = _folder(tmp_path, meta, ["model.pt", "ov_model"])
    found = production.read(tmp_path / "production")
    assert found.imgsz == 320 and production.choose(found, "auto") == ("openvino", folder / "ov_model")


def test_no_production_yet_says_what_to_do(tmp_path: Path):
    with pytest.raises(production.ProductionError, match="no model is in production yet"):
        production.read(tmp_path / "production")
    assert production.current_stamp(tmp_path / "production") is None


def test_serve_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"`serve.runtime`"):
        parse({"serve": {"runtime": "tensorrt"}})
    with pytest.raises(ConfigError, match=r"`serve.capture.control_share`"):
        parse({"serve": {"capture": {"control_share": 2.0}}})
    assert parse({}).serve.host == "127.0.0.1" and not parse({}).serve.capture.enabled


def test_serve_help_teaches_the_api():
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for words in ("POST /v1/detect", "multipart/form-data", "Retry-After", "Bearer", "captured/", "--runtime"):
        assert words in result.output


def test_the_stale_model_alert_passes_its_promtool_tests_and_fails_a_changed_threshold(tmp_path: Path):
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    folder = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
    ok = subprocess.run(
        [promtool, "test", "rules", "serve-alerts.test.yml"], cwd=folder, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for name in ("serve-alerts.yml", "serve-alerts.test.yml"):
        shutil.copy(folder / name, tmp_path / name)
    rules = tmp_path / "serve-alerts.yml"
    rules.write_text(rules.read_text().replace("for: 10m", "for: 15m"))
    changed = subprocess.run([promtool, "test", "rules", "serve-alerts.test.yml"], cwd=tmp_path, capture_output=True)
    assert changed.returncode != 0

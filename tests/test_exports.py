"""Verified exports on promotion (production.formats), on real runtimes and real tiny models.

The models are real checkpoints of one tiny YOLOv8n training (tests/gate_models.py): an early
epoch ("weak", promoted first) and the last ("strong", promoted over it). Each promotion goes
through the daemon's cycle (evaluation in the training child, the gate, the registry), and
the exports are made, scored and timed in flywheel's export child by Ultralytics' exporters,
onnxruntime and OpenVINO.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.main import app as cli
from flywheel.core.config import parse, tensorrt_usable
from flywheel.core.errors import ConfigError
from flywheel.core.exports import Artifact, parity_failures
from flywheel.core.ledger import Action
from flywheel.service.metrics_state import StateCollector
from flywheel.training.export import digest
from tests.gate_models import Checkpoints, HandedCheckpoint, shapes_batch, train

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

CONFIG = """\
[dataset]
val_fraction = 0.5
[training]
imgsz = 64
batch = 16
[production]
formats = {formats}
serving_batch = 4
[notify]
command = "cat >> events.jsonl; echo >> events.jsonl"
"""
TOLERANCE = 0.002  # the default production.export_tolerance


@dataclass
class Promoted:
    root: Path
    version: int
    models: Checkpoints


def _app(root: Path, checkpoint: Path, formats: str = '["onnx", "openvino"]') -> App:
    (root / "config.toml").write_text(_config(root, formats))
    return App(root, trainer=HandedCheckpoint(root / ".ultralytics", checkpoint))


def _config(root: Path, formats: str) -> str:
    return CONFIG.format(formats=formats).replace("events.jsonl", str(root / "events.jsonl"))


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Promoted:
    """weak promoted (first model), then strong over it, both with ONNX and OpenVINO."""
    tmp = tmp_path_factory.mktemp("exports")
    batch = shapes_batch(tmp / "batch", 48, seed=1)
    models = train(batch, tmp, collapse="red")
    root = init_data_root(tmp / "root", CONFIG.format(formats="[]"))
    version = App(root).ingest(batch, move=False).version
    assert version is not None and version.id is not None
    for checkpoint in (models.weak, models.strong):
        app = _app(root, checkpoint)
        assert app.train(version.id).decision.outcome == "promote"
        app.registry.notifier.wait()
    return Promoted(root, version.id, models)


@pytest.mark.slow
def test_each_export_scores_as_its_pt_within_the_tolerance(promoted: Promoted) -> None:
    described = json.loads((promoted.root / "production" / "model.json").read_text())
    assert described["id"] == "m0002" and described["imgsz"] == 64 and described["classes"] == ["red", "green", "blue"]
    artifacts = described["artifacts"]
    assert set(artifacts) == {"pt", "onnx", "openvino"}
    pt_map = artifacts["pt"]["map50_95"]
    assert pt_map > 0.3  # a model that detects: parity at mAP 0 would prove nothing
    for fmt in ("onnx", "openvino"):
        record = artifacts[fmt]
        assert record["pt_map50_95"] == pt_map
        assert abs(record["map50_95"] - pt_map) <= TOLERANCE, (fmt, record["map50_95"], pt_map)
        assert record["options"] == {**record["options"], "imgsz": 64, "half": False, "dynamic": True}
        latency = record["latency_ms"]
        assert 0 < latency["batch1_p50"] <= latency["batch1_p95"] and 0 < latency["batch4_p50"] <= latency["batch4_p95"]
    assert artifacts["onnx"]["options"]["opset"] >= 11


@pytest.mark.slow
def test_production_holds_every_format_and_model_json_hashes_match_the_files(promoted: Promoted) -> None:
    production = promoted.root / "production"
    described = json.loads((production / "model.json").read_text())
    assert (production / "model_openvino_model" / "model.xml").is_file()
    assert (production / "model_openvino_model" / "metadata.yaml").is_file()
    for record in described["artifacts"].values():
        sha, files = digest(production / record["path"])
        assert sha == record["sha256"]
        assert files == record.get("files", {})
    assert described["artifacts"]["pt"]["sha256"] == described["sha256"]
    # the notify event of m0002's promotion names each artifact with its sha256
    events = [json.loads(line) for line in (promoted.root / "events.jsonl").read_text().splitlines() if line]
    promotion = next(e for e in events if e["action"] == "promote" and e["model"] == "m0002")
    announced = {fmt: a["sha256"] for fmt, a in promotion["production"]["artifacts"].items()}
    assert announced == {fmt: a["sha256"] for fmt, a in described["artifacts"].items()}


@pytest.mark.slow
def test_rollback_switches_every_artifact_without_exporting_again(promoted: Promoted) -> None:
    app = _app(promoted.root, promoted.models.weak)
    shelf = app.registry.exports
    assert shelf is not None
    first, second = app.store.model(1), app.store.model(2)
    shelf.exporter = None  # type: ignore[assignment]  # a rollback that exported would fail here
    app.registry.rollback("check every artifact follows", actor="test")
    production = promoted.root / "production"
    described = json.loads((production / "model.json").read_text())
    assert described["id"] == "m0001"
    assert described["artifacts"] == shelf.published(first.sha256) != shelf.published(second.sha256)
    for record in described["artifacts"].values():
        assert digest(production / record["path"])[0] == record["sha256"]
    promoted_again = app.registry.promote(2, reason="back", actor="test")  # stored: promote does not export either
    assert promoted_again.action == Action.PROMOTE
    assert json.loads((production / "model.json").read_text())["artifacts"] == shelf.published(second.sha256)


@pytest.mark.slow
def test_models_show_lists_the_exports(promoted: Promoted) -> None:
    result = CliRunner().invoke(cli, ["models", "show", "m0002", "--root", str(promoted.root), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["artifacts"]
    assert set(shown) == {"pt", "onnx", "openvino"} and shown["onnx"]["latency_ms"]["batch1_p50"] > 0
    table = CliRunner().invoke(cli, ["models", "show", "m0002", "--root", str(promoted.root)])
    row = next(line for line in table.stdout.splitlines() if "openvino" in line)
    assert f"{shown['openvino']['map50_95']:.4f}" in row and shown["openvino"]["sha256"][:8] in row


@pytest.mark.slow
def test_metrics_carry_each_published_format(promoted: Promoted) -> None:
    app = App(promoted.root)
    registry = CollectorRegistry()
    registry.register(StateCollector(app.store, None, promoted.root))
    described = json.loads((promoted.root / "production" / "model.json").read_text())["artifacts"]
    for fmt, record in described.items():
        assert registry.get_sample_value("flywheel_production_artifact_map50_95", {"format": fmt}) == record["map50_95"]
        seconds = registry.get_sample_value(
            "flywheel_production_artifact_latency_seconds", {"format": fmt, "batch": "4", "quantile": "0.95"}
        )
        assert seconds == record["latency_ms"]["batch4_p95"] / 1000
    assert registry.get_sample_value("flywheel_export_failures_total") == 0


@pytest.mark.slow
def test_a_failed_export_holds_the_promotion_and_production_is_unchanged(
    promoted: Promoted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The export child finds an `onnx` that cannot be imported: what a host without the export
    # extra sees. With YOLO_AUTOINSTALL=false Ultralytics must not pip-install it: the export fails.
    shadow = tmp_path / "shadow" / "onnx"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('onnx hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")]))
    root = promoted.root
    before = (root / "production" / "model.json").read_text()
    # collapsed: a checkpoint not exported yet, let through by a gate that tolerates anything
    (root / "config.toml").write_text(_config(root, '["onnx"]') + "[gate]\ntolerance = 1.0\nmax_class_drop = 1.0\n")
    app = App(root, trainer=HandedCheckpoint(root / ".ultralytics", promoted.models.collapsed))
    result = app.train(promoted.version)
    gate = app.store.gate_decisions()[-1]
    assert result.decision.outcome == "promote" and gate.held
    failed = gate.details.export_failed.failures
    assert [f["format"] for f in failed] == ["onnx"] and failed[0]["reason"].startswith("export failed")
    assert app.store.model(result.model.id or 0).status == "candidate"
    assert (root / "production" / "model.json").read_text() == before
    assert app.store.production().id == 2  # type: ignore[union-attr]
    entry = app.store.ledger()[-1]
    assert entry.action == Action.EXPORT_FAILED and "onnx" in entry.reason and "promote_pt" in entry.reason
    status = CliRunner().invoke(cli, ["status", "--root", str(root), "--json"])
    assert "export_failed" in json.loads(status.stdout)["export_held"]
    registry = CollectorRegistry()
    registry.register(StateCollector(app.store, None, root))
    assert registry.get_sample_value("flywheel_export_failures_total") == 1

    # on_export_failure = "promote_pt": a person promotes it; the export fails again, the .pt goes alone
    (root / "config.toml").write_text(
        _config(root, '["onnx"]').replace("serving_batch = 4", 'serving_batch = 4\non_export_failure = "promote_pt"')
    )
    held = f"m{result.model.id:04d}"
    done = CliRunner().invoke(cli, ["promote", held, "--reason", "serve the .pt alone", "--root", str(root)])
    assert done.exit_code == 0, done.output
    described = json.loads((root / "production" / "model.json").read_text())
    assert described["id"] == held and set(described["artifacts"]) == {"pt"}
    assert not (root / "production" / "model.onnx").exists()


def test_parity_fails_a_format_off_the_pt_or_missing() -> None:
    pt = Artifact("pt", "model.pt", {}, {"val": 0.5, "golden": 0.4}, {})
    close = Artifact("onnx", "model.onnx", {}, {"val": 0.5015, "golden": 0.4}, {})
    off = Artifact("openvino", "model_openvino_model", {}, {"val": 0.5, "golden": 0.397}, {})
    failures = parity_failures(
        pt, {"onnx": close, "openvino": off}, {"engine": "no CUDA"}, ["onnx", "openvino", "engine"], 0.002
    )
    assert [(f.format, f.reason, f.eval_set) for f in failures] == [
        ("openvino", "parity", "golden"),
        ("engine", "export failed: no CUDA", ""),
    ]
    assert "0.3970 on golden vs the .pt's 0.4000" in failures[0].explain()


@pytest.mark.parametrize(
    ("production", "message"),
    [
        ({"formats": ["onnx", "tflite"]}, "key `production.formats`: Value error, unknown format 'tflite'"),
        ({"export_tolerance": -0.1}, "key `production.export_tolerance`"),
        ({"on_export_failure": "ignore"}, "key `production.on_export_failure`"),
    ],
)
def test_a_bad_export_setting_names_its_key(production: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"production": production})
    assert message in str(info.value)


@pytest.mark.skipif(tensorrt_usable(), reason="TensorRT is usable here")
def test_engine_without_tensorrt_and_a_gpu_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"key `production.formats`: .*tensorrt"):
        parse({"production": {"formats": ["engine"]}})


def test_export_onnx_is_still_formats_onnx() -> None:
    assert parse({"production": {"export_onnx": True}}).production.export_formats() == ["onnx"]
    assert parse({"production": {"formats": ["openvino"], "export_onnx": True}}).production.export_formats() == [
        "openvino"
    ]
    assert parse({}).production.export_formats() == []

"""The predict flow (flywheel.flow.predicting) over the Predictor port, with the in-memory
predictor: which model it asks, with which settings, and what comes back. The child process
behind the same port is proven in test_predict_events.py and test_prelabel.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.core.errors import NotFound, UsageError
from flywheel.core.predict_events import Detection, PredictEvent
from flywheel.core.prediction import Box, ImageInput
from flywheel.flow.predicting import PredictOptions, chosen_model, predict_images
from tests.fakes import FakePredictor, FakeTrainer


def test_predict_asks_the_production_model_and_fills_in_the_config_defaults(data_root: Path, tmp_path: Path):
    app = App(data_root, trainer=FakeTrainer([0.3]))
    version = app.ingest(synthetic_batch(tmp_path / "b1", 12, seed=1), move=False).version
    assert version is not None
    app.train(version.id or 0)
    production = app.store.production()
    assert production is not None
    model = chosen_model(app.store, app.registry, None, trust=False)
    assert model.label == "m0001" and model.checkpoint == app.registry.checkpoint(production)
    images = [ImageInput(n, tmp_path / n, 64, 48, n) for n in ("a.png", "b.png")]
    predictor = FakePredictor(["red", "blue"], {"a.png": [Detection(1, 0.9, 1.0, 2.0, 30.0, 40.0)]})
    seen: list[PredictEvent] = []
    outcome = predict_images(predictor, app.config, model, PredictOptions(conf=0.2, iou=0.6), images, seen.append)
    (request,) = predictor.requests
    training = app.config.training
    assert (request.checkpoint, request.conf, request.iou) == (model.checkpoint, 0.2, 0.6)
    assert (request.imgsz, request.fallback_imgsz, request.device) == (0, training.imgsz, training.device)
    assert request.threads >= 1 and not request.embed
    assert outcome.names == ["red", "blue"] and outcome.imgsz == 640
    assert [(p.name, p.boxes) for p in outcome.predictions] == [
        ("a.png", (Box(1, 0.9, 1.0, 2.0, 30.0, 40.0),)),
        ("b.png", ()),
    ]
    assert [e.kind for e in seen] == ["started", "image", "image", "done"]


def test_options_given_override_the_config(data_root: Path, tmp_path: Path):
    app = App(data_root)
    model = chosen_model_from_file(app, tmp_path)
    predictor = FakePredictor(["red"])
    options = PredictOptions(conf=0.5, iou=0.4, imgsz=96, device="cpu:1", embed=True)
    predict_images(predictor, app.config, model, options, [])
    (request,) = predictor.requests
    assert (request.imgsz, request.device, request.embed) == (96, "cpu:1", True)


def chosen_model_from_file(app: App, tmp_path: Path):  # type: ignore[no-untyped-def]
    weights = tmp_path / "outside.pt"
    weights.write_bytes(b"weights from elsewhere")
    with pytest.raises(UsageError, match="--trust"):
        chosen_model(app.store, app.registry, str(weights), trust=False)
    return chosen_model(app.store, app.registry, str(weights), trust=True)


def test_without_a_production_model_predict_says_what_to_do(data_root: Path):
    app = App(data_root)
    with pytest.raises(NotFound, match="no production model yet: train one first"):
        chosen_model(app.store, app.registry, None, trust=False)

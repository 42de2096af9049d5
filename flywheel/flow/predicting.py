"""Predict with a model of the registry (or a trusted .pt file) over images, through the
Predictor port: what `flywheel predict` and `flywheel suggest` run, whichever runtime answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flywheel.core.config import Config
from flywheel.core.domain import model_name
from flywheel.core.errors import NotFound
from flywheel.core.plan import training_threads
from flywheel.core.ports import Predictor, StorePort
from flywheel.core.predict_events import PredictEvent
from flywheel.core.prediction import ImageInput, PredictOutcome, PredictRequest
from flywheel.flow.compare import Contender, resolve
from flywheel.flow.registry import Registry


@dataclass(frozen=True)
class PredictOptions:
    conf: float
    iou: float
    imgsz: int | None = None  # None: the size the model was trained at
    device: str | None = None  # None: training.device
    embed: bool = False  # also what the model saw of each image (suggest's diversity)


def chosen_model(store: StorePort, registry: Registry, ref: str | None, trust: bool) -> Contender:
    """`ref` (m0007, or a .pt file when trusted), or the production model when it is None."""
    if ref is None:
        production = store.production()
        if production is None:
            raise NotFound("no production model yet: train one first, or pass --model m0003 (or a .pt with --trust)")
        ref = model_name(production.id or 0)
    return resolve(store, registry, ref, trust)


def predict_images(
    predictor: Predictor,
    config: Config,
    model: Contender,
    options: PredictOptions,
    images: Sequence[ImageInput],
    on_event: Callable[[PredictEvent], None] | None = None,
) -> PredictOutcome:
    """Every image's boxes from `model`; what the options leave open comes from `[training]`."""
    training = config.training
    request = PredictRequest(
        checkpoint=model.checkpoint,
        conf=options.conf,
        iou=options.iou,
        imgsz=options.imgsz or 0,
        fallback_imgsz=training.imgsz,
        device=options.device or training.device,
        threads=training_threads(training.threads),
        embed=options.embed,
    )
    return predictor.predict(request, images, on_event)

"""A fake trainer for unit tests of the cycle's policy, and a fake predictor for the predict
flow's (the real ones are proven end to end).

It builds the same event classes the real child does (flywheel/core/events.py), in the same
order, and round-trips each through the wire format as the runner would read it, so a test
through the fake also proves the cycle's handling of every kind.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from flywheel.core.errors import TrainingError
from flywheel.core.events import (
    BatchProgress,
    BootstrapInterval,
    ChildStarted,
    ClassInterval,
    EpochEnded,
    Evaluated,
    Placed,
    Trained,
    TrainingEvent,
    WarmStarted,
    encode,
    parse_event,
)
from flywheel.core.gate import Score
from flywheel.core.predict_events import (
    Detection,
    ImagePredicted,
    PredictDone,
    PredictEvent,
    PredictStarted,
    parse_predict_event,
)
from flywheel.core.predict_events import encode as encode_predict
from flywheel.core.prediction import ImageInput, PredictOutcome, PredictRequest, record_event
from flywheel.core.spec import TrainSpec

Event = TrainingEvent


class FakeTrainer:
    """Writes a distinct fake checkpoint and reports the scores it is told to.

    `epochs`: how many epochs it reports (not the spec's count: a scratch spec has 50, and a
    warm start's budget reads its parent's curve). `scores`: mAP by eval target role for an
    evaluate-only spec (`flywheel compare` labels its targets m0001, m0002 or a file path);
    other roles get `production_map`. `bootstrap`: report an interval per candidate eval set
    when the spec asks for one; off by default, since the real child sends one only when it
    kept both models' per-image matches, and a made-up interval would decide class drops
    that tests set up to be decided by the scores.
    """

    def __init__(
        self,
        candidate_maps: list[float],
        production_map: float = 0.0,
        fail: bool = False,
        per_class: dict[str, tuple[float, float]] | None = None,  # name -> (candidate AP, production AP)
        instances: int = 50,
        epochs: int = 1,
        scores: dict[str, float] | None = None,
        bootstrap: bool = False,
        placed: Placed | None = None,
    ):
        self.candidate_maps = list(candidate_maps)
        self.production_map = production_map
        self.per_class = per_class
        self.instances = instances
        self.fail = fail
        self.epochs = epochs
        self.scores = dict(scores or {})
        self.bootstrap = bootstrap
        self.placed = placed  # sent right after started, as a Ray trainer may (it learns the node late)
        self.specs: list[TrainSpec] = []

    def run(self, spec: TrainSpec, on_event: Callable[[Event], None]) -> list[Event]:
        self.specs.append(spec)
        if self.fail:
            raise TrainingError(f"training run r{spec.run_id:04d} failed: boom. Full log: {spec.out_dir}/train.log")
        events = self.events(spec)
        if self.placed is None:  # where the child runs, first, as the local trainer reports it
            events.insert(0, Placed("local", socket.gethostname(), str(os.getpid())))
        for e in events:
            on_event(e)
        return events

    def events(self, spec: TrainSpec) -> list[Event]:
        """What the real child would send for `spec`, read back as the runner reads it."""
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        events: list[Event] = []
        best: Path | None = None
        cand = 0.0
        if not spec.evaluate_only:
            best = out / "best.pt"
            best.write_bytes(f"fake checkpoint of run {spec.run_id}".encode())
            cand = self.candidate_maps.pop(0) if self.candidate_maps else 0.0  # e.g. a scratch challenger
            events += self._training(spec, best, cand)
        for target in spec.evaluate:
            checkpoint = target.checkpoint or (str(best) if best else "")
            if not checkpoint:  # as the real child fails
                raise TrainingError(
                    f"training run r{spec.run_id:04d} failed: ValueError: eval target "
                    f"{target.role}/{target.eval_set} names no checkpoint"
                )
            if spec.evaluate_only:
                value = self.scores.get(target.role, self.production_map)
            else:
                value = cand if target.role == "candidate" else self.production_map
            if self.per_class:
                per_class = {n: (c if target.role == "candidate" else p) for n, (c, p) in self.per_class.items()}
            else:
                per_class = {"red": value}
            events.append(
                Evaluated(
                    role=target.role,
                    eval_set=target.eval_set,
                    checkpoint=checkpoint,
                    score=Score(
                        map50_95=value,
                        map50=value + 0.1,
                        precision=0.5,
                        recall=0.5,
                        per_class=per_class,
                        instances=dict.fromkeys(per_class, self.instances),
                    ),
                    seconds=0.1,
                )
            )
        if spec.bootstrap_samples and self.bootstrap:
            events += self._intervals(spec, events)
        return [parse_event(encode(e) + "\n") for e in events]  # through the wire format, as the runner reads it

    def _training(self, spec: TrainSpec, best: Path, cand: float) -> list[Event]:
        versions = {
            "python": "3",
            "flywheel": "fake",
            "torch": "fake",
            "ultralytics": "fake",
            "numpy": "fake",
            "cuda": "",
        }
        events: list[Event] = [ChildStarted(pid=os.getpid(), versions=versions, resumed_from_epoch=0)]
        if self.placed is not None:
            events.append(self.placed)
        if spec.start.endswith(".pt") and not spec.resume:  # the real child checks every warm start
            rows = 3 * len(spec.class_names)  # one class-logit row per class and detection scale
            events.append(WarmStarted(64, 64, rows, rows, 0, spec.shrink, spec.perturb))
        for epoch in range(1, self.epochs + 1):
            events.append(BatchProgress(epoch=epoch, epochs=spec.epochs, batch=1, batches=1))
            events.append(
                EpochEnded(
                    epoch=epoch,
                    epochs=spec.epochs,
                    box_loss=1.0,
                    cls_loss=2.0,
                    dfl_loss=3.0,
                    precision=0.1,
                    recall=0.2,
                    map50=cand + 0.1,
                    map50_95=cand,
                    seconds=0.5,
                )
            )
        events.append(Trained(best=str(best), seconds=1.0, resumed=False))
        return events

    def _intervals(self, spec: TrainSpec, events: list[Event]) -> list[Event]:
        scored = {(e.role, e.eval_set): e.score for e in events if isinstance(e, Evaluated)}
        intervals: list[Event] = []
        for (role, eval_set), cand in scored.items():
            prod = scored.get(("production", eval_set))
            if role != "candidate" or prod is None:
                continue
            diff = cand.map50_95 - prod.map50_95
            classes = {
                n: ClassInterval(
                    ap - prod.per_class.get(n, 0.0), ap - prod.per_class.get(n, 0.0), ap - prod.per_class.get(n, 0.0)
                )
                for n, ap in cand.per_class.items()
            }
            intervals.append(
                BootstrapInterval(
                    eval_set, diff, diff, diff, diff, spec.bootstrap_samples, spec.bootstrap_confidence, classes
                )
            )
        return intervals

    def cancel(self) -> None:
        pass


def epoch_ended(epoch: int, epochs: int, map50_95: float = 0.0) -> EpochEnded:
    """An epoch event with made-up losses, for tests that look at the epoch count and score."""
    return EpochEnded(epoch, epochs, 1.0, 2.0, 3.0, 0.1, 0.2, map50_95 + 0.1, map50_95, 0.5)


class FakePredictor:
    """The Predictor port in memory: for each image, the boxes it is told to answer (none by
    default), sent as the same typed events the predict child sends, round-tripped through
    their wire format and folded by the same `record_event` the child's predictor uses."""

    def __init__(self, names: list[str], boxes: dict[str, list[Detection]] | None = None, imgsz: int = 640):
        self.names = names
        self.boxes = boxes or {}
        self.imgsz = imgsz
        self.requests: list[PredictRequest] = []

    def predict(
        self,
        request: PredictRequest,
        images: Sequence[ImageInput],
        on_event: Callable[[PredictEvent], None] | None = None,
    ) -> PredictOutcome:
        self.requests.append(request)
        events: list[PredictEvent] = [PredictStarted(tuple(self.names), request.imgsz or self.imgsz, "detect")]
        for index, image in enumerate(images):
            found = tuple(self.boxes.get(image.name, []))
            events.append(ImagePredicted(index, image.width, image.height, found))
        events.append(PredictDone(0.0))
        outcome = PredictOutcome()
        for event in events:
            wired = parse_predict_event(encode_predict(event))
            record_event(wired, images, outcome)
            if on_event is not None:
                on_event(wired)
        return outcome

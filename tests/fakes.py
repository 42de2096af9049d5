"""A fake trainer for unit tests of the cycle's policy (the real one is proven end to end)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel.core.errors import TrainingError
from flywheel.core.spec import EPOCH, EVALUATED, TRAINED, TrainSpec

Event = dict[str, Any]


class FakeTrainer:
    """Writes a distinct fake checkpoint and reports the scores it is told to."""

    def __init__(
        self,
        candidate_maps: list[float],
        production_map: float = 0.0,
        fail: bool = False,
        per_class: dict[str, tuple[float, float]] | None = None,  # name -> (candidate AP, production AP)
        instances: int = 50,
    ):
        self.candidate_maps = list(candidate_maps)
        self.production_map = production_map
        self.per_class = per_class
        self.instances = instances
        self.fail = fail
        self.specs: list[TrainSpec] = []

    def run(self, spec: TrainSpec, on_event: Callable[[Event], None]) -> list[Event]:
        self.specs.append(spec)
        if self.fail:
            raise TrainingError(f"training run r{spec.run_id:04d} failed: boom. Full log: {spec.out_dir}/train.log")
        out = Path(spec.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        best = out / "best.pt"
        best.write_bytes(f"fake checkpoint of run {spec.run_id}".encode())
        cand = self.candidate_maps.pop(0) if self.candidate_maps else 0.0  # e.g. a scratch challenger
        events: list[Event] = [
            {
                "event": EPOCH,
                "epoch": 1,
                "epochs": spec.epochs,
                "box_loss": 1.0,
                "cls_loss": 2.0,
                "dfl_loss": 3.0,
                "precision": 0.1,
                "recall": 0.2,
                "map50": cand + 0.1,
                "map50_95": cand,
                "seconds": 0.5,
            },
            {"event": TRAINED, "best": str(best), "seconds": 1.0},
        ]
        for target in spec.evaluate:
            value = cand if target.role == "candidate" else self.production_map
            if self.per_class:
                per_class = {n: (c if target.role == "candidate" else p) for n, (c, p) in self.per_class.items()}
            else:
                per_class = {"red": value}
            events.append(
                {
                    "event": EVALUATED,
                    "role": target.role,
                    "eval_set": target.eval_set,
                    "checkpoint": target.checkpoint or str(best),
                    "map50_95": value,
                    "map50": value + 0.1,
                    "precision": 0.5,
                    "recall": 0.5,
                    "per_class": per_class,
                    "instances": dict.fromkeys(per_class, self.instances),
                    "seconds": 0.1,
                }
            )
        for e in events:
            on_event(e)
        return events

    def cancel(self) -> None:
        pass

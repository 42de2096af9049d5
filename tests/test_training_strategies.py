"""Each fine-tuning strategy, proven on a real (tiny) Ultralytics training in this process.

One scratch parent model, then a warm start from it with the two-phase fine-tune and a
backbone LR scale, watched from inside by callbacks: what was frozen, what the optimizer's
parameter groups held at every batch, when mosaic closed, what reached Ultralytics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from flywheel.core.events import BackboneUnfrozen, ChildStarted, EpochEnded, PlateauReached, TrainingEvent, WarmStarted
from flywheel.training import precision
from tests.training_support import Abort, checkpoint_model, checkpoint_state, dataset, spec_for, train

BACKBONE = tuple(f"model.{i}." for i in range(10))  # yolov8n.yaml: layers 0-9 are the backbone


def is_backbone(name: str) -> bool:
    return name.startswith(BACKBONE)


def mosaic_probability(transform: Any) -> float:
    """The p of the first Mosaic in a (nested) Ultralytics Compose; 0 without one."""
    if type(transform).__name__ == "Mosaic":
        return float(transform.p)
    for inner in getattr(transform, "transforms", []):
        p = mosaic_probability(inner)
        if p:
            return p
    return 0.0


@dataclass
class Watch:
    """What the callbacks saw during one training."""

    spec: Any = None
    best: Path | None = None
    events: list[TrainingEvent] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    lrs: list[dict[str, Any]] = field(default_factory=list)  # per batch: epoch, groups (part, kind, lr, initial)
    params_after_epoch: dict[int, dict[str, Any]] = field(default_factory=dict)
    buffers_after_epoch: dict[int, dict[str, Any]] = field(default_factory=dict)
    mosaic: dict[int, bool] = field(default_factory=dict)
    backbone_group_params: set[str] = field(default_factory=set)
    autocast: bool | None = None  # the trainer's own amp flag at train start

    def callbacks(self) -> dict[str, list[Any]]:
        def on_pretrain_routine_start(trainer: Any) -> None:
            self.args = vars(trainer.args).copy()  # as passed (the optimizer setup rewrites "auto")

        def on_train_start(trainer: Any) -> None:
            self.autocast = bool(trainer.amp)
            names = {id(p): n for n, p in trainer.model.named_parameters()}
            for g in trainer.optimizer.param_groups:
                if g.get("part") == "backbone":
                    self.backbone_group_params |= {names[id(p)] for p in g["params"]}

        def on_batch_end(trainer: Any) -> None:
            self.mosaic[trainer.epoch] = mosaic_probability(trainer.train_loader.dataset.transforms) > 0
            groups = [
                {"part": g.get("part", "all"), "kind": g.get("param_group"), "lr": g["lr"], "initial": g["initial_lr"]}
                for g in trainer.optimizer.param_groups
            ]
            self.lrs.append({"epoch": trainer.epoch, "groups": groups})

        def on_epoch_end(trainer: Any) -> None:
            self.params_after_epoch[trainer.epoch] = {
                n: p.detach().clone() for n, p in trainer.model.named_parameters()
            }
            self.buffers_after_epoch[trainer.epoch] = {
                n: b.detach().clone() for n, b in trainer.model.named_buffers() if b.is_floating_point()
            }

        return {
            "on_pretrain_routine_start": [on_pretrain_routine_start],
            "on_train_start": [on_train_start],
            "on_train_batch_end": [on_batch_end],
            "on_train_epoch_end": [on_epoch_end],
        }


@pytest.fixture(scope="module")
def data2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dataset(tmp_path_factory.mktemp("data2"), ["red", "blue"])


@pytest.fixture(scope="module")
def parent(data2: Path, tmp_path_factory: pytest.TempPathFactory) -> Watch:
    """A scratch training (2 epochs, the configured warm-up)."""
    watch = Watch()
    watch.spec = spec_for(data2, tmp_path_factory.mktemp("parent"), "yolov8n.yaml", False, ["red", "blue"])
    watch.best, report = train(watch.spec, watch.callbacks())
    watch.events = report.events
    return watch


@pytest.fixture(scope="module")
def two_phase(parent: Watch, data2: Path, tmp_path_factory: pytest.TempPathFactory) -> Watch:
    """A warm start from `parent`: one epoch backbone frozen, then all layers at backbone LR x 0.1."""
    watch = Watch()
    watch.spec = spec_for(
        data2,
        tmp_path_factory.mktemp("two-phase"),
        str(parent.best),
        True,
        ["red", "blue"],
        freeze_epochs=1,
        backbone_lr_scale=0.1,
        close_mosaic_warm=1,
    )
    watch.best, report = train(watch.spec, watch.callbacks())
    watch.events = report.events
    return watch


def test_the_warm_spec_is_resolved_from_the_warm_settings(two_phase: Watch, parent: Watch):
    warm, scratch = two_phase.spec, parent.spec
    assert warm.strategy == "two_phase+backbone_lr_x0.1" and scratch.strategy == "scratch"
    assert (warm.warmup_epochs, scratch.warmup_epochs) == (0.0, 3.0)  # warm starts skip warm-up by default
    assert (warm.close_mosaic, scratch.close_mosaic) == (1, 10)
    assert (warm.freeze_epochs, scratch.freeze_epochs) == (1, 0)  # strategies only for warm starts
    assert (warm.backbone_lr_scale, scratch.backbone_lr_scale) == (0.1, 1.0)


def test_every_resolved_argument_reaches_ultralytics(two_phase: Watch):
    spec, args = two_phase.spec, two_phase.args
    for key in ("epochs", "imgsz", "batch", "nbs", "patience", "optimizer", "lrf", "cos_lr", "warmup_epochs"):
        assert args[key] == getattr(spec, key), key
    # amp: what training/precision.py decided for spec.amp on this machine's CPU
    assert args["amp"] == precision.for_this_machine(spec.amp, spec.device).amp
    assert args["close_mosaic"] == spec.close_mosaic and args["seed"] == spec.seed
    assert args["freeze"] == list(range(10))  # phase one: the backbone, layers 0-9


def test_two_phase_frozen_parameters_are_unchanged_after_phase_one_and_trained_in_phase_two(two_phase: Watch):
    start = checkpoint_state(Path(two_phase.spec.start))
    after_one, after_two = two_phase.params_after_epoch[0], two_phase.params_after_epoch[1]
    backbone = [n for n in after_one if is_backbone(n) and ".dfl" not in n]
    head = [n for n in after_one if not is_backbone(n) and ".dfl" not in n]
    assert len(backbone) > 50 and len(head) > 50
    changed_in_one = [n for n in backbone if not torch.equal(after_one[n], start[n])]
    assert changed_in_one == [], f"frozen backbone parameters changed in phase one: {changed_in_one[:5]}"
    # BN running statistics of the frozen layers stay too (their BN layers are in eval mode)
    buffers = two_phase.buffers_after_epoch[0]
    assert all(torch.equal(buffers[n], start[n]) for n in buffers if is_backbone(n))
    # ... while the head did train in phase one, and the backbone in phase two
    assert sum(not torch.equal(after_one[n], start[n]) for n in head) > len(head) // 2
    assert sum(not torch.equal(after_two[n], after_one[n]) for n in backbone) > len(backbone) // 2
    phase = [e for e in two_phase.events if isinstance(e, BackboneUnfrozen)]
    assert len(phase) == 1 and phase[0].epoch == 2 and phase[0].unfrozen == len(backbone)
    assert phase[0].frozen_unchanged == phase[0].frozen_total > 0


def test_parameter_groups_give_the_backbone_the_head_lr_times_the_scale(two_phase: Watch):
    names = {n for n in two_phase.params_after_epoch[0] if ".dfl" not in n}
    assert two_phase.backbone_group_params == {n for n in names if is_backbone(n)}
    assert two_phase.lrs, "no batch was seen"
    for step in two_phase.lrs:
        by = {(g["part"], g["kind"]): g for g in step["groups"]}
        assert {part for part, _ in by} == {"head", "backbone"}
        for kind in ("weight", "bn", "bias"):
            head, backbone = by[("head", kind)], by[("backbone", kind)]
            assert backbone["initial"] == pytest.approx(head["initial"] * 0.1, rel=1e-9)
            assert backbone["lr"] == pytest.approx(head["lr"] * 0.1, rel=1e-9)
    # the decay schedule applies to both: linear, lrf = 0.01, over 2 epochs -> factor 0.505 in epoch 2
    first = {(g["part"], g["kind"]): g["lr"] for g in two_phase.lrs[0]["groups"]}
    last = {(g["part"], g["kind"]): g["lr"] for g in two_phase.lrs[-1]["groups"]}
    assert two_phase.lrs[-1]["epoch"] == 1
    for key, lr in first.items():
        assert last[key] == pytest.approx(lr * ((1 - 1 / 2) * (1 - 0.01) + 0.01), rel=1e-6)


def test_warm_start_skips_warm_up_while_scratch_warms_up(two_phase: Watch, parent: Watch):
    warm_first = {(g["part"], g["kind"]): g for g in two_phase.lrs[0]["groups"]}
    for g in warm_first.values():  # the first batch already trains at the scheduled LR
        assert g["lr"] == pytest.approx(g["initial"]) and g["lr"] > 0
    scratch_first = {g["kind"]: g for g in parent.lrs[0]["groups"]}
    assert scratch_first["weight"]["lr"] < scratch_first["weight"]["initial"] / 2  # ramping up from 0


def test_short_warm_start_trains_with_mosaic_then_closes_it(two_phase: Watch, parent: Watch):
    assert two_phase.mosaic == {0: True, 1: False}  # close_mosaic_warm = 1 of 2 epochs
    assert parent.mosaic == {0: False, 1: False}  # close_mosaic = 10 >= 2 epochs: never on


def test_warm_start_loads_every_weight_and_reports_it(two_phase: Watch):
    (warm,) = [e for e in two_phase.events if isinstance(e, WarmStarted)]
    assert warm.matched == warm.total > 0
    assert warm.head_rows_kept == warm.head_rows_total == 6  # 2 classes x 3 scales
    assert warm.head_rows_fixed == 0  # Ultralytics 8.4 kept them itself


def test_spec_with_library_versions_is_written_beside_the_weights(two_phase: Watch):
    record = json.loads((two_phase.best.parent / "spec.json").read_text())
    assert record["spec"]["start"] == two_phase.spec.start and record["spec"]["freeze_epochs"] == 1
    assert record["versions"]["ultralytics"] == "8.4.190" and record["versions"]["torch"].startswith("2.")
    assert record["precision"] == asdict(precision.for_this_machine(True, "cpu"))
    assert two_phase.autocast is record["precision"]["amp"]  # what the trainer really ran with
    (started,) = [e for e in two_phase.events if isinstance(e, ChildStarted)]
    assert started.versions == record["versions"]


# --- class-map growth ----------------------------------------------------------------------


def test_class_growth_keeps_the_old_classes_head_rows(parent: Watch, tmp_path: Path):
    """A warm start onto a version with one class more: rows 0-1 equal the parent's at train start."""
    data3 = dataset(tmp_path / "data3", ["red", "blue", "green"])
    source = checkpoint_model(parent.best)
    seen: dict[str, Any] = {}

    def on_train_start(trainer: Any) -> None:
        seen["convs"] = [branch[-1] for branch in trainer.model.model[-1].cv3]
        seen["names"] = dict(trainer.model.names)
        raise Abort

    spec = spec_for(data3, tmp_path / "run", str(parent.best), True, ["red", "blue", "green"])
    with pytest.raises(Abort):
        train(spec, {"on_train_start": [on_train_start]})
    assert seen["names"] == {0: "red", 1: "blue", 2: "green"}
    parents = [branch[-1] for branch in source.model[-1].cv3]
    assert len(seen["convs"]) == len(parents) == 3
    for new, old in zip(seen["convs"], parents, strict=True):
        assert new.weight.shape[0] == 3 and old.weight.shape[0] == 2
        assert torch.equal(new.weight[:2].detach(), old.weight)
        assert torch.equal(new.bias[:2].detach(), old.bias)
        assert not torch.equal(new.weight[2].detach(), old.weight[0])  # the new class has its own row


def test_head_row_guard_copies_rows_when_ultralytics_does_not(parent: Watch):
    """An Ultralytics without cls_remap re-initialises the class conv when nc changes: the guard
    (strategies.keep_head_rows) copies the rows by name instead."""
    from ultralytics.nn.tasks import DetectionModel

    from flywheel.training.strategies import head_rows_equal, keep_head_rows

    source = checkpoint_model(parent.best)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)  # placeholder names: no remap by name
    model.load(source, verbose=False)
    names = {0: "blue", 1: "red", 2: "green"}  # another order, to show it goes by name
    equal, total = head_rows_equal(model, source, names)
    assert total == 6 and equal == 0
    assert keep_head_rows(model, source, names) == (0, 6)
    assert head_rows_equal(model, source, names) == (6, 6)
    for new, old in zip(model.model[-1].cv3, source.model[-1].cv3, strict=True):
        assert torch.equal(new[-1].weight[0], old[-1].weight[1])  # blue
        assert torch.equal(new[-1].weight[1], old[-1].weight[0])  # red
    assert keep_head_rows(model, source, names) == (6, 0)  # already right: nothing to copy


# --- issue 12: shrink and perturb, the plateau's final decay ----------------------------------


def test_shrink_and_perturb_sets_every_parameter_to_the_formula_at_train_start(parent: Watch, data2: Path, tmp_path):
    """theta = 0.4 x parent + 0.1 x a fresh initialisation (Ash & Adams' defaults), in the model
    Ultralytics trains and in its EMA copy, before the first batch."""
    from flywheel.training.strategies import fresh_like

    seen: dict[str, Any] = {}

    def on_train_start(trainer: Any) -> None:  # registered after the child's own: sees the result
        seen["params"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        seen["ema"] = {n: p.detach().clone() for n, p in trainer.ema.ema.named_parameters()}
        seen["fresh"] = dict(fresh_like(trainer.model, 0).named_parameters())
        raise Abort

    spec = spec_for(data2, tmp_path / "run", str(parent.best), True, ["red", "blue"], shrink=0.4, perturb=0.1)
    assert spec.strategy == "fine_tune+backbone_lr_x0.3+shrink_perturb_0.4_0.1"
    with pytest.raises(Abort):
        train(spec, {"on_train_start": [on_train_start]})
    before = checkpoint_state(parent.best)
    changed = 0
    for name, value in seen["params"].items():
        if ".dfl" in name:
            assert torch.equal(value, before[name])  # a constant, left alone
            continue
        expected = 0.4 * before[name] + 0.1 * seen["fresh"][name].detach()
        assert torch.allclose(value, expected, atol=1e-6), name
        assert torch.equal(seen["ema"][name], value)
        changed += 1
    assert changed > 100


def test_plateau_ends_a_warm_start_early_with_the_lr_decayed_to_its_final_value(parent: Watch, data2: Path, tmp_path):
    """At an LR too small to change anything, val fitness is flat from epoch 1: with patience 1
    and a 2-epoch final decay, a 10-epoch budget ends after epoch 4, at lr0 x lrf."""
    lrs: dict[int, list[float]] = {}

    def on_batch_end(trainer: Any) -> None:
        lrs[trainer.epoch] = [g["lr"] / g["initial_lr"] for g in trainer.optimizer.param_groups]

    spec = spec_for(
        data2,
        tmp_path / "run",
        str(parent.best),
        True,
        ["red", "blue"],
        epochs_warm=10,
        plateau_patience=1,
        epochs_warm_min=2,
        plateau_decay_epochs=2,
        optimizer="SGD",
        lr0=1e-12,
        lrf=0.05,
    )
    assert (spec.epochs, spec.plateau_patience, spec.plateau_min_epochs) == (10, 1, 2)
    _, report = train(spec, {"on_train_batch_end": [on_batch_end]})
    (plateau,) = report.of(PlateauReached)
    assert plateau == PlateauReached(epoch=2, best_epoch=1, best_fitness=plateau.best_fitness, epochs=4)
    epochs = report.of(EpochEnded)
    assert [e.epoch for e in epochs] == [1, 2, 3, 4] and epochs[-1].epochs == 4
    schedule = [lrs[e][0] for e in sorted(lrs)]
    assert schedule[:2] == pytest.approx([1.0, 1 - 0.95 / 10])  # Ultralytics' linear decay over 10 epochs
    assert schedule[2:] == pytest.approx([schedule[1] + (0.05 - schedule[1]) / 2, 0.05])  # then down to lrf
    assert all(len(set(map(lambda v: round(v, 9), lrs[e]))) == 1 for e in lrs)  # every group on the same factor

"""Fine-tuning strategies inside Ultralytics' trainer. Child process only: imports torch.

Ultralytics 8.4 has a `freeze` argument but no way to unfreeze during a run, and one learning
rate for every layer. `make_trainer` returns a `DetectionTrainer` subclass that adds:

- a two-phase fine-tune: Ultralytics freezes the backbone (`freeze=[0..n-1]`) for the first
  `freeze_epochs`, then `enter_phase_two` makes those parameters trainable again (their BN
  layers back in train mode) for the rest of the run, under the same LR schedule;
- differential learning rates: every optimizer parameter group Ultralytics builds (weights
  with decay, BN weights, biases) is split in a head group and a backbone group whose LR is
  the head's times `backbone_lr_scale`; the LR schedule (`lrf`, linear or cosine) multiplies
  each group's own initial LR, so the ratio holds for the whole run;
- a guard on class-head rows: after a warm start, the class-logit rows of every class the
  checkpoint and the new data share by name equal the checkpoint's. Ultralytics 8.4 does
  this itself (`cls_remap`); with a version that does not, the rows are copied here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.torch_utils import unwrap_model

ALWAYS_FROZEN = ".dfl"  # Ultralytics always freezes the DFL conv (a constant)


@dataclass(frozen=True)
class Strategy:
    freeze_epochs: int = 0
    backbone_lr_scale: float = 1.0
    backbone_layers: int = 10  # the model YAML's `backbone` length: yolov8n has 10


def backbone_prefixes(layers: int) -> tuple[str, ...]:
    return tuple(f"model.{i}." for i in range(layers))


def backbone_layers(model: Any) -> int:
    """How many of the model's top-level layers are its backbone (from its YAML)."""
    yaml = getattr(unwrap_model(model), "yaml", None) or {}
    return len(yaml.get("backbone", [])) or 10


def split_param_groups(optimizer: Any, model: Any, prefixes: tuple[str, ...], scale: float) -> None:
    """Split each of the optimizer's parameter groups into head and backbone; backbone LR x scale."""
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        head = [p for p in group["params"] if not names.get(id(p), "").startswith(prefixes)]
        backbone = [p for p in group["params"] if names.get(id(p), "").startswith(prefixes)]
        if head:
            groups.append({**settings, "params": head, "part": "head"})
        if backbone:
            groups.append({**settings, "params": backbone, "lr": settings["lr"] * scale, "part": "backbone"})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def keep_head_rows(model: Any, source: Any, names: dict[int, str]) -> tuple[int, int]:
    """Make the class-logit rows of classes `source` also has (by name) equal to its rows.

    `names` are the new data's classes (id -> name). Returns (rows already equal, rows copied
    here). Ultralytics >= 8.4 (`cls_remap`) leaves nothing to copy; an older version, or one
    that re-initialises the class conv when the class count changes, does.
    """
    src_names = getattr(source, "names", None)
    if not isinstance(src_names, dict) or all(str(k) == str(v) for k, v in src_names.items()):
        return 0, 0  # placeholder names: nothing to match by
    lookup = {str(v).strip().lower(): int(k) for k, v in src_names.items()}
    pairs = _class_convs(model, source)
    kept = copied = 0
    with torch.no_grad():
        for dst, src in pairs:
            if dst.weight.shape[1:] != src.weight.shape[1:]:
                continue  # a different model scale: the rows cannot be compared
            for dst_id, name in names.items():
                src_id = lookup.get(str(name).strip().lower())
                if src_id is None or src_id >= src.weight.shape[0] or dst_id >= dst.weight.shape[0]:
                    continue
                w, b = src.weight[src_id].to(dst.weight), src.bias[src_id].to(dst.bias)
                if torch.equal(dst.weight[dst_id], w) and torch.equal(dst.bias[dst_id], b):
                    kept += 1
                else:
                    dst.weight[dst_id] = w
                    dst.bias[dst_id] = b
                    copied += 1
    return kept, copied


def head_rows_equal(model: Any, source: Any, names: dict[int, str]) -> tuple[int, int]:
    """(rows equal to the source's row for the same class name, rows with a namesake in source)."""
    src_names = getattr(source, "names", None) or {}
    lookup = {str(v).strip().lower(): int(k) for k, v in src_names.items()}
    equal = total = 0
    for dst, src in _class_convs(model, source):
        if dst.weight.shape[1:] != src.weight.shape[1:]:
            continue
        for dst_id, name in names.items():
            src_id = lookup.get(str(name).strip().lower())
            if src_id is None or dst_id >= dst.weight.shape[0]:
                continue
            total += 1
            w = src.weight[src_id].to(dst.weight.device, dst.weight.dtype)
            b = src.bias[src_id].to(dst.bias.device, dst.bias.dtype)
            equal += bool(torch.equal(dst.weight[dst_id].detach(), w) and torch.equal(dst.bias[dst_id].detach(), b))
    return equal, total


def _class_convs(model: Any, source: Any) -> list[tuple[Any, Any]]:
    """(destination, source) pairs of the Detect head's final class-logit convs."""
    head, src_head = unwrap_model(model).model[-1], unwrap_model(source).model[-1]
    pairs = []
    for attr in ("cv3", "one2one_cv3"):
        dst_branches, src_branches = getattr(head, attr, None), getattr(src_head, attr, None)
        if dst_branches is None or src_branches is None:
            continue
        for dst, src in zip(dst_branches, src_branches, strict=False):
            pairs.append((dst[-1], src[-1]))
    return pairs


def _phase_switch(trainer: Any) -> None:
    trainer.enter_phase_two()


def make_trainer(strategy: Strategy) -> type[Any]:
    """A DetectionTrainer subclass bound to `strategy` (a class, as Ultralytics wants one)."""

    class FlywheelTrainer(DetectionTrainer):  # type: ignore[misc]
        flywheel_strategy = strategy

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.head_rows: tuple[int, int] = (0, 0)  # (kept by Ultralytics, copied by keep_head_rows)
            self.phase = 1 if strategy.freeze_epochs else 2
            self._frozen_at_start: dict[str, torch.Tensor] = {}
            # Its own hook too, so the phase switch happens where the child's callbacks do not run
            # (the DDP workers of a multi-GPU run); enter_phase_two acts once, whoever calls first.
            self.add_callback("on_train_epoch_start", _phase_switch)

        @property
        def prefixes(self) -> tuple[str, ...]:
            return backbone_prefixes(strategy.backbone_layers)

        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
            model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
            if weights is not None and not isinstance(weights, dict):
                self.head_rows = keep_head_rows(model, weights, dict(self.data["names"]))
            return model

        def build_optimizer(self, model: Any, *args: Any, **kwargs: Any) -> Any:
            optimizer = super().build_optimizer(model, *args, **kwargs)
            if strategy.backbone_lr_scale != 1.0:
                split_param_groups(optimizer, model, self.prefixes, strategy.backbone_lr_scale)
            return optimizer

        def snapshot_frozen(self) -> None:
            """Remember the frozen parameters (and BN statistics) as phase one starts."""
            if self.phase == 1:
                self._frozen_at_start = {
                    n: t.detach().clone() for n, t in self._backbone_tensors().items() if ALWAYS_FROZEN not in n
                }

        def enter_phase_two(self) -> dict[str, Any] | None:
            """At the first epoch >= freeze_epochs: unfreeze the backbone. Returns what changed."""
            if self.phase == 2 or self.epoch < strategy.freeze_epochs:
                return None
            model = unwrap_model(self.model)
            current = self._backbone_tensors()
            unchanged = sum(
                1 for n, before in self._frozen_at_start.items() if n in current and torch.equal(current[n], before)
            )
            unfrozen = 0
            for name, param in model.named_parameters():
                if name.startswith(self.prefixes) and ALWAYS_FROZEN not in name and not param.requires_grad:
                    param.requires_grad_(True)
                    unfrozen += 1
            self.freeze_layer_names = [ALWAYS_FROZEN]  # BN layers of the backbone train again
            self.phase = 2
            info = {
                "phase": 2,
                "epoch": self.epoch + 1,
                "unfrozen": unfrozen,
                "frozen_unchanged": unchanged,
                "frozen_total": len(self._frozen_at_start),
            }
            self._frozen_at_start = {}
            return info

        def _backbone_tensors(self) -> dict[str, torch.Tensor]:
            model = unwrap_model(self.model)
            tensors = dict(model.named_parameters())
            tensors.update(dict(model.named_buffers()))
            return {n: t for n, t in tensors.items() if n.startswith(self.prefixes) and t.is_floating_point()}

    return FlywheelTrainer


def fresh_like(model: Any, seed: int) -> Any:
    """A freshly initialised model of `model`'s architecture (from its YAML), the same for a seed."""
    from ultralytics.nn.tasks import DetectionModel

    source = unwrap_model(model)
    with torch.random.fork_rng(devices=[]):  # leaves the training's own random stream as it was
        torch.manual_seed(seed)
        return DetectionModel(cfg=source.yaml, nc=source.nc, verbose=False)


def shrink_perturb(model: Any, shrink: float, perturb: float, seed: int) -> int:
    """Ash & Adams (2020): every parameter becomes shrink x itself + perturb x a fresh
    initialisation's. In place (the optimizer holds the same tensors). Returns tensors changed."""
    fresh = dict(fresh_like(model, seed).named_parameters())
    changed = 0
    with torch.no_grad():
        for name, param in unwrap_model(model).named_parameters():
            other = fresh.get(name)
            if other is None or other.shape != param.shape or ALWAYS_FROZEN in name:
                continue
            param.mul_(shrink).add_(other.to(param.device, param.dtype), alpha=perturb)
            changed += 1
    return changed


def enter_final_decay(trainer: Any, total: int) -> None:
    """End the run at `total` epochs, its LR decaying linearly from where the schedule is now to
    lr0 x lrf at the last epoch (budget.decayed): Ultralytics would otherwise stop at a high LR."""
    from flywheel.core.budget import decayed

    start = int(trainer.epoch)  # the epoch index just finished
    at_plateau, lrf, length = float(trainer.lf(start)), float(trainer.args.lrf), total - 1 - start

    def factor(x: float) -> float:
        return decayed(at_plateau, lrf, start, length, x) if x > start else at_plateau

    trainer.lf = factor
    trainer.scheduler.lr_lambdas = [factor] * len(trainer.scheduler.lr_lambdas)
    trainer.epochs = trainer.args.epochs = total

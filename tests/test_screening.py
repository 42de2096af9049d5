"""The data engine's checks and flow: label errors from production's boxes against the given
ones, near copies of val images, the class-mix shift, and the policies (report, hold until
approved, quarantine) over the in-memory store with the FakePredictor (the real predictor, real
training and the daemon: tests/test_screening_daemon.py, benchmarks/screen.py)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import scipy.stats

from flywheel.core.config import parse
from flywheel.core.domain import ManifestItem, StartKind
from flywheel.core.errors import InvalidTransition
from flywheel.core.label_check import LabelIssue, LabelThresholds, Rect, calibrate, check_image
from flywheel.core.ledger import Action
from flywheel.core.predict_events import Detection
from flywheel.core.prediction import ImageInput
from flywheel.core.screening import Check, Hashed, ScreenState, chi2_sf, class_shift, near_copies
from flywheel.flow.screen_release import approve, excluded, holding
from flywheel.flow.screening import ScreenDeps, screen_batch
from flywheel.store.memory import MemoryStore
from tests.fakes import FakePredictor

T = LabelThresholds()
CAT = Rect(0, 10, 10, 50, 50)


def test_a_box_the_model_agrees_with_is_no_finding():
    assert check_image([CAT], [replace(CAT, conf=0.9)], T) == []


def test_each_kind_of_label_error_is_found_with_its_score():
    missing = check_image([], [Rect(1, 60, 60, 90, 90, 0.8)], T)
    assert [(f.issue, f.score) for f in missing] == [(LabelIssue.MISSING, 0.8)]
    # a swap scores the other class's confidence over the given class's: a margin
    swapped = check_image([CAT], [Rect(1, 10, 10, 50, 50, 0.9), replace(CAT, conf=0.2)], T)
    assert [f.issue for f in swapped] == [LabelIssue.SWAPPED] and swapped[0].score == pytest.approx(0.7)
    shifted = check_image([CAT], [Rect(0, 30, 10, 70, 50, 0.9)], T)  # shifted by half its width: IoU 1/3
    assert [(f.issue, f.score) for f in shifted] == [(LabelIssue.MISPLACED, pytest.approx(0.9))]
    spurious = check_image([CAT], [Rect(0, 100, 100, 120, 120, 0.9)], T)
    assert LabelIssue.SPURIOUS in [f.issue for f in spurious]


def test_a_neighbours_box_is_not_a_misplaced_box():
    dog = Rect(0, 30, 10, 70, 50)  # labelled, and half over the cat
    assert check_image([CAT, dog], [replace(CAT, conf=0.9), replace(dog, conf=0.9)], T) == []


def test_calibration_flags_at_most_the_stated_share_of_clean_boxes():
    # a weak model: right, but unsure (0.3 on the given class, 0.2 on the other at the same place)
    rng = random.Random(1)
    clean = []
    for _ in range(200):
        x = rng.uniform(0, 200)
        box = Rect(0, x, 10, x + 40, 50)
        preds = [replace(box, conf=rng.uniform(0.2, 0.4)), Rect(1, x, 10, x + 40, 50, rng.uniform(0.05, 0.3))]
        clean.append(([box], preds))
    cal = calibrate(clean, 0.01, T)
    assert cal.images == 200 and cal.boxes == 200
    t = replace(T, flag=cal.flag)
    flagged = [f for given, preds in clean for f in check_image(given, preds, t)]
    assert 0 < len([f for f in flagged if f.issue is LabelIssue.SWAPPED]) <= 2  # 1% of 200
    # the same weak model on a swapped box leans to the true class: flagged at the calibrated
    # threshold, though its confidence (0.35) is far under any fixed one
    swapped = check_image([Rect(0, 10, 10, 50, 50)], [Rect(1, 10, 10, 50, 50, 0.35), replace(CAT, conf=0.06)], t)
    assert [f.issue for f in swapped] == [LabelIssue.SWAPPED]
    assert check_image([Rect(0, 10, 10, 50, 50)], [Rect(1, 10, 10, 50, 50, 0.35), replace(CAT, conf=0.06)], T) == []
    assert calibrate([], 0.01, T).images == 0


def test_near_copies_of_val_images_are_leakage_and_far_images_are_not():
    val = Hashed("v", 0x0F0F_0F0F_3333_5555, "val")
    copy = Hashed("c", val.dhash ^ 0b111, "train")  # 3 bits apart
    far = Hashed("f", val.dhash ^ 0xFFFF_0000_0000, "train")  # 16 bits apart
    found = near_copies([copy, far], [val, Hashed("t", copy.dhash, "train")], max_bits=10)
    assert [(s.image_sha256, s.kind, s.check) for s in found] == [("c", "val_copy", Check.LEAKAGE)]


def test_a_flat_image_is_matched_by_its_fine_hash_only():
    flat = 0xFFFF_FFFF_FFFF_FF80  # 57 bits set: too flat for the 64-bit hash alone
    val = Hashed("v", flat, "val")
    copy, other = Hashed("c", flat ^ 0b1, "train"), Hashed("o", flat ^ 0b10, "train")
    fine = {("c", "v"): 12, ("o", "v"): 90}  # the copy is near in 512 bits, the other flat photo is not
    found = near_copies([copy, other], [val], max_bits=10, fine=lambda a, b: fine.get((a, b)))
    assert [(s.image_sha256, s.kind) for s in found] == [("c", "val_copy")] and "fine hash" in found[0].why
    assert near_copies([copy], [val], max_bits=10) == []  # without the fine hash: not looked at


def test_chi_square_tail_matches_scipy():
    for x, dof in [(0.5, 1), (3.84, 1), (10.0, 3), (40.0, 5), (200.0, 10), (7.0, 12)]:
        assert chi2_sf(x, dof) == pytest.approx(scipy.stats.chi2.sf(x, dof), rel=1e-6, abs=1e-12)


def test_class_shift_flags_a_changed_mix_not_the_same_one():
    version = {"cat": 500, "dog": 500}
    same = class_shift({"cat": 48, "dog": 52}, version)
    shifted = class_shift({"cat": 95, "dog": 5}, version)
    assert same.p_value > 0.1 and shifted.p_value < 1e-10 and shifted.distance == pytest.approx(0.45)


# --- the flow, over the memory store -----------------------------------------------------------
class Files:
    """The ScreenFiles port in memory: each image 100x100, its boxes as given."""

    def __init__(self, labels: dict[str, list[tuple[int, float, float, float, float]]]):
        self.labels = labels
        self.quarantined: list[str] = []

    def stage(self, name: str, items: Sequence[ManifestItem]) -> tuple[list[ImageInput], dict[str, Any]]:
        images = [ImageInput(f"{i.image_sha256}.png", Path(f"/x/{i.image_sha256}.png"), 100, 100, "") for i in items]
        return images, {i.image_sha256: self.labels[i.image_sha256] for i in items}

    def clear(self, name: str) -> None:
        pass

    def label_classes(self, items: Iterable[ManifestItem]) -> list[int]:
        return [b[0] for i in items for b in self.labels[i.image_sha256]]

    def fine_distance(self, a: str, b: str) -> int | None:
        return None

    def golden_hashes(self, folder: Path | None) -> list[Hashed]:
        return []

    def quarantine(self, batch: str, items: Iterable[ManifestItem], report: dict[str, object]) -> Path:
        self.quarantined += [i.image_sha256 for i in items]
        return Path("/q")


class Registry:
    def checkpoint(self, model: object) -> Path:
        return Path("/m.pt")


def _world(
    n: int = 20, swap: int = 0, config: str = "", seed: int = 0, one_class: bool = False
) -> tuple[MemoryStore, ScreenDeps, list[str]]:
    """Version 1 (batch 1) with a production model, version 2 (batch 2: `n` new images, the
    first `swap` of them with class 0 labelled 1); the model sees every object right."""
    rng = random.Random(seed)
    store = MemoryStore()
    old = [ManifestItem(f"old{i}", f"l-old{i}", ".png", "val" if i % 4 == 0 else "train", 1) for i in range(40)]
    v1 = store.create_version(None, 1, ["cat", "dog"], old)
    new = [ManifestItem(f"new{i}", f"l-new{i}", ".png", "train", 1) for i in range(n)]
    store.create_version(v1, 2, ["cat", "dog"], new)
    labels: dict[str, list[tuple[int, float, float, float, float]]] = {}
    truth: dict[str, list[Detection]] = {}
    for k, item in enumerate(old + new):
        cls = 0 if one_class and item in new else k % 2
        cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        truth[f"{item.image_sha256}.png"] = [
            Detection(cls, 0.9, (cx - 0.1) * 100, (cy - 0.1) * 100, (cx + 0.1) * 100, (cy + 0.1) * 100)
        ]
        given = 1 - cls if item in new[:swap] else cls
        labels[item.image_sha256] = [(given, cx, cy, 0.2, 0.2)]
    run = store.create_run(v1.id, StartKind.SCRATCH, "yolov8n.yaml")
    model = store.add_model("sha", run.id, v1.id, ["cat", "dog"])
    store.set_production(model.id, Action.PROMOTE, "test", "first")
    deps = ScreenDeps(
        store, Registry(), FakePredictor(["cat", "dog"], truth), Files(labels), parse_cfg(config), Path("/r")
    )  # type: ignore[arg-type]
    return store, deps, [i.image_sha256 for i in new[:swap]]


def parse_cfg(text: str) -> Any:
    import tomllib

    return parse(tomllib.loads(text))


def test_an_injected_class_swap_is_flagged_and_only_it():
    store, deps, swapped = _world(swap=3)
    s = screen_batch(deps, 2)
    assert s.state is ScreenState.REPORTED and s.images == 20
    flagged = {x.image_sha256 for x in s.flagged(Check.LABEL_ERRORS)}
    assert flagged == set(swapped)
    assert {x.kind for x in s.flagged(Check.LABEL_ERRORS)} == {"swapped"}
    assert store.screenings(2)[-1] == s


def test_a_clean_batch_raises_no_label_findings():
    # the stated false-positive rate for a model that sees every object right: none
    _, deps, _ = _world(swap=0)
    assert screen_batch(deps, 2).flagged(Check.LABEL_ERRORS) == []


def test_hold_keeps_the_version_from_training_until_approved_or_the_timeout():
    store, deps, _ = _world(swap=2, config='[screen]\nlabel_errors = "hold"\nhold_timeout_hours = 1.0\n')
    s = screen_batch(deps, 2)
    assert s.state is ScreenState.HELD
    assert "flywheel approve b0002" in (holding(store, 2, 1.0) or "")
    assert holding(store, 1, 1.0) is None  # the version before the batch is not held
    assert holding(store, 2, 1.0, now=datetime.now(UTC) + timedelta(hours=2)) is None  # the timeout
    approved = approve(store, 2, "alice")
    assert approved.state is ScreenState.APPROVED and approved.decided_by == "alice"
    assert holding(store, 2, 1.0) is None
    with pytest.raises(InvalidTransition):
        approve(store, 2, "alice")


def test_quarantine_leaves_the_suspect_train_images_out_of_training():
    store, deps, swapped = _world(swap=2, config='[screen]\nlabel_errors = "quarantine"\n')
    s = screen_batch(deps, 2)
    assert s.state is ScreenState.QUARANTINED and set(s.quarantined) == set(swapped)
    assert deps.files.quarantined == swapped  # type: ignore[attr-defined]
    assert excluded(store, 2) == set(swapped) and excluded(store, 1) == set()


def test_before_the_first_production_model_the_batch_is_skipped_and_says_why():
    _store, deps, _ = _world(swap=2)
    fresh = MemoryStore()
    v = fresh.create_version(None, 1, ["cat"], [ManifestItem("a", "la", ".png", "train", 1)])
    s = screen_batch(replace(deps, store=fresh), 1)
    assert s.state is ScreenState.SKIPPED and "no production model" in s.note and s.version_id == v.id


def test_a_batch_of_one_class_is_a_class_shift_and_a_mixed_one_is_not():
    _, deps, _ = _world(n=40, one_class=True, config='[screen]\nclass_shift = "hold"\n')
    s = screen_batch(deps, 2)
    assert [x.kind for x in s.flagged(Check.CLASS_SHIFT)] == ["class_shift"] and s.state is ScreenState.HELD
    assert s.checks["class_shift"]["p_value"] < 0.001
    _, deps, _ = _world(n=40)
    mixed = screen_batch(deps, 2)
    assert mixed.flagged(Check.CLASS_SHIFT) == [] and mixed.checks["class_shift"]["p_value"] > 0.1

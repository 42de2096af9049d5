"""The training plan as pure functions: start requests, resolved hyper-parameters, the guard."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from flywheel.core.config import parse
from flywheel.core.domain import StartKind
from flywheel.core.errors import ConfigError, UsageError
from flywheel.core.plan import (
    CANDIDATE,
    CHALLENGER,
    Generation,
    Start,
    StartRequest,
    challenger_due,
    choose_start,
    parse_start,
    resolve_params,
)

WARM = Start(StartKind.WARM, "/models/m1.pt", 1)
SCRATCH = Start(StartKind.SCRATCH, "yolov8n.yaml", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("production", StartRequest("production")),
        ("base", StartRequest("base")),
        ("m0003", StartRequest("model", model_id=3)),
        ("3", StartRequest("model", model_id=3)),
        ("yolo11n.yaml", StartRequest("path", path="yolo11n.yaml")),
        ("/w/coco.pt", StartRequest("path", path="/w/coco.pt")),
    ],
)
def test_parse_start(text, expected):
    assert parse_start(text) == expected


def test_parse_start_refuses_what_it_does_not_know():
    with pytest.raises(UsageError, match="a model id like m0003"):
        parse_start("last tuesday")


def test_choose_start_warm_from_a_registered_model_else_base(tmp_path):
    on_disk = {tmp_path / "coco.pt", tmp_path / "mine.yaml"}
    choose = partial(choose_start, parse({}), tmp_path, is_file=on_disk.__contains__)
    assert choose((4, Path("/m/4.pt"))) == Start(StartKind.WARM, "/m/4.pt", 4)
    assert choose(None) == SCRATCH  # a model YAML Ultralytics ships, by name
    assert choose(None, "mine.yaml").checkpoint == str(tmp_path / "mine.yaml")
    assert choose(None, "coco.pt").checkpoint == str(tmp_path / "coco.pt")
    with pytest.raises(UsageError, match="never downloads"):
        choose(None, "missing.pt")


def test_warm_and_scratch_runs_get_their_own_settings():
    config = parse(
        {
            "training": {
                "epochs_scratch": 40,
                "epochs_warm": 8,
                "patience": 5,
                "freeze_epochs": 2,
                "backbone_lr_scale": 0.2,
                "warmup_epochs": 2.5,
                "close_mosaic": 7,
                "close_mosaic_warm": 3,
                "lrf": 0.05,
                "cos_lr": True,
                "optimizer": "SGD",
                "lr0": 0.02,
                "nbs": 32,
                "amp": False,
            }
        }
    )
    warm, scratch = resolve_params(config, WARM), resolve_params(config, SCRATCH)
    assert (warm["epochs"], scratch["epochs"]) == (8, 40)
    assert warm["patience"] == scratch["patience"] == 5
    assert (warm["warmup_epochs"], scratch["warmup_epochs"]) == (0.0, 2.5)  # warm starts skip warm-up
    assert (warm["close_mosaic"], scratch["close_mosaic"]) == (3, 7)
    assert (warm["freeze_epochs"], scratch["freeze_epochs"]) == (2, 0)
    assert (warm["backbone_lr_scale"], scratch["backbone_lr_scale"]) == (0.2, 1.0)
    assert warm["strategy"] == "two_phase+backbone_lr_x0.2" and scratch["strategy"] == "scratch"
    for params in (warm, scratch):
        assert (params["lrf"], params["cos_lr"], params["optimizer"], params["lr0"], params["nbs"], params["amp"]) == (
            0.05,
            True,
            "SGD",
            0.02,
            32,
            False,
        )


def test_default_warm_strategy_fine_tunes_everything_without_warm_up_or_mosaic():
    params = resolve_params(parse({}), WARM)
    assert params["strategy"] == "fine_tune+backbone_lr_x0.3"
    assert params["warmup_epochs"] == 0.0 and params["freeze_epochs"] == 0 and params["backbone_lr_scale"] == 0.3
    assert params["nbs"] == 16 and params["close_mosaic"] >= params["epochs"]  # a step per batch, no mosaic
    scratch = resolve_params(parse({}), SCRATCH)
    assert params["epochs"] <= scratch["epochs"] / 4  # the compute target of docs/benchmarks.md
    assert scratch["backbone_lr_scale"] == 1.0 and scratch["warmup_epochs"] == 3.0 and scratch["nbs"] == 16
    one_lr = resolve_params(parse({"training": {"backbone_lr_scale": 1.0}}), WARM)
    assert one_lr["strategy"] == "fine_tune"


@pytest.mark.parametrize(
    ("key", "value"),
    [("optimizer", "Lion"), ("on_interrupt", "retry"), ("backbone_lr_scale", 0), ("device", "gpu0")],
)
def test_bad_transfer_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"training.{key}"):
        parse({"training": {key: value}})


@pytest.mark.parametrize("device", ["cpu", "0", "0,1", "0,1,2,3", "mps", "cuda:1"])
def test_devices(device):
    assert parse({"training": {"device": device}}).training.device == device


# --- the negative-transfer guard ------------------------------------------------------------------

S, W = StartKind.SCRATCH, StartKind.WARM


def gens(*spec: str) -> list[Generation]:
    """'s' scratch candidate, 'c' scratch challenger, 'w' promoted warm, 'r' rejected warm."""
    kinds = {
        "s": (S, CANDIDATE, False),
        "c": (S, CHALLENGER, False),
        "w": (W, CANDIDATE, False),
        "r": (W, CANDIDATE, True),
    }
    return [Generation(*kinds[c]) for c in spec]


@pytest.mark.parametrize(
    ("history", "every", "after", "due"),
    [
        ("sw", 2, 2, None),
        ("sww", 2, 2, "2 warm-started generations"),
        ("swwc", 2, 2, None),  # a challenger resets the count (and it is not a warm candidate)
        ("swwcw", 2, 2, None),
        ("swwcww", 2, 2, "2 warm-started"),
        ("swww", 0, 2, None),  # 0: never on a schedule
        ("srr", 0, 2, "rejected in a row"),
        ("srwr", 0, 2, None),  # not in a row
        ("srrcr", 0, 2, None),  # the challenger answered the first two
        ("srrcrr", 0, 2, "rejected in a row"),
        ("srr", 0, 0, None),  # 0: never after rejections
        ("s", 1, 1, None),  # the newest run is not a warm candidate
        ("", 1, 1, None),
    ],
)
def test_challenger_due(history, every, after, due):
    reason = challenger_due(gens(*history), every, after)
    assert (reason is None) if due is None else (reason is not None and due in reason)


def test_the_daemon_side_never_imports_torch():
    code = (
        "import sys, flywheel.cli.main, flywheel.service.daemon, flywheel.flow.cycle, flywheel.cli.train;"
        "import flywheel.training.local_trainer;"
        "import flywheel.core.plan, flywheel.training.replay, flywheel.core.spec;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_threads_0_is_one_fewer_than_the_cores_and_at_least_one(monkeypatch):
    """docs/benchmarks.md, "Training threads": every core collapses under a competing load."""
    from flywheel.core.plan import training_threads

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert training_threads(0) == 7 and training_threads(3) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert training_threads(0) == 1
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert training_threads(0) == 1
    config = parse({"training": {"threads": 0}})
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    start = Start(StartKind.SCRATCH, "yolov8n.yaml", None)
    assert resolve_params(config, start)["threads"] == 3

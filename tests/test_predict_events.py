"""The predict child's events: the wire format both ends share (flywheel/core/predict_events.py),
and the CLI-side runner failing on a line it cannot read. The real child runs in
test_prelabel.py's slow tests."""

from __future__ import annotations

import io
import json
import stat
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

import pytest

from flywheel.core.errors import EventError, TrainingError
from flywheel.core.predict_events import (
    KINDS,
    Detection,
    ImageEmbedded,
    ImageFailed,
    ImagePredicted,
    PredictDone,
    PredictEvent,
    PredictFailed,
    PredictStarted,
    encode,
    parse_predict_event,
)
from flywheel.core.prediction import Box, ImageInput, PredictOutcome, PredictRequest
from flywheel.training.local_predictor import ChildPredictor
from flywheel.training.predict_child import _Events

ONE_OF_EACH: list[PredictEvent] = [
    PredictStarted(names=("red", "blue with spaces"), imgsz=640, task="detect"),
    ImagePredicted(
        index=3,
        width=640,
        height=480,
        boxes=(Detection(0, 0.91234, 10.5, 20.0, 110.25, 220.0), Detection(1, 0.25, 0.0, 0.0, 5.0, 5.0)),
    ),
    ImageFailed(index=4, error="OSError: image file is truncated"),
    PredictDone(seconds=2.5),
    PredictFailed(error="ValueError: m.pt is a segment model; pre-labels need a detection model"),
    ImageEmbedded(index=3, vector=(0.6, 0.0, 0.8)),
]


def _wire(event: PredictEvent) -> str:
    """What the child writes for `event`: through its own sender."""
    stream = io.StringIO()
    _Events(stream).send(event)
    return stream.getvalue()


def test_every_kind_has_an_example_here():
    assert {type(e) for e in ONE_OF_EACH} == set(get_args(PredictEvent)) == set(KINDS.values())


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.kind)
def test_each_kind_round_trips_through_the_childs_sender(event: PredictEvent):
    line = _wire(event)
    assert line.endswith("\n") and line.count("\n") == 1  # one JSON line per event
    assert json.loads(line)["event"] == event.kind
    assert parse_predict_event(line) == event
    assert parse_predict_event(json.loads(line)) == event  # a dict, as from a test or another reader


def test_the_wire_format_is_the_one_of_earlier_versions():
    """Boxes are rows [cls, conf, x1, y1, x2, y2], names a list: what older readers expect."""
    assert json.loads(encode(ONE_OF_EACH[1])) == {
        "event": "image",
        "index": 3,
        "width": 640,
        "height": 480,
        "boxes": [[0, 0.91234, 10.5, 20.0, 110.25, 220.0], [1, 0.25, 0.0, 0.0, 5.0, 5.0]],
    }
    assert json.loads(encode(ONE_OF_EACH[0]))["names"] == ["red", "blue with spaces"]


@pytest.mark.parametrize(("kind", "key"), [(kind, f.name) for kind, cls in KINDS.items() for f in fields(cls)])
def test_a_missing_key_fails_naming_the_kind_and_the_key(kind: str, key: str):
    (event,) = [e for e in ONE_OF_EACH if e.kind == kind]
    data = json.loads(_wire(event))
    del data[key]
    with pytest.raises(EventError, match=f"prediction event '{kind}': missing key '{key}'"):
        parse_predict_event(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": "3"}, "'image': key 'index' should be int, got str '3'"),
        ({"width": 640.5}, "key 'width' should be int, got float"),
        ({"boxes": {}}, "key 'boxes' should be tuple"),
        ({"boxes": [[0, 0.9, 1, 2, 3]]}, r"key 'boxes'\[0\] should be a list \[cls, conf, x1, y1, x2, y2\]"),
        ({"boxes": [[0, "high", 1, 2, 3, 4]]}, r"key 'boxes'\[0\] 'conf' should be float, got str"),
        ({"boxes": [[0.5, 0.9, 1, 2, 3, 4]]}, r"key 'boxes'\[0\] 'cls' should be int, got float"),
    ],
)
def test_a_key_of_the_wrong_type_fails_naming_it(change: dict[str, Any], message: str):
    data = json.loads(_wire(ONE_OF_EACH[1])) | change
    with pytest.raises(EventError, match=message):
        parse_predict_event(data)


def test_names_must_be_strings():
    data = json.loads(_wire(ONE_OF_EACH[0])) | {"names": ["red", 7]}
    with pytest.raises(EventError, match=r"'started': key 'names'\[1\] should be str, got int"):
        parse_predict_event(data)


def test_whole_numbers_are_floats_and_unknown_keys_are_ignored():
    data = json.loads(_wire(ONE_OF_EACH[1])) | {"boxes": [[1, 1, 0, 0, 5, 5]], "speed_ms": 12}
    event = parse_predict_event(data)
    assert isinstance(event, ImagePredicted)
    (box,) = event.boxes
    assert box == Detection(1, 1.0, 0.0, 0.0, 5.0, 5.0) and all(isinstance(v, float) for v in box[1:])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"event": "epoch", "epoch": 1}', "prediction event has an unknown kind 'event': 'epoch'"),
        ("image 1 done", "prediction event is not JSON"),
        ("[1, 2]", "prediction event is not a JSON object"),
    ],
)
def test_an_unknown_kind_or_a_line_that_is_no_event_fails(line: str, message: str):
    with pytest.raises(EventError, match=message):
        parse_predict_event(line)
    assert issubclass(EventError, TrainingError)  # the CLI reports it as a failed prediction


# --- the child predictor, with a stand-in child ------------------------------------------------------------


def _child(tmp_path: Path, lines: list[str], then: str = "") -> str:
    """An 'interpreter' that writes `lines` as they are on the event pipe, then runs `then`."""
    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys, time\n"
        "fd = int(os.environ['FLYWHEEL_EVENT_FD'])\n"
        f"for line in {lines!r}:\n"
        "    os.write(fd, line.encode())\n"
        f"{then}\n"
    )
    child = tmp_path / "python"  # stands in for the interpreter: runs the script, whatever it is asked
    child.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    child.chmod(child.stat().st_mode | stat.S_IXUSR)
    return str(child)


def _run(tmp_path: Path, python: str, seen: list[PredictEvent]) -> PredictOutcome:
    images = [ImageInput(f"{n}.png", tmp_path / f"{n}.png", 640, 480, f"{n}.png") for n in "abcde"]
    request = PredictRequest(tmp_path / "m.pt", 0.25, 0.7, 0, 640, "cpu", 1)
    return ChildPredictor(tmp_path / "config", tmp_path / "work", python=python).predict(request, images, seen.append)


def test_the_runner_turns_the_events_into_an_outcome(tmp_path: Path):
    lines = [_wire(e) for e in (ONE_OF_EACH[0], ONE_OF_EACH[1], ONE_OF_EACH[2], ONE_OF_EACH[3])]
    seen: list[PredictEvent] = []
    outcome = _run(tmp_path, _child(tmp_path, lines), seen)
    assert seen == ONE_OF_EACH[:4]  # typed, in order
    assert outcome.names == ["red", "blue with spaces"] and outcome.imgsz == 640
    (prediction,) = outcome.predictions
    assert (prediction.name, prediction.width, prediction.height) == ("d.png", 640, 480)
    assert prediction.boxes[0] == Box(0, 0.91234, 10.5, 20.0, 110.25, 220.0)
    assert outcome.failed == [("e.png", "OSError: image file is truncated")]


def test_the_runner_keeps_each_embedding_under_its_image_name(tmp_path: Path):
    lines = [_wire(e) for e in (ONE_OF_EACH[0], ONE_OF_EACH[1], ONE_OF_EACH[5], ONE_OF_EACH[3])]
    outcome = _run(tmp_path, _child(tmp_path, lines), [])
    assert list(outcome.embeddings) == ["d.png"]
    assert list(outcome.embeddings["d.png"]) == pytest.approx([0.6, 0.0, 0.8], abs=1e-7)  # kept as float32
    assert [p.name for p in outcome.predictions] == ["d.png"]


def test_the_runner_stops_a_child_that_sends_a_malformed_event(tmp_path: Path):
    """A child of another format: the prediction fails at its first bad event, naming the key
    and the log, and the child is stopped rather than waited for."""
    bad = json.dumps({"event": "image", "index": 0, "width": 640, "height": 480}) + "\n"  # no boxes
    seen: list[PredictEvent] = []
    started = time.monotonic()
    with pytest.raises(EventError, match=r"prediction stopped: .*'image': missing key 'boxes'.*predict\.log"):
        _run(tmp_path, _child(tmp_path, [_wire(ONE_OF_EACH[0]), bad], then="time.sleep(60)"), seen)
    assert seen == [ONE_OF_EACH[0]] and time.monotonic() - started < 30


def test_a_torn_last_line_is_ignored_and_the_exit_code_decides(tmp_path: Path):
    """The child died while writing its last line: not an event error, but a failed run."""
    lines = [_wire(ONE_OF_EACH[0]), '{"event": "image", "ind']
    with pytest.raises(TrainingError, match=r"prediction failed: exit code 3\. Full log: .*predict\.log") as info:
        _run(tmp_path, _child(tmp_path, lines, then="sys.exit(3)"), [])
    assert not isinstance(info.value, EventError)

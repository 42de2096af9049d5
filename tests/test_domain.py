"""The pure core: allowed transitions, stable splits, stable class ids."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from flywheel.core.domain import (
    BatchState,
    ModelStatus,
    RunState,
    check_transition,
    merge_class_map,
    parse_id,
    split_of,
)
from flywheel.core.errors import BatchRejected, InvalidTransition, UsageError


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (ModelStatus.CANDIDATE, ModelStatus.PRODUCTION),
        (ModelStatus.CANDIDATE, ModelStatus.REJECTED),
        (ModelStatus.PRODUCTION, ModelStatus.RETIRED),
        (ModelStatus.RETIRED, ModelStatus.PRODUCTION),
        (RunState.QUEUED, RunState.RUNNING),
        (RunState.RUNNING, RunState.SUCCEEDED),
        (RunState.RUNNING, RunState.INTERRUPTED),
        (RunState.INTERRUPTED, RunState.QUEUED),
        (BatchState.RECEIVED, BatchState.INGESTING),
        (BatchState.INGESTING, BatchState.INGESTED),
        (BatchState.INGESTING, BatchState.REJECTED),
    ],
)
def test_allowed_transitions_pass(current, target):
    check_transition("record x", current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (ModelStatus.REJECTED, ModelStatus.PRODUCTION),  # a rejected model never reaches production
        (ModelStatus.CANDIDATE, ModelStatus.RETIRED),
        (ModelStatus.PRODUCTION, ModelStatus.CANDIDATE),
        (RunState.SUCCEEDED, RunState.RUNNING),
        (RunState.FAILED, RunState.QUEUED),
        (BatchState.INGESTED, BatchState.INGESTING),
    ],
)
def test_forbidden_transitions_raise_and_name_the_record(current, target):
    with pytest.raises(InvalidTransition) as info:
        check_transition("model m0007", current, target)
    message = str(info.value)
    assert "model m0007" in message
    assert current.value in message and target.value in message


def test_final_states_have_no_way_out():
    with pytest.raises(InvalidTransition, match="none \\(final\\)"):
        check_transition("run r0001", RunState.CANCELLED, RunState.QUEUED)


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_split_is_a_function_of_the_hash_alone():
    shas = [_sha(i) for i in range(2000)]
    first = [split_of(s, 0.2) for s in shas]
    assert first == [split_of(s, 0.2) for s in shas]  # same bytes, same split, every time
    share = first.count("val") / len(first)
    assert 0.17 < share < 0.23


def _splits_in_a_fresh_process(shas: list[str], hash_seed: str) -> dict[str, str]:
    """Each version is split by a later daemon: another process, another str-hash seed."""
    code = (
        "import json, sys\nfrom flywheel.core.domain import split_of\n"
        "print(json.dumps({s: split_of(s, 0.2) for s in json.load(sys.stdin)}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(shas), capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(proc.stdout))


def test_split_never_moves_an_image_when_the_dataset_grows():
    first = [_sha(i) for i in range(500)]
    added = [_sha(i) for i in range(500, 1000)]
    # the grown version lists its images in another order, the new ones first, and is split later
    grown_order = [s for pair in zip(added, reversed(first), strict=True) for s in pair]
    old = _splits_in_a_fresh_process(first, hash_seed="1")
    grown = _splits_in_a_fresh_process(grown_order, hash_seed="2")
    assert {s: grown[s] for s in first} == old
    new_val = sum(grown[s] == "val" for s in added) / len(added)
    assert 0.15 < new_val < 0.25  # the new images are split at the same fraction, not all put in train


def test_split_rejects_a_fraction_outside_0_1():
    with pytest.raises(ValueError, match="val_fraction"):
        split_of(_sha(1), 1.0)


def test_class_map_keeps_ids_and_appends_new_names():
    names, remap = merge_class_map(["cat", "dog"], ["dog", "bird", "cat"])
    assert names == ["cat", "dog", "bird"]
    assert remap == {0: 1, 1: 2, 2: 0}


def test_class_map_of_an_empty_project_is_the_batch_order():
    names, remap = merge_class_map([], ["a", "b"])
    assert names == ["a", "b"] and remap == {0: 0, 1: 1}


@pytest.mark.parametrize("batch", [["a", "a"], ["a", " "]])
def test_class_map_refuses_duplicate_or_empty_names(batch):
    with pytest.raises(BatchRejected):
        merge_class_map(["a"], batch)


@pytest.mark.parametrize(("text", "expected"), [("m0003", 3), ("m3", 3), ("3", 3), (" M12 ", 12)])
def test_parse_id(text, expected):
    assert parse_id(text, "m") == expected


def test_parse_id_refuses_junk():
    with pytest.raises(UsageError, match="m0003"):
        parse_id("model-three", "m")

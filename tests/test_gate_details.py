"""The gate's details as stored: written as JSON, read back into the same types, and rows from
older releases (fewer keys) still read."""

from __future__ import annotations

import json

from flywheel.core.gate import ClassCheck, GatePolicy, Rule, Score, SetVerdict, decide_gate
from flywheel.core.gate_details import EvalSetNote, Forgetting, GateDetails, GoldenNote, forgetting_of

CAND = Score(0.52, 0.7, 0.6, 0.5, {"red": 0.5, "blue": 0.3}, {"red": 12, "blue": 4})
PROD = Score(0.50, 0.68, 0.6, 0.5, {"red": 0.6, "blue": 0.2}, {"red": 12, "blue": 4})


def _details() -> GateDetails:
    policy = GatePolicy(max_class_drop=0.05, class_interval=True)
    decision = decide_gate(
        {"val": (CAND, PROD), "golden": (CAND, PROD)},
        policy,
        intervals={"val": (-0.01, 0.05)},
        class_intervals={"val": {"red": (-0.2, -0.01)}},
    )
    golden = GoldenNote(folder="/g", content_sha256="c" * 64, boxes=9, unknown_classes={"cat": 2}, in_training=1)
    return GateDetails(
        eval_sets={
            "val": EvalSetNote(sha256="v" * 64, images=5),
            "golden": EvalSetNote(sha256="g" * 64, images=3, golden=golden),
        },
        verdicts=decision.verdicts,
        forgetting=forgetting_of({"val_old": (CAND, PROD), "val_new": (CAND, None)}),
        policy=policy,
    )


def test_details_survive_a_json_round_trip_as_the_same_types():
    details = _details()
    stored = json.loads(json.dumps(details.to_json()))  # what the database's JSON column gives back
    assert GateDetails.from_json(stored) == details
    verdict = GateDetails.from_json(stored).verdicts[0]
    assert isinstance(verdict.rule, Rule) and verdict.interval == (-0.01, 0.05)
    red = next(c for c in verdict.classes if c.name == "red")
    assert red.interval == (-0.2, -0.01) and red.gated and red.drop == PROD.per_class["red"] - CAND.per_class["red"]
    assert list(details.forgetting) == ["val_old"]  # val_new had no production score


def test_the_json_keeps_the_shape_rows_have_always_had():
    data = _details().to_json()
    assert set(data) == {"eval_sets", "verdicts", "forgetting", "policy"}
    golden = data["eval_sets"]["golden"]  # the golden set's notes sit beside sha256 and images
    assert golden == {
        "sha256": "g" * 64, "images": 3, "folder": "/g", "content_sha256": "c" * 64, "boxes": 9,
        "unknown_classes": {"cat": 2}, "in_training": 1,
    }  # fmt: skip
    assert data["eval_sets"]["val"] == {"sha256": "v" * 64, "images": 5}
    verdict = data["verdicts"][0]
    assert set(verdict) == {"eval_set", "rule", "margin", "candidate", "production", "classes", "interval"}
    assert set(verdict["classes"][0]) == {"name", "candidate", "production", "instances", "gated", "interval", "drop"}
    assert data["forgetting"]["val_old"] == {"candidate": 0.52, "production": 0.50, "drop": 0.50 - 0.52}
    assert data["policy"] == {
        "tolerance": 0.0, "max_class_drop": 0.05, "min_class_instances": 10, "require_interval": False,
        "class_interval": True,
    }  # fmt: skip


def test_rows_written_by_older_releases_still_read():
    assert GateDetails.from_json({}) == GateDetails()  # the first release recorded no details
    assert GateDetails.from_json(None) == GateDetails()
    old = {  # before instances, intervals, the class bootstrap and forgetting were recorded
        "eval_sets": {"val": {"sha256": "v" * 64, "images": 5}},
        "verdicts": [
            {
                "eval_set": "val", "rule": "map_regressed", "margin": -0.1,
                "candidate": {"map50_95": 0.4, "map50": 0.6, "precision": 0.5, "recall": 0.5, "per_class": {"r": 0.4}},
                "production": {"map50_95": 0.5, "map50": 0.7, "precision": 0.5, "recall": 0.5, "per_class": {"r": 0.5}},
                "classes": [{"name": "r", "candidate": 0.4, "production": 0.5, "instances": 12, "gated": True}],
            }
        ],
        "policy": {"tolerance": 0.01, "max_class_drop": 0.1, "min_class_instances": 10},
    }  # fmt: skip
    details = GateDetails.from_json(old)
    verdict = details.verdicts[0]
    assert verdict.rule is Rule.MAP_REGRESSED and verdict.interval is None and verdict.candidate.instances == {}
    assert verdict.classes == (ClassCheck("r", 0.4, 0.5, 12, True, None),)
    assert details.policy == GatePolicy(tolerance=0.01) and details.forgetting == {}
    assert details.eval_sets["val"].golden is None
    assert isinstance(verdict, SetVerdict) and Forgetting(candidate=0.4, production=0.5).drop == 0.5 - 0.4

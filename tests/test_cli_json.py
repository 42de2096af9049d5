"""`--json`: each command prints one JSON document on stdout, in the shape docs/cli-json.md
documents, with the values the store holds. Through the real CLI (typer's runner; one command
in its own process to show nothing but the document reaches stdout), on a data root with two
versions, runs and models from a fake trainer, and a real tiny model for predict/suggest."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.cli.jsonout import iso
from flywheel.cli.label import pull_data, push_data
from flywheel.cli.main import app
from flywheel.cli.mirror import sync_data
from flywheel.cli.predict import predict_data
from flywheel.cli.predict_pass import PredictPass
from flywheel.cli.screen import screening_json
from flywheel.cli.suggest import suggest_data
from flywheel.core.domain import batch_name, model_name, run_name, version_name
from flywheel.core.labeling import PullResult
from flywheel.core.mirror import MirrorStatus
from flywheel.core.prediction import Box, Prediction, PredictOutcome
from flywheel.core.screening import Check, Screening, ScreenState, Suspect
from flywheel.flow.labeling import PushResult
from flywheel.prelabel import uncertainty
from flywheel.prelabel.inputs import Inputs
from tests.conftest import TINY_CONFIG, free_port
from tests.fakes import FakeTrainer
from tests.test_ingest import mixed_batch
from tests.test_prelabel import trained_root, unlabeled  # noqa: F401  (fixtures: a real tiny model)

runner = CliRunner()
FLYWHEEL = [sys.executable, "-m", "flywheel"]


def run_json(*args: str, schema: str) -> dict[str, Any]:
    """Run `flywheel ARGS --json`; stdout must be exactly one JSON document of `schema`."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict) and doc["schema"] == schema
    return doc


def is_utc(text: str | None) -> bool:
    return text is not None and text.endswith("Z") and datetime.fromisoformat(text).tzinfo == UTC


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions, two runs from a fake trainer: m0001 promoted, then m0002 promoted over it."""
    base = tmp_path_factory.mktemp("cli-json")
    folder = init_data_root(base / "root", TINY_CONFIG.format(port=free_port()))
    application = App(folder, trainer=FakeTrainer([0.2, 0.4], production_map=0.2))
    for seed in (1, 2):
        version = application.ingest(synthetic_batch(base / f"b{seed}", 12, seed=seed), move=False).version
        assert version is not None
        application.train(version.id or 0)
    production = application.store.production()
    assert production is not None and production.id == 2
    return folder


def test_status(root: Path):
    store = App(root).store
    doc = run_json("status", "--root", str(root), schema="flywheel.status/1")
    production, latest = store.production(), store.latest_version()
    assert production is not None and latest is not None
    assert doc["root"] == str(root.resolve())
    assert doc["production"]["id"] == "m0002" == model_name(production.id)
    assert doc["production"]["status"] == "production" and doc["production"]["version"] == "v0002"
    assert doc["production"]["val"]["map50_95"] == pytest.approx(0.4)
    assert doc["production_problem"] is None and doc["pinned"] is None
    assert doc["newest_version"]["id"] == "v0002"
    assert doc["newest_version"]["train_images"] == latest.train_images
    assert doc["newest_version"]["val_images"] == latest.val_images
    assert isinstance(doc["refresh"], str)
    assert [r["id"] for r in doc["runs"]] == [run_name(r.id) for r in store.runs()] == ["r0001", "r0002"]
    assert [(r["state"], r["model"], r["epochs_done"]) for r in doc["runs"]] == [
        (str(r.state), model_name(r.model_id or 0), r.epochs_done) for r in store.runs()
    ]
    assert [b["id"] for b in doc["batches"]] == ["b0001", "b0002"]
    first = store.batches()[0]
    assert doc["batches"][0]["accepted"] == first.images_ok == 12 and doc["batches"][0]["version"] == "v0001"
    assert all(is_utc(r["created_at"]) and is_utc(r["finished_at"]) for r in doc["runs"])


def test_status_through_the_real_command_prints_only_the_document(root: Path):
    assert flywheel_json("status", "--root", str(root))["production"]["id"] == "m0002"


def test_versions(root: Path):
    store = App(root).store
    doc = run_json("versions", "--root", str(root), schema="flywheel.versions/1")
    assert [v["id"] for v in doc["versions"]] == ["v0001", "v0002"]
    for got, v in zip(doc["versions"], store.versions(), strict=True):
        assert got["parent"] == (version_name(v.parent_id) if v.parent_id else None)
        assert got["batch"] == batch_name(v.batch_id or 0)
        assert (got["train_images"], got["val_images"], got["boxes"]) == (v.train_images, v.val_images, v.boxes)
        assert got["train_images"] + got["val_images"] > 0
        assert got["classes"] == v.class_names == ["red", "blue"]
        assert got["created_at"] == iso(v.created_at) and is_utc(got["created_at"])
    assert doc["versions"][1]["parent"] == "v0001"


def test_models(root: Path):
    store = App(root).store
    doc = run_json("models", "--root", str(root), schema="flywheel.models/1")
    assert doc["production"] == "m0002"
    assert [(m["id"], m["status"], m["version"], m["run"], m["parent"]) for m in doc["models"]] == [
        ("m0001", "retired", "v0001", "r0001", None),
        ("m0002", "production", "v0002", "r0002", "m0001"),
    ]
    for got, m in zip(doc["models"], store.models(), strict=True):
        assert got["sha256"] == m.sha256
        score = store.evaluation(m.sha256, store.version(m.version_id).val_sha256)
        assert score is not None and got["val"]["map50_95"] == score.score.map50_95
    assert is_utc(doc["models"][1]["promoted_at"])


def test_models_show(root: Path):
    store = App(root).store
    doc = run_json("models", "show", "m0002", "--root", str(root), schema="flywheel.models.show/1")
    decision = next(g for g in store.gate_decisions() if g.candidate_model_id == 2)
    assert doc["model"]["id"] == "m0002" and doc["run"]["id"] == "r0002"
    assert doc["run"]["start_kind"] == str(store.run(2).start_kind) and doc["run"]["start_model"] == "m0001"
    gate = doc["gate"]
    assert (gate["outcome"], gate["rule"], gate["against"]) == (decision.outcome, decision.rule, "m0001")
    assert gate["candidate_map50_95"] == decision.candidate_map and gate["margin"] == decision.margin
    assert gate["eval_sha256"] == decision.eval_sha256
    assert [v["eval_set"] for v in gate["verdicts"]] == [v.eval_set for v in decision.details.verdicts]
    assert [(e["action"], e["model"]) for e in doc["ledger"]] == [
        (str(e.action), model_name(e.model_id or 0)) for e in store.ledger() if 2 in (e.model_id, e.previous_model_id)
    ]


def test_history(root: Path):
    entries = App(root).store.ledger()
    doc = run_json("history", "--root", str(root), schema="flywheel.history/1")
    assert [(e["id"], e["action"], e["model"], e["previous"], e["entry_hash"]) for e in doc["entries"]] == [
        (
            e.id,
            str(e.action),
            model_name(e.model_id) if e.model_id else None,
            model_name(e.previous_model_id) if e.previous_model_id else None,
            e.entry_hash,
        )
        for e in entries
    ]
    assert doc["entries"][-1]["model"] == "m0002" and doc["entries"][-1]["previous"] == "m0001"
    assert all(is_utc(e["at"]) for e in doc["entries"])


def test_quarantine(data_root: Path):
    empty = run_json("quarantine", "--root", str(data_root), schema="flywheel.quarantine/1")
    assert empty["batches"] == []
    expected = mixed_batch(data_root / "inbox" / "mixed")
    App(data_root).ingest(data_root / "inbox" / "mixed", move=True)
    doc = run_json("quarantine", "--root", str(data_root), schema="flywheel.quarantine/1")
    [batch] = doc["batches"]
    assert batch["batch"] == "b0001" and batch["refused"] is None
    assert Path(batch["folder"]) == data_root / "quarantine" / "b0001-mixed"
    files = {f["path"]: f for f in batch["files"]}
    assert set(files) == set(expected)
    assert all(f["reason"].startswith(expected[path]) for path, f in files.items())
    assert files["labels/badlabel.txt"]["code"] == "label_out_of_range"
    assert files["images/nolabel.png"]["code"] == "image_unlabeled"
    assert Counter(f["code"] for f in batch["files"]) == App(data_root).store.batches()[0].quarantine_reasons


def test_an_error_leaves_stdout_empty_and_keeps_its_exit_code(root: Path):
    result = runner.invoke(app, ["models", "show", "m0042", "--root", str(root), "--json"])
    assert result.exit_code == 3 and result.stdout == ""
    assert "m0042" in result.stderr


# --- predict and suggest ----------------------------------------------------------------------


def test_the_summaries_on_fixed_data(tmp_path: Path):
    """The shapes, from a fixed outcome: counts per class, skipped images with their reason."""
    preds = [
        Prediction("a.png", tmp_path / "a.png", 64, 64, (Box(0, 0.9, 1, 1, 9, 9), Box(1, 0.3, 2, 2, 8, 8))),
        Prediction("b.png", tmp_path / "b.png", 64, 64, ()),
    ]
    run = PredictPass(
        inputs=Inputs(images=[], skipped=[("x.txt.jpg", "not an image")]),
        outcome=PredictOutcome(
            predictions=preds, failed=[("c.png", "the model could not read it")], names=["red", "blue"]
        ),
        model="m0007",
        out=tmp_path / "out",
    )
    doc = predict_data(run, "coco", 0.25, 0.7, preds, tmp_path / "out" / "annotations.json")
    assert doc["model"] == "m0007" and doc["format"] == "coco" and doc["out"] == str(tmp_path / "out")
    assert (doc["images"], doc["boxes"], doc["boxes_per_class"]) == (2, 2, {"red": 1, "blue": 1})
    assert doc["skipped"] == [
        {"image": "x.txt.jpg", "reason": "not an image"},
        {"image": "c.png", "reason": "the model could not read it"},
    ]
    rows = [
        {"rank": i, "image": n, "source": n, "score": s, "pick": i, "why": {}}
        for i, (n, s) in enumerate([("b.png", 0.5)], 1)
    ]
    doc = suggest_data(run, "yolo", 0.25, 0.7, 1, 0.01, rows, preds[1:], tmp_path / "out" / "x")
    assert (doc["images"], doc["top"], doc["prelabeled"], doc["boxes"]) == (1, 1, 1, 0)
    assert doc["ranking"] == rows and doc["ranking_csv"] == str(tmp_path / "out" / "ranking.csv")


def flywheel_json(*args: str) -> dict[str, Any]:
    """`python -m flywheel ARGS --json` in its own process: stdout is the document alone."""
    done = subprocess.run([*FLYWHEEL, *args, "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_predict_and_suggest_with_a_real_model(trained_root: Path, unlabeled: Path, tmp_path: Path):  # noqa: F811
    out = tmp_path / "pre"
    doc = flywheel_json("predict", str(unlabeled), "--root", str(trained_root), "--conf", "0.001", "--out", str(out))
    assert doc["schema"] == "flywheel.predict/1" and doc["model"] == "m0001" and doc["format"] == "yolo"
    assert doc["out"] == str(out) and doc["images"] == 5 and doc["imgsz"] == 32
    assert [s["image"] for s in doc["skipped"]] == ["broken.jpg"] and doc["skipped"][0]["reason"]
    labels = [ln for p in (out / "labels").glob("*.txt") for ln in p.read_text().splitlines() if ln.strip()]
    assert doc["boxes"] == len(labels) == sum(doc["boxes_per_class"].values())

    out = tmp_path / "next"
    doc = flywheel_json("suggest", str(unlabeled), "--top", "2", "--root", str(trained_root), "--out", str(out))
    assert doc["schema"] == "flywheel.suggest/1" and doc["images"] == 5 and doc["prelabeled"] == 2
    rows = json.loads((out / "ranking.json").read_text())
    assert doc["ranking"] == rows[:2] and doc["ranking_json"] == str(out / "ranking.json")
    assert sorted(p.name for p in (out / "prelabels" / "images").iterdir()) == sorted(r["image"] for r in rows[:2])


# --- the documented shapes -----------------------------------------------------------------

DOCS = Path(__file__).parents[1] / "docs" / "cli-json.md"


def documented() -> dict[str, dict[str, Any]]:
    """The example of each section of docs/cli-json.md, by schema; every one must parse."""
    blocks = [b.split("```", 1)[0] for b in DOCS.read_text().split("```json\n")[1:]]
    return {doc["schema"]: doc for doc in map(json.loads, blocks)}


def same_keys(example: Any, real: Any, where: str = "") -> None:
    """The example's keys are the real document's: `"…": "…"` stands for keys left out, and
    open maps (per class, reason codes, the gate's record, exports by format, screening checks)
    are compared by their key only."""
    if isinstance(example, dict) and isinstance(real, dict) and "…" not in example:
        assert list(example) == list(real), where
    if isinstance(example, dict) and isinstance(real, dict):
        for k in set(example) & set(real) - {
            "per_class",
            "quarantine_reasons",
            "boxes_per_class",
            "gate",
            "artifacts",
            "checks",
        }:
            same_keys(example[k], real[k], f"{where}.{k}")
    elif isinstance(example, list) and isinstance(real, list) and example and real:
        same_keys(example[0], real[0], f"{where}[0]")


def test_the_docs_show_each_shape_with_the_keys_the_commands_print(root: Path, data_root: Path, tmp_path: Path):
    examples = documented()
    commands = ("status", "versions", "models", "models.show", "history", "quarantine", "predict", "suggest", "screen")
    commands += ("label.push", "label.pull", "mirror.sync")
    assert set(examples) == {f"flywheel.{c}/1" for c in commands}
    mixed_batch(data_root / "inbox" / "mixed")
    App(data_root).ingest(data_root / "inbox" / "mixed", move=True)
    for args, schema in [
        (["status", "--root", str(root)], "status"),
        (["versions", "--root", str(root)], "versions"),
        (["models", "--root", str(root)], "models"),
        (["models", "show", "m0002", "--root", str(root)], "models.show"),
        (["history", "--root", str(root)], "history"),
        (["quarantine", "--root", str(data_root)], "quarantine"),
    ]:
        real = run_json(*args, schema=f"flywheel.{schema}/1")
        same_keys(examples[real["schema"]], real, schema)
    preds = [Prediction("a.png", tmp_path / "a.png", 64, 64, (Box(0, 0.9, 1, 1, 9, 9),))]
    run = PredictPass(Inputs(), PredictOutcome(predictions=preds, names=["red"]), "m0001", tmp_path)
    real = {"schema": "flywheel.predict/1", **predict_data(run, "yolo", 0.25, 0.7, preds, tmp_path)}
    same_keys(examples["flywheel.predict/1"], real, "predict")
    why = uncertainty.score_image([0.9]).why()
    rows = [{"rank": 1, "image": "a.png", "source": "a.png", "score": 0.5, "pick": 1, "why": why}]
    real = suggest_data(run, "yolo", 0.25, 0.7, 1, 0.01, rows, preds, tmp_path)
    same_keys(examples["flywheel.suggest/1"], {"schema": "flywheel.suggest/1", **real}, "suggest")
    pushed = PushResult("flywheel (project 3 at http://127.0.0.1:8080)", [41], ["a.png"], ["b.png"])
    real = {"schema": "flywheel.label.push/1", **push_data(run, pushed, 2, 0.25, 2)}
    same_keys(examples["flywheel.label.push/1"], real, "label.push")
    pulled = PullResult("labelstudio-3f2a9c1b7e40", [41], [17], 3, {41: ["green"]})
    real = {"schema": "flywheel.label.pull/1", **pull_data(pulled, tmp_path)}
    same_keys(examples["flywheel.label.pull/1"], real, "label.pull")
    status = MirrorStatus(target="mlflow", up=False, pending=("run r0003",), error="MLflow down")
    real = {"schema": "flywheel.mirror.sync/1", **sync_data(status, "http://127.0.0.1:5000")}
    same_keys(examples["flywheel.mirror.sync/1"], real, "mirror.sync")

    swap = Suspect(Check.LABEL_ERRORS, "swapped", "a" * 64, 0.8, "why", "train", (1, 2, 3, 4), 0, (1, 0.9, 1, 2, 3, 4))
    screened = Screening(batch_id=2, version_id=2, model_id=1, state=ScreenState.REPORTED, suspects=(swap,))
    real = {"schema": "flywheel.screen/1", **screening_json(screened), "review": None}
    same_keys(examples["flywheel.screen/1"], real, "screen")


# --- label push/pull and mirror sync -----------------------------------------------------------


def test_label_summaries_on_fixed_data(tmp_path: Path):
    """Each task with its image, in push order; a pull's batch folder, relabels and unknown labels."""
    run = PredictPass(Inputs(skipped=[("x.jpg", "not an image")]), PredictOutcome(names=["red"]), "m0007", tmp_path)
    pushed = PushResult("p (project 3 at http://127.0.0.1:8080)", [41, 42], ["a.png", "b.png"], ["c.png"])
    doc = push_data(run, pushed, 3, 0.25, 5)
    assert doc["tasks"] == [{"task": 41, "image": "a.png"}, {"task": 42, "image": "b.png"}]
    assert (doc["model"], doc["images"], doc["top"], doc["already"]) == ("m0007", 5, 3, ["c.png"])
    assert doc["skipped"] == [{"image": "x.jpg", "reason": "not an image"}]
    assert doc["ranking_json"] == str(tmp_path / "ranking.json")
    doc = pull_data(PullResult("labelstudio-ab", [41], [17], 2, {41: ["green"]}), tmp_path)
    assert doc == {
        "batch": "labelstudio-ab",
        "folder": str(tmp_path / "labelstudio-ab"),
        "tasks": [41],
        "relabels": [17],
        "waiting": 2,
        "unknown_labels": [{"task": 41, "labels": ["green"]}],
    }
    assert pull_data(PullResult(waiting=1), tmp_path)["folder"] is None


def test_mirror_sync_prints_what_waits_and_exits_1_while_mlflow_is_away(data_root: Path, tmp_path: Path):
    """No mirror: a document that says so, exit 0. MLflow unreachable: what waits, why, exit 1."""
    doc = run_json("mirror", "sync", "--root", str(data_root), schema="flywheel.mirror.sync/1")
    assert (doc["target"], doc["tracking_uri"], doc["pending"]) == (None, None, [])
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'flywheel[mlflow]'")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    mirrored = init_data_root(tmp_path / "mirrored", f'[mlflow]\ntracking_uri = "{uri}"\ntimeout_seconds = 2.0\n')
    application = App(mirrored, trainer=FakeTrainer([0.3]))
    version = application.ingest(synthetic_batch(tmp_path / "b", 8, seed=1), move=False).version
    assert version is not None
    application.train(version.id or 0)
    result = runner.invoke(app, ["mirror", "sync", "--root", str(mirrored), "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert (doc["schema"], doc["target"], doc["tracking_uri"], doc["up"]) == (
        "flywheel.mirror.sync/1",
        "mlflow",
        uri,
        False,
    )
    assert doc["pending"] == ["run r0001", "model m0001", "alias candidate -> m0001", "alias production -> m0001"]
    assert uri in doc["error"]

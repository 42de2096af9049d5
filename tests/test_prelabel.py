"""`flywheel predict` and `flywheel suggest`: pre-labels in each labeling tool's format, read
back by the tool's own rules (YOLO by flywheel's ingest, COCO by flywheel's COCO reader, CVAT
XML by its documented structure, Label Studio by the fields its import needs; a real Label
Studio imports it in tests/test_labelstudio_import.py), and the uncertainty ranking. The CLI
tests run a real tiny production model (trained once per module) through the real command,
in a subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.prediction import Box, Prediction, PredictRequest
from flywheel.ingest.formats import read_batch
from flywheel.ingest.labels import Annotation
from flywheel.ingest.layout import list_files
from flywheel.prelabel import inputs, uncertainty, writers
from flywheel.training.local_predictor import ChildPredictor

FLYWHEEL = [sys.executable, "-m", "flywheel"]
NAMES = ["red", "blue"]

TINY = """\
[dataset]
val_fraction = 0.25

[training]
epochs_scratch = 2
epochs_warm = 1
imgsz = 32
batch = 4
nbs = 4
threads = 2

[metrics]
port = 0
"""


# --- the score ----------------------------------------------------------------------------


def test_a_confident_image_ranks_below_an_uncertain_one():
    ranking = uncertainty.rank(
        {
            "confident.jpg": [0.97, 0.93, 0.02],
            "uncertain.jpg": [0.45, 0.3, 0.2, 0.05],
            "empty.jpg": [0.03],
        }
    )
    assert [name for name, _ in ranking] == ["uncertain.jpg", "empty.jpg", "confident.jpg"]
    scores = {name: u for name, u in ranking}
    assert scores["uncertain.jpg"].band_boxes == 3 and scores["uncertain.jpg"].band == 1.0
    assert scores["confident.jpg"].boxes == 2  # the 0.02 box is under the floor: noise
    assert scores["empty.jpg"].entropy == 0 and scores["empty.jpg"].least_confidence == pytest.approx(0.97)
    assert all(0 <= u.score <= 1 for _, u in ranking)


def test_the_score_is_the_mean_of_its_documented_terms_and_ties_break_by_name():
    u = uncertainty.score_image([0.5])
    assert (u.entropy, u.band, u.least_confidence) == (1.0, 0.0, 0.5)  # 0.5 is just above the band
    assert u.score == pytest.approx(0.5)
    assert set(u.why()) == {"entropy", "band", "least_confidence", "boxes", "band_boxes", "max_conf"}
    assert [n for n, _ in uncertainty.rank({"b.jpg": [0.4], "a.jpg": [0.4]})] == ["a.jpg", "b.jpg"]


# --- the writers, on fixed detections ------------------------------------------------------


def fixed_predictions(folder: Path) -> list[Prediction]:
    batch = synthetic_batch(folder, 3, seed=7, size=64)
    images = sorted((batch / "images").iterdir())
    boxes = (
        (Box(0, 0.9, 4, 6, 30, 40), Box(1, 0.4, 30, 30, 70, 66)),  # the second box runs off the image: clipped
        (Box(1, 0.6, 10, 10, 20, 20),),
        (),
    )
    return [
        Prediction(f"sub/{p.name}" if i == 1 else p.name, p, 64, 64, b)
        for i, (p, b) in enumerate(zip(images, boxes, strict=True))
    ]


def check_yolo(out: Path, data_root: Path, images: int) -> None:
    result = App(data_root).ingest(out, move=False)
    assert result.batch.state != "rejected", result.batch.reason
    assert result.accepted == images and result.quarantined == []
    assert App(data_root).store.latest_version().class_names == NAMES


def check_coco(out: Path, boxes: int) -> None:
    parsed = read_batch(out, list_files(out))
    assert parsed.format == "coco" and parsed.class_names == NAMES and not parsed.refused and not parsed.notes
    annotations = [s.annotation for s in parsed.samples]
    assert all(isinstance(a, Annotation) for a in annotations)
    assert sum(len(a.boxes) for a in annotations if isinstance(a, Annotation)) == boxes
    doc = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert all(0 < a["score"] <= 1 and a["iscrowd"] == 0 for a in doc["annotations"])
    assert {c["id"] for c in doc["categories"]} == {1, 2}


def check_labelstudio(out: Path, model: str, boxes: int, prefix: str = "") -> None:
    tasks = json.loads((out / "tasks.json").read_text())
    assert isinstance(tasks, list) and tasks
    found = 0
    for task in tasks:
        image = task["data"]["image"]
        assert image.startswith(prefix) and (out / image[len(prefix) :]).is_file()
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == model and 0 <= prediction["score"] <= 1
        for r in prediction["result"]:
            assert (r["type"], r["from_name"], r["to_name"]) == ("rectanglelabels", "label", "image")
            assert r["original_width"] > 0 and r["original_height"] > 0 and 0 < r["score"] <= 1
            v = r["value"]
            assert v["x"] >= 0 and v["y"] >= 0 and v["x"] + v["width"] <= 100 + 1e-6
            assert v["y"] + v["height"] <= 100 + 1e-6 and v["width"] > 0 and v["height"] > 0
            assert len(v["rectanglelabels"]) == 1 and v["rectanglelabels"][0] in NAMES
            found += 1
    assert found == boxes


def check_cvat(out: Path, boxes: int) -> None:
    root = ET.parse(out / "annotations.xml").getroot()
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    task = root.find("meta/task")
    assert task is not None and task.findtext("mode") == "annotation"
    labels = task.findall("labels/label")
    assert [lb.findtext("name") for lb in labels] == NAMES
    assert all(lb.findtext("attributes/attribute/name") == "score" for lb in labels)
    images = root.findall("image")
    assert task.findtext("size") == str(len(images))
    assert sorted(int(i.get("id", "")) for i in images) == list(range(len(images)))
    found = 0
    for image in images:
        width, height = int(image.get("width", "")), int(image.get("height", ""))
        assert (out / "images" / image.get("name", "")).is_file()
        for box in image.findall("box"):
            assert box.get("label") in NAMES and box.get("source") == "auto" and box.get("occluded") == "0"
            xtl, ytl, xbr, ybr = (float(box.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
            assert 0 <= xtl < xbr <= width and 0 <= ytl < ybr <= height
            (score,) = box.findall("attribute")
            assert score.get("name") == "score" and 0 < float(score.text or "") <= 1
            found += 1
    assert found == boxes


def test_each_writer_writes_what_its_tool_reads(tmp_path, data_root):
    predictions = fixed_predictions(tmp_path / "src")
    writers.write("yolo", tmp_path / "yolo", predictions, NAMES, "m0007")
    check_yolo(tmp_path / "yolo", data_root, 3)
    label = (tmp_path / "yolo" / "labels" / predictions[0].name).with_suffix(".txt").read_text().splitlines()
    assert label[1].split()[0] == "1" and float(label[1].split()[3]) == pytest.approx(34 / 64)  # clipped to 64
    assert (tmp_path / "yolo" / "labels" / predictions[2].name).with_suffix(".txt").read_text() == ""
    writers.write("coco", tmp_path / "coco", predictions, NAMES, "m0007")
    check_coco(tmp_path / "coco", 3)
    writers.write("labelstudio", tmp_path / "ls", predictions, NAMES, "m0007", image_prefix="")
    check_labelstudio(tmp_path / "ls", "m0007", 3)
    writers.write("cvat", tmp_path / "cvat", predictions, NAMES, "m0007")
    check_cvat(tmp_path / "cvat", 3)
    assert (tmp_path / "cvat" / "images" / "sub").is_dir()  # subfolders are kept


def test_unreadable_images_are_named_with_a_reason_and_skipped(tmp_path):
    folder = synthetic_batch(tmp_path / "in", 2, seed=3)
    (folder / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "images" / "cut.png").write_bytes((folder / "images" / "s3_0000.png").read_bytes()[:100])
    (folder / "images" / "anim.gif").write_bytes(b"GIF89a")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(folder / "images" / "s3_0001.png", "x/one.png")
    found = inputs.collect([folder, archive], tmp_path / "staging", 10**8, 10**9)
    assert sorted(f.name for f in found.images) == ["in/images/s3_0000.png", "in/images/s3_0001.png", "more/x/one.png"]
    skipped = dict(found.skipped)
    assert set(skipped) == {"in/images/broken.jpg", "in/images/cut.png", "in/images/anim.gif"}
    assert "not an image" in skipped["in/images/broken.jpg"] and "corrupt" in skipped["in/images/cut.png"]
    assert found.ignored == 3  # two labels and classes.txt
    assert next(f for f in found.images if f.name == "more/x/one.png").origin == f"{archive}:x/one.png"


def test_predict_with_no_model_or_no_readable_image_says_so_and_exits_with_its_code(tmp_path, unlabeled):
    root = init_data_root(tmp_path / "root", TINY)
    done = flywheel("suggest", str(unlabeled), "--root", str(root))
    assert done.returncode == 3, done.stdout + done.stderr  # ExitCode.NOT_FOUND: production names nothing
    assert "error: no production model yet" in done.stderr and "--model m0003" in done.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"never loaded: no image to run it on")
    done = flywheel("predict", str(broken), "--root", str(root), "--model", str(weights), "--trust")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "skipped a.jpg: " in done.stderr
    assert f"error: no readable image in {broken} (1 file(s) skipped" in done.stderr.replace("\n", "")
    assert ".jpg" in done.stderr and not list(tmp_path.glob("broken-*"))  # no empty output folder left
    files = [broken / f"{n}.jpg" for n in "bcde"]
    for f in files:
        f.write_bytes(b"not a jpeg either")
    done = flywheel("predict", *map(str, files), "--root", str(root), "--model", str(weights), "--trust")
    said = done.stderr.replace("\n", "")
    assert done.returncode == 1 and f"in {files[0]}, {files[1]}, {files[2]} and 1 more (4 file(s)" in said, said
    empty = tmp_path / "notes"  # nothing that even looks like an image: nothing was skipped
    empty.mkdir()
    (empty / "readme.txt").write_text("no photos here")
    done = flywheel("predict", str(empty), "--root", str(root), "--model", str(weights), "--trust")
    said = done.stderr.replace("\n", "")
    assert done.returncode == 1 and f"no readable image in {empty} (no image file found)" in said, said


# --- through the real command, with a real tiny model --------------------------------------


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose production model m0001 is a real YOLOv8n trained at 32 px."""
    base = tmp_path_factory.mktemp("prelabel")
    root = init_data_root(base / "root", TINY)
    app = App(root)
    version = app.ingest(synthetic_batch(base / "b1", 8, seed=1), move=False).version
    assert version is not None
    result = app.train(version.id or 0)
    assert app.store.production() is not None, result.run.error
    return root


@pytest.fixture
def unlabeled(tmp_path: Path) -> Path:
    """Five new images (no labels) and one that does not decode."""
    batch = synthetic_batch(tmp_path / "gen", 5, seed=11)
    folder = tmp_path / "unlabeled"
    (batch / "images").rename(folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def flywheel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLYWHEEL, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # a real model trained once for the module (about a minute), then the real CLI
@pytest.mark.parametrize("fmt", ["yolo", "coco", "labelstudio", "cvat"])
def test_predict_writes_each_format_and_skips_the_unreadable_image(fmt, trained_root, unlabeled, tmp_path, data_root):
    out = tmp_path / "out"
    # conf 0.001: a model this small is unsure of everything; the test wants boxes to write
    done = flywheel(
        "predict", str(unlabeled), "--root", str(trained_root), "--format", fmt, "--conf", "0.001", "--out", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 images pre-labeled by m0001 (imgsz 32" in done.stdout  # the model's own training size
    assert "skipped broken.jpg: " in done.stdout and "not" in done.stdout.split("skipped broken.jpg: ")[1]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in unlabeled.glob("*.png"))
    boxes = int(done.stdout.split(" boxes -> ")[0].rsplit(" ", 1)[1])
    if fmt == "yolo":
        check_yolo(out, data_root, 5)
    elif fmt == "coco":
        check_coco(out, boxes)
    elif fmt == "labelstudio":
        check_labelstudio(out, "m0001", boxes)
    else:
        check_cvat(out, boxes)


@pytest.mark.slow  # a real model trained once for the module (about a minute), then the real CLI
def test_predict_refuses_a_non_empty_out_and_a_foreign_checkpoint_without_trust(trained_root, unlabeled, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    done = flywheel("predict", str(unlabeled), "--root", str(trained_root), "--out", str(tmp_path / "full"))
    assert done.returncode == 2 and "not empty" in done.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    foreign = tmp_path / "weights.pt"
    foreign.write_bytes(b"pickle")
    done = flywheel("predict", str(unlabeled), "--root", str(trained_root), "--model", str(foreign))
    assert done.returncode == 2 and "--trust" in done.stderr


@pytest.mark.slow  # a real model trained once for the module (about a minute), then the real CLI
def test_suggest_ranks_by_score_and_packages_the_top_k(trained_root, unlabeled, tmp_path):
    archive = tmp_path / "unlabeled.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(unlabeled.iterdir()):
            z.write(p, p.name)
    out = tmp_path / "next"
    done = flywheel(
        "suggest", str(archive), "--top", "2", "--root", str(trained_root), "--format", "cvat", "--out", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((out / "ranking.json").read_text())
    assert len(rows) == 5 and [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert set(rows[0]["why"]) == {"entropy", "band", "least_confidence", "boxes", "band_boxes", "max_conf"}
    assert rows[0]["source"] == f"{archive}:{rows[0]['image']}"
    with (out / "ranking.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["image"] for r in table] == [r["image"] for r in rows]
    package = out / "prelabels"
    assert sorted(p.name for p in (package / "images").iterdir()) == sorted(r["image"] for r in rows[:2])
    root = ET.parse(package / "annotations.xml").getroot()
    assert [i.get("name") for i in root.findall("image")] == [r["image"] for r in rows[:2]]
    assert "skipped broken.jpg" in done.stdout


@pytest.mark.slow  # a real model trained once for the module (about a minute), then the real CLI
def test_suggest_diverse_picks_k_from_one_pass_and_never_two_copies_of_an_image(trained_root, unlabeled, tmp_path):
    """Two copies of the image top-K ranks first look the same to the model: top-K takes both,
    diverse takes one (they share a cluster, and a cluster gives one image)."""
    top_out = tmp_path / "top"
    done = flywheel("suggest", str(unlabeled), "--top", "3", "--root", str(trained_root), "--out", str(top_out))
    assert done.returncode == 0, done.stdout + done.stderr
    first = json.loads((top_out / "ranking.json").read_text())[0]["image"]
    twin = first.replace(".png", "-twin.png")  # ties (a model this small is unsure of all) break by name
    (unlabeled / twin).write_bytes((unlabeled / first).read_bytes())
    out = tmp_path / "next"
    done = flywheel(
        "suggest", str(unlabeled), "--top", "3", "--pick", "diverse", "--root", str(trained_root), "--out", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "diverse 3 pre-labeled" in done.stdout
    rows = json.loads((out / "ranking.json").read_text())
    chosen = sorted((r for r in rows if r["pick"] is not None), key=lambda r: r["pick"])
    assert [r["pick"] for r in chosen] == [1, 2, 3] and [r["rank"] for r in chosen] == sorted(r["rank"] for r in chosen)
    assert len({first, twin} & {r["image"] for r in chosen}) == 1 and "warning" not in done.stderr
    top_again = tmp_path / "top-again"
    again = flywheel("suggest", str(unlabeled), "--top", "3", "--root", str(trained_root), "--out", str(top_again))
    assert again.returncode == 0, again.stdout + again.stderr
    top_rows = json.loads((top_again / "ranking.json").read_text())
    assert {first, twin} <= {r["image"] for r in top_rows if r["pick"] is not None}  # top-K: both
    assert sorted(p.name for p in (out / "prelabels" / "images").iterdir()) == sorted(r["image"] for r in chosen)
    with (out / "ranking.csv").open() as fh:
        assert [r["pick"] for r in csv.DictReader(fh)] == ["" if r["pick"] is None else str(r["pick"]) for r in rows]


@pytest.mark.slow  # a real model trained once for the module (about a minute)
def test_the_child_reports_what_the_head_saw_from_the_same_pass(trained_root, unlabeled, tmp_path):
    """Embeddings: one unit vector per image, all of one length, equal for equal pixels, and
    none asked for, none sent."""
    first = sorted(unlabeled.glob("*.png"))[0]
    (unlabeled / "twin.png").write_bytes(first.read_bytes())
    found = inputs.collect([unlabeled], tmp_path / "staging", 10**8, 10**9).images
    app = App(trained_root)
    production = app.store.production()
    assert production is not None
    checkpoint = app.registry.checkpoint(production)
    predictor = ChildPredictor(tmp_path / "config", tmp_path / "work")
    outcome = predictor.predict(PredictRequest(checkpoint, 0.01, 0.7, 0, 32, "cpu", 1, embed=True), found)
    vectors = outcome.embeddings
    assert sorted(vectors) == sorted(p.name for p in outcome.predictions) and len(vectors) == 6
    assert {len(v) for v in vectors.values()} == {64 + 128 + 256}  # yolov8n's three maps into the head
    assert all(abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors.values())
    assert vectors["twin.png"] == vectors[first.name] and len({tuple(v) for v in vectors.values()}) == 5
    plain = predictor.predict(PredictRequest(checkpoint, 0.01, 0.7, 0, 32, "cpu", 1), found)
    assert plain.embeddings == {} and [p.boxes for p in plain.predictions] == [p.boxes for p in outcome.predictions]


@pytest.mark.slow  # a real model trained once for the module (about a minute), then the real CLI
def test_a_checkpoint_that_does_not_load_fails_naming_its_log(trained_root, unlabeled, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    done = flywheel("predict", str(unlabeled), "--root", str(trained_root), "--model", str(bad), "--trust")
    assert done.returncode == 1 and "prediction failed" in done.stderr and "predict.log" in done.stderr
    assert list((trained_root / "runs").glob("predict-*/predict.log"))

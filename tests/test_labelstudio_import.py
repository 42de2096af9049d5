"""`--format labelstudio` pre-labels, imported into a real Label Studio on loopback.

tests/test_prelabel.py checks tasks.json by the fields Label Studio's import needs; here the
real server (`make labelstudio`: its own venv, .labelstudio/, since its Django must not meet
flywheel's dependencies) takes the file through its REST API and gives the predictions back:
model version, each box in percent with its label and score, and each image through the
`--image-prefix` URL that the predict command's help suggests (a local-files storage).

The server (tests/label_studio_server.py) runs with Label Studio's prediction validation on: a
region with an unknown from_name, label or type is refused with a 400, and the second test
proves it is, or the first one's import would prove nothing.

Slow (the server migrates a fresh SQLite database on start, about a minute on two cores):
`make test-slow`, which installs Label Studio first.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from flywheel.prelabel import writers
from tests.label_studio_server import Server, running
from tests.test_prelabel import NAMES, fixed_predictions

pytestmark = pytest.mark.slow

BATCH = "batch7"  # the folder under the local-files root that predict wrote
PREFIX = f"/data/local-files/?d={BATCH}/"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


def labeling_config(names: list[str]) -> str:
    """The config the writer's from_name/to_name ("label" on "image") and labels fit."""
    labels = "".join(f"<Label value={quoteattr(n)}/>" for n in names)
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="label" toName="image">{labels}</RectangleLabels></View>'
    )


def new_project(server: Server, title: str) -> int:
    project = server.ok("POST", "/api/projects", {"title": title, "label_config": labeling_config(NAMES)})
    return int(project["id"])


def test_the_predictions_import_with_their_model_boxes_scores_and_images(label_studio: Server, tmp_path: Path) -> None:
    predictions = fixed_predictions(tmp_path / "src")
    out = label_studio.files / BATCH
    tasks = json.loads(writers.write("labelstudio", out, predictions, NAMES, "m0007", image_prefix=PREFIX).read_text())
    project = new_project(label_studio, "flywheel pre-labels")
    imported = label_studio.ok("POST", f"/api/projects/{project}/import", tasks)
    assert (imported["task_count"], imported["prediction_count"]) == (3, 3), imported
    # The images come through the prefix once the folder is a local-files storage of the project.
    storage = {"project": project, "path": str(out), "title": BATCH, "use_blob_urls": False}
    label_studio.ok("POST", "/api/storages/localfiles", storage)

    listed = label_studio.ok("GET", f"/api/tasks?project={project}")
    ids = sorted(t["id"] for t in listed["tasks"])
    assert len(ids) == 3
    got = {}
    for task_id in ids:
        task = label_studio.ok("GET", f"/api/tasks/{task_id}")
        got[task["data"]["image"]] = task
    sources = {f"{PREFIX}images/{p.name}": p for p in predictions}
    assert set(got) == set(sources)
    for image, task in got.items():
        prediction = sources[image]
        (stored,) = task["predictions"]
        assert stored["model_version"] == "m0007"
        assert stored["score"] == pytest.approx(prediction.score, abs=1e-5)
        assert task["predictions_model_versions"] == "m0007"
        served = label_studio.ok("GET", image)
        assert served == prediction.source.read_bytes(), image
        boxes = []
        for r in stored["result"]:
            assert (r["type"], r["from_name"], r["to_name"]) == ("rectanglelabels", "label", "image"), r
            assert (r["original_width"], r["original_height"]) == (64, 64), r
            v = r["value"]
            boxes.append((v["rectanglelabels"], r["score"], [v["x"], v["y"], v["width"], v["height"]]))
        expected = {  # fixed_predictions' boxes on 64x64 images, in percent; the second one clipped
            predictions[0].name: [
                (["red"], 0.9, [6.25, 9.375, 40.625, 53.125]),
                (["blue"], 0.4, [46.875, 46.875, 53.125, 53.125]),
            ],
            predictions[1].name: [(["blue"], 0.6, [15.625, 15.625, 15.625, 15.625])],
            predictions[2].name: [],
        }[prediction.name]
        assert len(boxes) == len(expected), (image, boxes)
        for (labels, score, xywh), (want_labels, want_score, want_xywh) in zip(boxes, expected, strict=True):
            assert labels == want_labels and score == pytest.approx(want_score)
            assert xywh == pytest.approx(want_xywh)


def test_label_studio_refuses_predictions_that_do_not_fit_the_config(label_studio: Server, tmp_path: Path) -> None:
    """The validation is on: what the first test's import accepted was checked, not just stored."""
    predictions = fixed_predictions(tmp_path / "src")
    path = writers.write("labelstudio", tmp_path / "ls", predictions, NAMES, "m0007")
    tasks = json.loads(path.read_text())[:1]
    project = new_project(label_studio, "refusals")
    for field, value, says in (
        ("from_name", "labels", "'from_name' 'labels' not found"),
        ("type", "rectangle", "does not match expected type 'rectanglelabels'"),
        ("rectanglelabels", ["green"], "valid labels: ['red', 'blue']"),
    ):
        broken = copy.deepcopy(tasks)
        region = broken[0]["predictions"][0]["result"][0]
        (region["value"] if field == "rectanglelabels" else region)[field] = value
        status, answer = label_studio.call("POST", f"/api/projects/{project}/import", broken)
        assert status == 400 and says in json.dumps(answer), (field, status, answer)
    status, answer = label_studio.call("POST", f"/api/projects/{project}/import", tasks)
    assert status == 201 and answer["prediction_count"] == 1, answer

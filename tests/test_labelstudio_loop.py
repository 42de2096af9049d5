"""The Label Studio round trip against a real Label Studio on loopback (tests/label_studio_server.py).

Push three images with their pre-annotations, annotate through Label Studio's API as a person's
browser does (one box, one empty image, one skip), pull, ingest: a dataset version with exactly
those images and boxes. Then stop Label Studio (the daemon's pull job says degraded, with the
reason), start it again on the same port and data, rebuild the App: nothing is pulled twice, a
relabel comes as a later batch, and an unknown class and a box out of the image are quarantined
with reasons that name them. Slow: Label Studio starts in 20-60 s, twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.app import App, init_data_root
from flywheel.core.errors import LabelingToolUnavailable
from flywheel.core.labeling import FROM_NAME, TO_NAME
from flywheel.core.prediction import Box, Prediction
from flywheel.labeling.labelstudio import SHA_KEY
from flywheel.service.health import Degraded
from flywheel.service.label_pull import LabelPullJob
from tests.label_studio_server import TOKEN, Server, running
from tests.test_prelabel import NAMES, fixed_predictions

pytestmark = pytest.mark.slow
PROJECT = "flywheel loop"


@pytest.fixture
def label_studio(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "label-studio"
    home.mkdir()
    with running(home) as server:
        yield server


def data_root(tmp_path: Path, server: Server) -> Path:
    (tmp_path / "token").write_text(TOKEN + "\n")
    root = init_data_root(tmp_path / "root")
    config = (root / "config.toml").read_text()
    config = config.replace('url = ""                           # e.g.', f'url = "{server.url}" # e.g.')
    config = config.replace('project = ""', f'project = "{PROJECT}"')
    config = config.replace('token_file = ""', f'token_file = "{tmp_path / "token"}"')
    (root / "config.toml").write_text(config)
    return root


def annotate(server: Server, task: int, boxes: list[tuple[str, float, float, float, float]]) -> dict[str, Any]:
    """A finished annotation as the labeling page posts it: percent boxes, with the image size."""
    result = [
        {
            "type": "rectanglelabels",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": 64,
            "original_height": 64,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
        }
        for label, x, y, w, h in boxes
    ]
    return dict(server.ok("POST", f"/api/tasks/{task}/annotations", {"result": result}))


def stored_labels(app: App) -> dict[str, str]:
    """The newest version's label text by image sha256."""
    version = app.store.latest_version()
    assert version is not None
    return {sha: app.objects.path(i.label_sha256).read_text() for sha, i in app.store.manifest(version.id).items()}


def test_push_annotate_pull_restart_relabel(label_studio: Server, tmp_path: Path) -> None:
    root = data_root(tmp_path, label_studio)
    predictions = fixed_predictions(tmp_path / "src")
    chosen = [(p, p.source.read_bytes()) for p in predictions]
    labeling = App(root).labeling()

    pushed = labeling.push(NAMES, "m0007", chosen)
    assert len(pushed.tasks) == 3 and pushed.already == []
    project = label_studio.ok("GET", f"/api/projects/{labeling.tool.project_key().rsplit('/', 1)[-1]}")
    assert project["title"] == PROJECT and '<Label value="red"/><Label value="blue"/>' in project["label_config"]
    tasks = {}
    for task_id in pushed.tasks:
        task = label_studio.ok("GET", f"/api/tasks/{task_id}")
        tasks[task["data"][SHA_KEY]] = task
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "m0007"
        assert label_studio.ok("GET", task["data"]["image"]) in [image for _p, image in chosen]
    first, second, third = (tasks[_sha(image)]["id"] for _p, image in chosen)
    assert labeling.push(NAMES, "m0007", chosen).already == [p.name for p in predictions]  # never twice

    annotate(label_studio, first, [("red", 10.0, 20.0, 30.0, 40.0)])
    annotate(label_studio, second, [])  # looked at, nothing there: a negative image
    label_studio.ok("POST", f"/api/tasks/{third}/annotations", {"result": [], "was_cancelled": True})  # a skip

    pulled = labeling.pull()
    assert (sorted(pulled.tasks), pulled.relabels, pulled.waiting) == (sorted([first, second]), [], 1)
    assert labeling.pull().batch is None  # nothing new: nothing written
    app = App(root)
    result = app.ingest(root / "inbox" / str(pulled.batch), move=True)
    assert (result.accepted, result.quarantined) == (2, [])
    assert stored_labels(app) == {
        _sha(chosen[0][1]): "0 0.250000 0.400000 0.300000 0.400000\n",
        _sha(chosen[1][1]): "",
    }

    # Label Studio goes away: the daemon's pull job is degraded with the reason, not dead.
    label_studio.stop()
    degraded, woken = Degraded(), []
    job = LabelPullJob(App(root).labeling().pull, degraded, lambda: woken.append(1))
    job()
    assert "cannot be reached" in degraded.reason and label_studio.url in degraded.reason
    with pytest.raises(LabelingToolUnavailable, match=r"labelstudio\.url"):
        App(root).labeling().pull()

    label_studio.start()  # same port, same data folder
    job()
    assert degraded.reason == "" and woken == []  # back, and nothing was pulled twice
    labeling = App(root).labeling()  # flywheel restarted too
    assert labeling.pull().batch is None

    # A relabel, an unknown class and a box out of the image, in one later batch.
    (annotation,) = label_studio.ok("GET", f"/api/tasks/{first}")["annotations"]
    label_studio.ok("PATCH", f"/api/annotations/{annotation['id']}", {"result": _result("blue", 50, 50, 25, 25)})
    annotate(label_studio, third, [("green", 10.0, 10.0, 20.0, 20.0)])
    fourth_prediction = Prediction("fourth.png", predictions[2].source, 64, 64, (Box(0, 0.5, 1, 1, 9, 9),))
    fourth_image = _other_image(tmp_path)
    (fourth,) = labeling.push(NAMES, "m0008", [(fourth_prediction, fourth_image)]).tasks
    annotate(label_studio, fourth, [("red", 90.0, 10.0, 30.0, 20.0)])  # its right edge at 120%

    later = labeling.pull()
    assert (later.relabels, sorted(later.tasks), later.unknown_labels) == ([first], [third, fourth], {third: ["green"]})
    assert later.batch != pulled.batch
    result = app.ingest(root / "inbox" / str(later.batch), move=True)
    assert (result.accepted, result.relabelled) == (1, 1)
    reasons = dict(zip(result.codes, (why for _f, why in result.quarantined), strict=True))
    assert set(reasons) >= {"label_unknown_class", "label_out_of_range"}, result.quarantined
    assert "class id 2 is unknown" in reasons["label_unknown_class"]
    assert "outside [0, 1]" in reasons["label_out_of_range"] and "x1=1.2" in reasons["label_out_of_range"]
    assert stored_labels(app)[_sha(chosen[0][1])] == "1 0.625000 0.625000 0.250000 0.250000\n"
    assert labeling.pull().batch is None


def _result(label: str, x: float, y: float, w: float, h: float) -> list[dict[str, Any]]:
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}
    kind = {"type": "rectanglelabels", "from_name": FROM_NAME, "to_name": TO_NAME}
    return [{**kind, "original_width": 64, "original_height": 64, "value": value}]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _other_image(tmp_path: Path) -> bytes:
    from PIL import Image

    path = tmp_path / "fourth.png"
    Image.new("RGB", (64, 64), (17, 200, 90)).save(path)
    return path.read_bytes()

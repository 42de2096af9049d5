"""The Label Studio round trip's "done when": a labeled task goes from Label Studio to a
promoted model with no file touched by hand; and the same pull set off by Label Studio's webhook.

A real Label Studio on loopback (tests/label_studio_server.py) and a real `flywheel run` child
process, tiny trainings. The data root starts as a team's would: a first labeled batch makes
m0001, production. Then only commands and Label Studio's API: `flywheel label push` sends new
images with m0001's boxes as pre-annotations, the test annotates each task through the API as
the labeling page does, and the daemon's own poll pulls them, ingests them into a version,
trains and promotes m0002. Nothing is written into the inbox but by the daemon.
Slow: Label Studio starts in 20-60 s, and two tiny trainings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import drop, synthetic_batch
from flywheel.core.config import LABEL_STUDIO_HOOK
from flywheel.core.domain import ModelStatus, RunState, StartKind
from flywheel.core.labeling import FROM_NAME, TO_NAME
from flywheel.core.records import Batch
from flywheel.labeling.labelstudio import NAME_KEY, SHA_KEY
from tests.conftest import TINY_CONFIG, free_port
from tests.label_studio_server import TOKEN, Server, running
from tests.metrics_scrape import scrape
from tests.test_end_to_end import wait_for
from tests.test_prelabel import NAMES, fixed_predictions

pytestmark = pytest.mark.slow
FLYWHEEL = [sys.executable, "-m", "flywheel"]
PROJECT = "flywheel daemon loop"
LABELED = 4  # images pushed and annotated; also min_new_images, so the daemon trains once on all of them


@pytest.fixture
def label_studio(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "label-studio"
    home.mkdir()
    with running(home) as server:
        yield server


def config(server: Server, token_file: Path) -> str:
    """The tiny test config; any candidate passes the gate (two-epoch scores at 64 px are noise,
    as in tests/test_end_to_end.py); the daemon polls Label Studio every second."""
    text = TINY_CONFIG.format(port=free_port()).replace(
        "debounce_seconds = 0.0", f"debounce_seconds = 0.0\nmin_new_images = {LABELED}"
    )
    return text + (
        "\n[gate]\ntolerance = 1.0\nmax_class_drop = 1.0\n"
        f'\n[labelstudio]\nurl = "{server.url}"\ntoken_file = "{token_file}"\nproject = "{PROJECT}"\n'
        "poll_seconds = 1.0\ntimeout_seconds = 60.0\n"
    )


@pytest.fixture
def daemon(tmp_path: Path, label_studio: Server) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    root = init_data_root(tmp_path / "root", config(label_studio, token))
    log = (tmp_path / "daemon.log").open("wb")
    process = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield root, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        print((tmp_path / "daemon.log").read_text())  # shown by pytest when the test fails


Box = tuple[str, float, float, float, float]


def truth(label_file: Path, names: list[str]) -> list[Box]:
    """A YOLO label file's boxes as (class name, cx, cy, w, h), sorted."""
    rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
    return sorted((names[int(c)], float(x), float(y), float(w), float(h)) for c, x, y, w, h in rows)


def annotation(boxes: list[Box]) -> dict[str, object]:
    """A finished annotation as the labeling page posts it: percent of the image, top-left origin."""
    result = [
        {
            "type": "rectanglelabels",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": 64,
            "original_height": 64,
            "image_rotation": 0,
            "value": {
                "x": 100 * (cx - w / 2),
                "y": 100 * (cy - h / 2),
                "width": 100 * w,
                "height": 100 * h,
                "rotation": 0,
                "rectanglelabels": [name],
            },
        }
        for name, cx, cy, w, h in boxes
    ]
    return {"result": result}


def test_a_task_labeled_in_label_studio_becomes_the_promoted_model(daemon, label_studio, tmp_path):
    root, process = daemon
    timings: dict[str, float] = {}
    app = App(root)

    # The team's first labeled batch: m0001, production (it pre-labels what goes to Label Studio).
    t0 = time.monotonic()
    drop(synthetic_batch(tmp_path / "staging" / "first", 16, seed=1), root / "inbox")
    first = wait_for("m0001 in production", lambda: app.store.production(), process, timeout=600)
    timings["seed_batch_to_m0001_s"] = time.monotonic() - t0
    assert first.id == 1
    names = list(first.class_names)

    # New images, pushed with m0001's boxes as pre-annotations.
    captured = synthetic_batch(tmp_path / "captured", LABELED, seed=7)
    t0 = time.monotonic()
    push = subprocess.run(
        [*FLYWHEEL, "label", "push", str(captured / "images"), "--top", str(LABELED), "--root", str(root), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    timings["label_push_s"] = time.monotonic() - t0
    assert push.returncode == 0, push.stderr
    pushed = json.loads(push.stdout)
    assert pushed["schema"] == "flywheel.label.push/1" and pushed["model"] == "m0001"
    assert pushed["classes"] == names and pushed["already"] == [] and len(pushed["tasks"]) == LABELED

    # A person labels each task in Label Studio: the true boxes of the image, drawn on the page.
    expected: dict[str, list[Box]] = {}
    t0 = time.monotonic()
    for row in pushed["tasks"]:
        task = label_studio.ok("GET", f"/api/tasks/{row['task']}")
        assert task["data"][NAME_KEY] == row["image"]
        assert [p["model_version"] for p in task["predictions"]] == ["m0001"]
        boxes = truth(captured / "labels" / f"{Path(row['image']).stem}.txt", names)
        assert label_studio.ok("GET", task["data"][TO_NAME]) == (captured / "images" / row["image"]).read_bytes()
        label_studio.ok("POST", f"/api/tasks/{row['task']}/annotations", annotation(boxes))
        expected[task["data"][SHA_KEY]] = boxes

    # Nothing else: the daemon's poll pulls them, ingests, trains and promotes m0002.
    def promoted() -> object | None:
        production = app.store.production()
        return production if production is not None and production.id != first.id else None

    model = wait_for("a model trained on the labels in production", promoted, process, timeout=600)
    timings["annotated_to_promoted_s"] = time.monotonic() - t0

    version = app.store.version(model.version_id)
    before, after = app.store.manifest(first.version_id), app.store.manifest(version.id)
    assert set(after) - set(before) == set(expected)  # exactly the labeled images, nothing else
    assert all(after[sha].label_sha256 == item.label_sha256 for sha, item in before.items())
    stored = {sha: truth(app.objects.path(after[sha].label_sha256), list(version.class_names)) for sha in expected}
    for sha, boxes in expected.items():
        assert [b[0] for b in stored[sha]] == [b[0] for b in boxes]
        assert [b[1:] for b in stored[sha]] == [pytest.approx(b[1:], abs=2e-6) for b in boxes]
    pulled = [b for b in app.store.batches() if b.name.startswith("labelstudio-")]
    assert sum(b.images_new for b in pulled) == LABELED and all(b.state == "ingested" for b in pulled)
    assert not any((root / "inbox").glob("labelstudio-*"))  # ingested and moved to inbox/.done

    run = app.store.run(model.run_id)
    assert run.state == RunState.SUCCEEDED and run.start_kind == StartKind.WARM and run.start_model_id == first.id
    assert model.status == ModelStatus.PRODUCTION and model.parent_model_id == first.id
    assert app.store.model(first.id).status == ModelStatus.RETIRED
    assert json.loads((root / "production" / "model.json").read_text())["id"] == f"m{model.id:04d}"

    pull = subprocess.run([*FLYWHEEL, "label", "pull", "--root", str(root), "--json"], capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    again = json.loads(pull.stdout)
    assert (again["schema"], again["batch"], again["waiting"]) == ("flywheel.label.pull/1", None, 0)  # none twice
    print("label studio -> daemon timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))
    print("pulled batches:", [(b.name, b.images_new) for b in pulled], "version", version.id, "model", model.id)


# --- the webhook: Label Studio posts, the daemon pulls at once ---------------------------------


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[tuple[Server, Path, int, subprocess.Popen[bytes]]]:
    """Label Studio allowed to post to loopback (its SSRF guard refuses private addresses by
    default), and a daemon that pulls on its webhook alone (poll_seconds = 0) and never trains."""
    home = tmp_path / "label-studio"
    home.mkdir()
    server = Server(free_port(), home, home / "files", home / "server.log", {"SSRF_PROTECTION_ENABLED": "false"})
    port = free_port()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    text = TINY_CONFIG.format(port=port).replace("debounce_seconds = 0.0", "debounce_seconds = 0.0\nmin_new_images = 0")
    text += (
        f'\n[labelstudio]\nurl = "{server.url}"\ntoken_file = "{token}"\nproject = "{PROJECT}"\npoll_seconds = 0.0\n'
        f'webhook_url = "http://127.0.0.1:{port}{LABEL_STUDIO_HOOK}"\n'
    )
    root = init_data_root(tmp_path / "root", text)
    log = (tmp_path / "daemon.log").open("wb")
    process = None
    try:
        server.start()
        process = subprocess.Popen([*FLYWHEEL, "run", "--root", str(root)], stdout=log, stderr=subprocess.STDOUT)
        yield server, root, port, process
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        server.stop()
        print((tmp_path / "daemon.log").read_text())


def test_label_studios_webhook_pulls_each_annotation_at_once(hooked, tmp_path):
    server, root, port, process = hooked
    app = App(root)
    # The daemon's first pull (at start) found no project yet: degraded, and the next poll is
    # SAFETY_POLL_SECONDS (300 s) away, far past this test's deadlines: only the webhook pulls.
    wait_for("the start-up pull", lambda: degraded(port), process, timeout=120)
    chosen = [(p, p.source.read_bytes()) for p in fixed_predictions(tmp_path / "src")]
    pushed = app.labeling().push(NAMES, "m0007", chosen)  # makes the project, and its webhook
    project = int(app.labeling().tool.project_key().rsplit("/", 1)[-1])
    hooks = server.ok("GET", f"/api/webhooks?project={project}")
    assert [h["url"] for h in hooks] == [f"http://127.0.0.1:{port}{LABEL_STUDIO_HOOK}"]

    latencies = []
    for count, task in enumerate(pushed.tasks[:2], start=1):
        t0 = time.monotonic()
        server.ok("POST", f"/api/tasks/{task}/annotations", annotation([("red", 0.5, 0.5, 0.25, 0.25)]))
        batches = wait_for(f"annotation {count} pulled and ingested", lambda n=count: pulled(app, n), process, 60)
        latencies.append(time.monotonic() - t0)
        assert batches[-1].images_new == 1
    manifest = app.store.manifest(app.store.latest_version().id)
    assert {sha for sha in manifest} == {_sha(image) for _p, image in chosen[:2]}
    assert app.store.runs() == []  # min_new_images = 0: nothing trains here
    print("webhook: annotation -> batch ingested (s):", [round(x, 2) for x in latencies])


def degraded(port: int) -> bool:
    """flywheel_degraded is 1 on the daemon's /metrics (False while it does not answer yet)."""
    try:
        return scrape(port).get(("flywheel_degraded", ())) == 1
    except OSError:
        return False


def pulled(app: App, count: int) -> list[Batch] | None:
    """The batches pulled from Label Studio, once there are `count` and all are ingested."""
    batches = [b for b in app.store.batches() if b.name.startswith("labelstudio-")]
    return batches if len(batches) == count and all(b.state == "ingested" for b in batches) else None


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

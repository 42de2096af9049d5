"""The labeling round trip's rules on in-memory twins (tests/labeling_fakes.py), the pull marks
in a real database, the `[labelstudio]` config errors and the daemon's pull job; the real
Label Studio round trip is tests/test_labelstudio_loop.py (slow)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from flywheel.app import App, init_data_root
from flywheel.core.config import LABEL_STUDIO_HOOK, LabelStudioConfig, parse_toml
from flywheel.core.errors import ConfigError
from flywheel.core.labeling import PullMark, PullResult, Region, labeling_config, yolo_label
from flywheel.core.prediction import Box, Prediction
from flywheel.flow.labeling import Labeling
from flywheel.ingest.drop import InboxFolder
from flywheel.labeling.setup import read_token
from flywheel.service.health import Degraded
from flywheel.service.http import HttpServer
from flywheel.service.label_pull import LabelPullJob
from flywheel.store.label_pulls import StoredLabelPulls
from tests.labeling_fakes import MemoryInbox, MemoryLabelingTool, MemoryLabelPulls

NAMES = ["red", "blue"]
RED = Region("red", 10, 20, 30, 40)


def pushed(tool: MemoryLabelingTool, count: int) -> Labeling:
    labeling = Labeling(tool, MemoryLabelPulls(), MemoryInbox())
    chosen = [
        (Prediction(f"i{i}.png", Path(f"i{i}.png"), 64, 32, (Box(0, 0.8, 0, 0, 32, 16),)), b"img%d" % i)
        for i in range(count)
    ]
    result = labeling.push(NAMES, "m0003", chosen)
    assert result.tasks == list(range(1, count + 1))
    return labeling


def test_push_makes_the_project_from_the_class_map_and_sends_each_image_once() -> None:
    tool = MemoryLabelingTool()
    labeling = pushed(tool, 2)
    assert tool.project_made and tool.names == NAMES
    task = tool.pushed[0]
    assert (task.model_version, task.score) == ("m0003", 0.8)
    assert task.regions == (Region("red", 0.0, 0.0, 50.0, 50.0, 0.8),)
    again = labeling.push(NAMES, "m0003", [(Prediction("i0.png", Path("i0.png"), 64, 32), b"img0")])
    assert (again.tasks, again.already) == ([], ["i0.png"])


def test_a_pull_takes_each_finished_annotation_once_and_a_later_edit_as_a_relabel() -> None:
    tool = MemoryLabelingTool()
    labeling = pushed(tool, 3)
    first = tool.annotate(1, [RED])
    tool.annotate(2, [])  # nothing there: a negative
    tool.annotate(3, [], cancelled=True)  # a skip: not a negative, not pulled
    result = labeling.pull()
    assert (result.tasks, result.relabels, result.waiting) == ([1, 2], [], 1)
    files = labeling._inbox.batches[str(result.batch)]  # type: ignore[attr-defined]
    assert files["labels/t1-i0.txt"] == b"0 0.250000 0.400000 0.300000 0.400000\n"
    assert files["labels/t2-i1.txt"] == b"" and "labels/t3-i2.txt" not in files
    assert files["images/t1-i0.png"] == b"img0"
    assert files["data.yaml"] == b'names:\n  0: "red"\n  1: "blue"\n'
    assert labeling.pull().batch is None

    tool.annotate(1, [Region("blue", 0, 0, 10, 10)], edit=first)
    tool.annotate(3, [RED])  # finished after the skip
    later = labeling.pull()
    assert (later.relabels, later.tasks, later.waiting) == ([1], [3], 0)
    assert later.batch != result.batch
    assert labeling.pull().batch is None


def test_unknown_labels_get_ids_past_the_class_map_and_boxes_are_not_clipped() -> None:
    text, unknown = yolo_label([Region("green", 90, 0, 30, 10), Region("red", 0, 0, 10, 10)], NAMES)
    assert unknown == ["green"]
    assert text == "2 1.050000 0.050000 0.300000 0.100000\n0 0.050000 0.050000 0.100000 0.100000\n"
    assert '<Label value="a &quot;b&quot;"/>' in labeling_config(['a "b"'])


def test_pull_marks_survive_a_new_app(tmp_path: Path) -> None:
    root = init_data_root(tmp_path / "root")
    StoredLabelPulls(App(root).engine).record("p", [PullMark(7, 70, "2030-01-01", "labelstudio-a")])
    pulls = StoredLabelPulls(App(root).engine)
    pulls.record("p", [PullMark(7, 71, "2030-01-02", "labelstudio-b"), PullMark(8, 80, "t", "labelstudio-b")])
    assert StoredLabelPulls(App(root).engine).marks("p") == {
        7: PullMark(7, 71, "2030-01-02", "labelstudio-b"),
        8: PullMark(8, 80, "t", "labelstudio-b"),
    }
    assert pulls.marks("other") == {}


def test_the_inbox_drop_is_whole_with_its_marker_and_never_twice(tmp_path: Path) -> None:
    inbox = InboxFolder(tmp_path / "inbox", tmp_path / "inbox" / ".done", "READY")
    (tmp_path / "inbox").mkdir()
    assert inbox.drop("b", {"images/a.png": b"x", "labels/a.txt": b""})
    assert sorted(p.name for p in (tmp_path / "inbox" / "b").iterdir()) == ["READY", "images", "labels"]
    assert not inbox.drop("b", {"images/a.png": b"y"})
    assert (tmp_path / "inbox" / "b" / "images" / "a.png").read_bytes() == b"x"
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["b"]  # no staging folder left


def test_the_pull_job_degrades_by_its_own_source_and_recovers() -> None:
    tool = MemoryLabelingTool()
    labeling = pushed(tool, 1)
    degraded, woken = Degraded(), []
    job = LabelPullJob(labeling.pull, degraded, lambda: woken.append(1))
    degraded.set("disk full")  # the work loop's own reason stays its own
    tool.down = True
    job()
    assert "cannot be reached" in degraded.reason and "disk full" in degraded.reason
    degraded.clear()
    assert "cannot be reached" in degraded.reason and not degraded.check().ok
    tool.down = False
    tool.annotate(1, [RED])
    job()
    assert degraded.reason == "" and degraded.check().ok and woken == [1]


def test_config_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"key `labelstudio.url`"):
        parse_toml('[labelstudio]\nurl = "ftp://x"\n')
    with pytest.raises(ConfigError, match=r"key `labelstudio.poll_seconds`"):
        parse_toml("[labelstudio]\npoll_seconds = -1\n")
    with pytest.raises(ConfigError, match=r"key `labelstudio.webhook_url`.*/hooks/labelstudio"):
        parse_toml('[labelstudio]\nwebhook_url = "http://flywheel:9108/"\n')
    hook = "http://flywheel:9108/hooks/labelstudio"
    assert parse_toml(f'[labelstudio]\nwebhook_url = "{hook}"\n').labelstudio.webhook_url == hook
    monkeypatch.delenv("LS_TOKEN_FOR_TEST", raising=False)
    with pytest.raises(ConfigError, match=r"key `labelstudio.token_env`.*LS_TOKEN_FOR_TEST"):
        read_token(LabelStudioConfig(token_env="LS_TOKEN_FOR_TEST"), tmp_path)
    monkeypatch.setenv("LS_TOKEN_FOR_TEST", " secret \n")
    assert read_token(LabelStudioConfig(token_env="LS_TOKEN_FOR_TEST"), tmp_path) == "secret"
    with pytest.raises(ConfigError, match=r"key `labelstudio.token_file`") as caught:
        read_token(LabelStudioConfig(token_file="missing"), tmp_path)
    assert "secret" not in str(caught.value)
    root = init_data_root(tmp_path / "root")
    with pytest.raises(ConfigError, match=r"key `labelstudio.url` is empty"):
        App(root).labeling()


def post(url: str) -> int:
    request = urllib.request.Request(url, data=json.dumps({"action": "ANNOTATION_CREATED"}).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_webhook_registers_once_and_each_post_pulls_at_once() -> None:
    """A POST on the daemon's hook path pulls (its body unread); another path is 404; the
    project's webhook is registered by the push and by the job, once."""
    tool = MemoryLabelingTool()
    hook_url = f"http://127.0.0.1:9/{LABEL_STUDIO_HOOK.lstrip('/')}"
    labeling = Labeling(tool, MemoryLabelPulls(), MemoryInbox(), hook_url)
    labeling.push(NAMES, "m0003", [(Prediction("i.png", Path("i.png"), 64, 32), b"img")])
    assert tool.webhooks == [hook_url]
    woken: list[int] = []
    job = LabelPullJob(labeling.pull, Degraded(), lambda: woken.append(1), labeling.ensure_webhook)
    server = HttpServer("127.0.0.1", 0, CollectorRegistry(), {}, hooks={LABEL_STUDIO_HOOK: job.request})
    try:
        tool.annotate(1, [RED])
        assert post(f"http://127.0.0.1:{server.port}{LABEL_STUDIO_HOOK}") == 202
        deadline = time.monotonic() + 10
        while not woken:
            assert time.monotonic() < deadline, "the webhook's post did not pull"
            time.sleep(0.01)
        assert len(labeling._inbox.batches) == 1  # type: ignore[attr-defined]
        assert tool.webhooks == [hook_url]  # the job found it registered
        assert post(f"http://127.0.0.1:{server.port}/hooks/other") == 404
    finally:
        server.stop()


def test_posts_during_a_pull_make_one_more_pull_after_it() -> None:
    """A pull may have read the tasks before the annotation a post announces: posts that come
    while it runs make exactly one pull after it, never a lost one nor one each."""
    started, release, done = threading.Event(), threading.Event(), threading.Event()
    pulls: list[int] = []

    def pull() -> PullResult:
        pulls.append(1)
        if len(pulls) == 1:
            started.set()
            release.wait(10)
        else:
            done.set()
        return PullResult()

    job = LabelPullJob(pull, Degraded(), lambda: None)
    job.request()
    assert started.wait(10)
    job.request()
    job.request()
    release.set()
    assert done.wait(10)
    assert len(pulls) == 2

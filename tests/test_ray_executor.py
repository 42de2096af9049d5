"""Trainings as Ray jobs on a real two-node Ray cluster (tests/ray_cluster.py): the job lands
on the trainer node, its events come through runs/<run>/events.jsonl, cancel and the CANCEL
file stop it through Ray, a failing child is a TrainingError with its log's tail, a restarted
daemon attaches to its run's job instead of submitting another, and an unreachable cluster
is a clear error at once."""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flywheel.core.errors import DataRootError, ExecutorUnavailable, TrainingCancelled, TrainingError
from flywheel.core.events import ChildCancelled, EpochEnded, Placed
from flywheel.core.events import TrainingEvent as Event
from flywheel.core.spec import TrainSpec
from flywheel.training.local_trainer import request_cancel
from flywheel.training.ray_client import EVENTS_FILE, check_shared_root, connect
from flywheel.training.ray_jobs import RayJobTrainer
from tests.conftest import free_port
from tests.ray_cluster import TRAINER_RESOURCE, RayCluster, ray_cluster_fixture, trainer_node_ids  # noqa: F401
from tests.training_support import dataset, spec_for


def trainer(cluster: RayCluster, tmp_path: Path, prefix: str = "") -> RayJobTrainer:
    """A trainer of its own per test: the prefix keeps submission ids apart on the shared cluster."""
    return RayJobTrainer(
        cluster.address,
        tmp_path / "ultralytics",
        resources={TRAINER_RESOURCE: 1},
        prefix=prefix or f"t{secrets.token_hex(3)}-",
        stop_wait_seconds=60,
        poll_seconds=0.2,
    )


def tiny_spec(tmp_path: Path, epochs: int = 1) -> TrainSpec:
    data_yaml = dataset(tmp_path / "data", ["a", "b"])
    spec = spec_for(data_yaml, tmp_path / "runs" / "r0001", "yolov8n.yaml", False, ["a", "b"], threads=1)
    return dataclasses.replace(spec, epochs=epochs, evaluate=[])


def jobs_of(cluster: RayCluster, prefix: str) -> list[str]:
    client = connect(cluster.address)
    return sorted(j.submission_id for j in client.list_jobs() if (j.submission_id or "").startswith(prefix))


def wait_for(what: str, check: Any, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def test_an_unreachable_cluster_is_a_clear_error_at_once(tmp_path):
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    with pytest.raises(ExecutorUnavailable, match=f"cannot reach the Ray cluster's job API at {address}") as error:
        RayJobTrainer(address, tmp_path).run(tiny_spec(tmp_path), lambda _e: None)
    assert time.monotonic() - began < 10
    assert "ray start --head" in str(error.value)
    assert not (tmp_path / "runs" / "r0001" / "spec.json").exists()  # nothing prepared for a job that cannot run


@pytest.mark.slow  # a real two-node Ray cluster (about 20 s to start, once per session)
def test_the_shared_root_check_runs_on_a_trainer_node(ray_cluster, tmp_path):
    client = connect(ray_cluster.address)
    node = check_shared_root(client, tmp_path, {TRAINER_RESOURCE: 1})
    assert node in trainer_node_ids(ray_cluster)
    assert list((tmp_path / ".flywheel-node-check").iterdir()) == []  # its token files cleaned up
    with pytest.raises(DataRootError, match="cannot write the data root check files"):
        check_shared_root(client, Path("/proc/no-such-root"), {TRAINER_RESOURCE: 1})


@pytest.mark.slow  # a real training, twice: about a minute on 2 shared cores
def test_a_training_runs_as_a_ray_job_on_the_trainer_node_and_a_restarted_daemon_reattaches(ray_cluster, tmp_path):
    spec = tiny_spec(tmp_path, epochs=2)
    first = trainer(ray_cluster, tmp_path)
    seen: list[Event] = []
    events = first.run(spec, seen.append)
    assert seen == events
    (placed,) = [e for e in events if isinstance(e, Placed)]  # where: said once the job's node is known
    assert placed.executor == "ray" and placed.submission_id == f"{first.prefix}r0001"
    assert placed.node in trainer_node_ids(ray_cluster)
    events = [e for e in events if not isinstance(e, Placed)]  # the child's own events
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "trained"
    assert [e.epoch for e in events if isinstance(e, EpochEnded)] == [1, 2]
    assert first.job is not None and first.job.submission_id == f"{first.prefix}r0001"
    assert first.job.status == "SUCCEEDED" and first.job.node_id in trainer_node_ids(ray_cluster)
    out = Path(spec.out_dir)
    assert (out / "train" / "weights" / "best.pt").is_file() and "epochs completed" in (out / "train.log").read_text()
    assert len((out / EVENTS_FILE).read_text().splitlines()) == len(events)

    # a daemon that restarted after the job ended: the same events, its outcome, nothing submitted
    second = trainer(ray_cluster, tmp_path, prefix=first.prefix)
    assert [e for e in second.attach(spec, lambda _e: None) if not isinstance(e, Placed)] == events
    assert jobs_of(ray_cluster, first.prefix) == [f"{first.prefix}r0001"]
    # the run resumed by a daemon that died before recording its outcome: the job that succeeded
    # is followed again (its events replayed from the start), not trained a second time
    assert second.adopts(spec.run_id)
    assert [e for e in second.run(spec, lambda _e: None) if not isinstance(e, Placed)] == events
    assert second.job is not None and second.job.attempt == 1
    assert jobs_of(ray_cluster, first.prefix) == [f"{first.prefix}r0001"]


@pytest.mark.slow  # a real two-node Ray cluster (about 20 s to start, once per session)
def test_cancel_stops_the_job_after_the_current_batch_and_an_attached_daemon_sees_it(ray_cluster, tmp_path):
    spec = tiny_spec(tmp_path, epochs=50)  # far longer than the test waits
    first = trainer(ray_cluster, tmp_path)
    outcome: dict[str, BaseException] = {}
    training = threading.Event()

    def on_event(event: Event) -> None:
        if event.kind in ("progress", "epoch"):
            training.set()

    def run(name: str, fn: Any) -> None:
        try:
            fn(spec, on_event)
        except BaseException as exc:
            outcome[name] = exc

    runner = threading.Thread(target=run, args=("run", first.run))
    runner.start()
    assert training.wait(240), "no training progress"
    replayed: list[Event] = []
    second = trainer(ray_cluster, tmp_path, prefix=first.prefix)  # as a daemon that restarted meanwhile
    attached = threading.Thread(target=run, args=("attach", lambda s, _cb: second.attach(s, replayed.append)))
    attached.start()
    # `run` for a run whose newest attempt still runs (a restarted daemon resuming it) follows that job too
    third = trainer(ray_cluster, tmp_path, prefix=first.prefix)
    rerun = threading.Thread(target=run, args=("rerun", third.run))
    rerun.start()
    wait_for("the attached follower to replay the start", lambda: any(e.kind == "started" for e in replayed))
    wait_for("the second run call to follow the job", lambda: third.job is not None)
    first.cancel()
    for thread in (runner, attached, rerun):
        thread.join(120)
        assert not thread.is_alive()
    for name in ("run", "attach", "rerun"):
        assert isinstance(outcome[name], TrainingCancelled), outcome
    assert third.job is not None and third.job.submission_id == f"{first.prefix}r0001"
    assert first.job is not None and first.job.status == "STOPPED"
    replayed = [e for e in replayed if not isinstance(e, Placed)]
    assert replayed[0].kind == "started" and replayed[-1].kind == "cancelled"
    assert (
        isinstance(replayed[-1], ChildCancelled) and replayed[-1].reason == "stopped by SIGTERM"
    )  # the child got SIGTERM: it stopped by itself
    assert "run cancelled" in (Path(spec.out_dir) / "train.log").read_text()
    assert jobs_of(ray_cluster, first.prefix) == [f"{first.prefix}r0001"]  # attach submitted nothing


@pytest.mark.slow  # a real two-node Ray cluster (about 20 s to start, once per session)
def test_the_cancel_file_stops_the_job(ray_cluster, tmp_path):
    spec = tiny_spec(tmp_path, epochs=50)
    job = trainer(ray_cluster, tmp_path)

    def on_event(event: Event) -> None:
        if event.kind == "started":
            request_cancel(Path(spec.out_dir), "flywheel train --cancel (test)")

    with pytest.raises(TrainingCancelled, match=r"flywheel train --cancel \(test\)"):
        job.run(spec, on_event)
    assert job.job is not None and job.job.status == "STOPPED"


@pytest.mark.slow  # a real two-node Ray cluster (about 20 s to start, once per session)
def test_a_failing_child_is_a_training_error_with_the_tail_of_its_log(ray_cluster, tmp_path):
    spec = dataclasses.replace(tiny_spec(tmp_path), data_yaml=str(tmp_path / "missing" / "data.yaml"))
    job = trainer(ray_cluster, tmp_path)
    with pytest.raises(TrainingError) as error:
        job.run(spec, lambda _e: None)
    assert not isinstance(error.value, TrainingCancelled)
    message = str(error.value)
    assert f"Ray job {job.prefix}r0001" in message and "missing/data.yaml" in message
    assert "--- last lines of its log" in message and "Traceback" in message
    assert job.job is not None and job.job.status == "FAILED"
    # a failed attempt is not followed again: the run's next training is its next attempt
    assert not job.adopts(spec.run_id)
    with pytest.raises(TrainingError):
        job.run(spec, lambda _e: None)
    assert job.job is not None and job.job.attempt == 2
    assert jobs_of(ray_cluster, job.prefix) == [f"{job.prefix}r0001", f"{job.prefix}r0001-2"]

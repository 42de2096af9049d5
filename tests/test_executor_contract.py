"""One contract, both executors: the same cycle through `App.train` with the local child and
with a Ray job on the real two-node loopback cluster (tests/ray_cluster.py). Whichever trained,
the run ends the same way in the store: epochs recorded one by one, the candidate gated and
promoted, where it ran recorded with the run; and a run stopped by `flywheel train --cancel`
(the CANCEL file) is recorded cancelled with no model."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import RunState, StartKind, run_name
from flywheel.core.errors import TrainingCancelled
from flywheel.core.events import BatchProgress, TrainingEvent
from flywheel.core.ports import NullObserver
from flywheel.training.local_trainer import request_cancel
from tests.conftest import TINY_CONFIG
from tests.ray_cluster import TRAINER_RESOURCE, ray_cluster_fixture  # noqa: F401


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def executor_config(request: pytest.FixtureRequest) -> str:
    """The tiny training config for one executor."""
    config = TINY_CONFIG.format(port=0).replace("[training]\n", "[training]\nthreads = 1\n")
    if request.param == "ray":
        cluster = request.getfixturevalue("ray_cluster")
        config = config.replace("[training]\n", '[training]\nexecutor = "ray"\n')
        prefix = f"c{secrets.token_hex(3)}-"
        config += f'\n[ray]\naddress = "{cluster.address}"\nresource = "{TRAINER_RESOURCE}"\nprefix = "{prefix}"\n'
    return config


def test_a_training_ends_the_same_whichever_executor_ran_it(executor_config: str, tmp_path: Path):
    root = init_data_root(tmp_path / "root", executor_config)
    app = App(root)
    version = app.ingest(synthetic_batch(tmp_path / "b1", 16, seed=1), move=False).version
    assert version is not None
    result = app.train(version.id or 0)
    run = app.store.run(result.run.id or 0)
    assert run.state == RunState.SUCCEEDED, run.error
    assert [e.epoch for e in app.store.epochs(run.id or 0)] == [1, 2] and run.epochs_done == 2
    assert result.model is not None and app.store.production() is not None
    assert app.store.production().id == result.model.id  # type: ignore[union-attr]
    assert result.decision is not None and result.decision.outcome.value == "promote"
    executor = app.config.training.executor
    assert run.environment["executor"] == executor and run.environment["node"]
    if executor == "ray":
        assert str(run.environment["submission_id"]).endswith(run_name(run.id or 0))


class CancelOnFirstBatch(NullObserver):
    """Writes the run's CANCEL file (what `flywheel train --cancel` does) at the first batch."""

    def __init__(self, runs: Path) -> None:
        self.runs = runs
        self.run_id = 0

    def training_started(self, run_id: int, start_kind: StartKind, epochs: int) -> None:
        self.run_id = run_id

    def training_event(self, event: TrainingEvent) -> None:
        if isinstance(event, BatchProgress):
            request_cancel(self.runs / run_name(self.run_id), "flywheel train --cancel (contract test)")


def test_a_cancelled_training_is_recorded_the_same_whichever_executor_ran_it(executor_config: str, tmp_path: Path):
    config = executor_config.replace("epochs_scratch = 2", "epochs_scratch = 50")  # far longer than the test
    root = init_data_root(tmp_path / "root", config)
    app = App(root)
    app.observer = CancelOnFirstBatch(app.paths.runs)
    version = app.ingest(synthetic_batch(tmp_path / "b1", 16, seed=1), move=False).version
    assert version is not None
    with pytest.raises(TrainingCancelled, match=r"contract test"):
        app.train(version.id or 0)
    (run,) = app.store.runs()
    assert run.state == RunState.CANCELLED and run.model_id is None
    assert run.epochs_done < 50 and app.store.production() is None

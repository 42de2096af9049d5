"""A database that goes away: the work loop backs off instead of spinning, a training holds its
events until the database is back, and a run whose recording failed for good is recorded as
interrupted (then resumed), never left "running". The outages are a real PostgreSQL stopped
with `pg_ctl stop -m fast` and started again on the same port."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flywheel.app import App, init_data_root
from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import RunState
from flywheel.core.errors import StoreError
from flywheel.core.spec import TrainSpec
from flywheel.flow import cycle
from flywheel.flow.recovery import mark_interrupted
from flywheel.service.backoff import Backoff
from tests.conftest import TINY_CONFIG, free_port
from tests.fakes import Event, FakeTrainer
from tests.pg_server import PgServer

# --- the pause between retries ---------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets_on_success():
    now = [0.0]
    backoff = Backoff(base=1.0, cap=8.0, clock=lambda: now[0], rng=random.Random(7))
    pauses = [backoff.failed() for _ in range(6)]
    for n, pause in enumerate(pauses):
        ceiling = min(8.0, 2.0**n)
        assert ceiling / 2 <= pause <= ceiling  # half fixed: never a hot loop, however unlucky
    assert backoff.remaining() == pytest.approx(pauses[-1])
    now[0] += pauses[-1]
    assert backoff.remaining() == 0
    backoff.succeeded()
    assert backoff.failures == 0 and 0.5 <= backoff.failed() <= 1.0
    # an hour of outage costs a bounded number of tries: at most one per cap/2 once capped
    tries, t, b = 0, 0.0, Backoff(base=1.0, cap=60.0, clock=lambda: 0.0, rng=random.Random(1))
    while t < 3600:
        t += b.failed()
        tries += 1
    assert tries <= 3600 / 30 + 7


# --- a training across an outage, on a real PostgreSQL -----------------------------------------


@pytest.fixture
def pg_root(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[App, PgServer]]:
    name = pg_server.create_database()
    config = TINY_CONFIG.format(port=free_port()) + f'\n[database]\nurl = "{pg_server.url(name)}"\n'
    root = init_data_root(tmp_path / "root", config)
    yield App(root), pg_server
    pg_server.drop_database(name)


class OutageTrainer(FakeTrainer):
    """Reports its events with the database stopped in the middle: `during(i)` runs before event i."""

    def __init__(self, during: Callable[[int], None], epochs: int = 3):
        super().__init__([0.3], epochs=epochs)
        self.during = during

    def run(self, spec: TrainSpec, on_event: Callable[[Event], None]) -> list[Event]:
        self.specs.append(spec)
        events = self.events(spec)
        for i, e in enumerate(events):
            self.during(i)
            on_event(e)
        return events


def test_a_training_outlives_a_database_outage_and_records_every_epoch(pg_root, tmp_path):
    app, server = pg_root
    version = app.ingest(synthetic_batch(tmp_path / "b1", 8, seed=1), move=False).version

    def outage(i: int) -> None:
        if i == 2:
            server.pause()  # from the first epoch on, nothing can be recorded
        if i == 6:
            server.unpause()

    app.trainer = OutageTrainer(outage, epochs=3)
    result = app.train(version.id)
    assert result.run.state == RunState.SUCCEEDED
    assert [e.epoch for e in app.store.epochs(result.run.id)] == [1, 2, 3]  # held, then written in order
    assert app.store.run(result.run.id).epochs_done == 3
    assert app.store.production().id == result.model.id


def test_a_run_whose_recording_failed_for_good_is_interrupted_then_resumed_never_left_running(
    pg_root, tmp_path, monkeypatch
):
    app, server = pg_root
    version = app.ingest(synthetic_batch(tmp_path / "b1", 8, seed=1), move=False).version
    monkeypatch.setattr(cycle, "OUTAGE_WAIT_SECONDS", 0.5)  # the database stays away past the run's wait

    def outage(i: int) -> None:
        if i == 2:
            server.pause()

    app.trainer = OutageTrainer(outage, epochs=2)
    with pytest.raises(StoreError):
        app.train(version.id)
    server.unpause()
    (ghost,) = [r for r in app.store.runs() if r.state == RunState.RUNNING]  # what the issue saw, before the fix
    # the daemon's next step (flywheel.service.daemon.Daemon._step) does this first
    (marked,) = mark_interrupted(app.store, app.registry)
    assert marked.id == ghost.id and marked.state == RunState.INTERRUPTED and "interrupted" in (marked.error or "")
    app.trainer = FakeTrainer([0.3], epochs=2)
    (resumed,) = app.resume_interrupted()
    assert resumed.run.id == ghost.id and resumed.run.state == RunState.SUCCEEDED
    assert not [r for r in app.store.runs() if r.state == RunState.RUNNING]

"""When the daemon trains (flywheel.core.schedule): the policy with plain values, what waits read
from a real store, and train requests (flywheel.service.train_queue) as files in the queue folder."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from flywheel.app import App
from flywheel.cli.demo import synthetic_batch
from flywheel.config_file import load
from flywheel.core.config import CONFIG_NAME, parse
from flywheel.core.errors import ConfigError
from flywheel.core.schedule import SchedulePolicy, Waiting, decide_schedule
from flywheel.flow.waiting import waiting
from flywheel.service import train_queue
from tests.fakes import FakeTrainer

POLICY = SchedulePolicy(debounce_seconds=30, min_new_images=10, cron="")


def test_nothing_new_never_trains_even_on_schedule():
    assert not decide_schedule(Waiting(None, 0, 999), POLICY, cron_due=True).train
    assert not decide_schedule(Waiting(3, 0, 999), POLICY, cron_due=True).train


def test_a_burst_waits_for_quiet_then_trains_once_on_the_newest():
    busy = decide_schedule(Waiting(3, 50, 12), POLICY, cron_due=False)
    assert not busy.train and busy.retry_in == pytest.approx(18) and "debounce_seconds" in busy.why
    assert not decide_schedule(Waiting(3, 50, 12), POLICY, cron_due=True).train  # the schedule waits for quiet too
    quiet = decide_schedule(Waiting(3, 50, 30), POLICY, cron_due=False)
    assert quiet.train and "50 new images" in quiet.why


def test_min_new_images_counts_and_the_schedule_trains_whatever_waits():
    few = decide_schedule(Waiting(3, 9, 60), POLICY, cron_due=False)
    assert not few.train and few.retry_in is None and "9 of min_new_images 10" in few.why
    assert decide_schedule(Waiting(3, 10, 60), POLICY, cron_due=False).train
    cron_only = SchedulePolicy(0, 0, "0 2 * * *")
    waits = decide_schedule(Waiting(3, 500, 60), cron_only, cron_due=False)
    assert not waits.train and "0 2 * * *" in waits.why
    assert decide_schedule(Waiting(3, 1, 60), cron_only, cron_due=True).train


def test_cron_is_checked_when_the_config_is_read(tmp_path):
    config = tmp_path / CONFIG_NAME
    config.write_text('[schedule]\ncron = " 30 2 * * 1-5 "\n')
    assert load(tmp_path).schedule.cron == "30 2 * * 1-5"
    config.write_text('[schedule]\ncron = "30 2 * *"\n')
    with pytest.raises(ConfigError) as error:
        load(tmp_path)
    assert f"{config}: key `schedule.cron`: not a crontab expression (Wrong number of fields" in str(error.value)
    assert "(got '30 2 * *')" in str(error.value)
    with pytest.raises(ConfigError, match=r"schedule\.min_new_images"):
        parse({"schedule": {"min_new_images": -1}})


def test_what_waits_is_the_images_since_the_last_trained_version(data_root, tmp_path):
    app = App(data_root, trainer=FakeTrainer([0.3]))
    assert waiting(app.store, datetime.now(UTC)) == Waiting(None, 0, 0.0)
    v1 = app.ingest(synthetic_batch(tmp_path / "b1", 8, seed=1), move=False).version
    now = datetime.now(UTC) + timedelta(seconds=5)
    first = waiting(app.store, now)
    assert first.version_id == v1.id and first.new_images == 8 and 4 < first.quiet_seconds < 7
    app.train(v1.id)
    assert waiting(app.store, now).version_id is None  # trained: nothing waits
    app.ingest(synthetic_batch(tmp_path / "b2", 5, seed=2), move=False)
    v3 = app.ingest(synthetic_batch(tmp_path / "b3", 4, seed=3), move=False).version
    burst = waiting(app.store, datetime.now(UTC))
    assert burst.version_id == v3.id and burst.new_images == 9  # both batches since v1, on the newest


def test_train_requests_are_taken_in_order_and_a_bad_one_set_aside(tmp_path):
    first = train_queue.submit(tmp_path, 3, None, "ana")
    second = train_queue.submit(tmp_path, None, "base", "bo")
    (train_queue.queue_dir(tmp_path) / "train-0-1.json").write_text("{not json")
    assert [r.id for r in train_queue.pending(tmp_path)] == [first.id, second.id]
    assert (train_queue.queue_dir(tmp_path) / "train-0-1.json.bad").is_file()
    assert train_queue.progress(tmp_path, first.id).state == "queued"
    taken = train_queue.take(tmp_path, first, newest_run_id=7)
    assert json.loads(taken.read_text())["actor"] == "ana"
    assert train_queue.progress(tmp_path, first.id) == train_queue.Progress("taken", after_run=7)
    assert [r.id for r in train_queue.pending(tmp_path)] == [second.id]
    assert train_queue.drop_taken(tmp_path) == [first.id]  # a daemon died serving it
    assert not taken.exists() and train_queue.progress(tmp_path, first.id).state == "gone"


def test_a_served_request_lists_its_runs_until_its_cli_reads_it_or_a_day_passes(tmp_path):
    request = train_queue.submit(tmp_path, None, None, "ana")
    taken = train_queue.take(tmp_path, request, newest_run_id=3)
    train_queue.finish(taken, [4, 5])  # a candidate and a scratch challenger
    assert not taken.exists()
    assert train_queue.progress(tmp_path, request.id) == train_queue.Progress("done", runs=(4, 5))
    old = train_queue.submit(tmp_path, None, None, "bo")
    train_queue.finish(train_queue.take(tmp_path, old, newest_run_id=5), [6])
    done = train_queue.queue_dir(tmp_path) / f"{old.id}.done"
    aged = time.time() - train_queue.DONE_KEPT_SECONDS - 60
    os.utime(done, (aged, aged))
    train_queue.drop_taken(tmp_path)  # at start-up: a day-old .done nobody came back for goes
    assert not done.exists() and train_queue.progress(tmp_path, request.id).runs == (4, 5)
    train_queue.forget(tmp_path, request.id)
    assert train_queue.progress(tmp_path, request.id).state == "gone"

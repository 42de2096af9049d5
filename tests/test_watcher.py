"""Which dropped batches are complete: SettleTracker alone, and fed by a real watchdog
observer on a temp inbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.ingest.watcher import InboxWatcher, SettleTracker

MARKER = "READY"


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class FakeClock:
    """Far ahead of the real clock, so the files' own mtimes are all long settled and only
    the tracker's noted events decide; moves only when told."""

    def __init__(self) -> None:
        self.now = time.time() + 10_000.0

    def __call__(self) -> float:
        return self.now


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.count += 1
        self.event.set()


class RecordingTracker(SettleTracker):
    """Remembers every batch name the observer noted, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noted: list[str] = []

    def note(self, name: str) -> None:
        self.noted.append(name)
        super().note(name)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def watch() -> Iterator[Callable[[SettleTracker, Callable[[], None]], InboxWatcher]]:
    """Start a real InboxWatcher; every one started is stopped at teardown."""
    started: list[InboxWatcher] = []

    def start(tracker: SettleTracker, wake: Callable[[], None]) -> InboxWatcher:
        watcher = InboxWatcher(tracker, wake)
        watcher.start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# --- SettleTracker alone ----------------------------------------------------------------


def test_batch_with_marker_is_complete_at_once(inbox: Path):
    tracker = SettleTracker(inbox, MARKER, settle_seconds=3600)
    batch = inbox / "b1"
    batch.mkdir()
    (batch / "a.png").write_bytes(b"x")
    tracker.note("b1")
    assert tracker.complete() == []  # just written, an hour to settle
    (batch / MARKER).write_text("")
    tracker.note("b1")
    assert tracker.complete() == [batch]


def test_marker_must_be_a_file_in_the_batch(inbox: Path):
    tracker = SettleTracker(inbox, MARKER, settle_seconds=3600)
    (inbox / "b1" / MARKER).mkdir(parents=True)  # a folder named READY is not the marker
    (inbox / "b2" / "sub").mkdir(parents=True)
    (inbox / "b2" / "sub" / MARKER).write_text("")  # nor is a marker deeper down
    assert tracker.complete() == []


def test_settle_time_counts_from_the_last_noted_event(inbox: Path):
    clock = FakeClock()
    tracker = SettleTracker(inbox, MARKER, settle_seconds=5, clock=clock)
    (inbox / "b1").mkdir()
    (inbox / "b1" / "a.png").write_bytes(b"x")
    tracker.note("b1")
    clock.now += 4.9
    assert tracker.complete() == []
    tracker.note("b1")  # more activity: the clock starts again
    clock.now += 4.9
    assert tracker.complete() == []
    clock.now += 0.2
    assert names(tracker.complete()) == ["b1"]


def test_a_fresh_file_mtime_keeps_a_batch_incomplete_without_any_event(inbox: Path):
    tracker = SettleTracker(inbox, MARKER, settle_seconds=60)
    (inbox / "b1" / "deep" / "er").mkdir(parents=True)
    (inbox / "b1" / "deep" / "er" / "a.png").write_bytes(b"x")
    assert tracker.complete() == []  # no note(): the new file's mtime alone holds it back


def test_complete_lists_markers_first_then_oldest_activity(inbox: Path):
    clock = FakeClock()
    tracker = SettleTracker(inbox, MARKER, settle_seconds=1, clock=clock)
    for name in ("a", "b", "c"):
        (inbox / name).mkdir()
    (inbox / "c" / MARKER).write_text("")
    tracker.note("b")
    clock.now += 1
    tracker.note("a")
    clock.now += 5
    assert names(tracker.complete()) == ["c", "b", "a"]


def test_hidden_entries_are_never_batches(inbox: Path):
    tracker = SettleTracker(inbox, MARKER, settle_seconds=0)
    (inbox / ".done" / "b0001-x").mkdir(parents=True)
    (inbox / ".done" / "b0001-x" / MARKER).write_text("")
    (inbox / ".tmp-x").mkdir()
    (inbox / ".tmp-x" / MARKER).write_text("")
    (inbox / ".partial.png").write_bytes(b"x")
    (inbox / "visible").mkdir()
    (inbox / "visible" / MARKER).write_text("")
    assert names(tracker.complete()) == ["visible"]


def test_missing_inbox_has_no_batches(tmp_path: Path):
    assert SettleTracker(tmp_path / "nowhere", MARKER, settle_seconds=0).complete() == []


def test_hold_excludes_a_batch_until_it_changes(inbox: Path):
    clock = FakeClock()
    tracker = SettleTracker(inbox, MARKER, settle_seconds=1, clock=clock)
    (inbox / "b1").mkdir()
    (inbox / "b1" / MARKER).write_text("")
    (inbox / "b2").mkdir()
    (inbox / "b2" / MARKER).write_text("")
    tracker.hold("b1")
    clock.now += 3600
    assert names(tracker.complete()) == ["b2"]
    tracker.forget("b1")  # forgetting its activity does not lift the hold
    assert names(tracker.complete()) == ["b2"]
    tracker.note("b1")
    assert names(tracker.complete()) == ["b1", "b2"]


# --- with a real watchdog observer --------------------------------------------------------


def test_unmarked_batch_completes_only_after_settle_seconds_of_quiet(inbox: Path, watch):
    """Twelve writes 0.1 s apart on the tracker's clock: never 0.5 s of quiet, so never
    complete; then complete exactly when 0.5 s have passed since the last noted event. A write
    into a second folder after each one is the barrier: inotify reports in order, so once the
    barrier's event is noted, every event of the write before it has been noted too."""
    clock = FakeClock()  # the files' mtimes are long past: only the observer's events count
    tracker = SettleTracker(inbox, MARKER, settle_seconds=0.5, clock=clock)
    batch, barrier = inbox / "b1", inbox / "zz-barrier"
    batch.mkdir()
    barrier.mkdir()
    watch(tracker, lambda: None)  # after the mkdirs: both folders are watched from the start
    for i in range(12):
        clock.now += 0.1
        (batch / f"img{i}.png").write_bytes(b"x" * 100)
        (barrier / f"{i}").write_bytes(b"")
        assert wait_until(lambda: tracker.last_event(barrier.name) == clock.now), f"write {i} was not noted"
        assert tracker.last_event(batch.name) == clock.now
        assert batch not in tracker.complete(), f"complete while still being written (write {i})"
    clock.now += 0.45
    assert batch not in tracker.complete()
    clock.now += 0.05
    assert batch in tracker.complete()


def test_file_event_restarts_the_settle_clock(inbox: Path, watch):
    clock = FakeClock()  # the files' mtimes are long past: only the observer's events count
    tracker = SettleTracker(inbox, MARKER, settle_seconds=0.5, clock=clock)
    batch = inbox / "b1"
    batch.mkdir()
    assert tracker.complete() == [batch]
    wakes = Wakes()
    watch(tracker, wakes)

    (batch / "late.png").write_bytes(b"x")

    assert wait_until(lambda: tracker.complete() == []), "the file event was not noted"
    clock.now += 0.6
    assert tracker.complete() == [batch]
    assert wakes.count >= 1


def test_wake_is_called_when_a_file_is_written(inbox: Path, watch):
    (inbox / "b1").mkdir()
    wakes = Wakes()
    watch(SettleTracker(inbox, MARKER, settle_seconds=10), wakes)
    (inbox / "b1" / "a.png").write_bytes(b"x")
    assert wakes.event.wait(timeout=5), "wake was not called"


def test_events_in_hidden_entries_neither_wake_nor_make_batches(inbox: Path, watch):
    (inbox / ".done").mkdir()
    (inbox / "visible").mkdir()
    clock = FakeClock()
    tracker = RecordingTracker(inbox, MARKER, settle_seconds=0.5, clock=clock)
    wakes = Wakes()
    watch(tracker, wakes)

    (inbox / ".done" / "old.png").write_bytes(b"x")
    (inbox / ".tmp-x").write_bytes(b"partial copy")
    (inbox / "visible" / "a.png").write_bytes(b"x")  # the barrier: reported after the two above
    assert wait_until(lambda: tracker.last_event("visible") == clock.now), "the observer is not alive"
    assert set(tracker.noted) == {"visible"}
    assert wakes.count == len(tracker.noted)  # a wake per noted event: none for the hidden ones
    assert tracker.complete() == []


def test_held_batch_comes_back_on_a_new_file_event(inbox: Path, watch):
    batch = inbox / "b1"
    batch.mkdir()
    (batch / MARKER).write_text("")
    clock = FakeClock()
    tracker = SettleTracker(inbox, MARKER, settle_seconds=0.5, clock=clock)
    tracker.hold("b1")
    watch(tracker, lambda: None)
    clock.now += 3600
    assert tracker.complete() == []

    (batch / "fixed.png").write_bytes(b"x")

    assert wait_until(lambda: tracker.complete() == [batch]), "the new file did not release the hold"

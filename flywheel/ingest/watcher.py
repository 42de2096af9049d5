"""Watch the inbox (watchdog) and say which dropped batches are complete.

A batch is a top-level entry of the inbox. It is complete when it holds the marker file
(`READY`), or when nothing in it has changed for `settle_seconds`: no file event and no file
mtime newer than that. So a batch still being copied is never read half-way. Names starting
with a dot (`.done/`, editors' and copy tools' temp files) are not batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class SettleTracker:
    def __init__(self, inbox: Path, marker: str, settle_seconds: float, clock: Callable[[], float] = time.time):
        self.inbox = inbox
        self.marker = marker
        self.settle_seconds = settle_seconds
        self.clock = clock
        self._activity: dict[str, float] = {}
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def note(self, name: str) -> None:
        """Something changed in batch `name` now (this also releases a hold on it)."""
        with self._lock:
            self._activity[name] = self.clock()
            self._held.discard(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._activity.pop(name, None)

    def hold(self, name: str) -> None:
        """Ingesting `name` failed for a reason outside the batch (database, disk): leave its
        files where they are and try again when it changes or the daemon restarts, rather
        than retrying in a loop."""
        with self._lock:
            self._held.add(name)

    def complete(self) -> list[Path]:
        """Batches ready to ingest, oldest activity first."""
        now = self.clock()
        ready = []
        for entry in sorted(self.inbox.iterdir()) if self.inbox.is_dir() else []:
            if entry.name.startswith(".") or entry.name in self._held:
                continue
            if entry.is_dir() and (entry / self.marker).is_file():
                ready.append((0.0, entry))
                continue
            last = max(self.last_event(entry.name), _newest_mtime(entry))
            if now - last >= self.settle_seconds:
                ready.append((last, entry))
        return [entry for _, entry in sorted(ready)]

    def last_event(self, name: str) -> float:
        """When the observer last noted a change in `name` (0.0: never), on this tracker's clock."""
        with self._lock:
            return self._activity.get(name, 0.0)


def _newest_mtime(entry: Path) -> float:
    try:
        st = entry.lstat()
        newest = max(st.st_mtime, st.st_ctime)  # ctime: copies that keep old mtimes (cp -p)
        if entry.is_dir() and not entry.is_symlink():
            for path in entry.rglob("*"):
                try:
                    st = path.lstat()
                    newest = max(newest, st.st_mtime, st.st_ctime)
                except FileNotFoundError:  # removed while we looked: it is still changing
                    return time.time()
        return newest
    except FileNotFoundError:
        return time.time()


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Path, tracker: SettleTracker, wake: Callable[[], None]):
        self.inbox = inbox
        self.tracker = tracker
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(raw if isinstance(raw, str) else raw.decode())
            try:
                top = path.relative_to(self.inbox).parts[0]
            except (ValueError, IndexError):
                continue
            if not top.startswith("."):
                self.tracker.note(top)
                self.wake()


class _WakeHandler(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]):
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "moved"):
            self.wake()


class InboxWatcher:
    """A running watchdog observer feeding a SettleTracker; `wake` is called on every change,
    and on every file created in `also` (the request queue: `flywheel train` is answered at
    once, not at the next rescan)."""

    def __init__(self, tracker: SettleTracker, wake: Callable[[], None], also: Path | None = None):
        self.tracker = tracker
        self._observer = Observer()
        self._observer.schedule(
            _Handler(tracker.inbox.resolve(), tracker, wake), str(tracker.inbox.resolve()), recursive=True
        )
        if also is not None:
            also.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(_WakeHandler(wake), str(also.resolve()), recursive=False)

    def start(self) -> None:
        self._observer.start()
        log.info("watching %s for batches", self.tracker.inbox)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

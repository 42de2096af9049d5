"""Tell other systems about production changes: a shell command, an HTTP webhook, or both.

The change is committed before anyone is told, so a notification can never block or undo it.
Each target is tried in a background thread with retries and a growing pause; a failure is
logged, with the target and what to check. `wait()` lets a short-lived CLI process give the
threads a moment before it exits.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from flywheel.core.records import ProductionChange

log = logging.getLogger(__name__)


class CommandWebhookNotifier:
    """The Notifier port (flywheel.core.ports) over a shell command and a webhook."""

    def __init__(self, command: str = "", webhook: str = "", retries: int = 3, retry_seconds: float = 2.0):
        self.command = command
        self.webhook = webhook
        self.retries = retries
        self.retry_seconds = retry_seconds
        self._threads: list[threading.Thread] = []

    def notify(self, change: ProductionChange) -> None:
        body = json.dumps(change.to_json(), default=str)
        if self.command:
            self._start("command", lambda: self._run_command(body, change))
        if self.webhook:
            self._start("webhook", lambda: self._post(body))

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def _start(self, kind: str, send: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._with_retries, args=(kind, send), name=f"notify-{kind}", daemon=True)
        # the daemon's notifier lives for months: only the sends still under way are kept
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _with_retries(self, kind: str, send: Callable[[], None]) -> None:
        for attempt in range(1, self.retries + 1):
            try:
                send()
                return
            except (OSError, subprocess.SubprocessError, urllib.error.URLError, ValueError) as exc:
                target = self.command if kind == "command" else self.webhook
                if attempt == self.retries:
                    log.error(
                        "notify %s %r failed %d times, giving up: %s (check the [notify] settings)",
                        kind,
                        target,
                        attempt,
                        exc,
                    )
                    return
                log.warning("notify %s %r failed (attempt %d of %d): %s", kind, target, attempt, self.retries, exc)
                time.sleep(self.retry_seconds * attempt)

    def _run_command(self, body: str, change: ProductionChange) -> None:
        env = {
            **os.environ,
            "FLYWHEEL_ACTION": str(change.action),
            "FLYWHEEL_MODEL": change.model,
            "FLYWHEEL_EVENT": body,
        }
        done = subprocess.run(self.command, shell=True, input=body, text=True, env=env, timeout=60, capture_output=True)
        if done.returncode != 0:
            raise subprocess.SubprocessError(f"exit code {done.returncode}: {done.stderr.strip()[-300:]}")

    def _post(self, body: str) -> None:
        request = urllib.request.Request(
            self.webhook, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status >= 300:
                raise ValueError(f"HTTP {response.status}")

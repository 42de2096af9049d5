"""The [notify] notifier over its lifetime: the daemon's lives for months."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from flywheel.core.ledger import Action
from flywheel.core.records import ProductionChange
from flywheel.service.notify import CommandWebhookNotifier


def test_the_daemons_notifier_keeps_only_the_sends_under_way(tmp_path):
    """A thread object kept per production change, for ever, was a slow leak: each send's
    thread is let go once it has finished."""
    told = tmp_path / "told"
    notifier = CommandWebhookNotifier(command=f"echo >> {told}")
    at = datetime.now(UTC)

    def change(action: Action, model: str) -> ProductionChange:
        return ProductionChange(
            action=action, model=model, previous=None, actor="flywheel", reason="gate", at=at, production={}
        )

    for n in range(1, 21):
        notifier.notify(change(Action.PROMOTE, f"m{n:04d}"))
        deadline = time.monotonic() + 30
        while not (told.is_file() and len(told.read_text().splitlines()) == n):  # this send is done
            assert time.monotonic() < deadline, f"send {n} never came"
            time.sleep(0.01)
    deadline = time.monotonic() + 30
    while any(t.name == "notify-command" for t in threading.enumerate()):  # every send's thread ended
        assert time.monotonic() < deadline
        time.sleep(0.01)
    notifier.notify(change(Action.ROLLBACK, "m0001"))
    assert len(notifier._threads) == 1  # the new send only, not 21
    notifier.wait(10)
    assert len(told.read_text().splitlines()) == 21

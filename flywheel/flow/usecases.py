"""The use cases the entry points call, bound to the ports the composition root built: ingest
a batch, train now, resume the interrupted runs, cancel the running training, sync the mirror.
The CLI and the daemon call these; neither reaches into the store or the trainer to do a use
case's work."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from flywheel.core.errors import UsageError
from flywheel.core.ingest_result import IngestResult
from flywheel.core.mirror import MirrorStatus
from flywheel.core.ports import BatchIngester, RunStopper
from flywheel.core.records import Run
from flywheel.core.screening import Screening
from flywheel.flow import cancelling, cycle, gc, ingesting, screen_release, screening
from flywheel.flow.cycle import CycleResult
from flywheel.flow.deps import FlowDeps
from flywheel.flow.screening import ScreenDeps


class UseCases:
    """`deps` is asked at each call, not once: a test (or the daemon's start) may give the
    composition root another trainer or observer after it was built, and the next call hears it."""

    def __init__(
        self,
        deps: Callable[[], FlowDeps],
        ingester: BatchIngester,
        hold_data_root: Callable[[], AbstractContextManager[object]],
        stopper: RunStopper,
        screen_deps: Callable[[], ScreenDeps] | None = None,
    ):
        self._deps = deps
        self._ingester = ingester
        self._hold_data_root = hold_data_root
        self._stopper = stopper
        self._screen_deps = screen_deps

    def ingest(self, batch_dir: Path, move: bool, again: bool = False) -> IngestResult:
        """Ingest a batch folder or archive; `again`: even if its content was ingested before."""
        return ingesting.ingest_batch(self._ingester, self._deps().observer, batch_dir, move, again)

    def train(self, version_id: int, start_from: str | None = None) -> CycleResult:
        """`start_from`: `flywheel train --from` (production, base, a model id, a .yaml or .pt).
        The finished run goes to the mirror (MLflow) at once; one that cannot reach it waits."""
        deps = self._deps()
        result = cycle.run_cycle(deps, version_id, start_from=start_from)
        deps.registry.mirror.sync()
        return result

    def resume_interrupted(self) -> list[CycleResult]:
        """Continue the runs a dead process left interrupted (training.on_interrupt)."""
        return cycle.resume_interrupted(self._deps())

    def collect_garbage(self, actor: str, dry_run: bool = False) -> gc.GcResult:
        """What the retention policy ([retention]) allows, removed (or only listed); the caller
        holds the data root, so nothing trains or ingests meanwhile."""
        deps = self._deps()
        return gc.run_gc(deps.store, deps.workspace.data_root, gc.policy_of(deps.config), actor, dry_run=dry_run)

    def sync_mirror(self, force: bool = False) -> MirrorStatus:
        """Bring the mirror ([mlflow]) up to the registry, runs and ledger; `force`: now, even
        while it backs off after a failure (`flywheel mirror sync`). Never raises for a tracker
        that cannot be reached: the status says what still waits and why."""
        return self._deps().registry.mirror.sync(force=force)

    def cancel_running(self, actor: str, wait_seconds: float) -> list[Run]:
        return cancelling.cancel_running(self._deps().store, self._hold_data_root, self._stopper, actor, wait_seconds)

    def screen(self, batch_id: int) -> Screening:
        """Screen a batch's new images with the production model (`[screen]`), recorded."""
        if self._screen_deps is None:
            raise UsageError("screening is not wired in this process (flywheel.app builds it)")
        return screening.screen_batch(self._screen_deps(), batch_id)

    def approve(self, batch_id: int, actor: str) -> Screening:
        """Release a batch its screening holds: the versions it held may train."""
        return screen_release.approve(self._deps().store, batch_id, actor)

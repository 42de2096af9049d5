"""In-memory twins of the mirror's ports, for unit tests of flywheel/flow/mirroring.py: a
tracker that keeps what it is told (and can be "down"), and a state record in a variable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from flywheel.core.errors import MirrorUnavailable
from flywheel.core.mirror import MirrorState, RunReport, VersionReport


class InMemoryTracker:
    def __init__(self) -> None:
        self.runs: dict[str, RunReport] = {}  # the tracker's run id -> what was logged
        self.versions: dict[str, tuple[VersionReport, str]] = {}  # version -> (report, run id)
        self.aliases: dict[str, str] = {}  # alias -> version
        self.down = False
        self.calls = 0

    def _reach(self) -> None:
        self.calls += 1
        if self.down:
            raise MirrorUnavailable("in-memory tracker: down")

    def log_run(self, report: RunReport) -> str:
        self._reach()
        for run_id, logged in self.runs.items():
            if logged.run == report.run:
                return run_id
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = report
        return run_id

    def register_version(self, report: VersionReport, run_ref: str) -> str:
        self._reach()
        for version, (registered, _) in self.versions.items():
            if registered.model == report.model:
                return version
        version = str(len(self.versions) + 1)
        self.versions[version] = (report, run_ref)
        return version

    def set_alias(self, alias: str, version: str) -> None:
        self._reach()
        self.aliases[alias] = version

    def model_at(self, alias: str) -> str:
        """The flywheel model the alias points at (m0007)."""
        return self.versions[self.aliases[alias]][0].model


class MemoryMirrorState:
    def __init__(self) -> None:
        self.state = MirrorState()

    def load(self) -> MirrorState:
        return replace(
            self.state, runs=dict(self.state.runs), versions=dict(self.state.versions), aliases=dict(self.state.aliases)
        )

    def save(self, state: MirrorState) -> None:
        self.state = state

    @contextmanager
    def hold(self) -> Iterator[object]:
        yield self

"""One error tree for flywheel.

Every error a user can meet derives from `FlywheelError`. Foreign errors (SQLAlchemy,
Ultralytics, OSError from the store) are translated at the boundary that meets them, so a
caller only ever catches these. Each message says what is wrong, which id/file/key, and what
to do about it; `exit_code` is what the CLI returns for it, one of `ExitCode`.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status of `flywheel`, in one place: the error classes, the CLI wrapper and the
    daemon return these, and `flywheel --help` is written from `EXIT_CODE_MEANINGS` (README's
    "Exit codes" lists say the same; tests/test_cli.py holds them to it)."""

    OK = 0
    FAILED = 1  # an operation failed (training, ingest, database)
    BAD_SETUP = 2  # bad config, data root or argument: systemd does not restart (RestartPreventExitStatus=2)
    NOT_FOUND = 3  # an id names nothing
    REFUSED = 4  # a production change is not possible
    BUSY = 5  # another process holds the data root (the daemon)
    SHUTDOWN_TIMEOUT = 124  # as timeout(1): `flywheel run` still stopping after daemon.shutdown_timeout
    SIGNALLED = 128  # 128 + N: a second signal N during shutdown, as a shell reports a death by signal
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT


# what `flywheel --help` says of each (SHUTDOWN_TIMEOUT and SIGNALLED are `flywheel run`'s only)
EXIT_CODE_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "an operation failed (training, ingest, database)",
    ExitCode.BAD_SETUP: "bad config or data root",
    ExitCode.NOT_FOUND: "an id names nothing",
    ExitCode.REFUSED: "a production change is not possible",
    ExitCode.BUSY: "the data root is busy (the daemon holds it)",
    ExitCode.INTERRUPTED: "interrupted",
}


class FlywheelError(Exception):
    """Base of every error flywheel raises on purpose."""

    exit_code = ExitCode.FAILED


class ConfigError(FlywheelError):
    """config.toml is missing, unreadable, or has a bad key or value."""

    exit_code = ExitCode.BAD_SETUP


class GoldenSetError(ConfigError):
    """`gate.golden_dir` is missing, or holds something that is not a valid labeled image."""


class UsageError(FlywheelError):
    """A command-line argument is malformed (e.g. an id that is not like m0003)."""

    exit_code = ExitCode.BAD_SETUP


class DataRootError(FlywheelError):
    """The data root is missing, not initialised, or not writable."""

    exit_code = ExitCode.BAD_SETUP


class InvalidTransition(FlywheelError):
    """A record was asked to move to a state its current state does not allow."""


class NotFound(FlywheelError):
    """An id (model, version, run) names nothing in the database."""

    exit_code = ExitCode.NOT_FOUND


class BatchRejected(FlywheelError):
    """A whole batch cannot be ingested (no class names, nothing readable, ...)."""


class StoreError(FlywheelError):
    """The content-addressed store or the database failed (disk full, read-only, corrupt)."""


class IntegrityError(StoreError):
    """A stored file no longer matches the sha256 it was recorded with."""


class TrainingError(FlywheelError):
    """The training child process failed; the message points at its log file."""


class TrainingCancelled(TrainingError):
    """A run was stopped on purpose (shutdown, timeout), not by a fault of its own."""


class RegistryError(FlywheelError):
    """A production change is not possible (nothing to roll back to, wrong status)."""

    exit_code = ExitCode.REFUSED


class ExportFailed(RegistryError):
    """A promotion held: an export of the model failed or missed parity with its .pt
    (production.on_export_failure = "hold"). `failures`: one dict per format (core/exports.py)."""

    def __init__(self, message: str, failures: list[dict[str, object]]):
        super().__init__(message)
        self.failures = failures


class Busy(FlywheelError):
    """Another flywheel process holds the lock for this work (e.g. a training is running)."""

    exit_code = ExitCode.BUSY


class ExecutorUnavailable(FlywheelError):
    """The place trainings run (a Ray cluster) cannot be reached or cannot take the job."""


class EventError(TrainingError):
    """A line from the training child is not an event this daemon knows (unknown kind, a key
    missing or of the wrong type): the child and the daemon disagree on the format."""


class LabelingToolUnavailable(FlywheelError):
    """The labeling tool (Label Studio) cannot be reached, refuses the token, or answers in a way
    flywheel does not understand; the message names the URL and what to check."""


class MirrorUnavailable(FlywheelError):
    """The outside tracker flywheel mirrors its registry into (MLflow) cannot be reached or
    refused a call. Never raised into a production change: the mirror records what waits."""

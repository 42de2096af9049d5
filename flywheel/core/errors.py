"""One error tree for flywheel.

Every error a user can meet derives from `FlywheelError`. Foreign errors (SQLAlchemy,
Ultralytics, OSError from the store) are translated at the boundary that meets them, so a
caller only ever catches these. Each message says what is wrong, which id/file/key, and what
to do about it; `exit_code` is what the CLI returns for it (documented in `flywheel --help`).
"""

from __future__ import annotations


class FlywheelError(Exception):
    """Base of every error flywheel raises on purpose."""

    exit_code = 1


class ConfigError(FlywheelError):
    """config.toml is missing, unreadable, or has a bad key or value."""

    exit_code = 2


class GoldenSetError(ConfigError):
    """`gate.golden_dir` is missing, or holds something that is not a valid labeled image."""


class UsageError(FlywheelError):
    """A command-line argument is malformed (e.g. an id that is not like m0003)."""

    exit_code = 2


class DataRootError(FlywheelError):
    """The data root is missing, not initialised, or not writable."""

    exit_code = 2


class InvalidTransition(FlywheelError):
    """A record was asked to move to a state its current state does not allow."""


class NotFound(FlywheelError):
    """An id (model, version, run) names nothing in the database."""

    exit_code = 3


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

    exit_code = 4


class Busy(FlywheelError):
    """Another flywheel process holds the lock for this work (e.g. a training is running)."""

    exit_code = 5


class EventError(TrainingError):
    """A line from the training child is not an event this daemon knows (unknown kind, a key
    missing or of the wrong type): the child and the daemon disagree on the format."""

"""What flywheel mirrors into an outside tracker (MLflow), as plain values.

flywheel's store and ledger are the truth; the tracker shows them. What the tracker should hold
(`Wanted`: the finished runs, the models that were ever production or are the newest gated
one, where the `production` and `candidate` aliases point) is derived from the store, and
what it is known to hold (`MirrorState`) is a record beside it. The difference is what waits
(`pending`): the mirror catches up by walking it, and an outage only makes it longer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRODUCTION_ALIAS = "production"
CANDIDATE_ALIAS = "candidate"
# MLflow refuses a param value over 6000 characters (its limit since 2.x): longer ones are cut
# with a mark, so a long replay sample or class list never stops a run from being mirrored.
PARAM_VALUE_LIMIT = 6000


@dataclass(frozen=True, kw_only=True)
class EpochPoint:
    epoch: int  # the metric's step
    values: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """One training run as the tracker shows it (a run of the experiment)."""

    run: str  # flywheel's name for it, r0007: the tracker's key for it (a tag)
    state: str  # flywheel's RunState value; the adapter maps it to its own
    started_ms: int
    ended_ms: int
    params: dict[str, str]
    tags: dict[str, str]
    epochs: tuple[EpochPoint, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)  # the gate's numbers, logged once
    documents: dict[str, Any] = field(default_factory=dict)  # artifact path -> a JSON document
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> text (a CSV table)
    files: dict[str, Path] = field(default_factory=dict)  # artifact folder -> a local file to upload


@dataclass(frozen=True, kw_only=True)
class VersionReport:
    """One model as a version of the registered model, made from its run's `model/` artifacts."""

    model: str  # m0007: the tracker's key for it (a tag)
    run: str  # its run, mirrored before it
    tags: dict[str, str]
    description: str


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """What the tracker should hold, from the store: in the order it must be made."""

    runs: tuple[str, ...]  # finished runs, oldest first
    models: tuple[tuple[str, str], ...]  # (model, its run), oldest first
    aliases: dict[str, str]  # alias -> model


@dataclass(kw_only=True)
class MirrorState:
    """What the tracker is known to hold. A cache of it: lost, the next sync asks the tracker
    by flywheel's names (tags) and makes nothing twice."""

    target: str = ""  # tracking URI and registered model: another target starts from nothing
    runs: dict[str, str] = field(default_factory=dict)  # r0007 -> the tracker's run id
    versions: dict[str, str] = field(default_factory=dict)  # m0007 -> version number
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> model

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "runs": self.runs, "versions": self.versions, "aliases": self.aliases}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MirrorState:
        def strings(key: str) -> dict[str, str]:
            return {str(k): str(v) for k, v in dict(data.get(key) or {}).items()}

        return cls(
            target=str(data.get("target", "")),
            runs=strings("runs"),
            versions=strings("versions"),
            aliases=strings("aliases"),
        )


@dataclass(frozen=True, kw_only=True)
class MirrorStatus:
    target: str  # "mlflow"; "" when no mirror is configured
    up: bool | None  # the last try reached it; None: not tried yet
    pending: tuple[str, ...] = ()  # what waits, in words ("run r0007", "alias production -> m0007")
    error: str = ""  # why the last try failed


def pending(wanted: Wanted, state: MirrorState) -> tuple[str, ...]:
    """What the tracker lacks, in the order the mirror makes it."""
    out = [f"run {r}" for r in wanted.runs if r not in state.runs]
    out += [f"model {m}" for m, _ in wanted.models if m not in state.versions]
    out += [f"alias {a} -> {m}" for a, m in sorted(wanted.aliases.items()) if state.aliases.get(a) != m]
    return tuple(out)


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested run params as `a.b` keys with string values, each within the tracker's limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat_params(value, f"{name}.")
            continue
        text = "" if value is None else str(value)
        cut = " ...(truncated)"
        out[name] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - len(cut)] + cut
    return out

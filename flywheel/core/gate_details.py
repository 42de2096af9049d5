"""A gate decision's details as recorded: what each eval set was, each set's verdict with its
per-class rows, forgetting on the parent's and the new val images, and the policy applied.

The store keeps them as one JSON object in the decision's row (`to_json`) and reads them back
into these same types (`from_json`); both are pure. A key a row lacks reads as its default,
so a database written before a field existed still opens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flywheel.core.gate import ClassCheck, GatePolicy, Rule, Score, SetVerdict

Interval = tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class GoldenNote:
    """What the golden set was when it was scored (flywheel/flow/golden.py)."""

    folder: str
    content_sha256: str  # of the folder's images and labels
    boxes: int
    unknown_classes: dict[str, int] = field(default_factory=dict)  # boxes of classes the model lacks
    in_training: int = 0  # its images that are also training images


@dataclass(frozen=True, kw_only=True)
class EvalSetNote:
    sha256: str  # the eval set's identity, the score cache's key
    images: int
    golden: GoldenNote | None = None  # only for the golden set

    def to_json(self) -> dict[str, Any]:
        # flat, as rows have always held it: {"sha256", "images", and the golden set's notes}
        return {"sha256": self.sha256, "images": self.images, **(asdict(self.golden) if self.golden else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvalSetNote:
        golden = None
        if "folder" in data:
            golden = GoldenNote(
                folder=str(data["folder"]),
                content_sha256=str(data.get("content_sha256", "")),
                boxes=int(data.get("boxes", 0)),
                unknown_classes={str(k): int(v) for k, v in dict(data.get("unknown_classes") or {}).items()},
                in_training=int(data.get("in_training", 0)),
            )
        return cls(sha256=str(data.get("sha256", "")), images=int(data.get("images", 0)), golden=golden)


@dataclass(frozen=True, kw_only=True)
class Forgetting:
    """mAP50-95 of both models on one half of the val split (`val_old`, `val_new`)."""

    candidate: float
    production: float

    @property
    def drop(self) -> float:
        return self.production - self.candidate


FORGETTING_SETS = ("val_old", "val_new")


def forgetting_of(pairs: Mapping[str, tuple[Score, Score | None]]) -> dict[str, Forgetting]:
    """The drop from production to candidate on the images the parent had and on the new ones."""
    out = {}
    for name in FORGETTING_SETS:
        cand, prod = pairs.get(name, (None, None))
        if cand is not None and prod is not None:
            out[name] = Forgetting(candidate=cand.map50_95, production=prod.map50_95)
    return out


@dataclass(frozen=True, kw_only=True)
class ExportFailedNote:
    """A candidate the gate passed whose exports failed or missed parity (flow/exports.py):
    `held` when production stayed as it was, else it was promoted without the formats named."""

    message: str
    held: bool
    failures: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "failures": list(self.failures), "held": self.held}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportFailedNote:
        return cls(
            message=str(data.get("message", "")),
            held=bool(data.get("held", False)),
            failures=tuple(dict(f) for f in data.get("failures") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class GateDetails:
    eval_sets: dict[str, EvalSetNote] = field(default_factory=dict)
    verdicts: tuple[SetVerdict, ...] = ()  # the primary set first
    forgetting: dict[str, Forgetting] = field(default_factory=dict)
    policy: GatePolicy | None = None  # None only in rows written before the policy was recorded
    export_failed: ExportFailedNote | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eval_sets": {name: note.to_json() for name, note in self.eval_sets.items()},
            "verdicts": [verdict_json(v) for v in self.verdicts],
            "forgetting": {
                name: {"candidate": f.candidate, "production": f.production, "drop": f.drop}
                for name, f in self.forgetting.items()
            },
        }
        if self.policy is not None:
            out["policy"] = asdict(self.policy)
        if self.export_failed is not None:
            out["export_failed"] = self.export_failed.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> GateDetails:
        data = data or {}
        policy = data.get("policy")
        return cls(
            eval_sets={str(k): EvalSetNote.from_json(v) for k, v in dict(data.get("eval_sets") or {}).items()},
            verdicts=tuple(verdict_from_json(v) for v in data.get("verdicts") or ()),
            forgetting={
                str(k): Forgetting(candidate=float(v["candidate"]), production=float(v["production"]))
                for k, v in dict(data.get("forgetting") or {}).items()
            },
            policy=_policy(policy) if isinstance(policy, Mapping) else None,
            export_failed=ExportFailedNote.from_json(failed)
            if isinstance(failed := data.get("export_failed"), Mapping)
            else None,
        )


def verdict_json(v: SetVerdict) -> dict[str, Any]:
    return {
        "eval_set": v.eval_set,
        "rule": str(v.rule),
        "margin": v.margin,
        "candidate": score_json(v.candidate),
        "production": score_json(v.production) if v.production else None,
        "classes": [{**asdict(c), "interval": _listed(c.interval), "drop": c.drop} for c in v.classes],
        "interval": _listed(v.interval),
    }


def verdict_from_json(data: Mapping[str, Any]) -> SetVerdict:
    production = data.get("production")
    return SetVerdict(
        eval_set=str(data["eval_set"]),
        candidate=score_from_json(data["candidate"]),
        production=score_from_json(production) if production else None,
        classes=tuple(
            ClassCheck(
                name=str(c["name"]),
                candidate=float(c["candidate"]),
                production=float(c["production"]),
                instances=int(c.get("instances", 0)),
                gated=bool(c.get("gated", True)),
                interval=_interval(c.get("interval")),
            )
            for c in data.get("classes") or ()
        ),
        rule=Rule(data["rule"]),
        interval=_interval(data.get("interval")),
    )


def score_json(score: Score) -> dict[str, Any]:
    return asdict(score)


def score_from_json(data: Mapping[str, Any]) -> Score:
    return Score(
        map50_95=float(data["map50_95"]),
        map50=float(data.get("map50", 0.0)),
        precision=float(data.get("precision", 0.0)),
        recall=float(data.get("recall", 0.0)),
        per_class={str(k): float(v) for k, v in dict(data.get("per_class") or {}).items()},
        instances={str(k): int(v) for k, v in dict(data.get("instances") or {}).items()},
    )


def _policy(data: Mapping[str, Any]) -> GatePolicy:
    default = GatePolicy()
    return GatePolicy(
        tolerance=float(data.get("tolerance", default.tolerance)),
        max_class_drop=float(data.get("max_class_drop", default.max_class_drop)),
        min_class_instances=int(data.get("min_class_instances", default.min_class_instances)),
        require_interval=bool(data.get("require_interval", False)),
        class_interval=bool(data.get("class_interval", False)),
    )


def _interval(value: Any) -> Interval | None:
    return (float(value[0]), float(value[1])) if value else None


def _listed(interval: Interval | None) -> list[float] | None:
    return list(interval) if interval else None


def _export_failed(data: object) -> ExportFailedNote | None:
    return ExportFailedNote.from_json(data) if isinstance(data, Mapping) else None

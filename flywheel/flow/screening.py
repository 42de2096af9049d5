"""The data engine: a batch's new images screened with the production model after ingest and
before the version trains (the checks are core's: label_check, screening). Each check's policy
(`[screen]`) says what a finding does: report, hold the training for `flywheel approve`, or
quarantine the suspect train images (left out of training, copied with the reasons under
quarantine/<batch>/screen/). Val images are never moved or removed: a held-out image keeps its
split, whatever a check says of it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from flywheel.core.config import Config, ScreenConfig, resolve
from flywheel.core.domain import ManifestItem, batch_name, model_name
from flywheel.core.errors import FlywheelError, NotFound
from flywheel.core.manifests import changes
from flywheel.core.ports import Predictor, ScreenFiles, StorePort
from flywheel.core.records import Version
from flywheel.core.screening import (
    Check,
    Hashed,
    Policy,
    Screening,
    ScreenState,
    Suspect,
    class_shift,
    decide,
    near_copies,
)
from flywheel.flow.label_screening import LabelScreen, label_suspects
from flywheel.flow.registry import Registry

log = logging.getLogger(__name__)

NO_PRODUCTION = "no production model yet: there is nothing to screen with, so the batch goes on unscreened"


@dataclass(frozen=True)
class ScreenDeps:
    store: StorePort
    registry: Registry
    predictor: Predictor
    files: ScreenFiles
    config: Config
    data_root: Path


def batch_version(store: StorePort, batch_id: int) -> Version:
    for v in store.versions():
        if v.batch_id == batch_id:
            return v
    raise NotFound(f"batch {batch_name(batch_id)} made no dataset version: nothing to screen (`flywheel status`)")


def screen_batch(deps: ScreenDeps, batch_id: int) -> Screening:
    """Screen the batch's new and re-labelled images, record the result, apply the policies."""
    store, cfg = deps.store, deps.config.screen
    version = batch_version(store, batch_id)
    production = store.production()
    if production is None:
        log.info("screening %s: %s", batch_name(batch_id), NO_PRODUCTION)
        return store.add_screening(
            Screening(
                batch_id=batch_id, version_id=version.id, model_id=None, state=ScreenState.SKIPPED, note=NO_PRODUCTION
            )
        )
    manifest = store.manifest(version.id)
    parent = store.manifest(version.parent_id) if version.parent_id else {}
    new = changes(parent, manifest.values())
    labels = LabelScreen([], {})
    try:
        d = deps
        labels = label_suspects(d.store, d.registry, d.predictor, d.files, d.config, batch_id, production, new)
        failed = ""
    except FlywheelError as exc:  # the other checks need no model: they still run
        failed = str(exc)
        log.error("screening %s: the label check failed, the other checks go on: %s", batch_name(batch_id), exc)
    suspects = labels.suspects + _leakage(deps, new)
    shift, shift_stats = _shift(deps, new, parent, version.class_names)
    if shift is not None:
        suspects.append(shift)
    policies = {Check.LABEL_ERRORS: Policy(cfg.label_errors), Check.LEAKAGE: Policy(cfg.leakage)}
    policies[Check.CLASS_SHIFT] = Policy(cfg.class_shift)
    flagged = {c: len({s.image_sha256 for s in suspects if s.check is c}) for c in Check}
    state = decide(flagged, policies)
    checks = {str(c): {"policy": str(policies[c]), "flagged": flagged[c]} for c in Check}
    checks[str(Check.CLASS_SHIFT)] |= shift_stats
    checks[str(Check.LABEL_ERRORS)] |= labels.summary
    if failed:
        checks[str(Check.LABEL_ERRORS)]["error"] = failed
    quarantined = _quarantine(deps, batch_id, new, suspects, policies) if state is ScreenState.QUARANTINED else ()
    note = _note(state, flagged, cfg)
    screening = store.add_screening(
        Screening(
            batch_id=batch_id,
            version_id=version.id,
            model_id=production.id,
            state=state,
            note=note,
            images=len(new),
            checks=checks,
            suspects=tuple(suspects),
            quarantined=quarantined,
        )
    )
    log.info("screened %s with %s: %s", batch_name(batch_id), model_name(production.id), note)
    return screening


def _leakage(deps: ScreenDeps, new: Sequence[ManifestItem]) -> list[Suspect]:
    stored = deps.store.stored_hashes()
    mine = {i.image_sha256: i.split for i in new}
    fresh = [replace(h, split=mine[h.image_sha256]) for h in stored if h.image_sha256 in mine]
    golden_dir = deps.config.gate.golden_dir
    golden = deps.files.golden_hashes(resolve(deps.data_root, golden_dir) if golden_dir else None)
    reference: list[Hashed] = [h for h in stored if h.image_sha256 not in mine] + golden
    return near_copies(fresh, reference, deps.config.screen.leakage_bits, deps.files.fine_distance)


def _shift(
    deps: ScreenDeps, new: Sequence[ManifestItem], parent: Mapping[str, ManifestItem], names: list[str]
) -> tuple[Suspect | None, dict[str, object]]:
    """The batch's boxes per class against the parent version's: the test's figures, and a
    suspect when the mix shifted (significant and large enough)."""
    if not parent or not new:
        return None, {}
    test = class_shift(_class_counts(deps.files, new, names), _class_counts(deps.files, parent.values(), names))
    cfg = deps.config.screen
    stats: dict[str, object] = {"chi2": round(test.chi2, 3), "dof": test.dof, "p_value": test.p_value}
    stats |= {"distance": round(test.distance, 4), "batch": test.batch, "version": test.version}
    if test.p_value >= cfg.shift_p or test.distance < cfg.shift_distance:
        return None, stats
    why = (
        f"the batch's class mix differs from the version's: chi-square {test.chi2:.1f} on {test.dof} dof, "
        f"p = {test.p_value:.2g} (< {cfg.shift_p}), total variation {test.distance:.2f} (>= {cfg.shift_distance})"
    )
    return Suspect(Check.CLASS_SHIFT, "class_shift", "", round(test.distance, 4), why), stats


def _class_counts(files: ScreenFiles, items: Iterable[ManifestItem], names: list[str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for cls in files.label_classes(items):
        counts[names[cls] if 0 <= cls < len(names) else str(cls)] += 1
    return dict(counts)


def _quarantine(
    deps: ScreenDeps,
    batch_id: int,
    new: Sequence[ManifestItem],
    suspects: Sequence[Suspect],
    policies: Mapping[Check, Policy],
) -> tuple[str, ...]:
    """The suspect train images of the quarantining checks: copied with their reasons, and left
    out of training. A val image stays in val (its split never changes): reported only."""
    acting = {c for c, p in policies.items() if p is Policy.QUARANTINE}
    chosen = {s.image_sha256 for s in suspects if s.check in acting and s.split == "train"}
    items = [i for i in new if i.image_sha256 in chosen]
    report: dict[str, object] = {
        "batch": batch_name(batch_id),
        "why": "screened with the production model before training; these train images are left out of training",
        "suspects": [asdict(s) for s in suspects if s.image_sha256 in chosen],
    }
    folder = deps.files.quarantine(batch_name(batch_id), items, report)
    log.warning("screening %s: %d suspect train images quarantined to %s", batch_name(batch_id), len(items), folder)
    return tuple(sorted(chosen))


def _note(state: ScreenState, flagged: Mapping[Check, int], cfg: ScreenConfig) -> str:
    found = ", ".join(f"{n} {c}" for c, n in flagged.items() if n) or "nothing suspect"
    if state is ScreenState.HELD:
        after = f" or after {cfg.hold_timeout_hours:g} h" if cfg.hold_timeout_hours else ""
        return f"{found}: held, training waits for `flywheel approve`{after}"
    if state is ScreenState.QUARANTINED:
        return f"{found}: suspect train images quarantined"
    return found

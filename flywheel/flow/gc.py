"""`flywheel gc`: take stock of the data root, ask the retention policy what may go, free it.

Crash-safe by construction: each path is first renamed into `.gc-trash/<stamp>/` (one atomic
rename on the same file system), the ledger entry is written, then the trash is emptied. A
SIGKILL at any point leaves every path either where it was or in the trash, never half a
folder where a command looks; the next gc empties what an earlier one left in the trash.
A rejected model's weights leave a `<sha>.removed.json` tombstone, so a command that wants
them says who removed them and why instead of "file not found".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.core.config import Config
from flywheel.core.domain import model_name
from flywheel.core.faults import crash_point
from flywheel.core.ledger import Action
from flywheel.core.ports import StorePort
from flywheel.core.records import Model, as_utc
from flywheel.core.retention import Area, Found, ModelFacts, Removal, RetentionPolicy, RunFacts, plan

log = logging.getLogger(__name__)

TRASH = ".gc-trash"
TOMBSTONE = ".removed.json"
_DAY = 86400.0


@dataclass(frozen=True)
class GcResult:
    removals: list[Removal]
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removals)


def policy_of(config: Config) -> RetentionPolicy:
    r = config.retention
    return RetentionPolicy(
        r.keep_rejected, r.keep_retired, r.run_logs_days, r.quarantine_days, r.done_days, r.captured_days
    )


def collect(store: StorePort, root: Path, policy: RetentionPolicy, now: float | None = None) -> list[Removal]:
    """What the policy would remove now (nothing is touched)."""
    now = time.time() if now is None else now
    runs = {r.id: RunFacts(r.state, r.model_id is not None, _days_since(r.finished_at, now)) for r in store.runs()}
    models = [ModelFacts(m.id, m.sha256, m.status) for m in store.models()]
    quarantined = frozenset(p.name for p in _children(root / "quarantine") if not p.name.startswith("."))
    return plan(inventory(root, now), runs, models, policy, quarantined)


def run_gc(
    store: StorePort, root: Path, policy: RetentionPolicy, actor: str, dry_run: bool = False, now: float | None = None
) -> GcResult:
    removals = collect(store, root, policy, now)
    if dry_run or not removals:
        return GcResult(removals, dry_run)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    trash = root / TRASH / stamp
    trash.mkdir(parents=True, exist_ok=True)
    models = {m.sha256: m for m in store.models()}
    for index, removal in enumerate(removals):
        source = root / removal.path
        if removal.area is Area.MODEL_WEIGHTS:
            _tombstone(source, models, removal.why)
        if removal.area is not Area.TRASH:
            try:
                os.rename(source, trash / f"{index:05d}-{source.name}")
            except FileNotFoundError:
                continue  # gone since the inventory (a run's own clean-up): nothing to free
        crash_point("gc.moved")
    freed = sum(r.size for r in removals)
    store.append_ledger(Action.GC, actor, _summary(removals, freed))
    crash_point("gc.recorded")
    shutil.rmtree(root / TRASH, ignore_errors=True)
    log.info("gc freed %s in %d paths", human_bytes(freed), len(removals))
    return GcResult(removals, dry_run)


def removed_note(checkpoint: Path) -> str:
    """Why a model's weights are gone, from its tombstone ("" when gc did not remove them)."""
    stone = checkpoint.with_name(checkpoint.name.split(".")[0] + TOMBSTONE)
    try:
        data = json.loads(stone.read_text())
    except (OSError, ValueError):
        return ""
    return (
        f"its weights were removed by `flywheel gc` at {data.get('at', '?')} ({data.get('why', '')}), so it "
        "cannot be scored or promoted again; raise retention.keep_rejected in config.toml to keep more"
    )


def inventory(root: Path, now: float) -> Iterator[Found]:
    """Every path the policy has an opinion on, classified; nothing outside these areas."""
    for run in _children(root / "runs"):
        owner = run.name[1:] if run.name[:1] == "r" and run.name[1:].isdigit() else ""
        if not owner.isdigit() or not run.is_dir():
            continue
        owner = str(int(owner))
        weights = run / "train" / "weights"
        listed: set[Path] = set()
        for pt in _children(weights):
            area = {"best.pt": Area.RUN_BEST, "last.pt": Area.RUN_LAST}.get(pt.name)
            if area is None and pt.name.startswith("epoch") and pt.suffix == ".pt":
                area = Area.RUN_EPOCH
            if area is not None:
                listed.add(pt)
                yield _found(root, pt, area, now, owner)
        rest = disk_bytes(run) - sum(disk_bytes(p) for p in listed)
        yield Found(run.relative_to(root).as_posix(), Area.RUN_REST, rest, _age(run, now), owner)
    for shard in _children(root / "models"):
        for item in _children(shard):
            if item.name.endswith(TOMBSTONE) or item.name.startswith("."):
                continue
            yield _found(root, item, Area.MODEL_WEIGHTS, now, item.name.split(".")[0].split("_")[0])
    quarantine = root / "quarantine"
    for batch in [*_children(quarantine), *_children(quarantine / ".retried")]:
        if not batch.name.startswith("."):
            yield _found(root, batch, Area.QUARANTINE, now, batch.name)
    for batch in _children(root / "inbox" / ".done"):
        if not batch.name.startswith("."):
            yield _found(root, batch, Area.DONE, now, batch.name)
    captured = root / "captured"
    if captured.is_dir():
        for path in sorted(p for p in captured.rglob("*") if p.is_file()):
            yield _found(root, path, Area.CAPTURED, now)
    for left in _children(root / TRASH):
        yield _found(root, left, Area.TRASH, now)


def data_root_areas(root: Path) -> dict[str, Path]:
    """The parts of a data root whose size is reported (metrics, `flywheel gc --json`)."""
    return {
        "models": root / "models",
        "runs": root / "runs",
        "objects": root / "objects",
        "versions": root / "versions",
        "quarantine": root / "quarantine",
        "done": root / "inbox" / ".done",
        "captured": root / "captured",
        "production": root / ".production",
    }


def usage_by_area(root: Path) -> dict[str, int]:
    """Bytes per part of the data root, for `flywheel gc`'s summary."""
    return {name: disk_bytes(path) for name, path in data_root_areas(root).items()}


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _summary(removals: list[Removal], freed: int) -> str:
    counts: dict[str, int] = {}
    for r in removals:
        counts[r.area.value] = counts.get(r.area.value, 0) + 1
    parts = ", ".join(f"{n} {area}" for area, n in sorted(counts.items()))
    return f"freed {human_bytes(freed)}: {parts}"


def _tombstone(weights: Path, models: dict[str, Model], why: str) -> None:
    sha = weights.name.split(".")[0].split("_")[0]
    stone = weights.with_name(sha + TOMBSTONE)
    if stone.exists():
        return
    owner = models.get(sha)
    body = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "why": why, "sha256": sha}
    if owner is not None:
        body["model"] = model_name(owner.id)
    tmp = stone.with_name(f".{stone.name}.tmp")
    tmp.write_text(json.dumps(body) + "\n")
    os.replace(tmp, stone)


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _found(root: Path, path: Path, area: Area, now: float, owner: str = "") -> Found:
    return Found(path.relative_to(root).as_posix(), area, disk_bytes(path), _age(path, now), owner)


def disk_bytes(path: Path) -> int:
    """The disk space a file or folder takes (allocated blocks, as `du` counts them), not
    following links, each hard-linked file once."""
    total, seen, stack = 0, set[tuple[int, int]](), [str(path)]
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_blocks * 512
    except OSError:
        return 0
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    if (info.st_dev, info.st_ino) not in seen:
                        seen.add((info.st_dev, info.st_ino))
                        total += info.st_blocks * 512
            except OSError:
                continue
    return total


def _age(path: Path, now: float) -> float:
    try:
        return max(now - path.lstat().st_mtime, 0.0) / _DAY
    except OSError:
        return 0.0


def _days_since(at: datetime | None, now: float) -> float:
    if at is None:
        return 0.0
    return max(now - as_utc(at).timestamp(), 0.0) / _DAY

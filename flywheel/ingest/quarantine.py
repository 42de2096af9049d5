"""What is in quarantine, and sending a fixed batch back in.

`quarantine/<batch>/` holds copies of the refused files and `report.json` (code and reason per
file). A retry rebuilds the batch as dropped (from `inbox/.done/<batch>`) with the files from
quarantine laid over it, so the user fixes files where the report names them and nothing
else; the result goes into the inbox under a new name, as any batch does, and the old
quarantine folder moves to `quarantine/.retried/`.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.core.domain import batch_name, parse_id
from flywheel.core.errors import NotFound, UsageError
from flywheel.ingest import archives
from flywheel.ingest.report import read_report

REPORT = "report.json"
RETRIED = ".retried"


@dataclass
class Quarantined:
    label: str  # b0003-name
    folder: Path
    reason: str | None  # why the whole batch was refused, if it was
    files: list[dict[str, Any]] = field(default_factory=list)  # path, code, reason
    notes: list[dict[str, Any]] = field(default_factory=list)  # path, code, detail: kept, but changed


def list_quarantine(root: Path) -> list[Quarantined]:
    """Batches with a report, oldest first: files in quarantine, or notes on files that were
    kept but changed (a dropped box, a clipped one), which the user should see too."""
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not (folder / REPORT).is_file():
            continue
        report = read_report(folder)
        if report.get("files") or report.get("notes"):
            files, notes = list(report.get("files") or []), list(report.get("notes") or [])
            out.append(Quarantined(folder.name, folder, report.get("reason"), files, notes))
    return out


def find(root: Path, batch: str) -> Quarantined:
    """A quarantined batch by id (`b0003`, `3`) or by its folder name."""
    entries = list_quarantine(root)
    wanted = batch if (root / batch).is_dir() else f"{batch_name(parse_id(batch, 'b'))}-"
    for entry in entries:
        if not entry.files:
            continue  # notes only: nothing to fix and retry
        if entry.label == wanted or entry.label.startswith(wanted):
            return entry
    raise NotFound(f"no quarantined files for batch {batch!r}; list them with `flywheel quarantine`")


def retry(quarantine_root: Path, done: Path, inbox: Path, batch: str, marker: str) -> Path:
    """Stage the fixed batch into the inbox (a hidden name, then one rename) and return its path."""
    entry = find(quarantine_root, batch)
    report = read_report(entry.folder)
    original = done / entry.label
    stage = inbox / f".retry-{uuid.uuid4().hex[:8]}"
    try:
        if original.is_dir():
            shutil.copytree(original, stage, symlinks=True, ignore=_special_files)
        elif original.is_file():
            if not archives.is_archive(original):
                raise UsageError(f"{original} is not a batch folder or archive; drop a fixed batch instead")
            stage.mkdir(parents=True)
            archives.extract(original, stage, 2**63)
        else:
            stage.mkdir(parents=True)
            names = report.get("class_names") or []
            if names:  # the batch's own class ids, in case its class file went with the original
                (stage / "classes.txt").write_text("".join(f"{n}\n" for n in names))
        fixed = _overlay(entry.folder, stage)
        if original.exists() and not fixed:
            raise UsageError(
                f"nothing in {entry.folder} differs from the batch as dropped: fix the files listed in "
                f"{entry.folder / REPORT} first, then retry"
            )
        (stage / marker).touch()
        name = entry.label.split("-", 1)[1] if "-" in entry.label else entry.label
        target = _free(inbox / f"{name}-retry")
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    retired = _free(quarantine_root / RETRIED / entry.label)
    retired.parent.mkdir(parents=True, exist_ok=True)
    entry.folder.rename(retired)
    return target


def _overlay(quarantine: Path, stage: Path) -> int:
    """Copy every file of the quarantine folder over the staged batch; how many differed."""
    changed = 0
    for path in sorted(quarantine.rglob("*")):
        rel = path.relative_to(quarantine)
        if not path.is_file() or path.is_symlink() or rel.as_posix() in (REPORT, f".{REPORT}.tmp"):
            continue
        dest = stage / rel
        if not (dest.is_file() and filecmp.cmp(path, dest, shallow=False)):
            changed += 1
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink():
                dest.unlink()
            shutil.copy2(path, dest)
    return changed


def _special_files(folder: str, names: list[str]) -> set[str]:
    """Pipes, sockets and devices are not copied (reading a pipe would block); they were reported."""
    out = set()
    for name in names:
        mode = os.lstat(os.path.join(folder, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            out.add(name)
    return out


def _free(path: Path) -> Path:
    final, n = path, 1
    while final.exists() or final.is_symlink():
        n += 1
        final = path.with_name(f"{path.name}.{n}")
    return final

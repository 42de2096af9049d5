"""Where each file of a batch went, and the quarantine report that says so.

`BatchPlacement` places every entry of the batch exactly once: versioned, quarantined (with a code
and a reason) or ignored; the first placement wins, and whatever no step placed is
quarantined as unsupported. So `files == versioned + quarantined + ignored` holds by
construction, whatever the format. `write_quarantine` copies the quarantined files (never
links: a link is reported, not followed) and writes `report.json`.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from flywheel.ingest.images import OTHER_IMAGE_SUFFIXES
from flywheel.ingest.layout import is_export_metadata
from flywheel.ingest.reasons import Code

WHAT_TO_DO = (
    "Fix each file named under `files` in this folder (or put a corrected annotation file at its path "
    "here), then run `flywheel quarantine retry {batch}`; or drop a corrected batch into the inbox"
)


@dataclass
class BatchPlacement:
    entries: list[str]
    versioned: set[str] = field(default_factory=set)
    quarantined: dict[str, tuple[Code, str]] = field(default_factory=dict)
    ignored: dict[str, Code] = field(default_factory=dict)
    notes: list[tuple[str, Code, str]] = field(default_factory=list)

    def placed(self, rel: str) -> bool:
        return rel in self.versioned or rel in self.quarantined or rel in self.ignored

    def version(self, rel: str) -> None:
        if not self.placed(rel):
            self.versioned.add(rel)

    def quarantine(self, rel: str, code: Code, reason: str) -> None:
        if not self.placed(rel):
            self.quarantined[rel] = (code, reason)

    def ignore(self, rel: str, code: Code) -> None:
        if not self.placed(rel):
            self.ignored[rel] = code

    def note(self, rel: str, code: Code, text: str) -> None:
        self.notes.append((rel, code, text))

    def close(self) -> None:
        """Ignore the export tools' side files no step claimed; quarantine anything else unclaimed."""
        for rel in self.entries:
            if is_export_metadata(rel):
                self.ignore(rel, Code.EXPORT_METADATA)
            elif PurePosixPath(rel).suffix.lower() in OTHER_IMAGE_SUFFIXES:
                self.quarantine(
                    rel, Code.IMAGE_UNSUPPORTED, "an image format flywheel does not store; convert it to JPEG or PNG"
                )
            else:
                self.quarantine(rel, Code.FILE_UNSUPPORTED, "not an image, label or class-name file")

    def codes(self) -> dict[str, int]:
        return dict(sorted(Counter(str(code) for code, _ in self.quarantined.values()).items()))


def write_quarantine(
    target: Path,
    source_root: Path,
    outcome: BatchPlacement,
    header: dict[str, Any],
    whole: Path | None = None,
) -> None:
    """Copy the quarantined files (or `whole`, the dropped file itself) and write report.json."""
    target.mkdir(parents=True, exist_ok=True)
    for rel in outcome.quarantined if whole is None else []:
        source = source_root / rel
        if source.is_symlink() or not source.is_file():
            continue  # links and special files are reported, never copied or followed
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    if whole is not None and whole.is_file() and not whole.is_symlink():
        shutil.copy2(whole, target / whole.name)
    report = {
        **header,
        "counts": {
            "files": len(outcome.entries),
            "versioned": len(outcome.versioned),
            "quarantined": len(outcome.quarantined),
            "ignored": len(outcome.ignored),
        },
        "quarantine_reasons": outcome.codes(),
        "files": [{"path": rel, "code": str(code), "reason": why} for rel, (code, why) in outcome.quarantined.items()],
        "notes": [{"path": rel, "code": str(code), "detail": text} for rel, code, text in outcome.notes],
        "ignored": [{"path": rel, "code": str(code)} for rel, code in sorted(outcome.ignored.items())],
        "what_to_do": WHAT_TO_DO.format(batch=header.get("batch", "BATCH")),
    }
    tmp = target / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(target / "report.json")


def read_report(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return data

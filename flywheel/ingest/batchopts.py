"""What a batch says about itself: `allow_unlabeled` in its READY file, and whether its class
names can join the project's class map."""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml

from flywheel.ingest.layout import Listing
from flywheel.ingest.reasons import BatchRefused, Code

_MARKER_LIMIT = 1 << 16


def allow_unlabeled(listing: Listing, marker: str, default: bool) -> bool:
    """The batch's READY file may hold `allow_unlabeled: true` (or false, or just the word): then
    its images without any label are kept as negatives instead of being quarantined."""
    markers = sorted((f for f in listing.files if PurePosixPath(f).name == marker), key=lambda f: (f.count("/"), f))
    if not markers or (listing.root / markers[0]).stat().st_size > _MARKER_LIMIT:
        return default
    try:
        data = yaml.safe_load((listing.root / markers[0]).read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return default
    if data == "allow_unlabeled":
        return True
    if isinstance(data, dict) and isinstance(data.get("allow_unlabeled"), bool):
        return bool(data["allow_unlabeled"])
    return default


def check_class_names(project: list[str], batch: list[str]) -> None:
    """Refuse names that would silently split a class: equal to another name but for case or
    spacing ("RBC" and "rbc"), within the batch or against the project's map."""
    known = {name.strip().casefold(): name.strip() for name in project}
    mine: dict[str, str] = {}
    for raw in batch:
        name = raw.strip()
        key = name.casefold()
        twin = known.get(key) or mine.get(key)
        if twin is not None and twin != name:
            where = "the project's class map" if key in known else "this batch"
            raise BatchRefused(
                Code.CLASS_CONFLICT,
                f"class {name!r} differs from {twin!r} in {where} only in case or spacing: it would become a "
                f"second class. Rename it to {twin!r} (or to a clearly different name) and drop the batch again",
            )
        mine[key] = name

"""Dataset versions in the database: rows for a version's changes, manifests read back by
folding its ancestors' rows (flywheel/core/manifests.py says why and how).

Plain rows, not ORM objects, on the item table: a large manifest loads ~5x faster, and one
executemany writes a version's items at ~10x the speed of an ORM object per item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from sqlalchemy import insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from flywheel.core.domain import ManifestItem
from flywheel.core.manifests import DELTA, FULL, Totals
from flywheel.core.records import Version
from flywheel.store.tables import VersionItemRow, VersionRow

_CHUNK = 500  # image shas per IN (...) list: far under every backend's limit on bound parameters
_ITEM_COLUMNS = (  # a ManifestItem's fields, in order
    col(VersionItemRow.image_sha256),
    col(VersionItemRow.label_sha256),
    col(VersionItemRow.ext),
    col(VersionItemRow.split),
    col(VersionItemRow.boxes),
)


def chain(s: Session, version_id: int) -> list[int]:
    """The versions whose rows make up `version_id`'s manifest, oldest first: its ancestors back
    to the root, or to the nearest full-form one (which holds everything before it)."""
    rows = s.execute(sa_select(col(VersionRow.id), col(VersionRow.parent_id), col(VersionRow.manifest_form)))
    links = {r[0]: (r[1], r[2]) for r in rows}
    out: list[int] = []
    current: int | None = version_id
    while current is not None and current in links:
        out.append(current)
        parent, form = links[current]
        current = None if form == FULL else parent
    return out[::-1]


def manifest(s: Session, version_id: int) -> dict[str, ManifestItem]:
    return _fold(s, chain(s, version_id), None)


def items(s: Session, version_id: int, image_shas: Iterable[str]) -> dict[str, ManifestItem]:
    """The version's items for these images only (those it has): no full manifest is read."""
    ids, wanted, found = chain(s, version_id), sorted(set(image_shas)), {}
    for start in range(0, len(wanted), _CHUNK):
        found.update(_fold(s, ids, wanted[start : start + _CHUNK]))
    return found


def insert_version(
    s: Session,
    parent: Version | None,
    version_fields: dict[str, Any],
    changed: Sequence[ManifestItem],
    replaced: Mapping[str, ManifestItem],
) -> VersionRow:
    """A delta-form version row and its changed items; totals from the parent's plus the change."""
    if parent is None:
        start = Totals()
    elif parent.manifest_form == FULL:  # its hashes are the old sorted-list kind: work them out anew, once
        start = Totals.of(manifest(s, parent.id))
    else:  # the row holds every total (flywheel/core/manifests.py Totals), under the same names
        start = Totals(**{f.name: getattr(parent, f.name) for f in fields(Totals)})
    totals = start.apply(changed, replaced)
    row = VersionRow(parent_id=parent.id if parent else None, manifest_form=DELTA, **asdict(totals), **version_fields)
    s.add(row)
    s.flush()
    rows = [
        {
            "version_id": row.id,
            "image_sha256": i.image_sha256,
            "label_sha256": i.label_sha256,
            "ext": i.ext,
            "split": i.split,
            "boxes": i.boxes,
        }
        for i in changed
    ]
    if rows:
        s.execute(insert(VersionItemRow), rows)
    return row


def _fold(s: Session, version_ids: list[int], image_shas: list[str] | None) -> dict[str, ManifestItem]:
    """Each image's item from the newest of `version_ids` that has it."""
    # A parent's id is always lower than its child's: id order is the chain's order.
    query = sa_select(*_ITEM_COLUMNS).where(col(VersionItemRow.version_id).in_(version_ids))
    if image_shas is not None:
        query = query.where(col(VersionItemRow.image_sha256).in_(image_shas))
    rows = s.execute(query.order_by(col(VersionItemRow.version_id)))
    return {r[0]: ManifestItem(r[0], r[1], r[2], r[3], r[4]) for r in rows}

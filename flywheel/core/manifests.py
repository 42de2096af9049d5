"""A dataset version as a change on its parent: what a new version stores, and its totals and
hashes worked out from that change alone.

A batch of 1,000 images on top of 100,000 must cost about what 1,000 images on an empty data
root cost, so nothing here walks the whole manifest when a version is made:
- a version stores only the items it adds or re-labels (`changes`); its manifest is its
  ancestors' items with each later version's items taking the place of earlier ones (items
  are never removed from a data set, so the fold is exact);
- its hashes are additive: the sum, modulo 2**256, of each item's SHA-256. Equal sets of items
  give equal hashes whatever their order, and replacing an item is a subtraction and an
  addition, so a child's hash is its parent's plus the change.

Versions made before this scheme ("full" form) list every item and hash the sorted list; a
child of one works its parent's totals out once from the full manifest (`Totals.of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from flywheel.core.domain import ManifestItem

FULL = "full"  # every item stored with the version; sorted-list hashes (a database may still hold such rows)
DELTA = "delta"  # only the items added or re-labelled over the parent; additive hashes
_MOD = 2**256


def item_digest(item: ManifestItem) -> int:
    """What identifies an item in a data set: its pixels, its label and its split."""
    line = f"{item.image_sha256} {item.label_sha256} {item.split}"
    return int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")


def additive_hash(items: Iterable[ManifestItem]) -> str:
    """The hash of a set of items, independent of their order (64 hex digits, like a SHA-256)."""
    return _hex(sum(item_digest(i) for i in items))


def changes(parent: Mapping[str, ManifestItem], items: Iterable[ManifestItem]) -> list[ManifestItem]:
    """The items a new version stores: new images and images whose label or split changed.

    `parent` needs to hold only the parent's items for these images (not the whole manifest)."""
    return [i for i in items if parent.get(i.image_sha256) != i]


@dataclass(frozen=True)
class Totals:
    """What a version row records about its whole manifest."""

    train_images: int = 0
    val_images: int = 0
    boxes: int = 0
    val_boxes: int = 0
    manifest_sha256: str = "0" * 64  # the additive hash of no items
    val_sha256: str = "0" * 64

    @classmethod
    def of(cls, manifest: Mapping[str, ManifestItem]) -> Totals:
        """From a whole manifest (a first version, or a child of a full-form version)."""
        return cls().apply(manifest.values(), {})

    def apply(self, changed: Iterable[ManifestItem], replaced: Mapping[str, ManifestItem]) -> Totals:
        """These totals after `changed` items are added; `replaced`: the parent's items for any of
        them it already had (by image sha256), which they take the place of."""
        train, val, boxes, val_boxes = self.train_images, self.val_images, self.boxes, self.val_boxes
        whole, val_sum = int(self.manifest_sha256, 16), int(self.val_sha256, 16)
        for sign, item in _signed(changed, replaced):
            digest = sign * item_digest(item)
            whole += digest
            boxes += sign * item.boxes
            if item.split == "val":
                val += sign
                val_boxes += sign * item.boxes
                val_sum += digest
            else:
                train += sign
        return replace(
            self,
            train_images=train,
            val_images=val,
            boxes=boxes,
            val_boxes=val_boxes,
            manifest_sha256=_hex(whole),
            val_sha256=_hex(val_sum),
        )


def _signed(
    changed: Iterable[ManifestItem], replaced: Mapping[str, ManifestItem]
) -> Iterable[tuple[int, ManifestItem]]:
    for item in changed:
        old = replaced.get(item.image_sha256)
        if old is not None:
            yield -1, old
        yield 1, item


def _hex(value: int) -> str:
    return f"{value % _MOD:064x}"

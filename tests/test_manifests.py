"""A version stored as its change on the parent: totals and hashes from the change alone equal
those of the whole manifest, on SQLite and PostgreSQL."""

from __future__ import annotations

import random

from sqlalchemy import func, select
from sqlmodel import Session

from flywheel.core.domain import ManifestItem
from flywheel.core.manifests import DELTA, Totals, additive_hash, changes
from flywheel.store import Store, database_url, make_engine, upgrade_schema
from flywheel.store.tables import VersionItemRow
from tests.pg_server import both_backends


def item(n: int, label: int = 0, split: str = "train", boxes: int = 1) -> ManifestItem:
    return ManifestItem(f"{n:064x}", f"{label:064x}", ".jpg", split, boxes)


def test_the_additive_hash_ignores_order_and_sees_every_field_that_matters():
    items = [item(n, split="val" if n % 3 else "train") for n in range(20)]
    assert additive_hash(items) == additive_hash(reversed(items))
    assert additive_hash(items) != additive_hash(items[1:])
    assert additive_hash([item(1)]) != additive_hash([item(1, label=2)])
    assert additive_hash([item(1)]) != additive_hash([item(1, split="val")])
    assert additive_hash([]) == "0" * 64 and len(additive_hash(items)) == 64


def test_changes_are_new_images_and_changed_labels_only():
    parent = {i.image_sha256: i for i in (item(1), item(2))}
    batch = [item(1), item(2, label=9), item(3)]
    assert changes(parent, batch) == [item(2, label=9), item(3)]


def test_totals_from_changes_equal_totals_of_the_whole_manifest():
    rng = random.Random(7)
    manifest: dict[str, ManifestItem] = {}
    totals = Totals()
    for _ in range(30):  # thirty versions: new images, re-labelled ones, repeats of known ones
        batch = [
            item(rng.randrange(200), rng.randrange(3), rng.choice(["train", "val"]), rng.randrange(5))
            for _ in range(rng.randrange(1, 12))
        ]
        batch = list({i.image_sha256: i for i in batch}.values())
        changed = changes(manifest, batch)
        replaced = {i.image_sha256: manifest[i.image_sha256] for i in changed if i.image_sha256 in manifest}
        totals = totals.apply(changed, replaced)
        manifest.update({i.image_sha256: i for i in changed})
        assert totals == Totals.of(manifest)
    assert totals.train_images + totals.val_images == len(manifest)


@both_backends
def test_a_version_stores_only_its_change_and_reads_back_whole(tmp_path, db_url):
    (tmp_path / "root").mkdir()
    engine = make_engine(database_url(tmp_path / "root", db_url))
    upgrade_schema(engine)
    store = Store(engine)
    first = {i.image_sha256: i for i in (item(n, split="val" if n % 4 == 0 else "train") for n in range(40))}
    v1 = store.create_version(None, None, ["cell"], list(first.values()))
    batch = [item(5, label=1, boxes=3), item(100), item(101, split="val")]  # one re-labelled, two new
    replaced = store.items(v1.id, [i.image_sha256 for i in batch])
    assert replaced == {item(5).image_sha256: first[item(5).image_sha256]}
    v2 = store.create_version(v1, None, ["cell"], changes(replaced, batch), replaced)
    v3 = store.create_version(v2, None, ["cell", "wbc"], [])  # a class added, no image changed

    whole = {**first, **{i.image_sha256: i for i in batch}}
    assert store.manifest(v2.id) == whole == store.manifest(v3.id)
    assert store.manifest(v1.id) == first  # versions are immutable
    assert store.items(v3.id, [item(5).image_sha256, item(999).image_sha256]) == {
        item(5).image_sha256: item(5, label=1, boxes=3)
    }
    with Session(engine) as s:
        stored = dict(
            s.execute(select(VersionItemRow.version_id, func.count()).group_by(VersionItemRow.version_id)).all()
        )
    assert stored == {v1.id: 40, v2.id: 3}  # v3 stores nothing
    expect = Totals.of(whole)
    for v in (v2, v3):
        assert v.manifest_form == DELTA
        assert (v.train_images, v.val_images, v.boxes, v.val_boxes) == (
            expect.train_images,
            expect.val_images,
            expect.boxes,
            expect.val_boxes,
        )
        assert (v.manifest_sha256, v.val_sha256) == (expect.manifest_sha256, expect.val_sha256)
    engine.dispose()

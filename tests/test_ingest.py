"""Ingest a dropped batch folder: real SQLite store, real object store, real files.

Checked: a good batch becomes a materialised version (hard links into the object store);
every bad file lands in quarantine with a reason; nothing dropped is lost; splits and class
ids stay stable across versions; identical re-drops make no version; re-labels do.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from flywheel.cli.demo import synthetic_batch
from flywheel.core.domain import BatchState
from flywheel.ingest.labels import normalised, parse_label
from flywheel.ingest.pipeline import IngestResult, ingest_batch
from flywheel.store.materialize import materialize
from tests.ingest_kit import Env

MARKER = "READY"
IGNORE = [".DS_Store"]


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(seed: int, size: int = 32) -> bytes:
    """A small noise PNG; a different seed gives different bytes."""
    import io

    rng = random.Random(seed)
    im = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def snapshot(folder: Path) -> dict[str, str]:
    """relpath -> sha256 of every regular file under `folder`."""
    return {p.relative_to(folder).as_posix(): sha(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def report_of(env: Env, result: IngestResult) -> dict:
    assert result.batch.quarantine_dir, "the batch has no quarantine folder"
    return json.loads((Path(result.batch.quarantine_dir) / "report.json").read_text())


def label_boxes_of(env: Env, version_id: int, image_sha: str) -> list[str]:
    """The stored label lines of an image in a version (read from the object store)."""
    item = env.store.manifest(version_id)[image_sha]
    return env.objects.path(item.label_sha256).read_text().splitlines()


def mixed_batch(folder: Path) -> dict[str, str]:
    """3 good pairs plus every kind of bad file; returns the expected reason text per bad file."""
    write(folder / "classes.txt", "cat\ndog\n")
    for i in range(3):
        write(folder / "images" / f"good{i}.png", png_bytes(100 + i))
        write(folder / "labels" / f"good{i}.txt", f"{i % 2} 0.500000 0.500000 0.200000 0.200000\n")
    write(folder / "images" / "corrupt.png", random.Random(7).randbytes(300))
    write(folder / "labels" / "corrupt.txt", "0 0.5 0.5 0.2 0.2\n")
    write(folder / "images" / "empty.png", b"")
    write(folder / "labels" / "empty.txt", "0 0.5 0.5 0.2 0.2\n")
    write(folder / "images" / "badlabel.png", png_bytes(200))
    write(folder / "labels" / "badlabel.txt", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 1.7 0.2\n")
    write(folder / "images" / "nolabel.png", png_bytes(201))
    write(folder / "labels" / "orphan.txt", "1 0.5 0.5 0.2 0.2\n")
    write(folder / ".DS_Store", b"\x00\x01junk")
    write(folder / MARKER, "")
    return {
        "images/corrupt.png": "not an image Pillow can read",
        "labels/corrupt.txt": "its image images/corrupt.png was refused",
        "images/empty.png": "empty file (0 bytes)",
        "labels/empty.txt": "its image images/empty.png was refused",
        "labels/badlabel.txt": "line 2: box edge x0=-0.35 is outside [0, 1]",
        "images/badlabel.png": "its label labels/badlabel.txt was refused",
        "images/nolabel.png": "no label file",
        "labels/orphan.txt": "label file without a matching image",
    }


# --- a good batch -------------------------------------------------------------------------


def test_good_batch_becomes_version_1_materialised_with_hard_links_when_trained(env: Env):
    batch = synthetic_batch(env.inbox / "first", 12, seed=1, size=32)
    write(batch / MARKER, "")
    dropped = snapshot(batch)

    result = env.ingest(batch)

    assert result.version is not None and result.version.id == 1
    assert result.batch.state == BatchState.INGESTED
    assert result.batch.version_id == 1
    assert result.accepted == result.new_images == 12
    assert result.quarantined == []
    assert result.ignored == [MARKER]
    assert result.version.class_names == ["red", "blue"]

    root = env.paths.versions / "v0001"
    assert not root.exists()  # a version's folder is built for its first training, not per batch
    data_yaml = materialize(env.objects, env.paths.versions, 1, result.version.class_names, env.store.manifest(1))
    assert data_yaml == root / "data.yaml"
    spec = yaml.safe_load((root / "data.yaml").read_text())
    assert spec["names"] == {0: "red", 1: "blue"}
    assert (spec["train"], spec["val"]) == ("images/train", "images/val")
    assert Path(spec["path"]) == root.resolve()

    manifest = env.store.manifest(1)
    image_shas = {h for rel, h in dropped.items() if rel.startswith("images/")}
    assert set(manifest) == image_shas
    splits = {item.split for item in manifest.values()}
    assert splits == {"train", "val"}, "this seed gives both splits; the checks below need both"
    for split in ("train", "val"):
        files = sorted((root / "images" / split).iterdir())
        assert {f.stem for f in files} == {h for h, i in manifest.items() if i.split == split}
    for image_sha, item in manifest.items():
        image = root / "images" / item.split / f"{image_sha}.png"
        label = root / "labels" / item.split / f"{image_sha}.txt"
        assert image.stat().st_ino == env.objects.path(image_sha).stat().st_ino
        assert label.stat().st_ino == env.objects.path(item.label_sha256).stat().st_ino
        assert sha(image.read_bytes()) == image_sha
    assert result.version.train_images + result.version.val_images == 12

    # the batch folder went to inbox/.done/, whole
    assert not batch.exists()
    assert snapshot(env.paths.done / "b0001-first") == dropped
    assert not env.paths.quarantine.exists() or not any(env.paths.quarantine.iterdir())


def test_bom_and_crlf_labels_are_stored_normalised(env: Env):
    batch = env.inbox / "windows"
    write(batch / "classes.txt", "\ufeffcat\r\ndog\r\n")
    write(batch / "images" / "a.png", png_bytes(1))
    (batch / "labels").mkdir()
    (batch / "labels" / "a.txt").write_bytes("\ufeff1 .5 0.5 0.25 1\r\n".encode())

    result = env.ingest(batch)

    assert result.version is not None
    assert result.version.class_names == ["cat", "dog"]
    assert label_boxes_of(env, 1, sha(png_bytes(1))) == ["1 0.500000 0.500000 0.250000 1.000000"]


# --- bad files ----------------------------------------------------------------------------


def test_bad_files_are_quarantined_with_a_reason_each_and_good_pairs_versioned(env: Env):
    batch = env.inbox / "mixed"
    expected = mixed_batch(batch)
    dropped = snapshot(batch)

    result = env.ingest(batch)

    assert result.batch.state == BatchState.INGESTED
    assert result.version is not None and result.version.id == 1
    quarantine = env.paths.quarantine / "b0001-mixed"
    assert result.batch.quarantine_dir == str(quarantine)
    report = json.loads((quarantine / "report.json").read_text())
    reasons = {f["path"]: f["reason"] for f in report["files"]}
    assert set(reasons) == set(expected)
    for rel, phrase in expected.items():
        assert phrase in reasons[rel], (rel, reasons[rel])
        assert (quarantine / rel).is_file(), f"{rel} is not in quarantine"
        assert sha((quarantine / rel).read_bytes()) == dropped[rel], f"{rel} changed on its way to quarantine"
    assert report["batch"] == "b0001-mixed"
    assert report["reason"] is None  # the batch as a whole was not refused

    manifest = env.store.manifest(1)
    assert set(manifest) == {dropped[f"images/good{i}.png"] for i in range(3)}
    refused_images = [rel for rel in expected if rel.startswith("images/")]
    assert len(refused_images) == 4
    assert not {dropped[rel] for rel in refused_images} & set(manifest)
    assert result.accepted == 3
    assert result.batch.quarantined == len(expected)
    assert result.batch.ignored == 2
    assert sorted(result.ignored) == [".DS_Store", MARKER]


def test_nothing_dropped_is_lost(env: Env):
    batch = env.inbox / "mixed"
    mixed_batch(batch)
    dropped = snapshot(batch)

    result = env.ingest(batch)
    assert result.version is not None and result.version.id is not None
    version = result.version
    manifest = env.store.manifest(version.id)
    report = report_of(env, result)
    quarantined = {f["path"] for f in report["files"]}
    quarantine_dir = Path(result.batch.quarantine_dir or "")
    ignored = set(result.ignored)

    versioned: set[str] = set()
    for rel, file_sha in dropped.items():
        if rel.startswith("images/") and file_sha in manifest:
            assert env.objects.has(file_sha)
            versioned.add(rel)
    for rel in list(versioned):
        label_rel = "labels/" + Path(rel).stem + ".txt"
        item = manifest[dropped[rel]]
        boxes = parse_label((env.paths.done / "b0001-mixed" / label_rel).read_text(), 2)
        assert item.label_sha256 == sha(normalised(boxes, {0: 0, 1: 1}))
        assert env.objects.has(item.label_sha256)
        versioned.add(label_rel)
    # the class-name file is versioned as the version's class map
    assert version.class_names == ["cat", "dog"]
    versioned.add("classes.txt")

    for rel in quarantined:
        assert sha((quarantine_dir / rel).read_bytes()) == dropped[rel]

    places = [versioned, quarantined, ignored]
    for rel in dropped:
        assert sum(rel in place for place in places) == 1, f"{rel} is in {sum(rel in p for p in places)} places"
    assert len(versioned) + len(quarantined) + len(ignored) == len(dropped)
    b = result.batch  # and the batch record's own accounting adds up the same way
    assert (b.files, b.files_versioned, b.quarantined, b.ignored) == (
        len(dropped),
        len(versioned),
        len(quarantined),
        len(ignored),
    )

    # and the bytes: every dropped file is in .done/ or in quarantine, unchanged
    done = snapshot(env.paths.done / "b0001-mixed")
    kept = {**done, **{rel: sha((quarantine_dir / rel).read_bytes()) for rel in quarantined}}
    assert kept == dropped
    assert not batch.exists()


def test_move_false_leaves_the_source_folder_untouched(env: Env):
    batch = env.inbox / "mixed"
    expected = mixed_batch(batch)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in batch.rglob("*")}
    dropped = snapshot(batch)

    result = env.ingest(batch, move=False)

    assert snapshot(batch) == dropped
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in batch.rglob("*")} == before
    assert not env.paths.done.exists()
    assert result.version is not None
    quarantine = env.paths.quarantine / "b0001-mixed"
    for rel in expected:  # copied, not moved
        assert sha((quarantine / rel).read_bytes()) == dropped[rel]


def test_duplicate_image_content_inside_a_batch_is_quarantined_once(env: Env):
    batch = env.inbox / "dups"
    write(batch / "classes.txt", "cat\n")
    write(batch / "a.png", png_bytes(5))
    write(batch / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    write(batch / "b.png", png_bytes(5))
    write(batch / "b.txt", "0 0.4 0.4 0.2 0.2\n")

    result = env.ingest(batch)

    assert result.accepted == 1
    files = {f["path"]: (f["code"], f["reason"]) for f in report_of(env, result)["files"]}
    assert files == {
        "b.png": ("image_duplicate_in_batch", "same image content as a.png in this batch"),
        "b.txt": ("partner_refused", "its image b.png was refused"),
    }
    assert result.batch.quarantine_reasons == {"image_duplicate_in_batch": 1, "partner_refused": 1}


def test_two_refused_images_sharing_a_label_are_quarantined_without_crashing(env: Env):
    batch = env.inbox / "shared"
    write(batch / "classes.txt", "cat\n")
    write(batch / "x.png", random.Random(1).randbytes(200))
    write(batch / "x.jpg", random.Random(2).randbytes(200))
    write(batch / "x.txt", "0 0.5 0.5 0.2 0.2\n")
    dropped = snapshot(batch)

    result = env.ingest(batch)

    assert result.batch.state == BatchState.INGESTED
    quarantine = env.paths.quarantine / "b0001-shared"
    for rel in ("x.png", "x.jpg", "x.txt"):
        assert sha((quarantine / rel).read_bytes()) == dropped[rel]


# --- whole batch refused ------------------------------------------------------------------


def test_batch_without_class_names_is_rejected_into_quarantine(env: Env):
    batch = env.inbox / "nonames"
    write(batch / "images" / "a.png", png_bytes(1))
    write(batch / "labels" / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    write(batch / "images" / "b.png", png_bytes(2))
    write(batch / "labels" / "b.txt", "")
    write(batch / MARKER, "")
    dropped = snapshot(batch)

    result = env.ingest(batch)

    assert result.batch.state == BatchState.REJECTED
    assert result.version is None
    assert env.store.versions() == []
    assert "no class names" in (result.batch.reason or "")
    data = set(dropped) - {MARKER}  # the marker is ignored, refused batch or not
    assert (result.batch.files, result.batch.quarantined, result.batch.ignored) == (len(dropped), len(data), 1)
    assert result.batch.quarantine_reasons == {"no_class_names": len(data)}
    quarantine = env.paths.quarantine / "b0001-nonames"
    report = json.loads((quarantine / "report.json").read_text())
    assert "no class names" in report["reason"]
    assert report["code"] == "no_class_names"
    assert "classes.txt" in report["reason"]  # says what to add
    assert {f["path"] for f in report["files"]} == data
    assert all(f["reason"] and f["code"] == "no_class_names" for f in report["files"])
    for rel in data:
        assert sha((quarantine / rel).read_bytes()) == dropped[rel]
    assert not batch.exists(), "a rejected batch must not stay in the inbox"
    assert [b.state for b in env.store.batches()] == [BatchState.REJECTED]


# --- across versions ----------------------------------------------------------------------


def test_splits_are_stable_across_versions(env: Env):
    first = synthetic_batch(env.inbox / "one", 12, seed=1, size=32)
    v1 = env.ingest(first).version
    second = synthetic_batch(env.inbox / "two", 12, seed=2, size=32)
    # batch 1's images come again, re-labelled (one more box each): they must keep their split
    done = env.paths.done / "b0001-one"
    for image in (done / "images").iterdir():
        shutil.copy(image, second / "images" / image.name)
        label = (done / "labels" / f"{image.stem}.txt").read_text()
        (second / "labels" / f"{image.stem}.txt").write_text(label + "0 0.5 0.5 0.1 0.1\n")
    result = env.ingest(second)
    v2 = result.version
    assert v1 is not None and v2 is not None and v1.id is not None and v2.id is not None
    assert v2.parent_id == v1.id
    assert (result.new_images, result.relabelled) == (12, 12)

    m1, m2 = env.store.manifest(v1.id), env.store.manifest(v2.id)
    assert len(m2) == 24
    val1 = {h for h, i in m1.items() if i.split == "val"}
    train1 = {h for h, i in m1.items() if i.split == "train"}
    assert val1 and train1
    assert all(m2[h].split == "val" for h in val1)
    assert all(m2[h].split == "train" for h in train1)
    assert all(m2[h].label_sha256 != m1[h].label_sha256 for h in m1)  # the re-labels took effect
    # on disk too
    on_disk_val2 = {p.stem for p in (env.folder(2) / "images" / "val").iterdir()}
    assert val1 <= on_disk_val2
    # version 1 is immutable: its folder still lists exactly its own images
    assert {p.stem for p in (env.folder(1) / "images" / "val").iterdir()} == val1


def test_class_map_grows_without_renumbering(env: Env):
    b1 = env.inbox / "one"
    write(b1 / "classes.txt", "red\nblue\n")
    write(b1 / "images" / "r.png", png_bytes(1))
    write(b1 / "labels" / "r.txt", "0 0.5 0.5 0.2 0.2\n")
    write(b1 / "images" / "b.png", png_bytes(2))
    write(b1 / "labels" / "b.txt", "1 0.5 0.5 0.2 0.2\n")
    assert env.ingest(b1).version is not None

    b2 = env.inbox / "two"
    write(b2 / "data.yaml", yaml.safe_dump({"names": ["blue", "green", "red"]}))
    write(b2 / "images" / "blue.png", png_bytes(3))
    write(b2 / "labels" / "blue.txt", "0 0.1 0.1 0.1 0.1\n")
    write(b2 / "images" / "green.png", png_bytes(4))
    write(b2 / "labels" / "green.txt", "1 0.2 0.2 0.1 0.1\n")
    write(b2 / "images" / "mixed.png", png_bytes(5))
    write(b2 / "labels" / "mixed.txt", "2 0.3 0.3 0.1 0.1\n0 0.4 0.4 0.1 0.1\n1 0.5 0.5 0.1 0.1\n")
    # r.png again, its red box in this batch's ids: the same label, so not a re-label
    write(b2 / "images" / "r.png", png_bytes(1))
    write(b2 / "labels" / "r.txt", "2 0.5 0.5 0.2 0.2\n")

    result = env.ingest(b2)

    assert result.version is not None and result.version.id == 2
    assert result.version.class_names == ["red", "blue", "green"]
    assert result.new_images == 3
    assert result.relabelled == 0
    assert label_boxes_of(env, 2, sha(png_bytes(3))) == ["1 0.100000 0.100000 0.100000 0.100000"]
    assert label_boxes_of(env, 2, sha(png_bytes(4))) == ["2 0.200000 0.200000 0.100000 0.100000"]
    assert [line.split()[0] for line in label_boxes_of(env, 2, sha(png_bytes(5)))] == ["0", "1", "2"]
    assert label_boxes_of(env, 2, sha(png_bytes(1))) == ["0 0.500000 0.500000 0.200000 0.200000"]
    assert label_boxes_of(env, 2, sha(png_bytes(2))) == ["1 0.500000 0.500000 0.200000 0.200000"]
    spec = yaml.safe_load((env.folder(2) / "data.yaml").read_text())
    assert spec["names"] == {0: "red", 1: "blue", 2: "green"}
    # the materialised label file is the remapped one as well
    item = env.store.manifest(2)[sha(png_bytes(3))]
    on_disk = env.folder(2) / "labels" / item.split / f"{item.image_sha256}.txt"
    assert on_disk.read_text() == "1 0.100000 0.100000 0.100000 0.100000\n"


def test_class_names_as_a_data_yaml_mapping(env: Env):
    batch = env.inbox / "mapped"
    write(batch / "data.yaml", "names:\n  1: dog\n  0: cat\n")
    write(batch / "images" / "a.png", png_bytes(1))
    write(batch / "labels" / "a.txt", "1 0.5 0.5 0.2 0.2\n")

    result = env.ingest(batch)

    assert result.version is not None
    assert result.version.class_names == ["cat", "dog"]
    assert label_boxes_of(env, 1, sha(png_bytes(1)))[0].startswith("1 ")


def test_redropping_identical_content_is_not_ingested_again(env: Env, tmp_path: Path):
    # a batch's identity is its content: the same files under another name (and with a marker
    # file now) are the same batch, recognised and moved out of the inbox, not processed twice
    pristine = synthetic_batch(tmp_path / "pristine" / "same", 6, seed=3, size=32)
    shutil.copytree(pristine, env.inbox / "same")
    first = env.ingest(env.inbox / "same")
    assert first.version is not None

    shutil.copytree(pristine, env.inbox / "renamed")
    write(env.inbox / "renamed" / MARKER, "")
    second = env.ingest(env.inbox / "renamed")

    assert second.already
    assert second.batch.id == first.batch.id
    assert second.version is None
    assert [v.id for v in env.store.versions()] == [1]
    assert [b.id for b in env.store.batches()] == [first.batch.id]
    assert not (env.inbox / "renamed").exists()
    assert snapshot(env.paths.done / "b0001-renamed") == snapshot(pristine) | {MARKER: sha(b"")}


def test_again_ingests_identical_content_as_a_new_batch_without_a_new_version(env: Env, tmp_path: Path):
    pristine = synthetic_batch(tmp_path / "pristine" / "same", 6, seed=3, size=32)
    shutil.copytree(pristine, env.inbox / "same")
    first = env.ingest(env.inbox / "same")
    shutil.copytree(pristine, env.inbox / "same")

    second = ingest_batch(
        env.store,
        env.paths,
        env.inbox / "same",
        val_fraction=0.25,
        marker=MARKER,
        ignore=IGNORE,
        move=True,
        again=True,
    )

    assert second.batch.id == 2 and second.batch.state == BatchState.INGESTED
    assert second.version is None and second.batch.version_id is None
    assert (second.accepted, second.new_images, second.relabelled) == (6, 0, 0)
    assert [b.content_sha256 for b in env.store.batches()] == [first.batch.content_sha256] * 2
    assert (env.paths.done / "b0002-same").is_dir()


def test_relabelled_image_gets_its_new_label_in_a_new_version(env: Env):
    b1 = env.inbox / "one"
    write(b1 / "classes.txt", "cat\ndog\n")
    write(b1 / "a.png", png_bytes(1))
    write(b1 / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    write(b1 / "b.png", png_bytes(2))
    write(b1 / "b.txt", "1 0.5 0.5 0.2 0.2\n")
    assert env.ingest(b1).version is not None
    old_label = label_boxes_of(env, 1, sha(png_bytes(1)))

    b2 = env.inbox / "two"
    write(b2 / "classes.txt", "cat\ndog\n")
    write(b2 / "a.png", png_bytes(1))
    write(b2 / "a.txt", "1 0.3 0.3 0.1 0.1\n0 0.7 0.7 0.1 0.1\n")

    result = env.ingest(b2)

    assert result.version is not None and result.version.id == 2
    assert result.relabelled == 1 and result.new_images == 0
    a = sha(png_bytes(1))
    assert label_boxes_of(env, 2, a) == [
        "1 0.300000 0.300000 0.100000 0.100000",
        "0 0.700000 0.700000 0.100000 0.100000",
    ]
    assert env.store.manifest(2)[a].boxes == 2
    assert env.store.manifest(2)[a].split == env.store.manifest(1)[a].split
    assert set(env.store.manifest(2)) == set(env.store.manifest(1))  # b.png is carried over
    # version 1 keeps the old label, in the database and on disk
    assert label_boxes_of(env, 1, a) == old_label == ["0 0.500000 0.500000 0.200000 0.200000"]
    item1 = env.store.manifest(1)[a]
    assert (env.folder(1) / "labels" / item1.split / f"{a}.txt").read_text().startswith("0 0.5")

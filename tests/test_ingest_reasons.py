"""Every kind of bad input has its own code and reason in the quarantine report; nothing
dropped is lost (files in = versioned + quarantined + ignored over a corpus of 30+ distinct bad
inputs, as a folder and as a zip); archives cannot write outside the batch; a batch is ingested
exactly once even when ingest is interrupted; near copies of val images stay out of train."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from flywheel.core.domain import BatchState, split_of
from flywheel.ingest import batchrun
from flywheel.ingest.images import dhash
from flywheel.ingest.reasons import Code
from tests.ingest_kit import MARKER, Env, image_bytes, sha, snapshot, write, yolo_batch, zip_folder

_image_open = Image.open  # the name Ultralytics' patch keeps Pillow's own opener under


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def pair_batch(env: Env, image_name: str, image: bytes, label: str | bytes, name: str = "b") -> Path:
    """One good pair, plus the pair under test (`images/<image_name>`, `labels/<stem>.txt`)."""
    batch = yolo_batch(env.inbox / name, count=1, seed=99)
    write(batch / "images" / image_name, image)
    write(batch / "labels" / (Path(image_name).stem + ".txt"), label)
    return batch


def png(seed: int = 1, size: tuple[int, int] = (32, 24)) -> bytes:
    return image_bytes(seed, size)


def jpeg(seed: int = 1, size: tuple[int, int] = (32, 24)) -> bytes:
    return image_bytes(seed, size, "JPEG")


def pattern_jpeg(size: tuple[int, int], seed: int = 0, orientation: int | None = None, quality: int = 92) -> bytes:
    """A blurred, structured image: re-encoding or resizing it moves few bits of its hash."""
    rng = random.Random(seed)
    small = Image.frombytes("L", (6, 5), rng.randbytes(30)).convert("RGB")
    im = small.resize(size, Image.Resampling.BICUBIC)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


# --- images ---------------------------------------------------------------------------------


GIF = image_bytes(3, fmt="GIF")
IMAGE_CASES = [
    ("x.png", b"", Code.IMAGE_EMPTY),
    ("x.png", random.Random(7).randbytes(300), Code.IMAGE_NOT_IMAGE),
    ("x.png", png(2, (64, 64))[:400], Code.IMAGE_CORRUPT),  # truncated in the pixel data
    ("x.jpg", jpeg(2, (64, 64))[:-2], Code.IMAGE_CORRUPT),  # no end-of-image marker
    ("x.jpg", jpeg(2, (64, 64))[:700], Code.IMAGE_CORRUPT),  # cut short in the scan
    ("x.png", GIF, Code.IMAGE_UNSUPPORTED),  # a GIF named .png: not a format flywheel stores
    ("x.jpg", png(4), Code.IMAGE_EXTENSION_MISMATCH),  # PNG bytes named .jpg
    ("x.png", png(5, (300, 300)), Code.IMAGE_TOO_LARGE),  # above the cap set below
]


@pytest.mark.parametrize(("name", "data", "code"), IMAGE_CASES, ids=[f"{c}-{n}" for n, _, c in IMAGE_CASES])
def test_each_bad_image_has_its_code_and_its_label_goes_with_it(env: Env, name: str, data: bytes, code: Code):
    batch = pair_batch(env, name, data, "0 0.5 0.5 0.2 0.2\n")

    result = env.ingest(batch, max_image_pixels=200 * 200)

    codes = env.codes(result)
    assert codes == {f"images/{name}": code, f"labels/{Path(name).stem}.txt": Code.PARTNER_REFUSED}
    assert result.accepted == 1 and result.batch.quarantine_reasons == {code: 1, "partner_refused": 1}
    reason = {f["path"]: f["reason"] for f in env.report(result)["files"]}[f"images/{name}"]
    assert reason and code not in reason  # a sentence for people beside the code


def test_an_image_format_flywheel_does_not_store_is_refused_by_name(env: Env):
    batch = pair_batch(env, "x.gif", GIF, "0 0.5 0.5 0.2 0.2\n")
    write(batch / "images" / "y.heic", b"\x00\x00\x00\x18ftypheic")

    codes = env.codes(env.ingest(batch))

    assert codes == {
        "images/x.gif": Code.IMAGE_UNSUPPORTED,
        "images/y.heic": Code.IMAGE_UNSUPPORTED,
        "labels/x.txt": Code.LABEL_ORPHAN,
    }


def test_not_an_image_even_after_ultralytics_patched_pillow(env: Env, monkeypatch: pytest.MonkeyPatch):
    def patched(*args: object, **kwargs: object) -> Image.Image:  # what importing Ultralytics installs
        raise ImportError("No module named 'pi_heif'")

    monkeypatch.setattr(Image, "open", patched)
    batch = pair_batch(env, "x.png", random.Random(7).randbytes(300), "0 0.5 0.5 0.2 0.2\n")

    result = env.ingest(batch)

    assert env.codes(result)["images/x.png"] == Code.IMAGE_NOT_IMAGE and result.accepted == 1


def test_exif_rotation_is_applied_to_the_stored_pixels(env: Env):
    raw = pattern_jpeg((40, 20), orientation=6)  # stored 40x20, shown turned: 20x40
    batch = pair_batch(env, "phone.jpg", raw, "0 0.5 0.25 0.5 0.25\n")

    result = env.ingest(batch)

    assert result.accepted == 2 and result.quarantined == []
    notes = [(n[0], n[1]) for n in result.notes]
    assert notes == [("images/phone.jpg", Code.EXIF_APPLIED)]
    stored = [h for h in env.store.manifest(1) if h != sha(raw) and h != sha(image_bytes(99000))]
    assert len(stored) == 1 and sha(raw) not in env.store.manifest(1)
    with Image.open(env.objects.path(stored[0])) as im:
        assert im.size == (20, 40)  # upright: what the labeling tool showed
        assert im.getexif().get(0x0112, 1) == 1  # and no tag left for a reader to apply twice
    assert env.label_lines(1, stored[0]) == ["0 0.500000 0.250000 0.500000 0.250000"]


def test_voc_boxes_drawn_on_the_unrotated_frame_are_refused(env: Env):
    from tests.test_ingest_formats import voc_xml

    batch = env.inbox / "voc"
    raw = pattern_jpeg((40, 20), orientation=6)
    write(batch / "JPEGImages" / "a.jpg", raw)
    write(batch / "Annotations" / "a.xml", voc_xml("a.jpg", [("c", (0, 0, 20, 10))], size=(40, 20)))
    write(batch / "JPEGImages" / "b.jpg", pattern_jpeg((40, 20), seed=1, orientation=6))
    write(batch / "Annotations" / "b.xml", voc_xml("b.jpg", [("c", (0, 0, 10, 20))], size=(20, 40)))

    result = env.ingest(batch)

    assert env.codes(result) == {
        "Annotations/a.xml": Code.IMAGE_EXIF_MISMATCH,
        "JPEGImages/a.jpg": Code.PARTNER_REFUSED,
    }
    assert result.accepted == 1  # b.xml's size is the upright one: its boxes fit


def test_an_annotation_for_another_image_size_is_refused(env: Env):
    from tests.test_ingest_formats import voc_xml

    batch = env.inbox / "voc"
    write(batch / "JPEGImages" / "a.jpg", jpeg(1, (64, 48)))
    write(batch / "Annotations" / "a.xml", voc_xml("a.jpg", [("c", (0, 0, 20, 10))], size=(640, 480)))

    result = env.ingest(batch)

    assert env.codes(result)["Annotations/a.xml"] == Code.LABEL_SIZE_MISMATCH
    assert "640x480" in result.quarantined[0][1] and "64x48" in result.quarantined[0][1]


# --- labels ---------------------------------------------------------------------------------


LABEL_CASES = [
    ("0 0.5 0.5 0.2\n", Code.LABEL_BAD_FIELDS),
    ("0 0.5 0.5 0.2 0.2 0.2\n", Code.LABEL_BAD_FIELDS),
    ("0 0.5 zero 0.2 0.2\n", Code.LABEL_NOT_NUMERIC),
    ("0 0.5 0.5 nan 0.2\n", Code.LABEL_NOT_FINITE),
    ("0 0.5 0.5 inf 0.2\n", Code.LABEL_NOT_FINITE),
    ("0 1.5 0.5 0.2 0.2\n", Code.LABEL_OUT_OF_RANGE),
    ("0 0.5 0.5 -0.2 0.2\n", Code.LABEL_BAD_SIZE),
    ("2 0.5 0.5 0.2 0.2\n", Code.LABEL_UNKNOWN_CLASS),
    (b"0 0.5 0.5 0.2 0.2 \xff\xfe\n", Code.LABEL_UNREADABLE),
]


@pytest.mark.parametrize(("label", "code"), LABEL_CASES, ids=[str(c) + str(i) for i, (_, c) in enumerate(LABEL_CASES)])
def test_each_bad_label_has_its_code_and_its_image_goes_with_it(env: Env, label: str | bytes, code: Code):
    batch = pair_batch(env, "x.png", png(3), label)

    result = env.ingest(batch)

    assert env.codes(result) == {"labels/x.txt": code, "images/x.png": Code.PARTNER_REFUSED}
    assert result.accepted == 1


def test_fixable_labels_are_kept_with_a_note_each(env: Env):
    batch = yolo_batch(env.inbox / "fixable", count=0)
    cases = {
        "poly": ("0 0.1 0.1 0.4 0.1 0.4 0.3 0.1 0.3\n", Code.POLYGON_TO_BOX),
        "clip": ("0 0.995 0.5 0.02 0.2\n", Code.BOX_CLIPPED),  # overhangs by 0.005 < 0.01
        "zero": ("0 0.5 0.5 0 0.2\n1 0.5 0.5 0.2 0.2\n", Code.BOX_ZERO_SIZE),
        "dups": ("1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n", Code.BOX_DUPLICATE),
    }
    for n, (name, (text, _)) in enumerate(cases.items()):
        write(batch / "images" / f"{name}.png", png(10 + n))
        write(batch / "labels" / f"{name}.txt", text)
    write(batch / "images" / "crlf.png", png(20))
    (batch / "labels" / "crlf.txt").write_bytes("\ufeff1 0.5 0.5 0.2 0.2\r\n".encode())

    result = env.ingest(batch)

    assert result.accepted == 5 and result.quarantined == []
    assert sorted((n[0], n[1]) for n in result.notes) == sorted((f"labels/{k}.txt", c) for k, (_, c) in cases.items())
    report = env.report(result)  # notes are in the report too, though nothing was quarantined
    assert {n["code"] for n in report["notes"]} == {str(c) for _, c in cases.values()}
    assert env.label_lines(1, sha(png(13))) == ["1 0.500000 0.500000 0.200000 0.200000"]  # duplicate kept once
    assert env.label_lines(1, sha(png(20))) == ["1 0.500000 0.500000 0.200000 0.200000"]  # BOM and CRLF


def test_an_image_whose_every_box_was_dropped_is_quarantined_not_kept_as_a_negative(env: Env):
    batch = pair_batch(env, "x.png", png(5), "0 0.5 0.5 0 0.2\n")  # its only box has zero width
    write(batch / "images" / "y.png", png(6))
    write(batch / "labels" / "y.txt", "0 0.5 0.5 0.2 0.2\n")

    result = env.ingest(batch)

    assert env.codes(result) == {"labels/x.txt": Code.LABEL_NO_BOX_LEFT, "images/x.png": Code.PARTNER_REFUSED}
    why = dict(result.quarantined)["labels/x.txt"]
    assert "zero-size box (w=0 h=0.2) dropped" in why and "empty the label file" in why
    assert result.accepted == 2


def test_a_label_claimed_by_two_images_and_a_second_class_file(env: Env):
    batch = pair_batch(env, "x.png", png(3), "0 0.5 0.5 0.2 0.2\n")
    write(batch / "images" / "x.jpg", jpeg(4))
    write(batch / "data.yaml", "names: [cat, dog]\n")

    codes = env.codes(env.ingest(batch))

    assert codes == {"images/x.png": Code.LABEL_AMBIGUOUS, "data.yaml": Code.CLASS_FILE_EXTRA}


def test_voc_orphans_and_two_annotations_for_one_image(env: Env):
    from tests.test_ingest_formats import voc_xml

    batch = env.inbox / "voc"
    write(batch / "JPEGImages" / "a.jpg", jpeg(1, (64, 48)))
    write(batch / "Annotations" / "a.xml", voc_xml("a.jpg", [("c", (0, 0, 20, 10))]))
    write(batch / "Annotations" / "a_copy.xml", voc_xml("a.jpg", [("c", (0, 0, 30, 10))]))
    write(batch / "Annotations" / "gone.xml", voc_xml("gone.jpg", [("c", (0, 0, 30, 10))]))
    write(batch / "Annotations" / "broken.xml", "<annotation><object>")
    write(batch / "JPEGImages" / "broken.jpg", jpeg(2, (64, 48)))
    write(batch / "JPEGImages" / "nolabel.jpg", jpeg(3, (64, 48)))
    write(batch / "Annotations" / "odd.xml", voc_xml("odd.jpg", [("stranger", (0, 0, 9, 9))]))
    write(batch / "JPEGImages" / "odd.jpg", jpeg(4, (64, 48)))
    write(batch / "classes.txt", "c\n")

    result = env.ingest(batch)

    assert env.codes(result) == {
        "Annotations/a_copy.xml": Code.LABEL_AMBIGUOUS,
        "Annotations/gone.xml": Code.LABEL_ORPHAN,
        "Annotations/broken.xml": Code.LABEL_UNREADABLE,
        "JPEGImages/broken.jpg": Code.PARTNER_REFUSED,
        "JPEGImages/nolabel.jpg": Code.IMAGE_UNLABELED,
        "Annotations/odd.xml": Code.LABEL_UNKNOWN_CLASS,
        "JPEGImages/odd.jpg": Code.PARTNER_REFUSED,
    }
    assert result.accepted == 1


def test_coco_annotation_faults_refuse_their_image_only(env: Env):
    from tests.test_ingest_formats import coco_doc

    batch = env.inbox / "coco"
    for i in range(5):
        write(batch / "images" / f"i{i}.png", png(30 + i, (64, 48)))
    anns = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 5, "bbox": [1, 1, 10, 10]},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10]},
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, "a", 10, 10]},
        {"id": 5, "image_id": 4, "category_id": 1, "bbox": [1, 1, 100, 10]},
    ]
    write(
        batch / "_annotations.coco.json", coco_doc([(i, f"i{i}.png") for i in range(5)], anns, [{"id": 1, "name": "c"}])
    )

    result = env.ingest(batch)

    assert env.codes(result) == {
        "images/i1.png": Code.LABEL_UNKNOWN_CLASS,
        "images/i2.png": Code.LABEL_BAD_FIELDS,
        "images/i3.png": Code.LABEL_NOT_NUMERIC,
        "images/i4.png": Code.LABEL_OUT_OF_RANGE,
    }
    assert "annotation id 5" in dict(result.quarantined)["images/i4.png"]
    assert result.accepted == 1 and result.batch.files_versioned == 2


# --- unlabeled images -----------------------------------------------------------------------


def test_an_image_without_any_label_is_quarantined_by_default(env: Env):
    batch = yolo_batch(env.inbox / "b", count=1)
    write(batch / "images" / "forgot.png", png(5))

    result = env.ingest(batch)

    assert env.codes(result) == {"images/forgot.png": Code.IMAGE_UNLABELED}
    assert "allow_unlabeled" in result.quarantined[0][1]


def test_a_corrupt_image_without_a_label_is_reported_with_both_reasons(env: Env):
    batch = yolo_batch(env.inbox / "b", count=1)
    data = png(5)
    write(batch / "images" / "broken.png", data[: len(data) // 2])  # cut short, and no label either

    result = env.ingest(batch)

    assert env.codes(result) == {"images/broken.png": Code.IMAGE_CORRUPT}  # was: image_unlabeled only
    why = dict(result.quarantined)["images/broken.png"]
    assert "does not decode" in why and "no label file" in why


@pytest.mark.parametrize("ready", ["allow_unlabeled: true\n", "allow_unlabeled\n"])
def test_a_batch_that_declares_allow_unlabeled_keeps_them_as_negatives(env: Env, ready: str):
    batch = yolo_batch(env.inbox / "b", count=1)
    write(batch / "images" / "background.png", png(5))
    write(batch / MARKER, ready)

    result = env.ingest(batch)

    assert result.quarantined == [] and result.accepted == 2
    assert env.label_lines(1, sha(png(5))) == []
    assert [(n[0], n[1]) for n in result.notes] == [("images/background.png", Code.IMAGE_UNLABELED)]


def test_allow_unlabeled_from_the_config_and_a_batch_can_say_no(env: Env):
    batch = yolo_batch(env.inbox / "b", count=1)
    write(batch / "images" / "background.png", png(5))
    assert env.ingest(batch, allow_unlabeled=True).quarantined == []

    strict = yolo_batch(env.inbox / "c", count=1, seed=3)
    write(strict / "images" / "background.png", png(6))
    write(strict / MARKER, "allow_unlabeled: false\n")
    assert env.codes(env.ingest(strict, allow_unlabeled=True)) == {"images/background.png": Code.IMAGE_UNLABELED}


# --- links, special files, unknown files -----------------------------------------------------


def test_links_inside_a_batch_are_quarantined_not_followed_and_special_files_too(env: Env):
    batch = yolo_batch(env.inbox / "b", count=2)
    os.symlink("g0.png", batch / "images" / "alias.png")
    os.mkfifo(batch / "pipe")
    write(batch / "notes.docx", b"PK\x03\x04 a word file")

    result = env.ingest(batch)

    assert env.codes(result) == {
        "images/alias.png": Code.LINK,
        "pipe": Code.SPECIAL_FILE,
        "notes.docx": Code.FILE_UNSUPPORTED,
    }
    assert result.accepted == 2 and result.batch.files == 8
    quarantine = Path(result.batch.quarantine_dir or "")
    assert (quarantine / "notes.docx").is_file()
    assert not (quarantine / "images" / "alias.png").exists() and not (quarantine / "pipe").exists()


def test_a_link_pointing_outside_a_folder_batch_is_refused_alone(env: Env, tmp_path: Path):
    secret = write(tmp_path / "secret.txt", "do not read")
    batch = yolo_batch(env.inbox / "b", count=1)
    os.symlink(secret, batch / "labels" / "sneaky.txt")

    result = env.ingest(batch)

    assert result.batch.state == BatchState.INGESTED and result.accepted == 1  # the good pair is not its fault
    assert env.codes(result) == {"labels/sneaky.txt": Code.LINK_OUTSIDE}
    assert "outside the batch" in dict(result.quarantined)["labels/sneaky.txt"]
    copied = [p for p in Path(result.batch.quarantine_dir or "").rglob("*") if p.name == "sneaky.txt"]
    assert copied == []  # the link is reported, never copied or followed
    assert secret.read_text() == "do not read"


def test_a_folder_batch_with_a_link_pointing_outside_is_refused_whole_when_configured(env: Env, tmp_path: Path):
    secret = write(tmp_path / "secret.txt", "do not read")
    batch = yolo_batch(env.inbox / "b", count=1)
    os.symlink(secret, batch / "labels" / "sneaky.txt")

    result = env.ingest(batch, refuse_batch_on_link_outside=True)

    assert result.batch.state == BatchState.REJECTED
    assert set(env.codes(result).values()) == {Code.LINK_OUTSIDE}
    copied = [p for p in Path(result.batch.quarantine_dir or "").rglob("*") if p.name == "sneaky.txt"]
    assert copied == []  # the link is reported, never copied or followed
    assert secret.read_text() == "do not read"


# --- whole batches --------------------------------------------------------------------------


def refused(env: Env, result, code: Code) -> dict:
    b = result.batch
    assert b.state == BatchState.REJECTED, b.reason
    assert result.version is None and env.store.versions() == []
    report = env.report(result)
    assert report["code"] == code and b.reason and report["reason"] == b.reason
    assert b.files == b.quarantined + b.ignored and b.files_versioned == 0
    assert set(b.quarantine_reasons) <= {code}
    return report


def test_an_empty_batch(env: Env):
    batch = env.inbox / "empty"
    write(batch / MARKER, "")
    write(batch / ".DS_Store", b"x")

    result = env.ingest(batch)

    refused(env, result, Code.BATCH_EMPTY)
    assert (result.batch.files, result.batch.ignored) == (2, 2)


def test_a_batch_with_labels_but_no_images_is_refused_and_says_so(env: Env):
    batch = env.inbox / "labels-only"
    write(batch / "labels" / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    write(batch / "classes.txt", "cat\n")

    result = env.ingest(batch)  # was: recorded ingested, no version, no message

    report = refused(env, result, Code.BATCH_EMPTY)
    assert "no images found" in report["reason"] and result.batch.files == 2


def test_a_lone_file_in_the_inbox_is_not_a_batch(env: Env):
    lone = write(env.inbox / "photo.jpg", jpeg(1))

    result = env.ingest(lone)

    refused(env, result, Code.BATCH_NOT_A_BATCH)
    assert (Path(result.batch.quarantine_dir or "") / "photo.jpg").read_bytes() == jpeg(1)
    assert not lone.exists() and (env.paths.done / "b0001-photo.jpg").is_file()


@pytest.mark.parametrize(
    ("names", "code"),
    [("cat\ncat\n", Code.CLASS_NAMES_BAD), ("Car\ncar\n", Code.CLASS_CONFLICT), ("cat\n\ndog\n", None)],
)
def test_class_names_that_cannot_be_used(env: Env, names: str, code: Code | None):
    batch = yolo_batch(env.inbox / "b", count=2, names=names)
    result = env.ingest(batch)
    if code is None:  # blank lines in classes.txt are not names
        assert result.version is not None and result.version.class_names == ["cat", "dog"]
    else:
        refused(env, result, code)


def test_a_class_name_that_differs_from_the_projects_only_in_case_is_refused(env: Env):
    env.ingest(yolo_batch(env.inbox / "first", count=2, names="RBC\nWBC\n"))
    result = env.ingest(yolo_batch(env.inbox / "second", count=2, seed=2, names="rbc\nWBC\n"))
    assert result.batch.state == BatchState.REJECTED
    assert result.batch.quarantine_reasons == {"class_conflict": 5}
    assert "'rbc'" in (result.batch.reason or "") and "'RBC'" in (result.batch.reason or "")
    assert [v.class_names for v in env.store.versions()] == [["RBC", "WBC"]]


def test_an_unreadable_coco_file(env: Env):
    batch = env.inbox / "coco"
    write(batch / "images" / "a.png", png(1))
    write(batch / "train" / "_annotations.coco.json", '{"images": [')
    refused(env, env.ingest(batch), Code.ANNOTATIONS_UNREADABLE)


def test_an_unreadable_archive_is_quarantined_whole(env: Env):
    archive = write(env.inbox / "export.zip", b"PK\x03\x04 this is no zip" + bytes(200))

    result = env.ingest(archive)

    refused(env, result, Code.ARCHIVE_UNREADABLE)
    assert (Path(result.batch.quarantine_dir or "") / "export.zip").read_bytes() == archive.with_name(
        "x"
    ).parent.joinpath(".done", "b0001-export.zip").read_bytes()


def test_zip_slip_members_refuse_the_archive_and_nothing_is_written_outside(env: Env, tmp_path: Path):
    archive = env.inbox / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("classes.txt", "c\n")
        zf.writestr("images/a.png", png(1))
        zf.writestr("images/a.txt", "0 0.5 0.5 0.2 0.2\n")
        zf.writestr("../../evil.txt", "pwned")
        zf.writestr("/tmp/abs_evil.txt", "pwned")
    before = {p for p in tmp_path.parent.rglob("*evil*.txt")}

    result = env.ingest(archive)

    report = refused(env, result, Code.ZIP_SLIP)
    assert {f["path"] for f in report["files"]} == {
        "classes.txt",
        "images/a.png",
        "images/a.txt",
        "../../evil.txt",
        "/tmp/abs_evil.txt",
    }
    assert result.batch.files == 5
    assert {p for p in tmp_path.parent.rglob("*evil*.txt")} == before
    assert not Path("/tmp/abs_evil.txt").exists()
    assert not any(env.paths.staging_root.rglob("*")) if env.paths.staging_root.exists() else True


@pytest.mark.parametrize(
    ("member", "code"),
    [
        (("link", "images/x.png", "../../../../etc/passwd"), Code.LINK_OUTSIDE),
        (("link", "images/y.png", "/etc/passwd"), Code.LINK_OUTSIDE),
        (("hard", "images/z.png", "../outside.png"), Code.ZIP_SLIP if False else Code.LINK_OUTSIDE),
        (("file", "../x.txt", ""), Code.ZIP_SLIP),
    ],
)
def test_tar_members_pointing_outside_refuse_the_archive(env: Env, tmp_path: Path, member, code: Code):
    kind, name, target = member
    archive = env.inbox / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        data = b"c\n"
        info = tarfile.TarInfo("classes.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        bad = tarfile.TarInfo(name)
        if kind == "file":
            bad.size = 3
            tf.addfile(bad, io.BytesIO(b"bad"))
        else:
            bad.type = tarfile.SYMTYPE if kind == "link" else tarfile.LNKTYPE
            bad.linkname = target
            tf.addfile(bad)

    result = env.ingest(archive)

    refused(env, result, code)
    assert result.batch.files == 2


def test_a_link_inside_an_archive_is_quarantined_and_the_rest_ingested(env: Env, tmp_path: Path):
    folder = yolo_batch(tmp_path / "src", count=2)
    archive = env.inbox / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tf.add(p, p.relative_to(folder).as_posix())
        link = tarfile.TarInfo("images/alias.png")
        link.type, link.linkname = tarfile.SYMTYPE, "g0.png"
        tf.addfile(link)

    result = env.ingest(archive)

    assert env.codes(result) == {"images/alias.png": Code.LINK}
    assert result.accepted == 2 and result.batch.files == 6


def test_an_archive_unpacking_beyond_the_cap_is_refused(env: Env, tmp_path: Path):
    archive = zip_folder(yolo_batch(tmp_path / "src", count=3), env.inbox / "big.zip")
    result = env.ingest(archive, max_archive_bytes=4000)
    refused(env, result, Code.ARCHIVE_TOO_LARGE)
    assert result.batch.files == 7


# --- duplicates and splits ------------------------------------------------------------------


def test_a_relabelled_image_is_recorded_on_the_version(env: Env):
    env.ingest(yolo_batch(env.inbox / "one", count=3))
    again = env.inbox / "two"
    write(again / "classes.txt", "cat\ndog\n")
    write(again / "images" / "g0.png", image_bytes(0))
    write(again / "labels" / "g0.txt", "1 0.4 0.4 0.3 0.3\n")

    result = env.ingest(again)

    assert result.version is not None and result.version.id == 2
    assert (result.version.images_relabelled, result.version.images_new) == (1, 0)
    assert (result.batch.images_relabelled, result.batch.images_new) == (1, 0)


def _near_pair() -> tuple[bytes, bytes]:
    """An image that falls in val by its hash, and a near copy (re-encoded, resized) that would
    fall in train by its own."""
    for seed in range(200):
        original = pattern_jpeg((96, 72), seed=seed)
        if split_of(sha(original), 0.25) != "val":
            continue
        for quality in range(60, 95):
            copy = io.BytesIO()
            with Image.open(io.BytesIO(original)) as im:
                im.resize((80, 60)).save(copy, format="JPEG", quality=quality)
            data = copy.getvalue()
            with Image.open(io.BytesIO(original)) as a, Image.open(io.BytesIO(data)) as b:
                close = (dhash(a) ^ dhash(b)).bit_count() <= 3 and 8 <= dhash(a).bit_count() <= 56
            if close and split_of(sha(data), 0.25) == "train":
                return original, data
    raise AssertionError("no near pair found")


def test_a_near_copy_of_a_val_image_goes_to_val_not_train(env: Env):
    original, copy = _near_pair()
    first = yolo_batch(env.inbox / "one", count=1)
    write(first / "images" / "orig.jpg", original)
    write(first / "labels" / "orig.txt", "0 0.5 0.5 0.2 0.2\n")
    env.ingest(first)
    assert env.store.manifest(1)[sha(original)].split == "val"

    second = yolo_batch(env.inbox / "two", count=1, seed=5)
    write(second / "images" / "copy.jpg", copy)
    write(second / "labels" / "copy.txt", "0 0.5 0.5 0.2 0.2\n")
    result = env.ingest(second)

    assert env.store.manifest(2)[sha(copy)].split == "val"  # its own hash says train
    near = [n for n in result.notes if n[1] == Code.NEAR_DUPLICATE]
    assert len(near) == 1 and near[0][0] == "images/copy.jpg" and sha(original)[:12] in near[0][2]


def test_near_copies_inside_one_batch_share_a_split(env: Env):
    original, copy = _near_pair()
    batch = yolo_batch(env.inbox / "one", count=1)
    for name, data in (("orig.jpg", original), ("copy.jpg", copy)):
        write(batch / "images" / name, data)
        write(batch / "labels" / (Path(name).stem + ".txt"), "0 0.5 0.5 0.2 0.2\n")

    env.ingest(batch)

    manifest = env.store.manifest(1)
    assert split_of(sha(original), 0.25) != split_of(sha(copy), 0.25)  # by their own hashes they would part
    assert manifest[sha(original)].split == manifest[sha(copy)].split


# --- exactly once ---------------------------------------------------------------------------


def test_an_ingest_interrupted_after_its_version_resumes_without_a_second_version(
    env: Env, monkeypatch: pytest.MonkeyPatch
):
    from tests.test_ingest import mixed_batch

    batch = env.inbox / "mixed"
    mixed_batch(batch)
    dropped = snapshot(batch)
    real = batchrun.write_quarantine
    calls = []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(batchrun, "write_quarantine", crash_once)
    with pytest.raises(RuntimeError, match="power cut"):
        env.ingest(batch)
    assert snapshot(batch) == dropped  # still in the inbox, untouched: nothing left before the commit
    assert [b.state for b in env.store.batches()] == [BatchState.INGESTING]
    assert [v.id for v in env.store.versions()] == [1]

    result = env.ingest(batch)  # the daemon, restarted, sees the same batch again

    assert [b.id for b in env.store.batches()] == [1] and result.batch.state == BatchState.INGESTED
    assert result.version is not None and result.version.id == 1 and [v.id for v in env.store.versions()] == [1]
    assert result.batch.version_id == 1 and result.accepted == 3
    assert not batch.exists() and snapshot(env.paths.done / "b0001-mixed") == dropped


def test_an_ingest_interrupted_after_its_commit_only_finishes_the_move(env: Env, monkeypatch: pytest.MonkeyPatch):
    batch = yolo_batch(env.inbox / "b", count=2)
    real = batchrun.BatchRun.leave_inbox
    calls = []

    def crash_once(self, name):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("killed")
        return real(self, name)

    monkeypatch.setattr(batchrun.BatchRun, "leave_inbox", crash_once)
    with pytest.raises(RuntimeError):
        env.ingest(batch)
    assert batch.exists() and env.store.batches()[0].state == BatchState.INGESTED

    result = env.ingest(batch)

    assert result.already and result.batch.id == 1 and len(env.store.batches()) == 1
    assert not batch.exists() and (env.paths.done / "b0001-b").is_dir()


# --- accounting: nothing lost ---------------------------------------------------------------


def bad_corpus(folder: Path) -> dict[str, Code | None]:
    """10 good pairs, 4 fixable ones, and 30+ distinct bad inputs. Returns the expected code
    of every quarantined file (None: ignored)."""
    yolo_batch(folder, count=10, seed=7)
    expected: dict[str, Code | None] = {}

    def pair(stem: str, image: bytes, label: str | bytes, image_code: Code, label_code: Code, ext: str = "png"):
        write(folder / "images" / f"{stem}.{ext}", image)
        write(folder / "labels" / f"{stem}.txt", label)
        expected[f"images/{stem}.{ext}"], expected[f"labels/{stem}.txt"] = image_code, label_code

    good = "0 0.5 0.5 0.2 0.2\n"
    p = Code.PARTNER_REFUSED
    for n, (name, data, code) in enumerate(IMAGE_CASES):
        stem, ext = Path(name).stem + f"_img{n}", name.split(".")[1]
        pair(stem, data, good, code, p, ext)
    for n, (label, code) in enumerate(
        [
            *LABEL_CASES,
            ("-1 0.5 0.5 0.2 0.2\n", Code.LABEL_UNKNOWN_CLASS),
            ("0.5 0.5 0.5 0.2 0.2\n", Code.LABEL_UNKNOWN_CLASS),
            ("0 0.1 0.1 0.2 0.1 0.2 0.2 0.1\n", Code.LABEL_BAD_FIELDS),
            ("0 0.5 0.5 0.2 -inf\n", Code.LABEL_NOT_FINITE),
            ("0 0.5 -0.3 0.2 0.2\n", Code.LABEL_OUT_OF_RANGE),
        ]
    ):
        pair(f"lbl{n}", png(200 + n), label, p, code)
    pair("zdup", png(7000), good, Code.IMAGE_DUPLICATE, p)  # the bytes of good pair g0 (sorted after it)
    write(folder / "images" / "nolabel.png", png(300))
    expected["images/nolabel.png"] = Code.IMAGE_UNLABELED
    write(folder / "labels" / "orphan.txt", good)
    expected["labels/orphan.txt"] = Code.LABEL_ORPHAN
    write(folder / "images" / "amb.png", png(301))
    write(folder / "images" / "amb.jpg", jpeg(302))
    write(folder / "labels" / "amb.txt", good)
    expected["images/amb.png"] = Code.LABEL_AMBIGUOUS  # amb.jpg sorts first and takes the label
    write(folder / "data.yaml", "names: [cat, dog]\n")
    expected["data.yaml"] = Code.CLASS_FILE_EXTRA
    write(folder / "images" / "anim.gif", GIF)
    expected["images/anim.gif"] = Code.IMAGE_UNSUPPORTED
    write(folder / "images" / "phone.heic", b"\x00\x00\x00\x18ftypheic")
    expected["images/phone.heic"] = Code.IMAGE_UNSUPPORTED
    write(folder / "notes.docx", b"PK\x03\x04")
    expected["notes.docx"] = Code.FILE_UNSUPPORTED
    write(folder / "meta.json", '{"tool": "x"}')
    expected["meta.json"] = Code.FILE_UNSUPPORTED
    write(folder / "extra.xml", "<config/>")
    expected["extra.xml"] = Code.FILE_UNSUPPORTED
    for n, text in enumerate(
        [
            "0 0.1 0.1 0.4 0.1 0.4 0.3\n",
            "0 0.995 0.5 0.02 0.2\n",
            "0 0.5 0.5 0 0.2\n",
            "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        ]
    ):
        write(folder / "images" / f"fix{n}.png", png(400 + n))
        write(folder / "labels" / f"fix{n}.txt", text)
    # fix2's only box has zero width: dropped, and with it the image (not a silent negative)
    expected["labels/fix2.txt"] = Code.LABEL_NO_BOX_LEFT
    expected["images/fix2.png"] = Code.PARTNER_REFUSED
    for name in (".DS_Store", "Thumbs.db", "__MACOSX/images/._g0.png", "images/._g1.png", "README.txt", MARKER):
        write(folder / name, b"\x00meta")
        expected[name] = None
    return expected


def check_accounting(env: Env, result, dropped: dict[str, str], expected: dict[str, Code | None]) -> None:
    b = result.batch
    quarantined = env.codes(result)
    ignored = set(result.ignored)
    assert {k: v for k, v in expected.items() if v is not None} == quarantined
    assert {k for k, v in expected.items() if v is None} == ignored
    manifest = env.store.manifest(b.version_id or 0)
    versioned = {rel for rel, h in dropped.items() if rel.startswith("images/") and h in manifest}
    versioned -= set(quarantined)  # a duplicate's bytes are in the manifest, as the other file's
    versioned |= {"labels/" + Path(rel).stem + ".txt" for rel in versioned} | {"classes.txt"}
    assert len(versioned) == b.files_versioned
    for rel in dropped:  # exactly one place each
        assert (rel in versioned) + (rel in quarantined) + (rel in ignored) == 1, rel
    assert b.files == len(dropped) == b.files_versioned + b.quarantined + b.ignored
    assert b.quarantine_reasons == {str(c): list(quarantined.values()).count(c) for c in set(quarantined.values())}
    assert set(b.quarantine_reasons) <= {c.value for c in Code}
    bad_inputs = {Path(rel).stem for rel, code in quarantined.items() if code != Code.PARTNER_REFUSED}
    assert len(bad_inputs) >= 30 and len(set(quarantined.values())) >= 18
    assert result.accepted == 14 and len(manifest) == 14  # 10 good, 3 fixed, and amb.jpg


def test_files_in_equal_versioned_plus_quarantined_plus_ignored_over_a_bad_corpus(env: Env):
    batch = env.inbox / "corpus"
    expected = bad_corpus(batch)
    dropped = snapshot(batch)

    result = env.ingest(batch, max_image_pixels=200 * 200)

    check_accounting(env, result, dropped, expected)
    quarantine = Path(result.batch.quarantine_dir or "")
    for rel in env.codes(result):  # every quarantined file, byte for byte
        assert sha((quarantine / rel).read_bytes()) == dropped[rel], rel
    assert snapshot(env.paths.done / "b0001-corpus") == dropped  # and the batch as dropped
    report = json.loads((quarantine / "report.json").read_text())
    assert report["counts"] == {
        "files": result.batch.files,
        "versioned": result.batch.files_versioned,
        "quarantined": result.batch.quarantined,
        "ignored": result.batch.ignored,
    }


def test_the_same_corpus_as_a_zip_counts_its_members_the_same_way(env: Env, tmp_path: Path):
    folder = tmp_path / "corpus"
    expected = bad_corpus(folder)
    dropped = snapshot(folder)
    archive = zip_folder(folder, env.inbox / "corpus.zip")

    result = env.ingest(archive, max_image_pixels=200 * 200)

    check_accounting(env, result, dropped, expected)
    assert len(zipfile.ZipFile(env.paths.done / "b0001-corpus.zip").namelist()) == result.batch.files


def test_a_disk_error_is_a_store_error_and_the_batch_stays_in_the_inbox(env: Env, monkeypatch: pytest.MonkeyPatch):
    from flywheel.core.errors import StoreError
    from tests.test_ingest import mixed_batch

    batch = env.inbox / "mixed"
    mixed_batch(batch)
    dropped = snapshot(batch)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batchrun, "write_quarantine", disk_full)
    with pytest.raises(StoreError, match="No space left on device") as info:
        env.ingest(batch)

    assert str(batch) in str(info.value) and "Nothing was lost" in str(info.value)
    assert snapshot(batch) == dropped
    monkeypatch.undo()
    assert env.ingest(batch).batch.state == BatchState.INGESTED  # and it resumes once the disk has room

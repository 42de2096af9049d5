"""Every export format a labeling tool writes, as a folder and as an archive, ingested into the
same internal form: YOLO (Ultralytics/Roboflow, CVAT 1.1, Label Studio), COCO JSON (Roboflow,
CVAT, Label Studio) and Pascal VOC (CVAT, Roboflow), plus the real BCCD VOC export."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from flywheel.core.domain import BatchState
from tests.ingest_kit import (
    Env,
    image_bytes,
    sha,
    tar_folder,
    write,
    yolo_batch,
    zip_folder,
)

BCCD = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "bccd"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def accounted(result) -> None:
    b = result.batch
    assert b.files == b.files_versioned + b.quarantined + b.ignored, (
        b.files,
        b.files_versioned,
        b.quarantined,
        b.ignored,
    )
    assert sum(b.quarantine_reasons.values()) == b.quarantined


# --- YOLO -----------------------------------------------------------------------------------


def test_roboflow_yolov8_export_with_split_folders_and_readmes(env: Env):
    batch = env.inbox / "rf"
    write(
        batch / "data.yaml",
        yaml.safe_dump({"train": "../train/images", "val": "../valid/images", "nc": 2, "names": ["cat", "dog"]}),
    )
    write(batch / "README.roboflow.txt", "Provided by Roboflow\n")
    write(batch / "README.dataset.txt", "# my dataset\n")
    for split, seed in (("train", 1), ("valid", 2), ("test", 3)):
        write(batch / split / "images" / f"x{seed}_jpg.rf.abc.jpg", image_bytes(seed, fmt="JPEG"))
        write(batch / split / "labels" / f"x{seed}_jpg.rf.abc.txt", "1 0.5 0.5 0.5 0.5\n")

    result = env.ingest(batch)

    assert result.format == "yolo" and result.accepted == 3 and result.quarantined == []
    assert sorted(result.ignored) == ["README.dataset.txt", "README.roboflow.txt"]
    assert result.version is not None and result.version.class_names == ["cat", "dog"]
    assert (result.batch.files, result.batch.files_versioned, result.batch.ignored) == (9, 7, 2)
    accounted(result)


def test_cvat_yolo_1_1_export_obj_names_and_image_list(env: Env):
    batch = env.inbox / "cvat"
    write(batch / "obj.names", "car\nperson\n")
    write(batch / "obj.data", "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n")
    write(batch / "train.txt", "data/obj_train_data/a.jpg\ndata/obj_train_data/b.jpg\n")
    write(batch / "obj_train_data" / "a.jpg", image_bytes(1, fmt="JPEG"))
    write(batch / "obj_train_data" / "a.txt", "1 0.5 0.5 0.2 0.2\n")
    write(batch / "obj_train_data" / "b.jpg", image_bytes(2, fmt="JPEG"))
    write(batch / "obj_train_data" / "b.txt", "")  # a negative image: kept

    result = env.ingest(batch)

    assert result.accepted == 2 and result.quarantined == []
    assert sorted(result.ignored) == ["obj.data", "train.txt"]
    assert result.version is not None and result.version.class_names == ["car", "person"]
    assert env.label_lines(1, sha(image_bytes(2, fmt="JPEG"))) == []
    accounted(result)


def test_label_studio_yolo_export(env: Env):
    batch = env.inbox / "ls"
    write(batch / "classes.txt", "Platelets\nRBC\n")
    write(batch / "notes.json", json.dumps({"categories": [{"id": 0, "name": "Platelets"}], "info": {}}))
    write(batch / "images" / "3f2a-img.png", image_bytes(4))
    write(batch / "labels" / "3f2a-img.txt", "0 0.5 0.5 0.1 0.1\n")

    result = env.ingest(batch)

    assert result.accepted == 1 and result.ignored == ["notes.json"] and result.quarantined == []
    accounted(result)


def test_yolo_batch_as_a_zip_with_a_top_folder_and_macos_litter(env: Env, tmp_path: Path):
    folder = yolo_batch(tmp_path / "src", count=4)
    archive = zip_folder(
        folder,
        env.inbox / "export.zip",
        prefix="export/",
        extra={"__MACOSX/export/images/._g0.png": b"\x00\x05\x16\x07junk", "export/.DS_Store": b"x"},
    )

    result = env.ingest(archive)

    assert result.batch.state == BatchState.INGESTED and result.format == "yolo"
    assert result.accepted == 4 and result.quarantined == []
    assert sorted(result.ignored) == ["__MACOSX/export/images/._g0.png", "export/.DS_Store"]
    assert result.batch.files == 4 * 2 + 1 + 2  # members, not the archive
    accounted(result)
    assert not archive.exists() and (env.paths.done / "b0001-export.zip").is_file()
    assert not any(env.paths.staging_root.iterdir()) if env.paths.staging_root.exists() else True


def test_yolo_batch_as_a_tar_gz_gives_the_same_version_as_the_folder(env: Env, tmp_path: Path):
    folder = yolo_batch(tmp_path / "src", count=3)
    archive = tar_folder(folder, env.inbox / "export.tar.gz")

    result = env.ingest(archive)

    assert result.accepted == 3 and result.batch.files == 7
    accounted(result)
    folder_env = Env(tmp_path / "other")
    again = folder_env.ingest(shutil.copytree(folder, folder_env.inbox / "export"))
    assert result.version is not None and again.version is not None
    assert result.version.manifest_sha256 == again.version.manifest_sha256
    assert result.batch.content_sha256 == again.batch.content_sha256  # identity is content, not packaging


# --- COCO -----------------------------------------------------------------------------------


def coco_doc(images: list[tuple[int, str]], annotations: list[dict], categories: list[dict]) -> str:
    return json.dumps(
        {
            "info": {"description": "test"},
            "images": [{"id": i, "file_name": name, "width": 64, "height": 48} for i, name in images],
            "annotations": annotations,
            "categories": categories,
        }
    )


ROBOFLOW_CATEGORIES = [
    {"id": 0, "name": "cells", "supercategory": "none"},  # Roboflow's placeholder parent
    {"id": 1, "name": "RBC", "supercategory": "cells"},
    {"id": 2, "name": "WBC", "supercategory": "cells"},
]


def test_roboflow_coco_export_converts_pixel_boxes_and_keeps_negatives(env: Env):
    batch = env.inbox / "rfcoco"
    for split, seed in (("train", 1), ("valid", 2)):
        write(batch / split / f"a{seed}_jpg.rf.1.jpg", image_bytes(seed, (64, 48), "JPEG"))
        write(batch / split / f"n{seed}_jpg.rf.2.jpg", image_bytes(seed + 10, (64, 48), "JPEG"))
        anns = [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [16, 12, 32, 24], "area": 768, "iscrowd": 0},
            {"id": 2, "image_id": 0, "category_id": 2, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0},
        ]
        write(
            batch / split / "_annotations.coco.json",
            coco_doc([(0, f"a{seed}_jpg.rf.1.jpg"), (1, f"n{seed}_jpg.rf.2.jpg")], anns, ROBOFLOW_CATEGORIES),
        )
    write(batch / "README.roboflow.txt", "x\n")

    result = env.ingest(batch)

    assert result.format == "coco" and result.accepted == 4 and result.quarantined == []
    assert result.version is not None and result.version.class_names == ["RBC", "WBC"]
    assert env.label_lines(1, sha(image_bytes(1, (64, 48), "JPEG"))) == [
        "0 0.500000 0.500000 0.500000 0.500000",
        "1 0.062500 0.083333 0.125000 0.166667",
    ]
    assert env.label_lines(1, sha(image_bytes(11, (64, 48), "JPEG"))) == []  # no annotations: a negative
    assert result.batch.files_versioned == 4 + 2  # images and both JSON files
    accounted(result)


def test_cvat_coco_export_annotations_folder_beside_images(env: Env):
    batch = env.inbox / "cvatcoco"
    write(batch / "images" / "frame_000.png", image_bytes(1, (64, 48)))
    write(batch / "images" / "frame_001.png", image_bytes(2, (64, 48)))
    cats = [{"id": 1, "name": "car", "supercategory": ""}, {"id": 2, "name": "bus", "supercategory": ""}]
    anns = [
        {"id": 1, "image_id": 2, "category_id": 2, "bbox": [32.0, 24.0, 16.0, 12.0], "iscrowd": 0, "segmentation": []},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
    ]  # crowd: left out
    write(
        batch / "annotations" / "instances_default.json",
        coco_doc([(1, "frame_000.png"), (2, "frame_001.png")], anns, cats),
    )

    result = env.ingest(batch)

    assert result.accepted == 2 and result.version is not None
    assert result.version.class_names == ["car", "bus"]
    assert env.label_lines(1, sha(image_bytes(2, (64, 48)))) == ["1 0.625000 0.625000 0.250000 0.250000"]
    assert env.label_lines(1, sha(image_bytes(1, (64, 48)))) == []
    assert [(n[0], n[1]) for n in result.notes] == [("images/frame_000.png", "box_crowd")]
    accounted(result)


def test_label_studio_coco_export_with_windows_paths_and_a_missing_image(env: Env):
    batch = env.inbox / "lscoco"
    write(batch / "images" / "a1b2-photo.png", image_bytes(3, (64, 48)))
    cats = [{"id": 0, "name": "WBC"}]
    anns = [
        {"id": 0, "image_id": 0, "category_id": 0, "bbox": [8, 8, 16, 16]},
        {"id": 1, "image_id": 1, "category_id": 0, "bbox": [8, 8, 16, 16]},
    ]
    write(batch / "result.json", coco_doc([(0, "images\\a1b2-photo.png"), (1, "images\\gone.png")], anns, cats))

    result = env.ingest(batch)

    assert result.accepted == 1 and result.quarantined == []
    assert [n[1] for n in result.notes] == ["image_missing"]
    assert "gone.png" in result.notes[0][2]
    accounted(result)


def test_coco_classes_map_by_name_onto_the_project_class_map(env: Env):
    env.ingest(yolo_batch(env.inbox / "first", count=2, names="dog\ncat\n"))
    batch = env.inbox / "coco"
    write(batch / "images" / "x.png", image_bytes(50, (64, 48)))
    cats = [{"id": 7, "name": "cat"}, {"id": 9, "name": "fox"}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 9, "bbox": [0, 0, 32, 24]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [32, 24, 32, 24]},
    ]
    write(batch / "coco.json", coco_doc([(1, "images/x.png")], anns, cats))

    result = env.ingest(batch)

    assert result.version is not None and result.version.class_names == ["dog", "cat", "fox"]
    assert [line.split()[0] for line in env.label_lines(2, sha(image_bytes(50, (64, 48))))] == ["2", "1"]


# --- Pascal VOC -----------------------------------------------------------------------------


def voc_xml(
    filename: str, objects: list[tuple[str, tuple[float, float, float, float]]], size: tuple[int, int] = (64, 48)
) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return (
        f"<annotation><folder>x</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_cvat_voc_export_with_labelmap_and_imagesets(env: Env):
    batch = env.inbox / "cvatvoc"
    write(batch / "labelmap.txt", "# label:color_rgb:parts:actions\nbackground:0,0,0::\nzebra:1,2,3::\nant:4,5,6::\n")
    write(batch / "ImageSets" / "Main" / "default.txt", "f0\nf1\n")
    write(batch / "JPEGImages" / "f0.jpg", image_bytes(1, (64, 48), "JPEG"))
    write(batch / "JPEGImages" / "f1.jpg", image_bytes(2, (64, 48), "JPEG"))
    write(batch / "Annotations" / "f0.xml", voc_xml("f0.jpg", [("ant", (0, 0, 32, 24)), ("zebra", (32, 24, 64, 48))]))
    write(batch / "Annotations" / "f1.xml", voc_xml("f1.jpg", []))

    result = env.ingest(batch)

    assert result.format == "voc" and result.accepted == 2 and result.quarantined == []
    assert result.version is not None and result.version.class_names == ["zebra", "ant"]  # labelmap order
    assert env.label_lines(1, sha(image_bytes(1, (64, 48), "JPEG"))) == [
        "1 0.250000 0.250000 0.500000 0.500000",
        "0 0.750000 0.750000 0.500000 0.500000",
    ]
    assert result.ignored == ["ImageSets/Main/default.txt"]
    accounted(result)


def test_roboflow_voc_export_xml_beside_images(env: Env):
    batch = env.inbox / "rfvoc"
    for split, seed in (("train", 1), ("valid", 2)):
        write(batch / split / f"i{seed}_jpg.rf.9.jpg", image_bytes(seed, (64, 48), "JPEG"))
        write(batch / split / f"i{seed}_jpg.rf.9.xml", voc_xml(f"i{seed}_jpg.rf.9.jpg", [("b", (1, 1, 9, 9))]))

    result = env.ingest(batch)

    assert result.accepted == 2 and result.version is not None and result.version.class_names == ["b"]
    accounted(result)


@pytest.mark.skipif(not (BCCD / "voc" / "Annotations").is_dir(), reason=f"BCCD not found at {BCCD}")
def test_bccd_voc_export_as_dropped_has_the_yolo_copys_boxes(env: Env):
    """The real export, quirks and all: its box count and every label equal the YOLO copy's
    (the converter behind that copy dropped two zero-area boxes; flywheel drops and notes them)."""
    batch = shutil.copytree(BCCD / "voc", env.inbox / "bccd")
    started = time.perf_counter()

    result = env.ingest(batch)

    seconds = time.perf_counter() - started
    yolo = BCCD / "yolo"
    labels = {p.stem: p.read_text().split("\n") for p in yolo.glob("labels/*/*.txt")}
    yolo_boxes = sum(1 for lines in labels.values() for ln in lines if ln.strip())
    assert result.format == "voc" and result.batch.state == BatchState.INGESTED
    assert result.accepted == 364 == len(labels) and result.quarantined == []
    assert result.version is not None and result.version.boxes == yolo_boxes == 4886
    assert result.version.class_names == yaml.safe_load((yolo / "data.yaml").read_text())["names"]
    zero = [(n[0], n[1]) for n in result.notes if n[1] == "box_zero_size"]
    assert zero == [
        ("Annotations/BloodImage_00338.xml", "box_zero_size"),
        ("Annotations/BloodImage_00343.xml", "box_zero_size"),
    ]
    assert (result.batch.files, result.batch.files_versioned, result.batch.ignored) == (732, 728, 4)  # ImageSets
    for image in sorted((BCCD / "voc" / "JPEGImages").glob("*.jpg"))[::7]:  # every 7th image, label by label
        stored = [[float(v) for v in ln.split()] for ln in env.label_lines(1, sha(image.read_bytes()))]
        expected = [[float(v) for v in ln.split()] for ln in labels[image.stem] if ln.strip()]
        assert len(stored) == len(expected), image.name
        for got, want in zip(sorted(stored), sorted(expected), strict=True):
            assert got == pytest.approx(want, abs=2e-6), image.name
    print(f"BCCD VOC: 364 images, {result.version.boxes} boxes in {seconds:.2f}s; notes: {result.notes}")


def test_an_image_named_readme_keeps_its_label(env: Env):
    # side files are recognised only when nothing else claims them
    batch = yolo_batch(env.inbox / "b", count=1)
    write(batch / "images" / "README.jpg", image_bytes(8, fmt="JPEG"))
    write(batch / "labels" / "README.txt", "1 0.5 0.5 0.2 0.2\n")
    write(batch / "README.md", "# about this export\n")

    result = env.ingest(batch)

    assert result.accepted == 2 and result.ignored == ["README.md"] and result.quarantined == []

"""Pre-labels for photos with an EXIF Orientation tag (phones store the pixels landscape and tag
them Orientation=6). Every labeling tool shows such a photo turned, Ultralytics predicts and
trains on it turned (its decoder applies the tag; `exif_size` turns the size for training
labels), and flywheel's ingest stores it turned: so the size every format writes, and the frame
of the boxes, must be the displayed one, never the stored one.

The image: 64x32 stored, a bright block near its top right corner; shown upright (orientation 6,
turned a quarter clockwise) it is 32x64 with the block low in the middle."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from flywheel.core.predict_events import Detection, ImagePredicted
from flywheel.core.prediction import Box, ImageInput, Prediction, PredictOutcome, record_event
from flywheel.ingest.reasons import Code
from flywheel.prelabel import inputs, writers
from tests.ingest_kit import Env
from tests.test_prelabel import NAMES

STORED = (64, 32)
SHOWN = (32, 64)


def rotated(path: Path, orientation: int = 6) -> Path:
    """The 64x32 photo with a bright block, saved with the EXIF orientation tag."""
    im = Image.new("RGB", STORED, (20, 20, 20))
    ImageDraw.Draw(im).rectangle((40, 4, 59, 11), fill=(250, 250, 250))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        im.save(path, tiffinfo={0x0112: orientation})
    else:
        im.save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def bright_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 (exclusive) of the bright block in a grey or BGR array."""
    grey = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    ys, xs = np.nonzero(grey > 128)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def shown_box(path: Path) -> tuple[int, int, int, int]:
    with Image.open(path) as im:
        return bright_box(np.asarray(ImageOps.exif_transpose(im).convert("L")))


# --- what collect records ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_collect_records_the_displayed_size_of_an_exif_rotated_jpeg(tmp_path, orientation):
    photo = rotated(tmp_path / "in" / "phone.jpg", orientation)

    (found,) = inputs.collect([photo], tmp_path / "staging", 10**8, 10**9).images

    assert (found.width, found.height) == (SHOWN if orientation >= 5 else STORED)
    assert found.orientation == orientation


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_ultralytics_reads_each_format_in_the_frame_collect_records(tmp_path, suffix):
    """The predict child's frame is the one Ultralytics' own decoder gives (`result.orig_shape`):
    it must be the displayed one for every format flywheel reads, or the boxes are turned."""
    from ultralytics.data.utils import exif_size
    from ultralytics.utils.patches import imread

    photo = rotated(tmp_path / f"phone{suffix}")
    (found,) = inputs.collect([photo], tmp_path / "staging", 10**8, 10**9).images

    pixels = imread(str(photo))
    assert pixels is not None and pixels.shape[1::-1] == (found.width, found.height) == SHOWN
    assert bright_box(pixels) == shown_box(photo)  # turned the same way, not only the same size
    with Image.open(photo) as im:
        assert exif_size(im) == SHOWN  # what Ultralytics checks training labels against


# --- the predictor: boxes only in the displayed frame ---------------------------------------------


def test_boxes_the_model_placed_on_the_stored_frame_are_not_written(tmp_path):
    photo = rotated(tmp_path / "phone.jpg")
    found = ImageInput("phone.jpg", photo, *SHOWN, str(photo), orientation=6)
    detection = Detection(0, 0.9, 40, 4, 60, 12)  # where the block is in the stored pixels
    outcome = PredictOutcome()

    record_event(ImagePredicted(index=0, width=64, height=32, boxes=(detection,)), [found], outcome)

    assert outcome.predictions == []
    ((name, why),) = outcome.failed
    assert name == "phone.jpg" and "64x32" in why and "EXIF orientation 6" in why and "32x64" in why

    record_event(ImagePredicted(index=0, width=32, height=64, boxes=(detection,)), [found], outcome)
    (prediction,) = outcome.predictions
    assert (prediction.width, prediction.height) == SHOWN


# --- each writer, on a prediction in the displayed frame ---------------------------------------


def test_each_writer_writes_the_displayed_size_and_keeps_the_boxes_inside_it(tmp_path):
    photo = rotated(tmp_path / "src" / "phone.jpg")
    block = shown_box(photo)
    boxes = (Box(0, 0.9, *block), Box(1, 0.5, 10, 50, 40, 70))  # the second runs off the bottom right
    (prediction,) = [Prediction("phone.jpg", photo, *SHOWN, boxes)]
    width, height = SHOWN

    writers.write("coco", tmp_path / "coco", [prediction], NAMES, "m0007")
    doc = json.loads((tmp_path / "coco" / "annotations" / "instances_default.json").read_text())
    assert [(i["width"], i["height"]) for i in doc["images"]] == [SHOWN]
    bboxes = [a["bbox"] for a in doc["annotations"]]
    assert bboxes[0] == [block[0], block[1], block[2] - block[0], block[3] - block[1]]
    assert all(x >= 0 and y >= 0 and x + w <= width and y + h <= height for x, y, w, h in bboxes)
    assert bboxes[1] == [10, 50, width - 10, height - 50]  # clipped to the displayed size

    writers.write("labelstudio", tmp_path / "ls", [prediction], NAMES, "m0007")
    (task,) = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    results = task["predictions"][0]["result"]
    assert {(r["original_width"], r["original_height"]) for r in results} == {SHOWN}
    first = results[0]["value"]
    assert first["x"] == pytest.approx(100 * block[0] / width) and first["y"] == pytest.approx(100 * block[1] / height)
    for r in results:
        v = r["value"]
        assert v["x"] + v["width"] <= 100 + 1e-6 and v["y"] + v["height"] <= 100 + 1e-6

    writers.write("cvat", tmp_path / "cvat", [prediction], NAMES, "m0007")
    (image,) = ET.parse(tmp_path / "cvat" / "annotations.xml").getroot().findall("image")
    assert (image.get("width"), image.get("height")) == (str(width), str(height))
    for box in image.findall("box"):
        xtl, ytl, xbr, ybr = (float(box.get(k, "")) for k in ("xtl", "ytl", "xbr", "ybr"))
        assert 0 <= xtl < xbr <= width and 0 <= ytl < ybr <= height

    writers.write("yolo", tmp_path / "yolo", [prediction], NAMES, "m0007")
    for line in (tmp_path / "yolo" / "labels" / "phone.txt").read_text().splitlines():
        _, cx, cy, w, h = map(float, line.split())
        assert min(cx - w / 2, cy - h / 2) >= 0 and max(cx + w / 2, cy + h / 2) <= 1 + 1e-6


def test_the_written_packages_ingest_turned_and_train_where_the_block_is(tmp_path):
    """The YOLO package as a flywheel batch: stored upright, and the label, read the way
    Ultralytics trains on it, lands on the block. The COCO package's size passes ingest's check
    that an annotation is not for the unrotated frame."""
    from ultralytics.data.utils import verify_image_label
    from ultralytics.utils.patches import imread

    photo = rotated(tmp_path / "src" / "phone.jpg")
    prediction = Prediction("phone.jpg", photo, *SHOWN, (Box(0, 0.9, *shown_box(photo)),))
    writers.write("yolo", tmp_path / "yolo", [prediction], NAMES, "m0007")
    writers.write("coco", tmp_path / "coco", [prediction], NAMES, "m0007")
    env = Env(tmp_path / "env")

    result = env.ingest(tmp_path / "yolo", move=False)

    assert result.accepted == 1 and result.quarantined == []
    assert [n[1] for n in result.notes] == [Code.EXIF_APPLIED]
    folder = env.folder(1)
    (image,) = [p for p in folder.rglob("*.jpg") if "images" in p.parts]
    label = Path(str(image).replace("/images/", "/labels/")).with_suffix(".txt")
    args = (str(image), str(label), "", False, len(NAMES), 0, 0, False)
    _, labels, shape, *_ = verify_image_label(args)
    assert tuple(shape) == SHOWN[::-1]  # (height, width), upright
    pixels = imread(str(image))
    assert pixels is not None and pixels.shape[:2] == SHOWN[::-1]
    ((_, cx, cy, w, h),) = labels
    x1, y1, x2, y2 = bright_box(pixels)
    assert (cx - w / 2) * SHOWN[0] == pytest.approx(x1, abs=1) and (cx + w / 2) * SHOWN[0] == pytest.approx(x2, abs=1)
    assert (cy - h / 2) * SHOWN[1] == pytest.approx(y1, abs=1) and (cy + h / 2) * SHOWN[1] == pytest.approx(y2, abs=1)

    coco = Env(tmp_path / "env-coco").ingest(tmp_path / "coco", move=False)
    assert coco.accepted == 1 and coco.quarantined == [], coco.batch.reason


# --- through the real command --------------------------------------------------------------------


def test_predict_writes_the_displayed_size_of_an_exif_rotated_photo(tmp_path, data_root):
    """The real child over the photo: an untrained YOLOv8n (built from its yaml: no download,
    no training) is enough, the size and frame do not depend on what it learned."""
    from ultralytics import YOLO

    checkpoint = tmp_path / "untrained.pt"
    YOLO("yolov8n.yaml").save(checkpoint)
    photo = rotated(tmp_path / "in" / "phone.jpg")
    out = tmp_path / "out"

    model = ["--model", str(checkpoint), "--trust", "--imgsz", "32", "--conf", "0.0001"]
    where = ["--root", str(data_root), "--format", "coco", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "flywheel", "predict", str(photo), *model, *where],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" not in done.stdout
    doc = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in doc["images"]] == [("phone.jpg", *SHOWN)]
    for x, y, w, h in (a["bbox"] for a in doc["annotations"]):
        assert x >= 0 and y >= 0 and x + w <= SHOWN[0] + 1e-6 and y + h <= SHOWN[1] + 1e-6

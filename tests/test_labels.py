"""YOLO label text: what parses, what is refused (each refusal with its own reason), and the
normalised form the store keeps."""

from __future__ import annotations

import pytest

from flywheel.ingest.labels import Annotation, Box, LabelProblem, RawBox, finish, normalised, parse_label, parse_yolo
from flywheel.ingest.reasons import Code


def test_good_lines_parse_to_boxes():
    text = "0 0.5 0.5 0.2 0.3\n1 0.1 0.9 0.05 0.1\n"
    assert parse_label(text, class_count=2) == [
        Box(0, 0.5, 0.5, 0.2, 0.3),
        Box(1, 0.1, 0.9, 0.05, 0.1),
    ]


def test_edges_of_the_unit_square_are_accepted():
    # a box as large as the image touches all four edges and is inside [0, 1]
    assert parse_label("0 0.5 0.5 1 1", class_count=1) == [Box(0, 0.5, 0.5, 1.0, 1.0)]
    assert parse_label("0 0.05 0.95 0.1 0.1", class_count=1) == [Box(0, 0.05, 0.95, 0.1, 0.1)]


def test_class_id_written_as_float_is_accepted():
    assert parse_label("1.0 0.5 0.5 0.1 0.1", class_count=2)[0].cls == 1


@pytest.mark.parametrize("text", ["", "\n", "   \n\n", "\ufeff"])
def test_empty_text_is_a_valid_negative_image(text):
    assert parse_label(text, class_count=3) == []


def test_blank_lines_and_surrounding_spaces_are_skipped():
    text = "\n  0 0.5 0.5 0.2 0.2  \n\n\t1 0.25 0.25 0.1 0.1\n"
    assert [b.cls for b in parse_label(text, class_count=2)] == [0, 1]


def test_bom_and_crlf_are_accepted():
    plain = parse_label("0 0.5 0.5 0.2 0.3\n1 0.1 0.9 0.05 0.1\n", class_count=2)
    windows = parse_label("\ufeff0 0.5 0.5 0.2 0.3\r\n1 0.1 0.9 0.05 0.1\r\n", class_count=2)
    assert windows == plain
    assert len(windows) == 2


@pytest.mark.parametrize(
    ("line", "code", "reason"),
    [
        ("0 0.5 0.5 0.2", "label_bad_fields", "expected 5 numbers"),
        ("0 0.5 0.5 0.2 0.2 0.9", "label_bad_fields", "expected 5 numbers"),
        ("0 0.1 0.1 0.2 0.1 0.2 0.2 0.1", "label_bad_fields", "found 8 fields"),  # half a polygon point
        ("0 0.5 abc 0.2 0.2", "label_not_numeric", "not a number"),
        ("0 0.5 0.5 nan 0.2", "label_not_finite", "NaN or infinite"),
        ("0 0.5 0.5 0.2 inf", "label_not_finite", "NaN or infinite"),
        ("0 -inf 0.5 0.2 0.2", "label_not_finite", "NaN or infinite"),
        ("1.5 0.5 0.5 0.2 0.2", "label_unknown_class", "not a non-negative integer"),
        ("-1 0.5 0.5 0.2 0.2", "label_unknown_class", "not a non-negative integer"),
        ("3 0.5 0.5 0.2 0.2", "label_unknown_class", "unknown"),
        ("7 0.5 0.5 0.2 0.2", "label_unknown_class", "unknown"),
        ("0 0.5 0.5 -0.2 0.2", "label_bad_size", "width and height must be positive"),
        ("0 0.5 0.5 0.2 -0.1", "label_bad_size", "width and height must be positive"),
        ("0 1.2 0.5 0.2 0.2", "label_out_of_range", "box edge x0=1.1 is outside [0, 1]"),
        ("0 0.5 -0.01 0.2 0.2", "label_out_of_range", "box edge y0=-0.11 is outside [0, 1]"),
        ("0 0.5 0.5 1.5 0.2", "label_out_of_range", "box edge x0=-0.25 is outside [0, 1]"),
        ("0 0.5 0.5 0.2 2", "label_out_of_range", "box edge y0=-0.5 is outside [0, 1]"),
        ("0 0 1 1 1", "label_out_of_range", "box edge x0=-0.5 is outside [0, 1]"),  # centre on the edge
    ],
)
def test_each_refusal_has_its_own_code_and_reason(line, code, reason):
    with pytest.raises(LabelProblem) as info:
        parse_label(line, class_count=3)
    assert info.value.code == code
    assert reason in str(info.value)
    assert str(info.value).startswith("line 1:")


def test_reasons_are_distinct_per_kind_of_fault():
    # each fault's phrase appears in its own message and in no other fault's message
    faults = {
        "0 0.5 0.5 0.2": "expected 5 numbers",
        "0 x 0.5 0.2 0.2": "not a number",
        "0 nan 0.5 0.2 0.2": "NaN or infinite",
        "-1 0.5 0.5 0.2 0.2": "not a non-negative integer",
        "5 0.5 0.5 0.2 0.2": "is unknown",
        "0 0.5 0.5 -1 0.2": "must be positive",
        "0 1.5 0.5 0.2 0.2": "is outside [0, 1]",
    }
    codes = set()
    for line, phrase in faults.items():
        with pytest.raises(LabelProblem) as info:
            parse_label(line, class_count=2)
        message = str(info.value)
        assert phrase in message, (line, message)
        others = [p for p in faults.values() if p != phrase and p in message]
        assert not others, (line, message, others)
        codes.add(info.value.code)
    assert len(codes) == 6  # a class id that is negative and one that is too big share label_unknown_class


# --- tolerance, clipping, dropped boxes, polygons ----------------------------------------


def test_a_box_overhanging_within_the_tolerance_is_clipped_with_a_note():
    ann = parse_yolo("0 0.995 0.5 0.02 0.2\n", class_count=1)  # x1 = 1.005
    boxes, notes = finish(ann, None, tolerance=0.01)
    assert len(boxes) == 1
    b = boxes[0]
    assert b.cx + b.w / 2 == pytest.approx(1.0) and b.cx - b.w / 2 == pytest.approx(0.985)
    assert [code for code, _ in notes] == [Code.BOX_CLIPPED]
    assert "line 1" in notes[0][1]


def test_the_same_overhang_beyond_the_tolerance_is_refused():
    with pytest.raises(LabelProblem) as info:
        parse_label("0 0.995 0.5 0.02 0.2\n", class_count=1, tolerance=0.001)
    assert info.value.code == Code.LABEL_OUT_OF_RANGE
    assert "x1=1.005" in str(info.value) and "coordinate_tolerance = 0.001" in str(info.value)


def test_rounding_noise_at_an_edge_is_clamped_without_a_note():
    ann = parse_yolo("0 0.9 0.5 0.2 0.2\n", class_count=1)  # 0.9 + 0.1 is 1.0000000000000002 in floats
    boxes, notes = finish(ann, None, tolerance=0.0)
    assert len(boxes) == 1 and notes == []
    assert boxes[0].cx + boxes[0].w / 2 <= 1.0


def test_zero_size_boxes_are_dropped_with_a_note_and_the_rest_kept():
    ann = parse_yolo("0 0.5 0.5 0 0.2\n0 0.3 0.3 0.1 0.1\n0 0.5 0.5 0.2 0\n", class_count=1)
    boxes, notes = finish(ann, None, tolerance=0.0)
    assert boxes == [Box(0, 0.3, 0.3, 0.1, 0.1)]
    assert [code for code, _ in notes] == [Code.BOX_ZERO_SIZE, Code.BOX_ZERO_SIZE]
    assert "line 1" in notes[0][1] and "line 3" in notes[1][1]


def test_duplicate_boxes_are_kept_once_with_a_note():
    ann = parse_yolo("1 0.5 0.5 0.2 0.2\n1 0.50 0.5 0.2 0.2000000\n0 0.5 0.5 0.2 0.2\n", class_count=2)
    boxes, notes = finish(ann, None, tolerance=0.0)
    assert [b.cls for b in boxes] == [1, 0]  # the same place with another class is another box
    assert notes == [(Code.BOX_DUPLICATE, "line 2: the same box twice, kept once")]


def test_a_segmentation_polygon_becomes_its_bounding_box():
    ann = parse_yolo("1 0.1 0.2 0.5 0.1 0.4 0.6 0.2 0.5\n", class_count=2)  # 4 points
    boxes, notes = finish(ann, None, tolerance=0.0)
    assert len(boxes) == 1
    b = boxes[0]
    assert (b.cls, b.cx, b.cy, b.w, b.h) == pytest.approx((1, 0.3, 0.35, 0.4, 0.5))
    assert [code for code, _ in notes] == [Code.POLYGON_TO_BOX]


def test_pixel_boxes_are_normalised_by_the_image_size():
    ann = Annotation([RawBox(0, 320.0, 120.0, 64.0, 48.0, "object 1")], pixels=True, size=(640, 480))
    boxes, notes = finish(ann, (640, 480), tolerance=0.0)
    assert boxes == [Box(0, 0.5, 0.25, 0.1, 0.1)] and notes == []


def test_unknown_class_reason_names_the_valid_range():
    with pytest.raises(LabelProblem, match=r"class id 2 is unknown .*2 classes, ids 0\.\.1"):
        parse_label("2 0.5 0.5 0.2 0.2", class_count=2)


def test_error_names_the_line_number_of_the_first_bad_line():
    text = "0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n0 9 9 9 9\n"
    with pytest.raises(LabelProblem, match=r"^line 4: expected 5 numbers"):
        parse_label(text, class_count=2)


def test_line_number_counts_the_bom_line_as_line_1_and_crlf_lines():
    text = "\ufeff0 0.5 0.5 0.2 0.2\r\n0 0.5 0.5 0.2 0.2\r\n0 0.5 0.5 0.2 oops\r\n"
    with pytest.raises(LabelProblem, match=r"^line 3: not a number"):
        parse_label(text, class_count=1)


def test_label_problem_is_a_value_error_with_a_code():
    assert issubclass(LabelProblem, ValueError)
    assert LabelProblem(Code.LABEL_BAD_FIELDS, "x").code == "label_bad_fields"


def test_normalised_remaps_class_ids_with_fixed_precision_and_lf():
    boxes = [Box(0, 0.5, 0.25, 0.1, 0.2), Box(1, 1.0, 0.0, 0.123456789, 1.0)]
    data = normalised(boxes, {0: 3, 1: 0})
    assert data == b"3 0.500000 0.250000 0.100000 0.200000\n0 1.000000 0.000000 0.123457 1.000000\n"
    assert b"\r" not in data


def test_normalised_of_no_boxes_is_empty():
    assert normalised([], {}) == b""


def test_same_boxes_written_differently_give_the_same_bytes():
    a = parse_label("\ufeff0 .5 0.50 0.2 0.3\r\n1 0.1 0.9 5e-2 0.1\r\n", class_count=2)
    b = parse_label("0 0.5 0.5 0.200000 0.3000000\n\n1   0.1 0.9 0.05 0.1", class_count=2)
    remap = {0: 0, 1: 1}
    assert normalised(a, remap) == normalised(b, remap)


def test_normalised_output_parses_back_to_the_remapped_boxes():
    boxes = parse_label("0 0.5 0.5 0.2 0.3\n1 0.1 0.9 0.05 0.1\n", class_count=2)
    data = normalised(boxes, {0: 1, 1: 0})
    again = parse_label(data.decode(), class_count=2)
    assert [b.cls for b in again] == [1, 0]
    assert [(b.cx, b.cy, b.w, b.h) for b in again] == [(b.cx, b.cy, b.w, b.h) for b in boxes]

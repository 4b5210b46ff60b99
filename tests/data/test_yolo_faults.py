"""YOLO txt faults injected into copies of coco128 (images and labels): each is repaired and counted, accepted,
or one DatasetError naming the file and line of every problem; never a bare traceback."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from detector.data import YoloDataset, read_image_rgb
from detector.data.yolo import COORD_TOLERANCE, parse_label_file
from detector.errors import DatasetError

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
STEMS = ["000000000009", "000000000025", "000000000030"]
NAMES = [f"c{i}" for i in range(80)]


@pytest.fixture
def yolo_copy(tmp_path) -> Path:
    """``tmp/images/train/*.jpg`` and ``tmp/labels/train/*.txt``: three coco128 images with their labels."""
    for stem in STEMS:
        for kind, ext in (("images", ".jpg"), ("labels", ".txt")):
            (tmp_path / kind / "train").mkdir(parents=True, exist_ok=True)
            shutil.copy(COCO128 / kind / "train2017" / (stem + ext), tmp_path / kind / "train" / (stem + ext))
    return tmp_path


def _label(root: Path, k: int = 0) -> Path:
    return root / "labels" / "train" / (STEMS[k] + ".txt")


def _build(root: Path, **kw) -> YoloDataset:
    return YoloDataset(str(root / "images" / "train"), NAMES, **kw)


@pytest.mark.parametrize("field, token", [(0, "nan"), (0, "inf"), (3, "NaN"), (4, "-inf")])
def test_non_finite_fields_name_file_and_line(yolo_copy, field, token):
    """Line 2 of the first label gets ``token`` in field ``field``: float() accepts it, the parser must not."""
    path = _label(yolo_copy)
    lines = path.read_text().splitlines()
    parts = lines[1].split()
    parts[field] = token
    lines[1] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=rf"{STEMS[0]}.txt:2: non-finite value '{token}'"):
        _build(yolo_copy)


def test_non_utf8_bytes_name_file_and_line(yolo_copy):
    """A Latin-1 byte 0xe9 on line 3: named with its line (before: a bare UnicodeDecodeError)."""
    path = _label(yolo_copy)
    data = path.read_bytes().split(b"\n")
    data[2] = data[2] + b" \xe9"
    path.write_bytes(b"\n".join(data))
    with pytest.raises(DatasetError, match=rf"{STEMS[0]}.txt:3: not UTF-8 text \(byte 0xe9\)"):
        _build(yolo_copy)


def test_a_utf8_bom_is_accepted_silently(yolo_copy):
    """A BOM before the first line (Windows editors write one) changes nothing: same labels, same boxes."""
    path = _label(yolo_copy)
    expected = parse_label_file(str(path), 80)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    got = parse_label_file(str(path), 80)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = _build(yolo_copy)
    assert not ds.problems and not ds.repairs


def test_exporter_rounding_is_clipped_and_counted(yolo_copy):
    """``0 0.5 0.5 1.0000001 0.2`` and ``0 0.5 0.5 0.2 -0.0000001``: within COORD_TOLERANCE, clipped to 1 and 0
    (a zero height: that second box then has no area and is dropped, also counted). On the 640x426 image 25:
    w = 1 -> x from 0 to 640, h = 0.2 -> y from 0.4 * 426 = 170.4 to 0.6 * 426 = 255.6."""
    path = _label(yolo_copy, 1)
    path.write_text("0 0.5 0.5 1.0000001 0.2\n0 0.5 0.5 0.2 -0.0000001\n")
    assert 1e-7 < COORD_TOLERANCE
    with pytest.warns(UserWarning, match=r"2 coordinates clipped into \[0, 1\], 1 zero-area boxes dropped"):
        ds = _build(yolo_copy)
    assert ds.repairs == {"coordinates clipped into [0, 1]": 2, "zero-area boxes dropped": 1}
    np.testing.assert_allclose(ds.records[1].boxes, [[0, 170.4, 640, 255.6]], rtol=1e-6)


def test_beyond_the_tolerance_is_still_an_error(yolo_copy):
    _label(yolo_copy, 1).write_text("0 0.5 0.5 1.01 0.2\n")
    with pytest.raises(DatasetError, match=rf"{STEMS[1]}.txt:1: coordinates must be normalised to \[0, 1\]"):
        _build(yolo_copy)


def test_every_bad_line_of_every_file_is_listed_at_once(yolo_copy):
    """Class 999 on line 1 of file 0, four fields on line 2 of file 1, 'x' on line 1 of file 2: one error, three
    locations; with strict=False the three images are left out and the problems kept."""
    _label(yolo_copy, 0).write_text("999 0.5 0.5 0.2 0.2\n")
    _label(yolo_copy, 1).write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n")
    _label(yolo_copy, 2).write_text("x 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError) as info:
        _build(yolo_copy)
    text = str(info.value)
    assert text.startswith("3 problems in the dataset")
    assert f"{STEMS[0]}.txt:1: class '999' is not an integer in 0..79" in text
    assert f"{STEMS[1]}.txt:2: expected 5 values" in text
    assert f"{STEMS[2]}.txt:1: expected numbers" in text
    ds = _build(yolo_copy, strict=False)
    assert len(ds) == 0 and len(ds.problems) == 3


def test_empty_label_file_is_an_image_without_boxes(yolo_copy):
    _label(yolo_copy).write_text("")
    ds = _build(yolo_copy)
    assert ds.records[0].boxes.shape == (0, 4) and not ds.problems


def test_truncated_jpeg_is_named_when_built_and_when_read(yolo_copy):
    """The first image cut to half its bytes: OpenCV alone would decode it with a grey bottom half."""
    image = yolo_copy / "images" / "train" / (STEMS[0] + ".jpg")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=rf"{STEMS[0]}.jpg: truncated JPEG"):
        _build(yolo_copy)
    with pytest.raises(DatasetError, match=rf"{STEMS[0]}.jpg: truncated JPEG"):
        read_image_rgb(str(image))


def test_bytes_after_the_end_marker_are_not_truncation(yolo_copy):
    """Some cameras append data after the JPEG's end marker: the image decodes in full and is accepted."""
    image = yolo_copy / "images" / "train" / (STEMS[0] + ".jpg")
    image.write_bytes(image.read_bytes() + b"trailer")
    assert read_image_rgb(str(image)).shape == (480, 640, 3)
    assert len(_build(yolo_copy)) == 3


@pytest.mark.parametrize("content, what", [(b"", "empty file"), (b"not an image at all\n", "not an image")])
def test_empty_or_non_image_files_are_named(yolo_copy, content, what):
    (yolo_copy / "images" / "train" / (STEMS[2] + ".jpg")).write_bytes(content)
    with pytest.raises(DatasetError, match=rf"{STEMS[2]}.jpg: cannot read image header: {what}"):
        _build(yolo_copy)

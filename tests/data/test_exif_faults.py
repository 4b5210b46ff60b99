"""EXIF orientation: an image whose tag rotates or mirrors it is read as displayed, with the labels that describe
that view (ultralytics' convention), in training, the evaluation ground truth and ``tools/check_data.py``.

The fixtures store a real coco128 image rotated (PIL's ``Image.transpose``, the inverse of what the tag asks), so
that once the tag is applied the displayed view is the original image again and coco128's own labels describe it.
The expected pixels come from PIL's ``ImageOps.exif_transpose`` (the package applies the tag with OpenCV).
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from detector.data import CocoDataset, YoloDataset, letterboxed_sample, read_image_rgb, scale_boxes_to_original
from detector.data.check import EXIF_REPAIR, check_dataset, format_report
from detector.data.dataset_yaml import load_dataset_yaml
from detector.data.files import read_image_header
from detector.errors import DatasetError
from detector.evaluation import detections_to_coco, evaluate_coco

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
STEM = "000000000009"  # 640 x 480 (w x h), 8 boxes
NAMES = [f"c{i}" for i in range(80)]
UNDO = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270}
"""EXIF orientation -> the PIL transpose that turns the displayed view into the stored pixels (the inverse of
exif_transpose's: 6 is shown rotated 90 degrees clockwise, so it is stored rotated 90 degrees counter-clockwise)."""


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def write_oriented(src: Path, dst: Path, orientation: int) -> np.ndarray:
    """Store image ``src`` at ``dst`` so that it displays as ``src`` under EXIF ``orientation``; returns the
    displayed view as PIL decodes and transposes it (ndarray[H, W, 3] uint8 RGB)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        shown = im.convert("RGB")
    stored = shown.transpose(UNDO[orientation]) if orientation in UNDO else shown
    stored.save(dst, quality=95, exif=_exif(orientation))
    with Image.open(dst) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.fixture
def yolo_rotated(tmp_path):
    """``(root, orientation -> displayed pixels)``: ``root/images/{STEM}_o{k}.jpg`` stored for orientations 3, 5, 6
    and 8 with coco128's label of ``STEM`` (which describes the upright, displayed view) beside each."""
    shown = {}
    for k in (3, 5, 6, 8):
        shown[k] = write_oriented(COCO128 / "images" / "train2017" / f"{STEM}.jpg",
                                  tmp_path / "images" / f"{STEM}_o{k}.jpg", k)
        (tmp_path / "labels").mkdir(exist_ok=True)
        shutil.copy(COCO128 / "labels" / "train2017" / f"{STEM}.txt", tmp_path / "labels" / f"{STEM}_o{k}.txt")
    return tmp_path, shown


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_applied_as_pil_does(tmp_path, orientation):
    """A random 5 x 7 PNG (lossless, so equality is exact) tagged 1..8: pixels equal PIL's exif_transpose, and the
    header's displayed size is theirs (5..8 swap width and height)."""
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path, exif=_exif(orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    image = read_image_rgb(str(path))
    assert image.shape == expected.shape == ((7, 5, 3) if orientation >= 5 else (5, 7, 3))
    np.testing.assert_array_equal(image, expected)
    header = read_image_header(str(path))
    assert (header.height, header.width, header.orientation) == (5, 7, orientation)
    assert header.displayed_size == expected.shape[:2]


def test_an_out_of_range_tag_is_ignored(tmp_path):
    """Orientation 9 does not exist: the image is read as stored (PIL's exif_transpose does the same)."""
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png", exif=_exif(9))
    np.testing.assert_array_equal(read_image_rgb(str(tmp_path / "a.png")), pixels)
    assert read_image_header(str(tmp_path / "a.png")).displayed_size == (5, 7)


def test_yolo_images_and_boxes_are_read_as_displayed(yolo_rotated):
    """Each image is stored 480 x 640 or 640 x 480 but displayed 640 x 480 (w x h): the record size, the pixels and
    the boxes (label ``cx cy w h`` times 640 / 480, worked out here) are those of the displayed view, and the boxes
    cover the same pixels as in the original coco128 image."""
    root, shown = yolo_rotated
    ds = YoloDataset(str(root / "images"), NAMES)
    rows = np.loadtxt(COCO128 / "labels" / "train2017" / f"{STEM}.txt", ndmin=2)  # (k, 5)
    cx, cy, w, h = rows[:, 1] * 640, rows[:, 2] * 480, rows[:, 3] * 640, rows[:, 4] * 480
    expected = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    original = np.asarray(Image.open(COCO128 / "images" / "train2017" / f"{STEM}.jpg").convert("RGB"), np.float32)
    for i, k in enumerate((3, 5, 6, 8)):
        assert (ds.records[i].height, ds.records[i].width) == (480, 640)
        sample = ds[i]
        assert sample.image.shape == (480, 640, 3) and sample.orig_size == (480, 640)
        assert np.abs(sample.image.astype(np.float32) - shown[k]).mean() < 1.0  # OpenCV vs PIL decoder rounding
        np.testing.assert_allclose(sample.boxes, expected, atol=1e-3)
        np.testing.assert_array_equal(sample.labels, rows[:, 0].astype(np.int64))
        for x1, y1, x2, y2 in np.round(sample.boxes).astype(int):  # the object under each box is the original's
            crop = sample.image[y1:y2, x1:x2].astype(np.float32)
            assert np.abs(crop - original[y1:y2, x1:x2]).mean() < 4.0  # JPEG re-encoding at quality 95


def _yaml(root: Path, body: str) -> Path:
    (root / "data.yaml").write_text(body)
    return root / "data.yaml"


def test_check_counts_the_rotated_images(yolo_rotated):
    root, _ = yolo_rotated
    spec = load_dataset_yaml(str(_yaml(root, f"train: images\nval: images\nnames: {json.dumps(NAMES)}\n")))
    reports = check_dataset(spec)
    assert reports[0].repairs[EXIF_REPAIR] == 4 and not reports[0].problems
    text = format_report(spec, reports)
    assert "4 images EXIF-rotated" in text and "0 fatal problems, 0 warnings" in text


def test_ground_truth_round_trip_through_the_evaluation_path(yolo_rotated):
    """coco_gt() states the displayed size; the targets letterboxed to 320 as evaluation does, mapped back with
    the sample's ImageMeta and fed back as detections, score mAP = 1."""
    root, _ = yolo_rotated
    ds = YoloDataset(str(root / "images"), NAMES)
    gt = ds.coco_gt()
    assert all((gt.imgs[i]["height"], gt.imgs[i]["width"]) == (480, 640) for i in ds.image_ids)
    dets = []
    for i in range(len(ds)):
        sample, meta = letterboxed_sample(ds, i, 320)
        boxes = scale_boxes_to_original(torch.from_numpy(sample.boxes), meta)
        np.testing.assert_allclose(boxes.numpy(), ds.records[i].boxes, atol=1e-3)
        dets.append(torch.cat([boxes, torch.ones(len(boxes), 1), torch.from_numpy(sample.labels).float()[:, None]], 1))
    stats = evaluate_coco(gt, detections_to_coco(dets, ds.image_ids, ds.cat_ids))
    assert stats["mAP"] == pytest.approx(1.0)


def _coco_copy(tmp_path: Path, orientation: int, stated: tuple[int, int]) -> tuple[Path, Path]:
    """coco128's image ``STEM`` stored for ``orientation``, with its coco128 annotations and a stated ``(w, h)``."""
    with open(COCO128 / "annotations" / "instances_train2017.json") as f:
        data = json.load(f)
    image = next(im for im in data["images"] if im["file_name"] == f"{STEM}.jpg")
    data["images"] = [{**image, "width": stated[0], "height": stated[1]}]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] == image["id"]]
    write_oriented(COCO128 / "images" / "train2017" / f"{STEM}.jpg", tmp_path / "images" / f"{STEM}.jpg", orientation)
    (tmp_path / "a.json").write_text(json.dumps(data))
    return tmp_path / "a.json", tmp_path / "images"


def test_coco_stating_the_displayed_size_is_read_rotated(tmp_path):
    ann, images = _coco_copy(tmp_path, 6, (640, 480))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDataset(str(ann), str(images))
        assert ds[0].image.shape == (480, 640, 3)
        spec = load_dataset_yaml(str(_yaml(tmp_path, "train: {images: images, annotations: a.json}\n"
                                                     "val: {images: images, annotations: a.json}\n")))
        report = check_dataset(spec)[0]
    assert report.repairs[EXIF_REPAIR] == 1 and not report.fatal


def test_coco_stating_the_stored_size_is_named_with_the_fix(tmp_path):
    """Annotations made on the unrotated pixels (480 x 640 stated, EXIF 6 displays 640 x 480): fatal in the check
    and when read, saying that the orientation rotates it and what to do."""
    ann, images = _coco_copy(tmp_path, 6, (480, 640))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDataset(str(ann), str(images))
        spec = load_dataset_yaml(str(_yaml(tmp_path, "train: {images: images, annotations: a.json}\n"
                                                     "val: {images: images, annotations: a.json}\n")))
        report = check_dataset(spec)[0]
    message = r"EXIF orientation 6, which rotates it\) but the annotations .*say 480x640: they describe the unrot"
    assert len(report.fatal) == 1 and EXIF_REPAIR not in report.repairs
    assert report.fatal[0].file == str(images / f"{STEM}.jpg")
    with pytest.raises(DatasetError, match=message):
        raise DatasetError(str(report.fatal[0]))
    with pytest.raises(DatasetError, match=rf"{STEM}.jpg: image is displayed 640x480 .*{message}"):
        ds[0]

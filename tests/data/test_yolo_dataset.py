"""YoloDataset on coco128's YOLO labels (cross-checked against the COCO JSON) and its error paths."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from detector.data import YoloDataset
from detector.data.yolo import label_path, parse_label_file
from detector.errors import DatasetError

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"


@pytest.fixture(scope="module")
def yolo128(request):
    coco = request.getfixturevalue("coco128")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return YoloDataset(str(COCO128 / "images" / "train2017"), coco.names)


def test_orphan_label_files_are_counted_in_one_warning(coco128):
    """Two label files (000000000656.txt, 000000000659.txt) have no image."""
    with pytest.warns(UserWarning, match=r"2 label files have no image") as record:
        ds = YoloDataset(str(COCO128 / "images" / "train2017"), coco128.names, max_images=3)
    assert len(record) == 1
    assert [os.path.basename(p) for p in ds.orphan_labels] == ["000000000656.txt", "000000000659.txt"]
    assert len(ds) == 3


def test_counts_and_unlabelled_images(yolo128):
    """128 images; 929 boxes = the 939 JSON annotations minus the 10 crowd ones (the YOLO labels have
    no crowd regions). The two images without a label file have no boxes."""
    assert len(yolo128) == 128
    assert yolo128.num_boxes == 939 - 10
    assert yolo128.dropped_boxes == 0
    empty = [os.path.basename(r.path) for r in yolo128.records if len(r.labels) == 0]
    assert empty == ["000000000250.jpg", "000000000508.jpg"]
    for r in yolo128.records:
        assert os.path.exists(label_path(r.path)) == (len(r.labels) > 0)


def test_boxes_match_the_coco_json_within_one_pixel(yolo128, coco128):
    """For every image, the YOLO boxes (denormalised by the image size) are the COCO JSON's non-crowd
    boxes: same count, and each YOLO box has a COCO box of the same class within 1 px per coordinate
    (the txt files round to 6 decimals). Classes agree because both use COCO's sorted-id order."""
    coco_by_name = {os.path.basename(r.path): r for r in coco128.records}
    for r in yolo128.records:
        c = coco_by_name[os.path.basename(r.path)]
        assert (r.height, r.width) == (c.height, c.width)
        assert len(r.labels) == len(c.labels)
        if len(r.labels) == 0:
            continue
        diff = np.abs(r.boxes[:, None, :] - c.boxes[None, :, :]).max(-1)  # (k_yolo, k_coco)
        diff[r.labels[:, None] != c.labels[None, :]] = np.inf
        assert diff.min(1).max() <= 1.0, os.path.basename(r.path)


def test_coco_gt_in_memory_uses_index_plus_one(yolo128):
    """In-memory ground truth: ids 0..127, category id = class + 1, bbox = (x1, y1, x2 - x1, y2 - y1)."""
    gt = yolo128.coco_gt()
    assert sorted(gt.getImgIds()) == list(range(128))
    assert len(gt.anns) == 929 and yolo128.cat_ids == list(range(1, 81))
    assert [gt.cats[i + 1]["name"] for i in range(80)] == yolo128.names
    r = next(r for r in yolo128.records if len(r.labels))
    anns = gt.loadAnns(gt.getAnnIds(imgIds=[r.image_id]))
    xywh = np.array([a["bbox"] for a in anns])
    np.testing.assert_allclose(xywh[:, :2], r.boxes[:, :2], atol=1e-4)
    np.testing.assert_allclose(xywh[:, :2] + xywh[:, 2:], r.boxes[:, 2:], atol=1e-4)
    assert [a["category_id"] for a in anns] == (r.labels + 1).tolist()
    assert all(a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in anns)


def _tiny_split(tmp_path, write_image, label_text: str) -> Path:
    """images/train/a.png (50 high, 100 wide) with labels/train/a.txt = label_text."""
    write_image(tmp_path / "images" / "train" / "a.png", 50, 100)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text(label_text)
    return tmp_path / "images" / "train"


def test_denormalisation_and_polygon_lines(tmp_path, write_image):
    """On a 100x50 (w x h) image: ``1 0.5 0.5 0.2 0.4`` -> (40, 15, 60, 35); the polygon
    ``0 0.1 0.2 0.3 0.2 0.2 0.4`` spans x 0.1..0.3, y 0.2..0.4 -> (10, 10, 30, 20)."""
    images = _tiny_split(tmp_path, write_image, "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.3 0.2 0.2 0.4\n")
    ds = YoloDataset(str(images), ["a", "b"])
    np.testing.assert_allclose(ds[0].boxes, [[40, 15, 60, 35], [10, 10, 30, 20]], atol=1e-4)
    assert ds[0].labels.tolist() == [1, 0]


@pytest.mark.parametrize("text, line, what", [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", 2, "expected 5 values"),
    ("0 0.5 0.5 0.2 zero\n", 1, "expected numbers"),
    ("0 0.5 0.5 0.2 0.2\n\n2 0.5 0.5 0.2 0.2\n", 3, r"class '2' is not an integer in 0..1"),
    ("0.5 0.5 0.5 0.2 0.2\n", 1, r"class '0.5' is not an integer"),
    ("1 0.5 0.5 1.2 0.2\n", 1, r"coordinates must be normalised to \[0, 1\]"),
])
def test_malformed_lines_name_file_and_line(tmp_path, write_image, text, line, what):
    images = _tiny_split(tmp_path, write_image, text)
    with pytest.raises(DatasetError, match=rf"a.txt:{line}: {what}"):
        YoloDataset(str(images), ["a", "b"])


def test_parse_label_file_of_a_real_label(coco128):
    """000000000009.txt starts with ``45 0.479492 0.688771 0.955609 0.5955`` (bowl)."""
    labels, boxes = parse_label_file(str(COCO128 / "labels" / "train2017" / "000000000009.txt"), 80)
    assert labels[0] == 45 and coco128.names[45] == "bowl"
    np.testing.assert_allclose(boxes[0], [0.479492, 0.688771, 0.955609, 0.5955], rtol=1e-6)


def test_txt_image_list_and_explicit_label_dir(tmp_path, write_image):
    """A .txt split lists image paths relative to itself; labels come from the given folder."""
    write_image(tmp_path / "pics" / "b.png", 20, 40)
    write_image(tmp_path / "pics" / "c.png", 20, 40)
    (tmp_path / "lbl").mkdir()
    (tmp_path / "lbl" / "c.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "list.txt").write_text("pics/c.png\n./pics/b.png\n")
    ds = YoloDataset(str(tmp_path / "list.txt"), ["x"], label_dir=str(tmp_path / "lbl"))
    assert [os.path.basename(r.path) for r in ds.records] == ["c.png", "b.png"]
    np.testing.assert_allclose(ds[0].boxes, [[10, 5, 30, 15]])
    assert ds[1].boxes.shape == (0, 4)


def test_missing_split_and_non_image_entry_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: image split not found"):
        YoloDataset(str(tmp_path / "nowhere"), ["x"])
    (tmp_path / "list.txt").write_text("a.png\nnotes.md\n")
    with pytest.raises(DatasetError, match=r"list.txt:2: 'notes.md' is not an image path"):
        YoloDataset(str(tmp_path / "list.txt"), ["x"])

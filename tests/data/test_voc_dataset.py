"""VocDataset on BCCD (../shared/data/bccd, real Pascal VOC data) and its error paths."""
from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest

from detector.data import VocDataset
from detector.errors import DatasetError

NAMES = ["RBC", "WBC", "Platelets"]


def _load(root, split, **kw) -> VocDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VocDataset(str(root), split, NAMES, **kw)


@pytest.fixture(scope="module")
def bccd_splits(request):
    root = request.getfixturevalue("bccd_root")
    return {s: _load(root, s) for s in ("train", "val", "test")}


def test_official_split_sizes_and_classes(bccd_splits):
    """train 205 / val 87 / test 72 images, disjoint; 3 classes."""
    assert {s: len(d) for s, d in bccd_splits.items()} == {"train": 205, "val": 87, "test": 72}
    paths = [set(r.path for r in d.records) for d in bccd_splits.values()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    assert all(d.names == NAMES and d.num_classes == 3 for d in bccd_splits.values())


def test_box_totals_without_the_two_zero_area_boxes(bccd_splits):
    """4888 boxes (RBC 4155, WBC 372, Platelets 361) minus the two zero-area RBC boxes, one in
    train (00343) and one in val (00338)."""
    counts = Counter()
    for d in bccd_splits.values():
        counts.update(int(lbl) for r in d.records for lbl in r.labels)
    assert counts == {0: 4155 - 2, 1: 372, 2: 361}
    assert {s: d.dropped_boxes for s, d in bccd_splits.items()} == {"train": 1, "val": 1, "test": 0}


def test_zero_area_box_is_dropped_with_a_warning(bccd_root):
    """BloodImage_00338 (in val) has an RBC with xmin = xmax = 504: that box is missing from its sample."""
    ids = (bccd_root / "ImageSets" / "Main" / "val.txt").read_text().split()
    with pytest.warns(UserWarning, match=r"1 zero-area boxes dropped\n.*BloodImage_00338.xml: 1 zero-area boxes"):
        ds = VocDataset(str(bccd_root), "val", NAMES, max_images=ids.index("BloodImage_00338") + 1)
    objects = ET.parse(bccd_root / "Annotations" / "BloodImage_00338.xml").getroot().findall("object")
    assert len(ds[len(ds) - 1].labels) == len(objects) - 1


def test_coordinates_follow_voc_one_based_pixels(bccd_root):
    """VOC pixel indices are 1-based inclusive: (xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax).
    Checked against the XML read directly, on the first train image."""
    ds = _load(bccd_root, "train", max_images=1)
    stem = os.path.splitext(os.path.basename(ds.records[0].path))[0]
    root = ET.parse(bccd_root / "Annotations" / f"{stem}.xml").getroot()
    raw = np.array([[float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
                    for o in root.iter("object")], np.float32)
    labels = np.array([NAMES.index(o.findtext("name")) for o in root.iter("object")])
    keep = (raw[:, 2] > raw[:, 0]) & (raw[:, 3] > raw[:, 1])
    np.testing.assert_array_equal(ds[0].boxes, raw[keep] - np.array([1, 1, 0, 0], np.float32))
    assert ds[0].labels.tolist() == labels[keep].tolist()
    assert ds[0].image.shape == (480, 640, 3)


def test_coco_gt_of_a_split(bccd_splits):
    """In-memory ground truth of val: one annotation per box, category ids 1..3 named as the classes."""
    d = bccd_splits["val"]
    gt = d.coco_gt()
    assert len(gt.getImgIds()) == 87 and len(gt.anns) == d.num_boxes
    assert [gt.cats[i]["name"] for i in (1, 2, 3)] == NAMES
    assert Counter(a["category_id"] for a in gt.anns.values()) == \
        Counter(int(lbl) + 1 for r in d.records for lbl in r.labels)


XML = """<annotation>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>{name}</name><difficult>1</difficult>
    <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>12</xmax><ymax>20</ymax></bndbox></object>
</annotation>
"""


def _tiny_voc(tmp_path, write_image, xml_text: str):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations" / "x.xml").write_text(xml_text)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("x\n")
    write_image(tmp_path / "JPEGImages" / "x.jpg", 30, 40)


def test_difficult_objects_are_kept(tmp_path, write_image):
    """A difficult WBC at (2, 3, 12, 20) becomes an ordinary box (1, 2, 12, 20) with label 1."""
    _tiny_voc(tmp_path, write_image, XML.format(name="WBC"))
    ds = VocDataset(str(tmp_path), "train", NAMES)
    np.testing.assert_array_equal(ds[0].boxes, [[1, 2, 12, 20]])
    assert ds[0].labels.tolist() == [1]


def test_unknown_class_names_the_file(tmp_path, write_image):
    _tiny_voc(tmp_path, write_image, XML.format(name="Neutrophil"))
    with pytest.raises(DatasetError, match=r"x.xml: object 0: class name 'Neutrophil' is not one of"):
        VocDataset(str(tmp_path), "train", NAMES)


def test_malformed_xml_names_file_and_line(tmp_path, write_image):
    _tiny_voc(tmp_path, write_image, "<annotation>\n  <size>\n</annotation>\n")
    with pytest.raises(DatasetError, match=r"x.xml:3: not valid XML"):
        VocDataset(str(tmp_path), "train", NAMES)


def test_missing_split_list_and_image_name_the_file(tmp_path, write_image):
    _tiny_voc(tmp_path, write_image, XML.format(name="RBC"))
    with pytest.raises(DatasetError, match=r"ImageSets/Main/valid.txt: split list not found"):
        VocDataset(str(tmp_path), "valid", NAMES)
    os.remove(tmp_path / "JPEGImages" / "x.jpg")
    with pytest.raises(DatasetError, match=r"JPEGImages/x.jpg: image of .*x.xml"):
        VocDataset(str(tmp_path), "train", NAMES)

"""CocoDataset on the shipped coco128 (real COCO annotations) and its error paths."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data import CocoDataset, Sample
from detector.errors import DatasetError

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017.json"
COCO128_IMAGES = COCO128 / "images" / "train2017"


def test_counts_match_the_annotation_file(coco128, coco128_json):
    """coco128: 128 images, 939 annotations of which 10 crowd, 80 categories listed (71 used).

    Training targets are the 939 - 10 = 929 non-crowd boxes (no coco128 box is degenerate).
    """
    anns = coco128_json["annotations"]
    assert len(coco128_json["images"]) == 128
    assert len(anns) == 939
    assert sum(a["iscrowd"] for a in anns) == 10
    assert len(coco128_json["categories"]) == 80
    assert len({a["category_id"] for a in anns}) == 71
    assert len(coco128) == 128
    assert coco128.num_boxes == 939 - 10
    assert coco128.num_classes == 80


def test_category_mapping_is_sorted_ids_and_round_trips(coco128, coco128_json):
    """index -> id is the sorted list of all 80 listed ids (1..90 with gaps); id -> index -> id is identity."""
    ids = sorted(c["id"] for c in coco128_json["categories"])
    assert coco128.cat_ids == ids
    assert coco128.cat_ids[0] == 1 and coco128.cat_ids[-1] == 90
    assert coco128.names[0] == "person" and coco128.names[-1] == "toothbrush"
    to_index = coco128.cat_id_to_index()
    assert [coco128.cat_ids[to_index[i]] for i in ids] == ids
    assert sorted(to_index.values()) == list(range(80))
    by_id = {c["id"]: c["name"] for c in coco128_json["categories"]}
    assert [by_id[i] for i in coco128.cat_ids] == coco128.names


def test_boxes_and_labels_equal_the_json_without_crowd(coco128, coco128_json):
    """Image 315 has 2 crowd annotations: the sample holds exactly its non-crowd boxes, as
    ``(x, y, x + w, y + h)`` from the JSON, labelled ``cat_ids.index(category_id)``."""
    i = coco128.image_ids.index(315)
    sample = coco128[i]
    anns = [a for a in coco128_json["annotations"] if a["image_id"] == 315]
    crowd = [a for a in anns if a["iscrowd"]]
    plain = [a for a in anns if not a["iscrowd"]]
    assert len(crowd) == 2 and len(plain) > 0
    expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in plain)], np.float32)
    np.testing.assert_allclose(sample.boxes, expected, atol=1e-4)
    assert sample.labels.tolist() == [coco128.cat_ids.index(a["category_id"]) for a in plain]


def test_every_label_maps_back_to_its_json_category(coco128, coco128_json):
    """Over all images, ``cat_ids[label]`` of the targets is the multiset of non-crowd category ids."""
    from collections import Counter
    expected = Counter(a["category_id"] for a in coco128_json["annotations"] if not a["iscrowd"])
    got = Counter(coco128.cat_ids[int(lbl)] for r in coco128.records for lbl in r.labels)
    assert got == expected


def test_sample_types_and_rgb_order(coco128, coco128_json):
    """Sample: uint8 HxWx3 RGB (the BGR file read reversed), float32 [k,4], int64 [k], orig_size (h, w)."""
    sample = coco128[0]
    info = min(coco128_json["images"], key=lambda im: im["id"])
    assert isinstance(sample, Sample)
    assert sample.image.dtype == np.uint8 and sample.image.shape == (info["height"], info["width"], 3)
    assert sample.boxes.dtype == np.float32 and sample.boxes.shape[1] == 4
    assert sample.labels.dtype == np.int64 and sample.labels.shape == (len(sample.boxes),)
    assert sample.image_id == info["id"] and sample.orig_size == (info["height"], info["width"])
    bgr = cv2.imread(sample.path)
    np.testing.assert_array_equal(sample.image, bgr[:, :, ::-1])


def test_images_without_annotations_have_no_boxes(coco128):
    """000000000250.jpg and 000000000508.jpg have no annotations: empty [0, 4] / [0] targets."""
    for image_id in (250, 508):
        sample = coco128[coco128.image_ids.index(image_id)]
        assert sample.boxes.shape == (0, 4) and sample.labels.shape == (0,)


def test_coco_gt_holds_the_files_boxes_and_subsets_filter_it(coco128, coco128_json):
    """Whole dataset: no coco128 box reaches outside its image, so the ground truth holds the file's 939
    annotations (10 crowd) with their bbox, area and category, renumbered 1..939 in file order. First 5 images:
    only their images and annotations, crowd included, the categories unchanged."""
    gt = coco128.coco_gt()
    assert len(gt.anns) == 939 and sorted(gt.anns) == list(range(1, 940))
    assert sum(a["iscrowd"] for a in gt.anns.values()) == 10
    key = lambda a: (a["image_id"], a["category_id"], a["iscrowd"], round(a["area"], 2),  # noqa: E731
                     *[round(v, 2) for v in a["bbox"]])
    assert sorted(map(key, gt.anns.values())) == sorted(map(key, coco128_json["annotations"]))
    assert sorted(gt.getImgIds()) == sorted(im["id"] for im in coco128_json["images"])
    sub = coco128.subset(5)
    assert len(sub) == 5 and sub.image_ids == coco128.image_ids[:5]
    gt5 = sub.coco_gt()
    assert sorted(gt5.getImgIds()) == sorted(sub.image_ids)
    expected = [a for a in coco128.coco.dataset["annotations"] if a["image_id"] in set(sub.image_ids)]
    assert len(gt5.anns) == len(expected)
    assert len(gt5.cats) == 80
    capped = CocoDataset(str(COCO128_JSON), str(COCO128_IMAGES), max_images=5)
    assert capped.image_ids == sub.image_ids
    assert sum(len(r.labels) for r in capped.records) == sub.num_boxes


def test_crowd_is_kept_in_the_subset_ground_truth(coco128):
    """Image 544 has one crowd annotation: it is absent from the targets but present in coco_gt()."""
    index = coco128.image_ids.index(544)
    sub = coco128.subset(index + 1)
    crowd = [a for a in sub.coco_gt().anns.values() if a["image_id"] == 544 and a["iscrowd"]]
    assert len(crowd) == 1
    assert len(coco128[index].labels) == len(coco128.coco.getAnnIds(imgIds=[544], iscrowd=False))


def test_missing_annotation_file_names_it(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match="nope.json: annotation file not found"):
        CocoDataset(str(missing), str(tmp_path))


def test_invalid_json_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(DatasetError, match=r"bad.json:3: not valid JSON"):
        CocoDataset(str(bad), str(tmp_path))


def test_missing_image_names_the_image(tmp_path):
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg", "height": 10, "width": 10}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(DatasetError, match=r"gone.jpg: image listed in .*a.json \(id 1\) not found"):
        CocoDataset(str(ann), str(tmp_path))


def test_unlisted_category_and_wrong_names_are_errors(tmp_path, write_image):
    write_image(tmp_path / "im.png", 10, 10)
    data = {"images": [{"id": 1, "file_name": "im.png", "height": 10, "width": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "x"}]}
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"a.json: image id 1: category ids \[7\] are not listed"):
        CocoDataset(str(ann), str(tmp_path))
    data["annotations"][0]["category_id"] = 1
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"a.json: names given .* differ from the categories"):
        CocoDataset(str(ann), str(tmp_path), names=["y"])


def test_image_size_disagreeing_with_json_is_an_error(tmp_path, write_image):
    """The JSON says 10x10 but the file is 12x8 (w x h): reading it names the file and both sizes."""
    write_image(tmp_path / "im.png", 8, 12)
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "im.png", "height": 10, "width": 10}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    ds = CocoDataset(str(ann), str(tmp_path))
    with pytest.raises(DatasetError, match=r"im.png: image is 12x8 .* say 10x10"):
        ds[0]


def test_boxes_are_clipped_and_degenerate_ones_dropped(tmp_path, write_image):
    """bbox [-2, 3, 6, 4] on a 10x10 image -> xyxy (-2, 3, 4, 7) clipped to (0, 3, 4, 7);
    bbox [5, 5, 0, 3] has zero width and is not a target."""
    write_image(tmp_path / "im.png", 10, 10)
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({
        "images": [{"id": 3, "file_name": "im.png", "height": 10, "width": 10}],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 5, "bbox": [-2, 3, 6, 4], "iscrowd": 0},
                        {"id": 2, "image_id": 3, "category_id": 5, "bbox": [5, 5, 0, 3], "iscrowd": 0}],
        "categories": [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}]}))
    ds = CocoDataset(str(ann), str(tmp_path))
    assert ds.cat_ids == [2, 5] and ds.names == ["a", "b"]
    np.testing.assert_allclose(ds[0].boxes, [[0, 3, 4, 7]])
    assert ds[0].labels.tolist() == [1]

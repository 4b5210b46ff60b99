"""COCO JSON faults, on copies of coco128 reshaped like a Roboflow export: every one repaired and counted or an
error naming the ids, and ground truth fed back as detections scores exactly 1.0 through the package's evaluator.

The Roboflow shape: annotation ids start at 0, category 0 is the dataset's name with no annotation and is the
``supercategory`` of every real category, the real categories are 1..C, one image has no annotation.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.data import CocoDataset, VocDataset
from detector.errors import DatasetError
from detector.evaluation import detections_to_coco, evaluate_coco

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017.json"
COCO128_IMAGES = COCO128 / "images" / "train2017"

FIRST_IDS = [9, 25, 30, 34, 250]  # 250 has no annotation in coco128


def roboflow_copy(tmp_path: Path, extra_annotations=()) -> tuple[Path, dict]:
    """Copy images ``FIRST_IDS`` of coco128 and write their annotations Roboflow-style; returns (json path, data)."""
    with open(COCO128_JSON) as f:
        data = json.load(f)
    images = [im for im in data["images"] if im["id"] in FIRST_IDS]
    anns = [a for a in data["annotations"] if a["image_id"] in FIRST_IDS]
    used = sorted({a["category_id"] for a in anns})
    new_cat = {c: k + 1 for k, c in enumerate(used)}
    by_id = {c["id"]: c["name"] for c in data["categories"]}
    categories = [{"id": 0, "name": "coco-subset", "supercategory": "none"}]
    categories += [{"id": new_cat[c], "name": by_id[c], "supercategory": "coco-subset"} for c in used]
    anns = [{**a, "id": k, "category_id": new_cat[a["category_id"]]} for k, a in enumerate(anns)]
    anns += [{**a, "id": len(anns) + k} for k, a in enumerate(extra_annotations)]
    out = {"images": images, "annotations": anns, "categories": categories}
    (tmp_path / "train").mkdir()
    for im in images:
        shutil.copy(COCO128_IMAGES / im["file_name"], tmp_path / "train" / im["file_name"])
    path = tmp_path / "train" / "_annotations.coco.json"
    path.write_text(json.dumps(out))
    return path, out


def targets_fed_back_score(ds) -> dict[str, float]:
    """Every training target as a detection of score 1, through detections_to_coco + evaluate_coco."""
    dets = [torch.cat([torch.from_numpy(r.boxes), torch.ones(len(r.labels), 1),
                       torch.from_numpy(r.labels).float()[:, None]], 1) for r in ds.records]
    return evaluate_coco(ds.coco_gt(), detections_to_coco(dets, ds.image_ids, ds.cat_ids))


def test_roboflow_export_round_trip_is_exactly_one(tmp_path):
    """Annotation id 0 exists (pycocotools' "no match"), plus a box of negative width on image 9 and one wholly
    right of the 640-px-wide image 25: both dropped from training, and from the ground truth, so AP = AR = 1."""
    bad = [{"image_id": 9, "category_id": 1, "bbox": [100, 100, -20, 30], "area": 600, "iscrowd": 0},
           {"image_id": 25, "category_id": 1, "bbox": [700, 10, 30, 30], "area": 900, "iscrowd": 0}]
    path, data = roboflow_copy(tmp_path, bad)
    assert min(a["id"] for a in data["annotations"]) == 0
    with pytest.warns(UserWarning, match=r"annotation ids \[\d+, \d+\] have no area inside their image"):
        ds = CocoDataset(str(path), str(tmp_path / "train"))
    assert ds.dropped_boxes == 2 and ds.num_boxes == len(data["annotations"]) - 2
    assert ds.repairs["annotation ids < 1 or repeated (all renumbered 1..N for evaluation)"] == 1
    stats = targets_fed_back_score(ds)
    assert stats["mAP"] == 1.0 and stats["mAP50"] == 1.0 and stats["AR100"] == 1.0
    assert 0 not in ds.coco_gt().anns


def test_roboflow_supercategory_is_not_a_class_and_is_named(tmp_path):
    """Category 0 'coco-subset' has no annotation and is everyone's supercategory: left out of the classes
    (the YOLO export of the same Roboflow project has the real classes only), with a warning naming it."""
    path, data = roboflow_copy(tmp_path)
    with pytest.warns(UserWarning, match=r"category id 0 \('coco-subset'\) has no annotations .*not a class"):
        ds = CocoDataset(str(path), str(tmp_path / "train"))
    assert ds.cat_ids == list(range(1, len(data["categories"])))
    assert ds.names == [c["name"] for c in data["categories"][1:]]
    assert 0 not in ds.coco_gt().cats


def test_an_unused_ordinary_category_stays_a_class(coco128):
    """coco128 lists 80 categories and uses 71: the unused ones are nobody's supercategory and stay classes."""
    assert coco128.num_classes == 80 and not coco128.problems


def test_duplicate_image_ids_name_the_ids(tmp_path):
    """Two images share id 25: an error naming id 25 and both files (pycocotools would merge them silently)."""
    path, data = roboflow_copy(tmp_path)
    data["images"][0]["id"] = 25
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"image ids \[25\] appear more than once .*000000000009.jpg"):
        CocoDataset(str(path), str(tmp_path / "train"))


def test_every_fatal_problem_is_listed_at_once(tmp_path):
    """A bbox with NaN, one with 3 numbers, an unknown category and an annotation without image_id: one error
    listing all four, each by annotation id or image id."""
    path, data = roboflow_copy(tmp_path)
    anns = data["annotations"]
    anns[0]["bbox"] = [1, 2, float("nan"), 4]
    anns[1]["bbox"] = [1, 2, 3]
    anns[2]["category_id"] = 99
    del anns[3]["image_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        CocoDataset(str(path), str(tmp_path / "train"))
    text = str(info.value)
    assert text.startswith("4 problems in the dataset")
    assert "annotation id 0: bbox must be 4 finite numbers" in text
    assert "annotation id 1: bbox must be 4 finite numbers" in text
    assert "category ids [99] are not listed in 'categories' (annotation ids [2]" in text
    assert "annotation 3: needs integer image_id and category_id" in text
    lenient = CocoDataset(str(path), str(tmp_path / "train"), strict=False)
    assert len([p for p in lenient.problems if p.fatal]) == 4
    assert lenient.num_boxes == len(anns) - 4


def test_annotations_of_unlisted_images_are_ignored_with_a_warning(tmp_path):
    path, data = roboflow_copy(tmp_path)
    data["annotations"][0]["image_id"] = 777
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"annotation ids \[0\] refer to image ids \[777\] not in 'images'"):
        ds = CocoDataset(str(path), str(tmp_path / "train"))
    assert ds.num_boxes == len(data["annotations"]) - 1


def test_ground_truth_round_trip_on_the_shipped_sets(coco128, bccd_root):
    """coco128 (all 128 images, crowd regions ignored) and BCCD's three splits (two zero-area boxes dropped)."""
    assert targets_fed_back_score(coco128)["mAP"] == 1.0
    for split in ("train", "val", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = VocDataset(str(bccd_root), split, ["RBC", "WBC", "Platelets"])
        stats = targets_fed_back_score(ds)
        assert stats["mAP"] == 1.0 and stats["AR100"] == 1.0, split


def test_a_perfect_detector_is_not_perfect_without_all_boxes(tmp_path):
    """Control: dropping one target from the detections lowers AR100 below 1 on the same fixture."""
    path, _ = roboflow_copy(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CocoDataset(str(path), str(tmp_path / "train"))
    ds.records[0].boxes, ds.records[0].labels = ds.records[0].boxes[1:].copy(), ds.records[0].labels[1:].copy()
    assert np.isclose(targets_fed_back_score(ds)["AR100"], 1.0) is np.False_

"""Tests of detector/evaluation/coco.py: pycocotools evaluation, COCO conversion, tables and JSON output."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from detector.errors import DatasetError
from detector.evaluation import (
    COCO_STAT_NAMES,
    coco_gt_from_boxes,
    detections_to_coco,
    evaluate_coco,
    format_coco_table,
    load_coco_gt,
    write_results_json,
)

COCO128 = Path("/work/shared/data/coco128/annotations/instances_train2017.json")
needs_coco128 = pytest.mark.skipif(not COCO128.is_file(), reason=f"{COCO128} not available")


@pytest.fixture(scope="module")
def coco128():
    return load_coco_gt(COCO128)


def gt_as_detections(coco_gt, image_ids, cat_ids, include_crowd=False, jitter=0.0, generator=None):
    """Per image Tensor[k, 6] (x1, y1, x2, y2, score=1, class) built from the ground truth annotations."""
    to_class = {c: i for i, c in enumerate(cat_ids)}
    dets = []
    for image_id in image_ids:
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
        rows = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3], 1.0,
             to_class[a["category_id"]]]
            for a in anns
            if include_crowd or not a["iscrowd"]
        ]
        d = torch.tensor(rows, dtype=torch.float64).reshape(-1, 6)  # (k, 6)
        if jitter:
            wh = (d[:, 2:4] - d[:, 0:2]).repeat(1, 2)  # (k, 4)
            d[:, :4] += (torch.rand(d.shape[0], 4, generator=generator, dtype=torch.float64) * 2 - 1) * jitter * wh
            d[:, 4] = torch.rand(d.shape[0], generator=generator, dtype=torch.float64)
        dets.append(d)
    return dets


@needs_coco128
def test_ground_truth_fed_back_scores_one(coco128):
    """Every non-crowd GT box returned as a detection with score 1: every precision is 1 at every recall,
    so all six AP numbers and AR100 are exactly 1. AR1 < 1 because images hold several objects."""
    image_ids, cat_ids = sorted(coco128.getImgIds()), sorted(coco128.getCatIds())
    results = detections_to_coco(gt_as_detections(coco128, image_ids, cat_ids), image_ids, cat_ids)
    assert len(results) == sum(1 for a in coco128.dataset["annotations"] if not a["iscrowd"]) == 929
    stats = evaluate_coco(coco128, results)
    assert list(stats) == list(COCO_STAT_NAMES)
    for name in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large", "AR100", "AR_small",
                 "AR_medium", "AR_large"):
        assert stats[name] == pytest.approx(1.0), name
    assert 0 < stats["AR1"] < stats["AR10"] <= 1.0


@needs_coco128
def test_crowd_boxes_as_detections_are_ignored_on_coco128(coco128):
    """Observed pycocotools behaviour: a detection equal to a crowd box matches that crowd region
    (crowd IoU = intersection / detection area = 1) and is ignored, so on coco128 adding the 10 crowd
    boxes still gives AP 1. (Were a crowd box to overlap a lone non-crowd GT by IoU >= 0.5, it could
    take that GT's match instead; hence the canonical check above feeds non-crowd GTs only.)"""
    image_ids, cat_ids = sorted(coco128.getImgIds()), sorted(coco128.getCatIds())
    dets = gt_as_detections(coco128, image_ids, cat_ids, include_crowd=True)
    results = detections_to_coco(dets, image_ids, cat_ids)
    assert len(results) == 939
    stats = evaluate_coco(coco128, results)
    assert stats["mAP"] == pytest.approx(1.0) and stats["mAP50"] == pytest.approx(1.0)


@needs_coco128
def test_jittered_ground_truth_scores_lower(coco128):
    """Corners moved by up to 20 % of the box size and random scores: mAP strictly between 0 and 1 and
    stricter IoU thresholds score lower (mAP75 and the 0.50:0.95 mean below mAP50)."""
    image_ids, cat_ids = sorted(coco128.getImgIds()), sorted(coco128.getCatIds())
    generator = torch.Generator().manual_seed(0)
    dets = gt_as_detections(coco128, image_ids, cat_ids, jitter=0.2, generator=generator)
    stats = evaluate_coco(coco128, detections_to_coco(dets, image_ids, cat_ids))
    assert 0.1 < stats["mAP"] < 0.9
    assert stats["mAP75"] < stats["mAP50"] < 1.0 and stats["mAP"] < stats["mAP50"]


@needs_coco128
def test_image_subset_restricts_evaluation(coco128):
    """Ground truth returned for the first half of the images only: evaluated on that half it is perfect,
    evaluated on every image half the objects are missed (AR100 well below 1)."""
    image_ids, cat_ids = sorted(coco128.getImgIds()), sorted(coco128.getCatIds())
    half = image_ids[: len(image_ids) // 2]
    results = detections_to_coco(gt_as_detections(coco128, half, cat_ids), half, cat_ids)
    on_half = evaluate_coco(coco128, results, image_ids=half)
    assert on_half["mAP"] == pytest.approx(1.0) and on_half["AR100"] == pytest.approx(1.0)
    on_all = evaluate_coco(coco128, results)
    assert on_all["AR100"] < 0.8 and on_all["mAP"] < 0.8
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(coco128, results, image_ids=[123456789])


@needs_coco128
def test_empty_detections_give_zeros(coco128):
    image_ids, cat_ids = sorted(coco128.getImgIds()), sorted(coco128.getCatIds())
    results = detections_to_coco([torch.zeros(0, 6) for _ in image_ids], image_ids, cat_ids)
    assert results == []
    stats = evaluate_coco(coco128, results)
    assert stats == dict.fromkeys(COCO_STAT_NAMES, 0.0)
    # detections only outside the evaluated subset count as empty too
    other = detections_to_coco([torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.5, 0.0]])], [image_ids[0]], cat_ids)
    assert evaluate_coco(coco128, other, image_ids=image_ids[1:3]) == dict.fromkeys(COCO_STAT_NAMES, 0.0)


@needs_coco128
def test_category_id_round_trip_on_coco128(coco128):
    """GT -> contiguous classes -> detections_to_coco gives back each annotation's COCO category id and
    bbox (xywh), though COCO ids have gaps (1..90 for 80 classes)."""
    image_ids, cat_ids = sorted(coco128.getImgIds()), sorted(coco128.getCatIds())
    assert cat_ids[-1] == 90 and len(cat_ids) == 80
    results = detections_to_coco(gt_as_detections(coco128, image_ids, cat_ids), image_ids, cat_ids)
    got = Counter((r["image_id"], r["category_id"], tuple(round(v, 2) for v in r["bbox"])) for r in results)
    expected = Counter(
        (a["image_id"], a["category_id"], tuple(round(v, 2) for v in a["bbox"]))
        for a in coco128.dataset["annotations"]
        if not a["iscrowd"]
    )
    assert got == expected


def test_detections_to_coco_by_hand():
    """cat_ids [1, 5, 90]: class 2 -> 90, class 0 -> 1. xyxy (10, 20, 40, 70) -> xywh (10, 20, 30, 50)."""
    dets = [
        torch.tensor([[10.0, 20.0, 40.0, 70.0, 0.75, 2.0], [0.0, 0.0, 5.0, 4.0, 0.5, 0.0]]),
        torch.zeros(0, 6),
        torch.tensor([[1.5, 2.5, 3.5, 6.5, 0.25, 1.0]]),
    ]
    results = detections_to_coco(dets, [7, 8, 9], [1, 5, 90])
    assert results == [
        {"image_id": 7, "category_id": 90, "bbox": [10.0, 20.0, 30.0, 50.0], "score": 0.75},
        {"image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 4.0], "score": 0.5},
        {"image_id": 9, "category_id": 5, "bbox": [1.5, 2.5, 2.0, 4.0], "score": 0.25},
    ]
    with pytest.raises(ValueError, match="class index out of range"):
        detections_to_coco([torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.5, 3.0]])], [1], [1, 5, 90])
    with pytest.raises(ValueError, match="image_ids"):
        detections_to_coco(dets, [7, 8], [1, 5, 90])
    with pytest.raises(ValueError, match=r"Tensor\[k, 6\]"):
        detections_to_coco([torch.zeros(2, 5)], [1], [1])


def small_case():
    """Two images, categories (3, 'a') and (7, 'b'); ground truth of class 0 (category 3) only,
    all boxes 50 x 50 (area 2500: COCO 'medium').

    image 10: A = (10, 10, 60, 60), B = (100, 100, 150, 150); image 20: C = (20, 20, 70, 70).
    Detections (class 0): d1 = A score 0.9 (image 10), d2 = (160, 10, 199, 50) score 0.8 (image 10,
    overlaps nothing), d3 = C score 0.7 (image 20), d4 = A again score 0.6 (image 10, A already taken).
    """
    gt = coco_gt_from_boxes(
        image_ids=[10, 20],
        image_sizes=[(200, 200), (100, 100)],
        boxes=[torch.tensor([[10.0, 10, 60, 60], [100, 100, 150, 150]]), torch.tensor([[20.0, 20, 70, 70]])],
        labels=[torch.tensor([0, 0]), torch.tensor([0])],
        cat_ids=[3, 7],
        cat_names=["a", "b"],
    )
    dets = [
        torch.tensor([[10.0, 10, 60, 60, 0.9, 0], [160, 10, 199, 50, 0.8, 0], [10, 10, 60, 60, 0.6, 0]]),
        torch.tensor([[20.0, 20, 70, 70, 0.7, 0]]),
    ]
    return gt, detections_to_coco(dets, [10, 20], [3, 7])


def test_hand_computed_small_case():
    """Ranked by score: d1 TP, d2 FP, d3 TP, d4 FP (duplicate), 3 GTs.
    recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2; COCO makes precision non-increasing from the
    right: 1, 2/3, 2/3, 1/2. At the 101 recall thresholds 0.00..1.00 the precision of the first point
    with recall >= r is: 1 for r <= 1/3 (0.00..0.33: 34 points), 2/3 for 1/3 < r <= 2/3 (0.34..0.66:
    33 points), 0 above (recall never exceeds 2/3). AP = (34 + 33 * 2/3) / 101 = 56/101 at every IoU
    threshold (matches have IoU 1, misses IoU 0), so mAP = mAP50 = mAP75 = mAP_medium = 56/101.
    AR: 2 of 3 GTs found at any maxDets (with maxDets 1 each image keeps its top detection, d1 and
    d3, both TP) -> 2/3. No small or large GT -> pycocotools' -1.
    Detections of category 7, which has no ground truth, are left out of the mean: unchanged numbers.
    """
    gt, results = small_case()
    stats = evaluate_coco(gt, results)
    for name in ("mAP", "mAP50", "mAP75", "mAP_medium"):
        assert stats[name] == pytest.approx(56 / 101), name
    for name in ("AR1", "AR10", "AR100", "AR_medium"):
        assert stats[name] == pytest.approx(2 / 3), name
    for name in ("mAP_small", "mAP_large", "AR_small", "AR_large"):
        assert stats[name] == -1.0, name
    extra = detections_to_coco([torch.tensor([[0.0, 0, 30, 30, 0.95, 1]])], [20], [3, 7])
    assert extra[0]["category_id"] == 7
    assert evaluate_coco(gt, results + extra) == stats


def test_hand_computed_subsets():
    """Image 20 alone: C found by d3, AP 1. Image 10 alone: d1 TP, d2 FP, d4 FP over 2 GTs: recall 1/2 at
    precision 1, never more, so recall thresholds 0.00..0.50 (51 points) score 1: AP = 51/101."""
    gt, results = small_case()
    assert evaluate_coco(gt, results, image_ids=[20])["mAP"] == pytest.approx(1.0)
    only_10 = evaluate_coco(gt, results, image_ids=[10])
    assert only_10["mAP50"] == pytest.approx(51 / 101) and only_10["AR100"] == pytest.approx(0.5)


def test_results_are_not_modified_and_prints_are_optional(capsys):
    gt, results = small_case()
    before = json.dumps(results)
    evaluate_coco(gt, results)
    assert json.dumps(results) == before  # loadRes adds keys to the dicts it gets: we pass copies
    assert capsys.readouterr().out == ""
    evaluate_coco(gt, results, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_coco_gt_from_boxes_round_trip():
    """xyxy (10, 20, 40, 70) class 1 with cat_ids [3, 7] -> bbox (10, 20, 30, 50), category 7, area 1500."""
    gt = coco_gt_from_boxes([5, 6], [(80, 60), (10, 10)], [torch.tensor([[10.0, 20, 40, 70]]), torch.zeros(0, 4)],
                            [torch.tensor([1]), torch.zeros(0, dtype=torch.long)], [3, 7])
    (ann,) = gt.dataset["annotations"]
    assert ann["bbox"] == [10.0, 20.0, 30.0, 50.0] and ann["category_id"] == 7 and ann["area"] == 1500.0
    assert ann["iscrowd"] == 0 and ann["image_id"] == 5
    assert gt.imgs[5]["height"] == 80 and gt.imgs[5]["width"] == 60 and sorted(gt.getImgIds()) == [5, 6]
    assert [c["name"] for c in gt.dataset["categories"]] == ["3", "7"]
    with pytest.raises(ValueError, match="class index out of range"):
        coco_gt_from_boxes([1], [(10, 10)], [torch.zeros(1, 4)], [torch.tensor([2])], [3, 7])


def test_load_coco_gt_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_coco_gt(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        load_coco_gt(bad)


def test_format_coco_table_lists_all_twelve():
    gt, results = small_case()
    stats = evaluate_coco(gt, results)
    table = format_coco_table(stats)
    lines = table.splitlines()
    assert len(lines) == 13
    for name, line in zip(COCO_STAT_NAMES, lines[1:]):
        assert line.split()[0] == name
    assert f"{56 / 101:.4f}" in lines[1] and "n/a" in lines[4]  # mAP, mAP_small
    with pytest.raises(ValueError, match="AR_large"):
        format_coco_table({k: v for k, v in stats.items() if k != "AR_large"})


def test_write_results_json_atomic(tmp_path):
    stats = dict.fromkeys(COCO_STAT_NAMES, 0.25)
    path = tmp_path / "run" / "metrics.json"
    assert write_results_json(path, stats, {"checkpoint": "last.pt", "epoch": 3}) == path
    assert json.loads(path.read_text()) == {"stats": stats, "checkpoint": "last.pt", "epoch": 3}
    # a failing write (not serialisable) leaves the previous file intact and no temporary file behind
    with pytest.raises(TypeError):
        write_results_json(path, stats, {"bad": object()})
    assert json.loads(path.read_text())["epoch"] == 3
    assert os.listdir(path.parent) == ["metrics.json"]
    write_results_json(path, dict.fromkeys(COCO_STAT_NAMES, 0.5))
    assert json.loads(path.read_text()) == {"stats": dict.fromkeys(COCO_STAT_NAMES, 0.5)}
    assert os.listdir(path.parent) == ["metrics.json"]
    with pytest.raises(ValueError, match="stats"):
        write_results_json(path, stats, {"stats": 1})


@pytest.mark.parametrize("ids", [[0, 1, 2], [5, 5, 6]])
def test_annotation_id_zero_or_repeated_still_scores_one(tmp_path, ids):
    """Roboflow exports number annotations from 0; pycocotools stores a match as the partner's id and reads 0 as
    "no match", so unrenumbered the id-0 box counts as missed (recall 2/3 in category 1: AP 2/3 there, mAP 5/6).
    Repeated ids collide in its index. Hand case: image 1 holds two class-1 boxes, image 2 one class-2 box; the
    three boxes as detections of score 1 must give AP = AR = 1 whether the gt is loaded from file or passed in."""
    anns = [{"id": i, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, im, c, b in zip(ids, [1, 1, 2], [1, 1, 2], [[0, 0, 10, 10], [20, 20, 10, 10], [5, 5, 20, 20]])]
    data = {"images": [{"id": 1, "width": 50, "height": 50}, {"id": 2, "width": 50, "height": 50}],
            "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in anns]
    from detector.data.base import coco_from_dict

    for gt in (load_coco_gt(path), coco_from_dict(json.loads(path.read_text()))):
        stats = evaluate_coco(gt, results)
        assert stats["mAP"] == 1.0 and stats["AR100"] == 1.0

"""TIDE error breakdown (``detector/ablation/errors.py``) on hand-made detections where each error type is built
on purpose, with every mAP50 of the oracle fixes worked out by hand; pycocotools as the independent reference
for the unfixed mAP50."""
from __future__ import annotations

import numpy as np
import pytest

from detector.ablation.errors import ERROR_TYPES, average_precision, box_iou_xywh, error_breakdown
from detector.data.base import coco_from_dict
from detector.evaluation.coco import evaluate_coco

A, B = 1, 2
BOX = [0.0, 0.0, 10.0, 10.0]  # every ground truth: a 10 x 10 square at the origin (xywh)


def _gt(images: dict[int, list[int]], crowd: dict[int, list[int]] | None = None):
    """COCO ground truth: ``images[id]`` = the classes of its ground truths (each the box BOX)."""
    anns = [{"image_id": i, "category_id": c, "bbox": BOX, "area": 100.0, "iscrowd": 0}
            for i, classes in images.items() for c in classes]
    anns += [{"image_id": i, "category_id": c, "bbox": BOX, "area": 100.0, "iscrowd": 1}
             for i, classes in (crowd or {}).items() for c in classes]
    return coco_from_dict({"images": [{"id": i, "height": 100, "width": 100} for i in images],
                           "annotations": [{**a, "id": k + 1} for k, a in enumerate(anns)],
                           "categories": [{"id": A, "name": "a"}, {"id": B, "name": "b"}]})


def _det(image: int, cls: int, score: float, box) -> dict:
    return {"image_id": image, "category_id": cls, "score": score, "bbox": [float(v) for v in box]}


# Ground truth: class A in images 1, 2, 7 (3 boxes), class B in images 3, 5, 10 (3 boxes); image 9 holds none.
GROUND_TRUTH = {1: [A], 2: [A], 3: [B], 5: [B], 7: [A], 9: [], 10: [B]}
DETECTIONS = [
    _det(1, A, 0.90, BOX),                 # t1: true positive of image 1
    _det(1, A, 0.80, [50, 50, 10, 10]),    # background: IoU 0 with everything
    _det(7, A, 0.78, [50, 50, 10, 10]),    # background
    _det(2, A, 0.75, [0, 0, 10, 4]),       # localisation: IoU 0.4 with image 2's A
    _det(3, A, 0.70, BOX),                 # classification: IoU 1 with image 3's B
    _det(5, A, 0.65, [0, 0, 10, 3]),       # both: IoU 0.3 with image 5's B (other class, poorly placed)
    _det(7, A, 0.60, BOX),                 # t7: true positive of image 7
    _det(1, A, 0.55, [0, 0, 10, 9]),       # duplicate: IoU 0.9 with image 1's A, already taken by t1
    _det(10, B, 0.95, BOX),                # t10: true positive of image 10
    _det(9, B, 0.50, BOX),                 # background: image 9 has no ground truth
]


def test_each_error_type_and_its_oracle_gain_worked_out_by_hand():
    """Class A (3 gt), ranking t1 T, bkg F, bkg F, loc F, cls F, both F, t7 T, dupe F: recall 1/3 with precision
    1 (34 of the 101 recall points <= 1/3), recall 2/3 first at t7 with precision 2/7 (33 points in (1/3, 2/3]):
    AP_A = (34 + 33 * 2/7) / 101 = 304/707. Class B (3 gt: images 3, 5, 10): t10 T, bkg F: AP_B = 34/101.
    mAP50 = (304/707 + 238/707) / 2 = 271/707.

    cls fixed: the A box of image 3 becomes a B true positive at 0.70. A: t1 T, F, F, F, F, t7 T, F -> precision
      2/6 at recall 2/3: AP_A = (34 + 11) / 101 = 45/101. B: T .95, T .70, F -> precision 1 up to recall 2/3:
      AP_B = 67/101. mAP = 56/101, gain 56/101 - 271/707 = (392 - 271)/707 = 121/707.
    loc fixed: A: T F F T F F T F; precision 1/2 at recall 2/3 (after the envelope), 3/7 at recall 1:
      AP_A = (34 + 33/2 + 34 * 3/7) / 101 = 911/1414; gain (911/1414 - 608/1414) / 2 = 303/2828.
    both fixed: A without its 0.65 box -> 45/101 as above; gain (315 - 304) / 1414 = 11/1414.
    dupe fixed: the duplicate ranks below every true positive: gain 0.
    bkg fixed: A: T, F, F, F, T -> precision 2/5 at 2/3: AP_A = (34 + 13.2) / 101; B unchanged;
      gain (330.4 - 304) / 1414 = 66/3535.
    miss fixed: image 5's B (only the `both` box near it, which claims nothing) is missed; images 2 and 3 are
      claimed by the loc and cls errors. B with 2 gt: t10 reaches recall 1/2 = RECALL_THRESHOLDS[50]:
      AP_B = 51/101; gain (51 - 34) / 101 / 2 = 17/202.
    """
    gt = _gt(GROUND_TRUTH)
    out = error_breakdown(gt, DETECTIONS)
    assert out.ap50 == pytest.approx(271 / 707, abs=1e-12)
    assert out.ap50 == pytest.approx(evaluate_coco(gt, DETECTIONS)["mAP50"], abs=1e-12)
    assert out.counts == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 3, "miss": 1}
    expected = {"cls": 121 / 707, "loc": 303 / 2828, "both": 11 / 1414, "dupe": 0.0, "bkg": 66 / 3535,
                "miss": 17 / 202}
    assert list(out.delta) == [key for key, _ in ERROR_TYPES]
    for key, value in expected.items():
        assert out.delta[key] == pytest.approx(value, abs=1e-12), key


def test_two_errors_claiming_one_ground_truth_only_the_higher_scored_is_fixed():
    """Image 1: one A gt; two A boxes of IoU 0.4 (scores 0.9, 0.8). Both are localisation errors; fixing them
    turns the 0.9 one into a true positive and removes the 0.8 one: AP 0 -> 1 (gain 1); nothing is missed."""
    gt = _gt({1: [A]})
    dets = [_det(1, A, 0.9, [0, 0, 10, 4]), _det(1, A, 0.8, [0, 6, 10, 4])]
    out = error_breakdown(gt, dets)
    assert out.ap50 == 0.0 and out.counts["loc"] == 2 and out.counts["miss"] == 0
    assert out.delta["loc"] == pytest.approx(1.0) and out.delta["cls"] == 0.0


def test_empty_cases():
    """No detections: mAP 0 and every ground truth missed; removing them all leaves no class to score (0), so
    no gain. No ground truth at all: every detection is background and nothing is scored."""
    gt = _gt({1: [A], 2: [B, B]})
    out = error_breakdown(gt, [])
    assert out.ap50 == 0.0 and out.counts == {"cls": 0, "loc": 0, "both": 0, "dupe": 0, "bkg": 0, "miss": 3}
    assert all(v == 0.0 for v in out.delta.values())
    out = error_breakdown(_gt({1: []}), [_det(1, A, 0.5, BOX)])
    assert out.ap50 == 0.0 and out.counts["bkg"] == 1 and out.counts["miss"] == 0


def test_a_box_on_a_crowd_region_is_ignored_neither_scored_nor_typed():
    """Image 1: one A gt and an A crowd region at the same place; two exact boxes: the first matches the gt, the
    second covers the crowd region (intersection over its area 1): ignored, as pycocotools does, so AP stays 1."""
    gt = _gt({1: [A]}, crowd={1: [A]})
    dets = [_det(1, A, 0.9, BOX), _det(1, A, 0.8, BOX)]
    out = error_breakdown(gt, dets)
    assert out.ap50 == pytest.approx(1.0) == pytest.approx(evaluate_coco(gt, dets)["mAP50"])
    assert sum(out.counts.values()) == 0


def test_unfixed_map50_equals_pycocotools_on_random_detections():
    """Random boxes near random ground truths of 3 classes on 12 images: the breakdown's starting mAP50 is
    pycocotools' mAP50 (distinct scores, so the ranking has no ties)."""
    rng = np.random.default_rng(0)
    images, anns, dets = [], [], []
    for i in range(1, 13):
        images.append({"id": i, "height": 200, "width": 200})
        for _ in range(rng.integers(0, 4)):
            box = [*rng.uniform(0, 120, 2), *rng.uniform(10, 60, 2)]
            anns.append({"image_id": i, "category_id": int(rng.integers(1, 4)), "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
            for _ in range(rng.integers(0, 4)):  # jittered copies, some of another class
                jitter = [box[0] + rng.normal(0, 6), box[1] + rng.normal(0, 6), box[2] * rng.uniform(0.6, 1.4),
                          box[3] * rng.uniform(0.6, 1.4)]
                dets.append(_det(i, int(rng.integers(1, 4)), 0.0, jitter))
    for k, d in enumerate(dets):
        d["score"] = float(rng.permutation(len(dets))[k] + 1) / (len(dets) + 1)
    gt = coco_from_dict({"images": images, "annotations": [{**a, "id": k + 1} for k, a in enumerate(anns)],
                         "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]})
    out = error_breakdown(gt, dets)
    assert out.ap50 == pytest.approx(evaluate_coco(gt, dets)["mAP50"], abs=1e-12)
    assert 0 < out.ap50 < 1 and sum(out.counts.values()) > 0


def test_box_iou_and_average_precision_by_hand():
    """[0,0,10,10] vs [5,0,10,10]: intersection 50, union 150 -> 1/3; against a crowd region 50/100 = 1/2.
    AP of (T, F, T) with 2 gt: precision 1 up to recall 1/2 (51 points), then 2/3 up to 1 (50 points)."""
    iou = box_iou_xywh(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 10, 10.0], [5, 0, 10, 10.0]]),
                       np.array([False, True]))
    np.testing.assert_allclose(iou, [[1 / 3, 1 / 2]])
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert average_precision(np.zeros(0, dtype=bool), 3) == 0.0

"""Paired bootstrap over evaluation images (``detector/ablation/bootstrap.py``) on tiny hand-made ground truth
and detections scored by pycocotools, with every resample's difference worked out by hand.

Ground truth: 4 images of 100 x 100, one box (10, 10, 20, 20) of class 0 each. With one class and only true
positives ranked first, COCO's 101-point AP at every IoU threshold is (number of recall points 0, 0.01, ...,
1 that are <= recall) / 101: recall 1/4 -> 26/101, 2/4 -> 51/101, 3/4 -> 76/101, 1 -> 1.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detector.ablation.bootstrap import bootstrap_draws, paired_bootstrap, read_detections, resample_coco
from detector.evaluation.coco import coco_gt_from_boxes, detections_to_coco, evaluate_coco

IDS = [11, 12, 13, 14]


@pytest.fixture(scope="module")
def gt():
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    return coco_gt_from_boxes(IDS, [(100, 100)] * 4, [box] * 4, [torch.zeros(1, dtype=torch.long)] * 4, [1])


def _dets(per_image: dict[int, tuple[float, float]]) -> list[dict]:
    """{image position: (x shift of the box, score)} -> COCO results; images not listed get no detection."""
    dets = [torch.tensor([[10.0 + s, 10.0, 20.0 + s, 20.0, score, 0.0]]) if i in per_image else torch.zeros(0, 6)
            for i, (s, score) in ((i, per_image.get(i, (0.0, 0.0))) for i in range(4))]
    return detections_to_coco(dets, IDS, [1])


PERFECT = {0: (0.0, 0.9), 1: (0.0, 0.9), 2: (0.0, 0.9), 3: (0.0, 0.9)}
HALF = {0: (0.0, 0.8), 1: (0.0, 0.7)}  # exact on images 0 and 1, nothing on 2 and 3


def test_hand_worked_resamples(gt):
    """Baseline HALF, variant PERFECT (mAP 1 on any resample). k = draws of images 0 or 1 among 4:
    full set k = 2: baseline 51/101, observed difference 50/101. Draws and their differences 1 - AP(k):
    (0,1,2,3) k=2 -> 50/101; (0,0,0,0) k=4 -> 0; (2,3,2,3) k=0 (baseline has no detection: mAP 0) -> 1;
    (0,2,2,2) k=1 -> 75/101; (1,1,1,3) k=3 -> 25/101. 50% interval: sorted (0, 25, 50, 75, 101)/101, linear
    quantiles at positions 4 x 0.25 = 1 and 4 x 0.75 = 3: (25/101, 75/101)."""
    assert evaluate_coco(gt, _dets(HALF))["mAP"] == pytest.approx(51 / 101, abs=1e-12)
    draws = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [2, 3, 2, 3], [0, 2, 2, 2], [1, 1, 1, 3]])
    result = paired_bootstrap(gt, IDS, [(_dets(HALF), _dets(PERFECT))], draws, level=0.5)
    assert result.observed == pytest.approx(50 / 101, abs=1e-12)
    assert result.deltas == pytest.approx((50 / 101, 0.0, 1.0, 75 / 101, 25 / 101), abs=1e-12)
    assert result.interval == (pytest.approx(25 / 101, abs=1e-12), pytest.approx(75 / 101, abs=1e-12))
    # a second seed pair with identical detections halves every difference (mean over the pairs)
    two = paired_bootstrap(gt, IDS, [(_dets(HALF), _dets(PERFECT)), (_dets(HALF), _dets(HALF))], draws, level=0.5)
    assert two.observed == pytest.approx(25 / 101, abs=1e-12)
    assert two.deltas == pytest.approx(tuple(d / 2 for d in result.deltas), abs=1e-12)


def test_identical_detections_give_a_zero_width_interval(gt):
    dets = _dets({0: (0.0, 0.9), 1: (2.0, 0.8), 3: (1.0, 0.5)})
    result = paired_bootstrap(gt, IDS, [(dets, list(dets))], bootstrap_draws(4, 30, seed=1))
    assert result.observed == 0.0 and result.interval == (0.0, 0.0) and set(result.deltas) == {0.0}


def test_a_variant_better_on_every_image_has_an_interval_above_zero(gt):
    """Baseline boxes shifted by 0.5, 1, 2, 3 px: IoU 9.5/10.5 = 0.905, 9/11 = 0.818, 8/12 = 0.667, 7/13 = 0.538,
    each below 0.95, so at IoU 0.95 every baseline box is a false positive: the baseline's mAP is at most 0.9
    on any resample while the exact variant's is 1; every difference is >= 0.1."""
    worse = _dets({0: (0.5, 0.9), 1: (1.0, 0.8), 2: (2.0, 0.7), 3: (3.0, 0.6)})
    result = paired_bootstrap(gt, IDS, [(worse, _dets(PERFECT))], bootstrap_draws(4, 40, seed=0))
    assert min(result.deltas) >= 0.1 - 1e-12 and result.interval[0] > 0
    assert len(set(result.deltas)) > 1  # the resamples do differ


def test_resample_copies_repeated_images(gt):
    """Draw (2, 2, 0, 0): image 13 twice then 11 twice -> 4 new images 1..4, 4 annotations, detections remapped."""
    dets = _dets(HALF)  # on images 11 and 12 only
    new_gt, (new_dets,) = resample_coco(gt, IDS, [2, 2, 0, 0], [dets])
    assert sorted(new_gt.getImgIds()) == [1, 2, 3, 4]
    assert [a["image_id"] for a in new_gt.dataset["annotations"]] == [1, 2, 3, 4]
    assert [a["id"] for a in new_gt.dataset["annotations"]] == [1, 2, 3, 4]
    assert [d["image_id"] for d in new_dets] == [3, 4] and [d["score"] for d in new_dets] == pytest.approx([0.8, 0.8])


def test_draws_and_errors(tmp_path, gt):
    draws = bootstrap_draws(5, 7, seed=3)
    assert draws.shape == (7, 5) and draws.min() >= 0 and draws.max() <= 4
    assert np.array_equal(draws, bootstrap_draws(5, 7, seed=3))
    with pytest.raises(ValueError, match="no .* pairs"):
        paired_bootstrap(gt, IDS, [], draws)
    with pytest.raises(ValueError, match=r"draws must be \(R >= 1, N = 4\)"):
        paired_bootstrap(gt, IDS, [([], [])], draws)
    path = tmp_path / "detections.json"
    path.write_text(json.dumps({"image_ids": IDS, "detections": _dets(HALF)}))
    assert read_detections(path) == (IDS, _dets(HALF))

"""coco_gt() + cat_ids are enough for pycocotools: the training targets, written back as detections
through cat_ids, score AP = 1 on every dataset format (crowd regions in the COCO file are ignored)."""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from detector.data import VocDataset, YoloDataset

COCO128 = Path(__file__).resolve().parents[2] / "data" / "coco128"


def _ap_of_targets_as_detections(ds) -> float:
    """Detections = every target box, score 1, category ``cat_ids[label]``, bbox xywh in original pixels."""
    dets = []
    for r in ds.records:
        xywh = np.concatenate([r.boxes[:, :2], r.boxes[:, 2:] - r.boxes[:, :2]], 1)
        dets += [{"image_id": r.image_id, "category_id": ds.cat_ids[int(lbl)], "bbox": b, "score": 1.0}
                 for b, lbl in zip(xywh.tolist(), r.labels)]
    gt = ds.coco_gt()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.imgIds = ds.image_ids
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return float(ev.stats[0])


def test_coco_json_dataset(coco128):
    assert _ap_of_targets_as_detections(coco128.subset(32)) == pytest.approx(1.0)


def test_yolo_dataset(coco128):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = YoloDataset(str(COCO128 / "images" / "train2017"), coco128.names, max_images=32)
    assert _ap_of_targets_as_detections(ds) == pytest.approx(1.0)


def test_voc_dataset(bccd_root):
    ds = VocDataset(str(bccd_root), "test", ["RBC", "WBC", "Platelets"], max_images=20)
    assert _ap_of_targets_as_detections(ds) == pytest.approx(1.0)


def test_a_wrong_category_mapping_is_caught(coco128):
    """Control: shifting the contiguous index by one before mapping to ids (a classic off-by-one) drops AP."""
    ds = coco128.subset(32)
    shifted = SimpleNamespace(records=ds.records, image_ids=ds.image_ids, coco_gt=ds.coco_gt,
                              cat_ids=ds.cat_ids[1:] + ds.cat_ids[:1])
    assert _ap_of_targets_as_detections(shifted) < 0.1

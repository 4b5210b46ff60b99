"""eval.backend: faster_coco_eval gives pycocotools' 12 numbers to 1e-6 (measured: 1e-16) on the project's detections.

Detections are the ground truth of coco128 (939 annotations, 10 of them crowd regions) and of BCCD val (a VOC
dataset, ground truth built in memory by ``coco_gt_from_boxes``) perturbed the ways a detector errs: boxes jittered
by a fraction of their size (three levels, so mAP spans high to low), random scores, 15% of objects missed, 10%
given a wrong class, up to two duplicates per object, and up to 40 random background boxes per image, converted by
``detections_to_coco``, the path ``evaluate`` uses. Every one of the 12 numbers, the -1 sentinel of an empty area
range included (a subset of images without small objects), must agree.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from detector.config import EvalConfig, load_config
from detector.data import build_dataset
from detector.evaluation.coco import COCO_STAT_NAMES, EVAL_BACKENDS, detections_to_coco, evaluate_coco

pytest.importorskip("faster_coco_eval", reason='needs pip install -e ".[faster-coco-eval]"')

ROOT = Path(__file__).resolve().parents[2]
BCCD = (ROOT / "../shared/data/bccd").resolve()


def perturbed_detections(coco_gt, image_ids, cat_ids, jitter: float, seed: int) -> list[dict]:
    """COCO result dicts: the ground truth of ``image_ids`` perturbed as the module docstring says."""
    g = torch.Generator().manual_seed(seed)
    to_class = {c: i for i, c in enumerate(cat_ids)}
    dets = []
    for image_id in image_ids:
        info = coco_gt.imgs[image_id]
        anns = coco_gt.imgToAnns[image_id]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)  # (k, 4)
        cls = torch.tensor([to_class[a["category_id"]] for a in anns], dtype=torch.float64)  # (k,)
        copies = torch.randint(1, 4, (len(anns),), generator=g) * (torch.rand(len(anns), generator=g) > 0.15)
        xywh, cls = xywh.repeat_interleave(copies, 0), cls.repeat_interleave(copies)  # (m, 4), (m,)
        wrong = torch.rand(cls.shape, generator=g) < 0.1
        cls = torch.where(wrong, torch.randint(0, len(cat_ids), cls.shape, generator=g).double(), cls)
        wh = xywh[:, 2:].repeat(1, 2)  # (m, 4) size of each coordinate's box
        xyxy = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1)  # (m, 4)
        xyxy = xyxy + torch.randn(xywh.shape, generator=g, dtype=torch.float64) * jitter * wh
        n_bg = int(torch.randint(0, 41, (1,), generator=g))
        size = torch.tensor([info["width"], info["height"]], dtype=torch.float64)
        corners = torch.rand(n_bg, 2, 2, generator=g, dtype=torch.float64).sort(1).values * size  # (n, 2, 2)
        background = torch.cat((corners.flatten(1), torch.rand(n_bg, 1, generator=g, dtype=torch.float64) * 0.5,
                                torch.randint(0, len(cat_ids), (n_bg, 1), generator=g).double()), 1)  # (n, 6)
        found = torch.cat((xyxy, torch.rand(len(cls), 1, generator=g, dtype=torch.float64), cls[:, None]), 1)
        dets.append(torch.cat((found, background)))
    return detections_to_coco(dets, image_ids, cat_ids)


def assert_same_stats(coco_gt, results, image_ids=None) -> dict[str, float]:
    reference = evaluate_coco(coco_gt, results, image_ids=image_ids)
    faster = evaluate_coco(coco_gt, results, image_ids=image_ids, backend="faster_coco_eval")
    assert list(faster) == list(COCO_STAT_NAMES)
    for name in COCO_STAT_NAMES:
        assert faster[name] == pytest.approx(reference[name], abs=1e-6, rel=0), name
    return reference


@pytest.fixture(scope="module")
def coco128():
    dataset = build_dataset(str(ROOT / "data" / "coco128.yaml"), "val")
    return dataset.coco_gt(), sorted(dataset.coco_gt().getImgIds()), list(dataset.cat_ids)


@pytest.mark.parametrize("jitter, seed", [(0.03, 0), (0.1, 1), (0.3, 2)])
def test_coco128_perturbed_ground_truth(coco128, jitter, seed):
    gt, ids, cat_ids = coco128
    assert sum(a["iscrowd"] for a in gt.dataset["annotations"]) == 10  # crowd regions are exercised
    stats = assert_same_stats(gt, perturbed_detections(gt, ids, cat_ids, jitter, seed))
    assert 0.01 < stats["mAP"] < 0.9 and stats["mAP_small"] >= 0  # a real, non-degenerate score


def test_coco128_subset_with_an_empty_area_range(coco128):
    """Images whose objects are all large: mAP_small and AR_small are pycocotools' -1 in both backends."""
    gt, ids, cat_ids = coco128
    large = [i for i in ids if gt.imgToAnns[i] and all(a["area"] > 96**2 for a in gt.imgToAnns[i])]
    assert len(large) >= 3
    stats = assert_same_stats(gt, perturbed_detections(gt, ids, cat_ids, 0.1, 3), image_ids=large)
    assert stats["mAP_small"] == stats["AR_small"] == -1.0


def test_ground_truth_is_left_unchanged(coco128):
    gt, ids, cat_ids = coco128
    before = copy.deepcopy(gt.dataset)
    evaluate_coco(gt, perturbed_detections(gt, ids, cat_ids, 0.1, 4), backend="faster_coco_eval")
    assert gt.dataset == before


@pytest.mark.skipif(not BCCD.is_dir(), reason=f"needs the BCCD dataset at {BCCD} (../shared beside the repository)")
@pytest.mark.filterwarnings("ignore:.*zero-area boxes dropped")
def test_bccd_val_perturbed_ground_truth():
    dataset = build_dataset(str(ROOT / "data" / "bccd.yaml"), "val")
    gt = dataset.coco_gt()
    assert_same_stats(gt, perturbed_detections(gt, sorted(gt.getImgIds()), list(dataset.cat_ids), 0.1, 5))


def test_config_choices_are_the_backends():
    assert load_config("yolov5_ciou").eval.backend == EvalConfig().backend == "pycocotools"
    assert load_config("yolov5_ciou", ["eval.backend=faster_coco_eval"]).eval.backend == "faster_coco_eval"
    for backend in EVAL_BACKENDS:
        load_config("yolov5_ciou", [f"eval.backend={backend}"])


def test_unknown_backend_is_refused(coco128):
    gt, ids, cat_ids = coco128
    with pytest.raises(ValueError, match="eval.backend"):
        evaluate_coco(gt, perturbed_detections(gt, ids[:2], cat_ids, 0.1, 6), backend="cocoapi")

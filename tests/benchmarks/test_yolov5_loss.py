"""benchmarks/yolov5_loss.py, the re-derived YOLOv5 ComputeLoss that bench_assign times beside the YOLOv5 preset,
computes what the preset computes: same terms and the same gradient at the convolution outputs, on real coco128
boxes (so the timing compares equal work). Also a hand-checked CIoU."""
from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

from detector import build
from detector.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
yolov5_loss = importlib.import_module("yolov5_loss")


def test_ciou_by_hand():
    """Two 2x2 boxes, centres 1 apart in x: IoU = 2 / 6, enclosing box 3 x 2 (c^2 = 13), rho^2 = 1, same aspect
    ratio (v = 0): CIoU = 1/3 - 1/13."""
    a = torch.tensor([[1.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(yolov5_loss.ciou_xywh(a, b), torch.tensor([1 / 3 - 1 / 13], dtype=torch.float64),
                               rtol=1e-6, atol=0)
    assert math.isclose(float(yolov5_loss.ciou_xywh(a, a)), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("lazy", [False, True])
def test_reference_equals_the_yolov5_preset(coco128_targets, lazy):
    img, batch = 320, 4
    cfg = load_config("yolov5_ciou", [f"data.img_size={img}", "model.size=s"])
    model, criterion = build.build_model(cfg, 80).double(), build.build_criterion(cfg, 80)
    model.head.lazy_class_rows = lazy
    priors = model.prior_generator([(img // s, img // s) for s in model.strides], "cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    raw = [(torch.randn(batch, a, model.head.layout.size, h, w, generator=g, dtype=torch.float64) * 0.5)
           .requires_grad_() for a, h, w in priors.level_shapes]
    targets = coco128_targets(batch, img).double()

    ours = criterion(model.head.flatten([r.permute(0, 1, 3, 4, 2) for r in raw], priors), targets)
    ours_grads = torch.autograd.grad(ours["loss"], raw)
    anchors = torch.tensor(cfg.model.anchors, dtype=torch.float64).view(3, -1, 2)
    # sort_obj_iou: a prior in two pairs keeps the highest IoU as its objectness target, as the preset does
    reference = yolov5_loss.YOLOv5ComputeLoss(anchors, cfg.model.strides, 80, img, sort_obj_iou=True)
    total, (lbox, lobj, lcls) = reference([r.permute(0, 1, 3, 4, 2).contiguous() for r in raw],
                                          yolov5_loss.normalised_xywh(targets, img))
    ref_grads = torch.autograd.grad(total.sum(), raw)

    assert float(lbox) > 0 and float(lcls) > 0
    for name, value in (("lbox", lbox), ("lobj", lobj), ("lcls", lcls)):
        torch.testing.assert_close(ours[name].reshape(()), value, rtol=1e-6, atol=0, msg=name)  # before x B
    torch.testing.assert_close(ours["loss"].reshape(()), total.reshape(()), rtol=1e-6, atol=0)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)  # the parity tests' tolerances (CIoU eps placement)

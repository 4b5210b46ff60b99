"""Class logits left uncopied (``class_rows_only`` / ``link_class_rows``): for every preset whose criterion reads
class logits only at its positive pairs, the loss terms and the gradient reaching the head's convolutions are
those of the copied (B, P, C) path; presets that read them densely keep the copy."""
from __future__ import annotations

import pytest
import torch

from detector import build
from detector.config import load_config

LAZY = ["yolov5_ciou", "yolov3", "yolov2"]
DENSE = ["yolov8_tal", "yolox_simota", "ssd", "retinanet_focal", "fcos", "rpn"]


def _step(cfg, model, criterion, targets, lazy: bool):
    """Loss terms and the gradient of the head's raw convolution outputs, with the class slice lazy or copied."""
    head, img = model.head, cfg.data.img_size
    priors = model.prior_generator([(img // s, img // s) for s in model.strides], "cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    raw = [(torch.randn(4, a, head.layout.size, h, w, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
           for a, h, w in priors.level_shapes]  # the convolutions' layout
    head.lazy_class_rows = lazy
    outputs = head.flatten([r.permute(0, 1, 3, 4, 2) for r in raw], priors)
    assert (outputs.lazy_cls is not None) == lazy
    losses = criterion(outputs, targets.double())
    losses["loss"].backward()
    return {k: v.detach() for k, v in losses.items()}, [r.grad for r in raw]


@pytest.mark.parametrize("preset", LAZY)
def test_uncopied_class_logits_give_the_same_losses_and_gradients(preset, coco128_targets):
    cfg = load_config(preset, ["data.img_size=160"])
    model, criterion = build.build_model(cfg, 80).double(), build.build_criterion(cfg, 80)
    build.link_class_rows(model, criterion)
    assert criterion.class_rows_only and model.head.lazy_class_rows
    targets = coco128_targets(4, 160)
    copied, copied_grads = _step(cfg, model, criterion, targets, lazy=False)
    lazy, lazy_grads = _step(cfg, model, criterion, targets, lazy=True)
    assert copied.keys() == lazy.keys() and float(copied["lcls"]) > 0
    for k in copied:
        torch.testing.assert_close(lazy[k], copied[k], rtol=1e-12, atol=0, msg=k)
    for d, s in zip(copied_grads, lazy_grads):
        torch.testing.assert_close(s, d, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("preset", DENSE)
def test_criteria_that_read_class_logits_densely_keep_the_copy(preset):
    cfg = load_config(preset, ["data.img_size=160"])
    model, criterion = build.build_model(cfg, 80), build.build_criterion(cfg, 80)
    build.link_class_rows(model, criterion)
    assert not getattr(model.head, "lazy_class_rows", False)


def test_evaluation_reads_dense_class_logits():
    """In eval mode the head copies the class logits whatever the criterion (post-processing scores them all)."""
    cfg = load_config("yolov5_ciou", ["data.img_size=64"])
    model, criterion = build.build_model(cfg, 80), build.build_criterion(cfg, 80)
    build.link_class_rows(model, criterion)
    images = torch.rand(1, 3, 64, 64)
    assert model.train()(images).lazy_cls is not None
    outputs = model.eval()(images)
    assert outputs.lazy_cls is None and torch.isfinite(outputs.cls).all()

"""The criterion's paths for heads other than YOLOv5's: softmax with background, sigmoid without objectness, quality,
losses on encoded deltas, the mean recipe, samplers and soft class targets. Values worked out by hand below.

The tiny case (from test_criterion.py): 1 image, 1 level, 4 priors of a 16 x 16 anchor at stride 8, one gt
(class 1, box (0, 0, 16, 16)) paired with prior 0, whose raw box 0 decodes (YOLOv5 coder) to (-4, -4, 12, 12).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from detector.losses.classification import ce_loss
from detector.losses.criterion import DetectionCriterion
from detector.losses.recipes import MeanReduction
from detector.ops.coders import YOLOv5BoxCoder
from detector.ops.delta_coder import DeltaBoxCoder
from detector.samplers import HardNegativeSampler
from detector.structures import HeadOutputs

from test_criterion import TINY_CIOU, TINY_IOU, FixedAssigner, tiny_case  # noqa: E402

LN2 = math.log(2)
ONES = {"box": 1.0, "cls": 1.0}


def mean_criterion(assigner, cls="bce", box="ciou", coder=None, **kwargs):
    return DetectionCriterion(assigner, coder or YOLOv5BoxCoder(), box, cls, None, kwargs.pop("weights", ONES),
                              num_classes=2, image_size=16, reduction=kwargs.pop("reduction", MeanReduction()),
                              **kwargs)


def no_obj(outputs, **changes):
    fields = dict(box=outputs.box, cls=outputs.cls, obj=None, priors=outputs.priors)
    fields.update(changes)
    return HeadOutputs(**fields)


def test_softmax_head_learns_background_on_negatives():
    """Softmax head, C = 2 + background. All logits 0 except prior 0's class 1 at ln 2: prior 0's CE against
    class 1 is ln(1 + 1 + 2) - ln 2 = ln 2; priors 1-3 against the background: ln 3 each. Mean recipe: the sum over
    kept priors divided by the 1 positive = ln 2 + 3 ln 3. The negatives get a gradient (the bug of the old
    criterion: zero target rows taught them nothing)."""
    outputs, targets = tiny_case()
    cls = torch.zeros(1, 4, 3)
    cls[0, 0, 1] = LN2
    cls.requires_grad_()
    crit = mean_criterion(FixedAssigner([0], [0], [0]), cls="ce")
    out = crit(no_obj(outputs, cls=cls, background=True), targets)
    torch.testing.assert_close(out["lcls"], torch.tensor(LN2 + 3 * math.log(3)))
    out["loss"].backward()
    assert bool((cls.grad[0, 1:, 2] < 0).all())  # pushes the background up on every negative


def test_ce_with_class_indices_equals_one_hot_rows():
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 1, 2])
    for eps in (0.0, 0.1):
        torch.testing.assert_close(ce_loss(logits, labels, label_smoothing=eps),
                                   ce_loss(logits, F.one_hot(labels, 4).float(), label_smoothing=eps))


def test_hard_negative_sampler_sees_background_losses_and_narrows_the_negatives():
    """Background logit 0 everywhere; class logits of priors 1, 2, 3 are 0, 3, 1 (channel 0): their background
    losses are ln(2 + 1) = ln 3 for prior 1 ... prior 2 has the highest (ln(e^3 + 2)). 1 positive x ratio 1 keeps
    prior 2 only: lcls = CE(prior 0, class 1) + CE(prior 2, background) = ln 3 + ln(e^3 + 2)."""
    outputs, targets = tiny_case()
    cls = torch.zeros(1, 4, 3)
    cls[0, 1:, 0] = torch.tensor([0.0, 3.0, 1.0])
    crit = mean_criterion(FixedAssigner([0], [0], [0]), cls="ce", sampler=HardNegativeSampler(neg_pos_ratio=1.0))
    out = crit(no_obj(outputs, cls=cls, background=True), targets)
    torch.testing.assert_close(out["lcls"], torch.tensor(math.log(3) + math.log(math.exp(3) + 2)))
    assert crit.last_assignment.negative[0].tolist() == [False, False, True, False]


def test_sigmoid_head_with_soft_scores_and_iou_targets():
    """Sigmoid head without objectness, logits 0 everywhere (BCE(0, t) = ln 2 whatever t). With the assigner's
    score 0.25 the target at (prior 0, class 1) is 0.25; the gradient there is sigmoid(0) - 0.25 = 0.25.
    cls_target="iou" uses the pair's IoU 9/23 instead: gradient 0.5 - 9/23."""
    outputs, targets = tiny_case()
    for kwargs, expected in (({}, 0.25), ({"cls_target": "iou"}, 0.5 - TINY_IOU)):
        cls = torch.zeros(1, 4, 2, requires_grad=True)
        crit = mean_criterion(FixedAssigner([0], [0], [0], score=torch.tensor([0.25])), **kwargs)
        out = crit(no_obj(outputs, cls=cls), targets)
        torch.testing.assert_close(out["lcls"], torch.tensor(8 * LN2))
        out["lcls"].backward()
        torch.testing.assert_close(cls.grad[0, 0, 1], torch.tensor(expected))


def test_box_loss_on_encoded_deltas():
    """Delta coder, weights 1: the anchor box of prior 0 is (-4, -4, 12, 12), the gt (0, 0, 16, 16): deltas
    (dx, dy, dw, dh) = (4/16, 4/16, 0, 0). Raw box 0, smooth-L1 (beta 1): 2 * 0.5 * 0.25^2 = 0.0625."""
    outputs, targets = tiny_case()
    crit = mean_criterion(FixedAssigner([0], [0], [0]), box="smooth_l1", coder=DeltaBoxCoder(), box_space="encoded")
    torch.testing.assert_close(crit(no_obj(outputs), targets)["lbox"], torch.tensor(0.0625))


def test_quality_term_and_centerness_weighted_box_loss():
    """Quality logit 0 (BCE(0, t) = ln 2). Centerness 0.5 given by the assigner and used as the box weight: the
    weighted mean of one pair is its value, 1 - CIoU. Without extras the target is computed from the prior centre
    (4, 4) and the gt (0, 0, 16, 16): ltrb (4, 4, 12, 12), centerness sqrt(1/3 * 1/3) = 1/3; the BCE at logit 0
    does not depend on it, its gradient 0.5 - 1/3 does."""
    outputs, targets = tiny_case()
    quality = torch.zeros(1, 4, requires_grad=True)
    weights = {"box": 1.0, "cls": 1.0, "quality": 1.0}
    crit = mean_criterion(FixedAssigner([0], [0], [0], weight=torch.tensor([0.5]),
                                        extras={"centerness": torch.tensor([0.5])}), weights=weights)
    out = crit(no_obj(outputs, quality=quality), targets)
    torch.testing.assert_close(out["lquality"], torch.tensor(LN2))
    torch.testing.assert_close(out["lbox"], torch.tensor(1 - TINY_CIOU))
    crit = mean_criterion(FixedAssigner([0], [0], [0]), weights=weights)
    crit(no_obj(outputs, quality=quality), targets)["lquality"].backward()
    torch.testing.assert_close(quality.grad[0, 0], torch.tensor(0.5 - 1 / 3))


def test_mean_recipe_divides_by_sampled_priors():
    """avg_factor num_sampled: a negative mask of priors {1, 2} plus the positive = 3 sampled priors; the dense
    class loss 3 x 2 x ln 2 (logits 0) / 3 = 2 ln 2, the pair box loss (1 - CIoU) / 3."""
    outputs, targets = tiny_case()
    negative = torch.tensor([[False, True, True, False]])
    crit = mean_criterion(FixedAssigner([0], [0], [0], negative=negative),
                          reduction=MeanReduction(avg_factor="num_sampled"))
    out = crit(no_obj(outputs, cls=torch.zeros(1, 4, 2)), targets)
    torch.testing.assert_close(out["lcls"], torch.tensor(2 * LN2))
    torch.testing.assert_close(out["lbox"], torch.tensor((1 - TINY_CIOU) / 3))
    torch.testing.assert_close(out["loss"], out["lcls"] + out["lbox"])
    times_batch = mean_criterion(FixedAssigner([0], [0], [0]), reduction=MeanReduction(times_batch=True))
    doubled = no_obj(HeadOutputs(box=outputs.box.repeat(2, 1, 1), cls=outputs.cls.repeat(2, 1, 1), obj=None,
                                 priors=outputs.priors))
    out = times_batch(doubled, targets)
    torch.testing.assert_close(out["loss"], 2 * (out["lbox"] + out["lcls"]))


def test_assigner_dense_class_target_replaces_the_one_hot_rows():
    """An assigner that renders its own class target (CenterNet's heat map, Tensor[B, P, C]) gets the class loss over
    every prior against it: with BCE and logits 0 that is ln 2 per element, 4 priors x 2 classes = 8 ln 2 over the
    one positive; with the heat map 0.5 at prior 1 instead of 0, the BCE at logit 0 is still ln 2 (a soft target does
    not change BCE at p = 1/2), while the penalty-reduced focal loss forgives prior 1: (1 - 0.5)^4 of its usual
    negative loss."""
    from detector.losses.heatmap import penalty_reduced_focal_loss

    outputs, targets = tiny_case()
    heat = torch.zeros(1, 4, 2)
    heat[0, 0, 1] = 1.0
    cls = torch.zeros(1, 4, 2)
    crit = mean_criterion(FixedAssigner([0], [0], [0], extras={"heatmap": heat.clone()}), cls="bce")
    torch.testing.assert_close(crit(no_obj(outputs, cls=cls), targets)["lcls"], torch.tensor(8 * LN2))
    heat[0, 1, 0] = 0.5
    focal = mean_criterion(FixedAssigner([0], [0], [0], extras={"heatmap": heat}), cls="penalty_focal")
    got = focal(no_obj(outputs, cls=cls), targets)["lcls"]
    per_neg = penalty_reduced_focal_loss(torch.zeros(1), torch.zeros(1))[0]
    per_pos = penalty_reduced_focal_loss(torch.zeros(1), torch.ones(1))[0]
    torch.testing.assert_close(got, per_pos + 6 * per_neg + 0.5 ** 4 * per_neg)

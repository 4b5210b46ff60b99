"""Tests for detector/losses/criterion.py (DetectionCriterion).

The assigner here is a fixed one that returns the pairs it was given, so these tests do not depend on any
real assigner. Priors are built by hand in YOLOv5's flat order (per level: anchor, row, column).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from detector.errors import ConfigError
from detector.losses.classification import bce_loss
from detector.losses.criterion import DetectionCriterion, sum_of_level_means
from detector.losses.recipes import MeanReduction
from detector.losses.ranking import ap_loss, dr_loss
from detector.losses.spec import LossSpec
from detector.ops.coders import YOLOv5BoxCoder
from detector.structures import Assignment, HeadOutputs, Priors

LN2, LN3 = math.log(2), math.log(3)
YOLOV5_WEIGHTS = {"box": 0.05, "obj": 1.0, "cls": 0.5}


def make_priors(level_shapes, strides, level_anchors):
    """Anchor priors for levels of ``(A, H, W)``; ``level_anchors[l]`` is a list of A ``(w, h)`` in pixels."""
    grid, stride, anchors, level, anchor_id = [], [], [], [], []
    for lvl, ((a, h, w), s, anc) in enumerate(zip(level_shapes, strides, level_anchors)):
        ai, gy, gx = torch.meshgrid(torch.arange(a), torch.arange(h), torch.arange(w), indexing="ij")  # (A, H, W)
        grid.append(torch.stack((gx, gy), -1).reshape(-1, 2).float())
        stride.append(torch.full((a * h * w,), float(s)))
        anchors.append(torch.tensor(anc, dtype=torch.float32)[ai.reshape(-1)])
        level.append(torch.full((a * h * w,), lvl, dtype=torch.long))
        anchor_id.append(ai.reshape(-1))
    return Priors(
        grid=torch.cat(grid), strides=torch.cat(stride), anchors=torch.cat(anchors), level=torch.cat(level),
        anchor_id=torch.cat(anchor_id), level_shapes=list(level_shapes),
        level_anchors=[torch.tensor(a, dtype=torch.float32) for a in level_anchors],
    )


class FixedAssigner:
    """Returns the given pairs (and masks) whatever the input; records what it was called with."""

    def __init__(self, batch_index=(), prior_index=(), gt_index=(), ignore=None, negative=None, weight=None,
                 score=None, extras=None, needs_predictions=False):
        long = lambda v: torch.as_tensor(v, dtype=torch.long)  # noqa: E731
        self.assignment = Assignment(long(batch_index), long(prior_index), long(gt_index), ignore=ignore,
                                     negative=negative, weight=weight, score=score, extras=dict(extras or {}))
        self.needs_predictions = needs_predictions
        self.calls = []

    def __call__(self, priors, targets, batch_size, pred=None):
        self.calls.append((targets, batch_size, pred))
        return self.assignment


def make_criterion(assigner, box="ciou", cls="bce", obj="bce", weights=None, **kwargs):
    kwargs.setdefault("num_classes", 2)
    kwargs.setdefault("image_size", 16)
    return DetectionCriterion(assigner, YOLOv5BoxCoder(), box, cls, obj, dict(weights or YOLOV5_WEIGHTS), **kwargs)


# ---------------------------------------------------------------------------------- the worked example
def tiny_case():
    """1 image, 1 level, (A, H, W) = (1, 2, 2), stride 8, anchor 16 x 16 px, C = 2, image 16 px.

    Raw box outputs are 0, so sigmoid = 1/2 and every prior decodes to its cell centre with size
    (2 * 1/2)^2 * 16 = 16: prior 0 (cell (0, 0), centre (4, 4)) -> (-4, -4, 12, 12).
    One ground truth (image 0, class 1, (0, 0, 16, 16)), paired with prior 0.
    Objectness logits (ln 3, 0, 0, 0); class logits of prior 0 (ln 3, 0).
    """
    priors = make_priors([(1, 2, 2)], [8], [[(16, 16)]])
    outputs = HeadOutputs(
        box=torch.zeros(1, 4, 4),
        cls=torch.tensor([[[LN3, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]),
        obj=torch.tensor([[LN3, 0.0, 0.0, 0.0]]),
        priors=priors,
    )
    targets = torch.tensor([[0.0, 1.0, 0.0, 0.0, 16.0, 16.0]])
    return outputs, targets


def bce_at_ln3(t):
    """BCE of logit ln 3 (p = 3/4) against target t: t ln(4/3) + (1 - t) ln 4."""
    return t * math.log(4 / 3) + (1 - t) * math.log(4)


# CIoU of (-4, -4, 12, 12) and (0, 0, 16, 16): intersection 12 * 12 = 144, union 256 + 256 - 144 = 368,
# IoU = 9/23; centres 4*sqrt(2) apart (rho^2 = 32), enclosing box 20 x 20 (c^2 = 800): penalty 1/25;
# same aspect ratio, v = 0. CIoU = 9/23 - 1/25 = 202/575.
TINY_IOU = 9 / 23
TINY_CIOU = 202 / 575


def test_worked_example_yolov5_defaults():
    """lbox (raw) = 1 - CIoU = 373/575.
    lobj (raw) = level_balance 4.0 * mean over the 4 priors of BCE(obj, tobj), tobj = (202/575, 0, 0, 0):
               = BCE(ln 3, 202/575) + 3 ln 2.
    lcls (raw) = mean over M x C = 1 x 2 of BCE((ln 3, 0), (0, 1)) = (ln 4 + ln 2) / 2 = 1.5 ln 2.
    Gains for nl = 1, nc = 2, image 16: box 0.05 * 3 = 0.15; cls 0.5 * 2/80 * 3 = 0.0375;
    obj 1.0 * (16/640)^2 * 3 = 0.001875. loss = (lbox + lobj + lcls) * B with B = 1.
    """
    outputs, targets = tiny_case()
    crit = make_criterion(FixedAssigner([0], [0], [0]), level_balance=(4.0,))
    out = crit(outputs, targets)
    lbox = 0.15 * (1 - TINY_CIOU)
    lobj = 0.001875 * (bce_at_ln3(TINY_CIOU) + 3 * LN2)
    lcls = 0.0375 * 1.5 * LN2
    torch.testing.assert_close(out["lbox"], torch.tensor(lbox))
    torch.testing.assert_close(out["lobj"], torch.tensor(lobj))
    torch.testing.assert_close(out["lcls"], torch.tensor(lcls))
    torch.testing.assert_close(out["loss"], torch.tensor(lbox + lobj + lcls))
    assert set(out) == {"lbox", "lobj", "lcls", "loss"}


def test_worked_example_without_gain_scaling_and_batch_factor():
    """scale_gains False: the weights apply as given. Two images (the second without pairs and with all-zero
    logits, BCE ln 2 everywhere): lobj averages over 8 priors, and loss = (sum of terms) * 2."""
    outputs, targets = tiny_case()
    outputs = HeadOutputs(box=torch.cat((outputs.box, torch.zeros(1, 4, 4))),
                          cls=torch.cat((outputs.cls, torch.zeros(1, 4, 2))),
                          obj=torch.cat((outputs.obj, torch.zeros(1, 4))), priors=outputs.priors)
    crit = make_criterion(FixedAssigner([0], [0], [0]), level_balance=(1.0,), scale_gains=False,
                          weights={"box": 2.0, "obj": 3.0, "cls": 5.0})
    out = crit(outputs, targets)
    lbox, lobj, lcls = 2.0 * (1 - TINY_CIOU), 3.0 * (bce_at_ln3(TINY_CIOU) + 7 * LN2) / 8, 5.0 * 1.5 * LN2
    torch.testing.assert_close(out["lbox"], torch.tensor(lbox))
    torch.testing.assert_close(out["lobj"], torch.tensor(lobj))
    torch.testing.assert_close(out["lcls"], torch.tensor(lcls))
    torch.testing.assert_close(out["loss"], torch.tensor((lbox + lobj + lcls) * 2))


@pytest.mark.parametrize("obj_target,t", [("ciou", TINY_CIOU), ("iou", TINY_IOU), ("one", 1.0)])
def test_objectness_target_choices(obj_target, t):
    outputs, targets = tiny_case()
    crit = make_criterion(FixedAssigner([0], [0], [0]), level_balance=(1.0,), scale_gains=False,
                          obj_target=obj_target)
    torch.testing.assert_close(crit(outputs, targets)["lobj"], torch.tensor((bce_at_ln3(t) + 3 * LN2) / 4))


def test_duplicate_pairs_keep_the_highest_target_in_any_order():
    """Prior 0 is paired with gt 0 (CIoU 202/575) and gt 1, which equals the decoded box (CIoU 1).
    The criterion keeps the highest value, tobj = 1, in either pair order: YOLOv5 with ``sort_obj_iou=True``.
    YOLOv5's default (``sort_obj_iou=False``) keeps the value of the pair written last, which depends on the pair
    order (here it would give 202/575 for the order [1, 0]). lbox is the mean over both pairs, (373/575 + 0) / 2."""
    outputs, targets = tiny_case()
    targets = torch.cat((targets, torch.tensor([[0.0, 0.0, -4.0, -4.0, 12.0, 12.0]])))
    for gts in ([0, 1], [1, 0]):
        crit = make_criterion(FixedAssigner([0, 0], [0, 0], gts), level_balance=(1.0,), scale_gains=False,
                              weights={"box": 1.0, "obj": 1.0, "cls": 1.0})
        out = crit(outputs, targets)
        torch.testing.assert_close(out["lobj"], torch.tensor((bce_at_ln3(1.0) + 3 * LN2) / 4))
        torch.testing.assert_close(out["lbox"], torch.tensor((1 - TINY_CIOU) / 2))


def test_ignore_and_negative_masks():
    """Ignoring prior 3 averages lobj over priors 0-2; negative = {1} keeps the positive 0 and prior 1 only."""
    outputs, targets = tiny_case()
    ignore = torch.tensor([[False, False, False, True]])
    crit = make_criterion(FixedAssigner([0], [0], [0], ignore=ignore), level_balance=(1.0,), scale_gains=False)
    torch.testing.assert_close(crit(outputs, targets)["lobj"], torch.tensor((bce_at_ln3(TINY_CIOU) + 2 * LN2) / 3))
    negative = torch.tensor([[False, True, False, False]])
    crit = make_criterion(FixedAssigner([0], [0], [0], negative=negative), level_balance=(1.0,),
                          scale_gains=False)
    torch.testing.assert_close(crit(outputs, targets)["lobj"], torch.tensor((bce_at_ln3(TINY_CIOU) + LN2) / 2))


def test_empty_ground_truth_trains_objectness_only():
    outputs, _ = tiny_case()
    box = outputs.box.clone().requires_grad_()
    obj = outputs.obj.clone().requires_grad_()
    cls = outputs.cls.clone().requires_grad_()
    outputs = HeadOutputs(box=box, cls=cls, obj=obj, priors=outputs.priors)
    crit = make_criterion(FixedAssigner(), level_balance=(1.0,), scale_gains=False)
    out = crit(outputs, torch.zeros(0, 6))
    assert float(out["lbox"].detach()) == 0.0 and float(out["lcls"].detach()) == 0.0
    torch.testing.assert_close(out["lobj"], torch.tensor((math.log(4) + 3 * LN2) / 4))  # BCE(ln 3, 0) = ln 4
    out["loss"].backward()
    assert torch.all(box.grad == 0) and torch.all(cls.grad == 0)
    assert float(obj.grad.abs().sum()) > 0


def test_single_class_has_no_class_loss():
    outputs, targets = tiny_case()
    outputs = HeadOutputs(box=outputs.box, cls=outputs.cls[..., :1], obj=outputs.obj, priors=outputs.priors)
    crit = make_criterion(FixedAssigner([0], [0], [0]), num_classes=1, level_balance=(1.0,))
    out = crit(outputs, targets.clone().index_fill_(1, torch.tensor([1]), 0.0))
    assert float(out["lcls"].detach()) == 0.0


def test_label_smoothing_of_class_targets():
    """eps 0.2: one-hot (0, 1) becomes (0.1, 0.9); logits (ln 3, 0):
    BCE(ln 3, 0.1) = 0.1 ln(4/3) + 0.9 ln 4, BCE(0, 0.9) = ln 2; lcls = their mean."""
    outputs, targets = tiny_case()
    crit = make_criterion(FixedAssigner([0], [0], [0]), level_balance=(1.0,), scale_gains=False,
                          label_smoothing=0.2, weights={"box": 1.0, "obj": 1.0, "cls": 1.0})
    torch.testing.assert_close(crit(outputs, targets)["lcls"], torch.tensor((bce_at_ln3(0.1) + LN2) / 2))


def test_pair_weights_give_a_weighted_mean():
    """Two pairs at prior 0 (CIoU 202/575 and 1) with weights 3 and 1: lbox = (3 * 373/575 + 0) / 4."""
    outputs, targets = tiny_case()
    targets = torch.cat((targets, torch.tensor([[0.0, 0.0, -4.0, -4.0, 12.0, 12.0]])))
    crit = make_criterion(FixedAssigner([0, 0], [0, 0], [0, 1], weight=torch.tensor([3.0, 1.0])),
                          level_balance=(1.0,), scale_gains=False, weights={"box": 1.0, "obj": 1.0, "cls": 1.0})
    torch.testing.assert_close(crit(outputs, targets)["lbox"], torch.tensor(3 * (1 - TINY_CIOU) / 4))


def test_assigner_sees_detached_decoded_boxes_and_scores_only_when_it_asks():
    """Scores are sigmoid(cls) * sigmoid(obj): prior 0 has (3/4, 1/2) * 3/4 = (9/16, 3/8)."""
    outputs, targets = tiny_case()
    box = outputs.box.clone().requires_grad_()
    outputs = HeadOutputs(box=box, cls=outputs.cls, obj=outputs.obj, priors=outputs.priors)
    assigner = FixedAssigner([0], [0], [0], needs_predictions=True)
    make_criterion(assigner)(outputs, targets)
    _, batch_size, pred = assigner.calls[0]
    assert batch_size == 1 and not pred.boxes.requires_grad and not pred.scores.requires_grad
    torch.testing.assert_close(pred.boxes[0, 0], torch.tensor([-4.0, -4.0, 12.0, 12.0]))
    torch.testing.assert_close(pred.scores[0, 0], torch.tensor([9 / 16, 3 / 8]))
    blind = FixedAssigner([0], [0], [0])
    make_criterion(blind)(outputs, targets)
    assert blind.calls[0][2] is None


# ------------------------------------------------------------------------------------- other modes
def test_ranking_class_loss_over_all_priors():
    """cls: ap ranks the class logits of every non-ignored prior (4 - 1 = 3 priors x 2 classes), one-hot at
    the positive, and its value is used as is (times the gain)."""
    outputs, targets = tiny_case()
    ignore = torch.tensor([[False, False, True, False]])
    for name, fn in (("ap", ap_loss), ("dr", dr_loss)):
        crit = make_criterion(FixedAssigner([0], [0], [0], ignore=ignore), cls=name, level_balance=(1.0,),
                              scale_gains=False, weights={"box": 1.0, "obj": 1.0, "cls": 1.0})
        keep = torch.tensor([0, 1, 3])
        target = torch.zeros(3, 2)
        target[0, 1] = 1.0
        torch.testing.assert_close(crit(outputs, targets)["lcls"], fn(outputs.cls[0, keep], target))


def test_ranking_objectness_per_level():
    outputs, targets = tiny_case()
    crit = make_criterion(FixedAssigner([0], [0], [0]), obj="ap", level_balance=(2.0,), scale_gains=False)
    expected = 2.0 * ap_loss(outputs.obj[0], torch.tensor([TINY_CIOU, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(crit(outputs, targets)["lobj"], expected)


def test_dense_class_loss_without_objectness():
    """obj_loss None: the class loss covers all 4 priors x 2 classes (one-hot at the positive, zeros elsewhere),
    summed and divided by the 1 positive pair: BCE(ln 3, 0) + BCE(0, 1) + 6 * ln 2 = ln 4 + 7 ln 2."""
    outputs, targets = tiny_case()
    outputs = HeadOutputs(box=outputs.box, cls=outputs.cls, obj=None, priors=outputs.priors)
    crit = make_criterion(FixedAssigner([0], [0], [0]), obj=None, weights={"box": 1.0, "obj": 1.0, "cls": 1.0},
                          reduction=MeanReduction())  # an inherited obj weight is ignored without an obj loss
    out = crit(outputs, targets)
    assert "lobj" not in out
    torch.testing.assert_close(out["lcls"], torch.tensor(math.log(4) + 7 * LN2))


def test_extra_inputs_and_grid_units_for_box_losses():
    """Box losses get boxes divided by the stride (8), pred_log_var = the head's log-variance (grid units) unchanged, and
    image_size = 16 / 8 = 2, when their signature names them."""
    seen = {}

    def recording_loss(pred, target, *, pred_log_var, image_size, reduction="none", eps=1e-7):
        seen.update(pred=pred.detach(), target=target, pred_log_var=pred_log_var.detach(), image_size=image_size)
        return (pred - target).abs().sum(-1) + 0 * pred_log_var.sum(-1)

    outputs, targets = tiny_case()
    log_var = torch.full((1, 4, 4), 1.5)
    outputs = HeadOutputs(box=outputs.box, cls=outputs.cls, obj=outputs.obj, priors=outputs.priors,
                          box_log_var=log_var)
    crit = make_criterion(FixedAssigner([0], [0], [0]), box=LossSpec("recording", recording_loss))
    crit(outputs, targets)
    torch.testing.assert_close(seen["pred"], torch.tensor([[-0.5, -0.5, 1.5, 1.5]]))
    torch.testing.assert_close(seen["target"], torch.tensor([[0.0, 0.0, 2.0, 2.0]]))
    torch.testing.assert_close(seen["pred_log_var"], torch.full((1, 4), 1.5))
    torch.testing.assert_close(seen["image_size"], torch.tensor([2.0]))


def test_kl_needs_box_uncertainty():
    outputs, targets = tiny_case()
    crit = make_criterion(FixedAssigner([0], [0], [0]), box="kl")
    with pytest.raises(ConfigError, match="model.box_uncertainty: true"):
        crit(outputs, targets)


def test_var_weight_adds_a_kl_term():
    """weights["var"] adds lvar = gain * mean over pairs of the KL loss (box and var gains scale by 3 / nl)."""
    from detector.losses.box import kl_loss

    outputs, targets = tiny_case()
    log_var = torch.randn(1, 4, 4)
    outputs = HeadOutputs(box=outputs.box, cls=outputs.cls, obj=outputs.obj, priors=outputs.priors,
                          box_log_var=log_var)
    crit = make_criterion(FixedAssigner([0], [0], [0]), weights={**YOLOV5_WEIGHTS, "var": 0.2})
    out = crit(outputs, targets)
    expected = kl_loss(torch.tensor([[-0.5, -0.5, 1.5, 1.5]]), torch.tensor([[0.0, 0.0, 2.0, 2.0]]),
                       pred_log_var=log_var[0, :1])
    torch.testing.assert_close(out["lvar"], 0.2 * 3 * expected[0])
    torch.testing.assert_close(out["loss"], out["lbox"] + out["lobj"] + out["lcls"] + out["lvar"])


def test_configuration_errors():
    assigner = FixedAssigner()
    with pytest.raises(ConfigError, match="loss.weights: missing"):
        make_criterion(assigner, weights={"obj": 1.0, "cls": 1.0})
    with pytest.raises(ConfigError, match="loss.weights.foo") as err:
        make_criterion(assigner, weights={**YOLOV5_WEIGHTS, "foo": 1.0})
    assert "var" in str(err.value)
    with pytest.raises(ConfigError, match="loss.obj_target"):
        make_criterion(assigner, obj_target="giou")
    with pytest.raises(ConfigError, match="loss.obj:.*one logit per prior"):
        make_criterion(assigner, obj="ce")
    with pytest.raises(ConfigError, match="loss.box.name"):
        make_criterion(assigner, box={"name": "cioux"})
    outputs, targets = tiny_case()
    with pytest.raises(ConfigError, match="loss.reduction.level_balance"):
        make_criterion(assigner, level_balance=())
    with pytest.raises(ConfigError, match="loss.reduction.level_balance"):
        make_criterion(assigner, level_balance=(1.0, 0.0))
    with pytest.raises(ConfigError, match="loss.label_smoothing.*compound"):
        make_criterion(assigner, cls={"name": "bce", "label_smoothing": 0.1}, label_smoothing=0.1)
    with pytest.raises(ValueError, match="num_classes=3"):
        make_criterion(assigner, num_classes=3)(outputs, targets)
    no_obj = HeadOutputs(box=outputs.box, cls=outputs.cls, obj=None, priors=outputs.priors)
    with pytest.raises(ConfigError, match="loss.obj"):
        make_criterion(assigner)(no_obj, targets)


def test_sum_of_level_means():
    """Levels 0, 0, 2 with values 1, 3, 5 over 3 levels: mean(1, 3) + 0 + 5 = 7; with weights 1, 3, 1:
    (1 + 9) / 4 + 5 = 7.5. Per-pair rows of 2 values divide by 2 per pair."""
    level = torch.tensor([0, 0, 2])
    torch.testing.assert_close(sum_of_level_means(torch.tensor([1.0, 3.0, 5.0]), level, 3), torch.tensor(7.0))
    torch.testing.assert_close(
        sum_of_level_means(torch.tensor([1.0, 3.0, 5.0]), level, 3, torch.tensor([1.0, 3.0, 1.0])),
        torch.tensor(7.5),
    )
    torch.testing.assert_close(
        sum_of_level_means(torch.tensor([[1.0, 3.0], [0.0, 0.0], [5.0, 5.0]]), level, 3), torch.tensor(6.0)
    )
    empty = torch.zeros(0, requires_grad=True)
    result = sum_of_level_means(empty, torch.zeros(0, dtype=torch.long), 3)
    assert float(result.detach()) == 0.0 and result.requires_grad


# --------------------------------------------------------------------- YOLOv5 ComputeLoss, re-derived
def yolov5_ciou_xywh(box1, box2, eps=1e-7):
    """YOLOv5's bbox_iou(..., xywh=True, CIoU=True) on (cx, cy, w, h) rows, from the CIoU formula."""
    x1, y1, w1, h1 = box1.unbind(-1)
    x2, y2, w2, h2 = box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * \
        (torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)).clamp(0)
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / (cw**2 + ch**2 + eps) + v * alpha)


def yolov5_reference(outputs, targets, pairs, nc, image_size, balance, hyp, fl_gamma=0.0, smoothing=0.0):
    """ComputeLoss.__call__ of ultralytics/yolov5 utils/loss.py on per-level (B, A, H, W, 5 + C) tensors,
    with train.py's gain scaling, given the (image, prior, gt) pairs its build_targets would produce."""
    priors = outputs.priors
    nl, bs = priors.num_levels, outputs.box.shape[0]
    flat = torch.cat((outputs.box, outputs.obj[..., None], outputs.cls), -1)  # (B, P, 5 + C)
    offsets = priors.level_offsets
    b_all, p_all, g_all = pairs
    cp, cn = 1.0 - 0.5 * smoothing, 0.5 * smoothing

    def bce(x, t):
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        if fl_gamma > 0:  # YOLOv5's FocalLoss wrapper, alpha 0.25
            p = x.sigmoid()
            p_t = t * p + (1 - t) * (1 - p)
            loss = loss * (t * 0.25 + (1 - t) * 0.75) * (1.0 - p_t) ** fl_gamma
        return loss.mean()

    lbox = lobj = lcls = torch.zeros(())
    for i, (a_n, h, w) in enumerate(priors.level_shapes):
        stride = float(priors.strides[offsets[i]])
        pi = flat[:, offsets[i]:offsets[i + 1]].reshape(bs, a_n, h, w, -1)  # (B, A, H, W, 5 + C)
        sel = (p_all >= offsets[i]) & (p_all < offsets[i + 1])
        b, local, g = b_all[sel], p_all[sel] - offsets[i], g_all[sel]
        a, gj, gi = local // (h * w), (local % (h * w)) // w, local % w
        tobj = torch.zeros(pi.shape[:4])
        n = b.shape[0]
        if n:
            ps = pi[b, a, gj, gi]  # (n, 5 + C)
            t = targets[g]
            gxy = (t[:, 2:4] + t[:, 4:6]) / 2 / stride
            gwh = (t[:, 4:6] - t[:, 2:4]) / stride
            tbox = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
            anchors = priors.level_anchors[i][a] / stride
            pxy = ps[:, :2].sigmoid() * 2 - 0.5
            pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * anchors
            iou = yolov5_ciou_xywh(torch.cat((pxy, pwh), 1), tbox)
            lbox = lbox + (1.0 - iou).mean()
            iou = iou.detach().clamp(0)
            for k in iou.argsort().tolist():  # sort_obj_iou: the highest IoU is written last
                tobj[b[k], a[k], gj[k], gi[k]] = iou[k]
            if nc > 1:
                tc = torch.full_like(ps[:, 5:], cn)
                tc[range(n), t[:, 1].long()] = cp
                lcls = lcls + bce(ps[:, 5:], tc)
        lobj = lobj + bce(pi[..., 4], tobj) * balance[i]
    lbox = lbox * hyp["box"] * 3 / nl
    lcls = lcls * hyp["cls"] * nc / 80 * 3 / nl
    lobj = lobj * hyp["obj"] * (image_size / 640) ** 2 * 3 / nl
    return (lbox + lobj + lcls) * bs, lbox, lobj, lcls


def random_multilevel_case(seed=0, nc=3):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 8, 8), (3, 4, 4), (3, 2, 2)]
    anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
    priors = make_priors(shapes, [8, 16, 32], anchors)
    num_priors, bs = len(priors), 2
    outputs = HeadOutputs(
        box=torch.randn(bs, num_priors, 4, generator=g).requires_grad_(),
        cls=torch.randn(bs, num_priors, nc, generator=g).requires_grad_(),
        obj=torch.randn(bs, num_priors, generator=g).requires_grad_(),
        priors=priors,
    )
    n = 6
    xy = torch.rand(n, 2, generator=g) * 48
    wh = torch.rand(n, 2, generator=g) * 40 + 4
    targets = torch.cat((torch.tensor([0, 0, 1, 1, 1, 0.0])[:, None], torch.randint(0, nc, (n, 1), generator=g).float(),
                         xy, xy + wh), 1)
    m = 40
    gt = torch.randint(0, n, (m,), generator=g)
    prior = torch.randint(0, num_priors, (m,), generator=g)
    prior[-6:] = prior[:6]  # duplicated priors: several pairs per prior
    batch = targets[gt, 0].long()
    batch[-6:] = batch[:6]
    gt[-6:] = (gt[:6] + 1) % n
    gt[-6:] = torch.where(targets[gt[-6:], 0].long() == batch[-6:], gt[-6:], gt[:6])
    return outputs, targets, (batch, prior, gt)


@pytest.mark.parametrize("cls_name,fl_gamma,smoothing,nc", [("bce", 0.0, 0.0, 3), ("bce", 0.0, 0.1, 3),
                                                            ("focal", 1.5, 0.0, 3), ("bce", 0.0, 0.0, 1)])
def test_matches_yolov5_compute_loss_multilevel(cls_name, fl_gamma, smoothing, nc):
    """Values and gradients equal a direct re-computation of YOLOv5's ComputeLoss (3 levels, 2 images,
    duplicated priors) with train.py's gains, for BCE, label smoothing, YOLOv5's FocalLoss (cls and obj
    wrapped, alpha 0.25) and a single class (no class loss)."""
    outputs, targets, pairs = random_multilevel_case(nc=nc)
    hyp = {"box": 0.05, "obj": 0.7, "cls": 0.3}
    cls_spec = {"name": "focal", "gamma": fl_gamma} if cls_name == "focal" else "bce"
    crit = DetectionCriterion(FixedAssigner(*pairs), YOLOv5BoxCoder(), "ciou", cls_spec, cls_spec, hyp,
                              num_classes=nc, image_size=64, label_smoothing=smoothing)
    out = crit(outputs, targets)
    ref_loss, ref_box, ref_obj, ref_cls = yolov5_reference(outputs, targets, pairs, nc, 64, (4.0, 1.0, 0.4), hyp,
                                                           fl_gamma, smoothing)
    torch.testing.assert_close(out["lbox"], ref_box, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["lobj"], ref_obj, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["lcls"], ref_cls, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["loss"], ref_loss, rtol=1e-5, atol=1e-7)
    leaves = (outputs.box, outputs.obj, outputs.cls)
    ours = torch.autograd.grad(out["loss"], leaves, allow_unused=True)
    ref = torch.autograd.grad(ref_loss, leaves, allow_unused=True)
    for a, b in zip(ours, ref):
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)


def test_bce_slot_matches_plain_function():
    """The cls spec's parameters reach the function: pos_weight 2 in the tiny case doubles the positive part."""
    outputs, targets = tiny_case()
    crit = make_criterion(FixedAssigner([0], [0], [0]), cls={"name": "bce", "pos_weight": 2.0},
                          level_balance=(1.0,), scale_gains=False, weights={"box": 1.0, "obj": 1.0, "cls": 1.0})
    expected = bce_loss(outputs.cls[0, 0], torch.tensor([0.0, 1.0]), pos_weight=2.0).mean()
    torch.testing.assert_close(crit(outputs, targets)["lcls"], expected)
    torch.testing.assert_close(expected, torch.tensor((math.log(4) + 2 * LN2) / 2))

"""NMS-free training's criterion: YOLO26's weight schedule by hand, the weighted sum of the two criteria, and the
one-to-one assignment (TAL top-1) giving each ground truth exactly one point on real coco128 targets."""
from __future__ import annotations

import pytest
import torch

from detector.assigners import TaskAlignedAssigner
from detector.losses.criterion import DetectionCriterion
from detector.losses.dual import DualAssignmentCriterion, many_weight
from detector.losses.recipes import MeanReduction
from detector.models.priors import PointPriorGenerator
from detector.ops.point_coders import DistributionCoder
from detector.structures import HeadOutputs


def test_many_weight_schedule_by_hand():
    """0.8 -> 0.1 over 8 epochs: a step of 0.7 / 7 = 0.1 per epoch; epoch 3 -> 0.5; past the end it stays at 0.1."""
    assert [round(many_weight(e, 8), 10) for e in range(8)] == [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert many_weight(20, 8) == pytest.approx(0.1)
    assert many_weight(0, 1) == 0.8  # a one-epoch run trains at the start weight
    assert many_weight(1, 3, start=1.0, end=0.0) == 0.5


def criterion(topk):
    return DetectionCriterion(TaskAlignedAssigner(topk=topk, alpha=0.5, beta=6.0), DistributionCoder(bins=16), "ciou",
                              "bce", None, {"box": 7.5, "cls": 0.5, "dfl": 1.5}, num_classes=80, image_size=640,
                              reduction=MeanReduction(times_batch=True))


def outputs(batch, img_size, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(img_size // s, img_size // s) for s in (8, 16, 32)]
    priors = PointPriorGenerator([8, 16, 32])(shapes, "cpu", torch.float32)
    p = len(priors)
    return HeadOutputs(box=torch.randn(batch, p, 64, generator=g, requires_grad=True),
                       cls=torch.randn(batch, p, 80, generator=g, requires_grad=True), obj=None, priors=priors)


def test_dual_loss_is_the_scheduled_sum_and_one_to_one_gives_one_point_per_box(coco128_targets):
    targets = coco128_targets(4, 320)
    many_out, one_out = outputs(4, 320, 0), outputs(4, 320, 1)
    many_out.one_to_one = one_out
    dual = DualAssignmentCriterion(criterion(10), criterion(1), schedule=(0.8, 0.1))
    dual.set_epoch(3, 8)  # weight 0.5 by the schedule above
    got = dual(many_out, targets)
    plain_many, plain_one = criterion(10)(many_out, targets), criterion(1)(one_out, targets)
    torch.testing.assert_close(got["loss"], 0.5 * plain_many["loss"] + 0.5 * plain_one["loss"])
    torch.testing.assert_close(got["lcls_o2o"], 0.5 * plain_one["lcls"])
    assert set(got) == {"loss", "lbox_o2m", "lcls_o2m", "ldfl_o2m", "lbox_o2o", "lcls_o2o", "ldfl_o2o"}
    one = dual.one_to_one.last_assignment
    # top-1: every ground truth has exactly one point (those with no candidate point inside them: none)
    counts = torch.bincount(one.gt_index, minlength=len(targets))
    assert counts.max() == 1 and (counts == 1).sum() >= len(targets) - 2
    many = dual.last_assignment
    assert many.num_pos > 3 * one.num_pos  # the one-to-many head's statistics are what the trainer logs


def test_dual_criterion_needs_the_one_to_one_outputs():
    with pytest.raises(ValueError, match="one_to_one"):
        DualAssignmentCriterion(criterion(10), criterion(1))(outputs(1, 64, 0), torch.zeros(0, 6))
    with pytest.raises(ValueError, match="many_weight"):
        DualAssignmentCriterion(criterion(10), criterion(1), schedule=(0.8, 1.5))


def test_dual_criterion_keeps_both_heads_stateful_losses():
    """wiou v3 keeps a running mean per criterion: the dual criterion's state holds both, and loading it into a fresh
    dual criterion restores both exactly (resume)."""
    def with_wiou(topk):
        return DetectionCriterion(TaskAlignedAssigner(topk=topk), DistributionCoder(bins=16), "wiou", "bce", None,
                                  {"box": 1.0, "cls": 1.0}, num_classes=80, image_size=320, reduction=MeanReduction())

    many_out, one_out = outputs(2, 128, 0), outputs(2, 128, 1)
    many_out.one_to_one = one_out
    targets = torch.tensor([[0, 1, 10.0, 10, 60, 70], [1, 2, 30, 20, 100, 90]])
    dual = DualAssignmentCriterion(with_wiou(10), with_wiou(1))
    dual(many_out, targets)
    state = dual.state_dict()
    assert set(state) == {"one_to_many", "one_to_one"}
    fresh = DualAssignmentCriterion(with_wiou(10), with_wiou(1))
    fresh.load_state_dict(state)
    for head in ("one_to_many", "one_to_one"):
        for term, values in state[head].items():
            for k, v in values.items():
                torch.testing.assert_close(fresh.state_dict()[head][term][k], v)
    fresh.eval()
    before = fresh.state_dict()
    fresh(many_out, targets)  # eval: the losses use their state without updating it
    torch.testing.assert_close(fresh.state_dict()["one_to_many"]["box"], before["one_to_many"]["box"])

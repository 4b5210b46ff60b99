"""Tests of detector/losses/stateful.py (``wiou`` in BOX, ``ghm`` in CLS) and of the criterion's state.

Hand cases:

* WIoU, target (0, 0, 2, 2), pred (1, 0, 3, 2): IoU 2/6, L_IoU = 2/3; centre offset 1, enclosing box 3 x 2, so
  R = exp(1 / (9 + 4)) = e^(1/13) and v1 = (2/3) e^(1/13) = 0.7199.
  v3 (alpha 1.9, delta 3) with a stored mean of 2/9: beta = (2/3) / (2/9) = 3 = delta, r = 3 / (3 * 1.9^0) = 1, so
  v3 = v1; with a mean of 2/3: beta = 1, r = 1 / (3 * 1.9^-2) = 1.9^2 / 3 = 1.2033.
  v2 (gamma 0.5) with a mean of 1/6: beta = 4, factor 4^0.5 = 2.
  Training call from the initial mean 1 with momentum 0.5: the mean becomes 0.5 * 1 + 0.5 * 2/3 = 5/6 first, then
  beta = (2/3) / (5/6) = 0.8 and r = 0.8 / (3 * 1.9^(0.8 - 3)).
* GHM-C, 10 bins, four elements: logit ln 19 with target 1 three times (p = 0.95, g = 0.05, bin 0) and logit 0 with
  target 1 (g = 0.5, bin 5). N = 4, two non-empty bins. Momentum 0: weights 4 / (3 * 2) = 2/3 and 4 / (1 * 2) = 2,
  times BCE = -ln 0.95 and ln 2. Momentum 0.75, first call (S from 0): S = 0.25 * (3, 1) = (0.75, 0.25), weights
  4 / (0.75 * 2) = 8/3 and 4 / (0.25 * 2) = 8; second call: S = 0.75 * 0.75 + 0.25 * 3 = 1.3125 and
  0.75 * 0.25 + 0.25 * 1 = 0.4375, weights 4 / 2.625 and 4 / 0.875.

References beside the hand cases: the algorithms written as loops (WIoU's running mean in Python floats, GHM-C's
bins as the authors' edge comparisons) over several calls on random data.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from detector.losses.box import BOX
from detector.losses.classification import CLS
from detector.losses.criterion import DetectionCriterion
from detector.losses.spec import LossSpec, parse_box_loss, parse_cls_loss
from detector.losses.stateful import GHMCLoss, WIoULoss, wiou_momentum
from detector.ops.coders import YOLOv5BoxCoder
from test_box_losses import DEGENERATE, overlapping_pairs, torchvision_aligned_iou  # noqa: E402
from test_loss_specs import IMAGE_SIZE, NUM_CLASSES, CentreCellAssigner  # noqa: E402

LN19 = math.log(19)


def hand_pair(dtype=torch.float64):
    return torch.tensor([[1.0, 0, 3, 2]], dtype=dtype), torch.tensor([[0.0, 0, 2, 2]], dtype=dtype)


def wiou_with_mean(mean: float) -> WIoULoss:
    loss = WIoULoss()
    loss.load_state_dict({"mean": torch.tensor(mean)})
    return loss.eval()


# ------------------------------------------------------------------------------------------------------ WIoU


def test_wiou_hand_values():
    pred, target = hand_pair()
    v1 = 2 / 3 * math.exp(1 / 13)
    assert WIoULoss()(pred, target, version=1).item() == pytest.approx(v1, rel=1e-6)
    assert wiou_with_mean(2 / 9)(pred, target).item() == pytest.approx(v1, rel=1e-6)
    assert wiou_with_mean(2 / 3)(pred, target).item() == pytest.approx(v1 * 1.9**2 / 3, rel=1e-6)
    assert wiou_with_mean(1 / 6)(pred, target, version=2).item() == pytest.approx(2 * v1, rel=1e-6)
    loss = WIoULoss()
    value = loss(pred, target, momentum=0.5).item()
    assert loss.state_dict()["mean"].item() == pytest.approx(5 / 6, rel=1e-6)
    assert value == pytest.approx(0.8 / (3 * 1.9 ** (0.8 - 3)) * v1, rel=1e-6)


def test_wiou_state_moves_only_in_training_and_only_for_v2_v3():
    pred, target = hand_pair()
    loss = WIoULoss()
    loss(pred, target, version=1, momentum=0.5)
    assert loss.state_dict()["mean"].item() == 1.0
    loss.eval()(pred, target, momentum=0.5)
    assert loss.state_dict()["mean"].item() == 1.0
    loss.train()(pred[:0], target[:0], momentum=0.5)  # no pairs: nothing to average
    assert loss.state_dict()["mean"].item() == 1.0
    loss(pred, target, version=2, momentum=0.5)
    assert loss.state_dict()["mean"].item() == pytest.approx(5 / 6)


def _wiou_reference(calls, momentum, alpha=1.9, delta=3.0):
    """Per call: v3 from the formulas, the running mean in Python floats (updated before use)."""
    mean, out = 1.0, []
    for pred, target in calls:
        l_iou = 1 - torchvision_aligned_iou(pred, target)
        centre = (pred[:, :2] + pred[:, 2:] - target[:, :2] - target[:, 2:]) / 2
        cw = torch.maximum(pred[:, 2], target[:, 2]) - torch.minimum(pred[:, 0], target[:, 0])
        ch = torch.maximum(pred[:, 3], target[:, 3]) - torch.minimum(pred[:, 1], target[:, 1])
        r = torch.exp(centre.pow(2).sum(1) / (cw**2 + ch**2))
        mean = (1 - momentum) * mean + momentum * float(l_iou.mean())
        beta = l_iou / mean
        out.append(beta / (delta * alpha ** (beta - delta)) * r * l_iou)
    return out, mean


def test_wiou_v3_matches_the_loop_reference_over_calls():
    calls = [overlapping_pairs(50, seed=s, dtype=torch.float64) for s in range(4)]
    expected, final_mean = _wiou_reference(calls, momentum=0.3)
    loss = WIoULoss()
    for (pred, target), value in zip(calls, expected):
        torch.testing.assert_close(loss(pred, target, momentum=0.3), value, rtol=1e-5, atol=1e-7)  # float32 mean
    assert loss.state_dict()["mean"].item() == pytest.approx(final_mean, rel=1e-6)


def test_wiou_momentum_is_the_papers():
    assert wiou_momentum(890, 34) == pytest.approx(1 - 0.05 ** (1 / 30260))
    assert (1 - wiou_momentum(100, 10)) ** 1000 == pytest.approx(0.05)


def test_wiou_gradient_v1_gradcheck_with_frozen_enclosing_box_and_v3_factor_detached():
    """v1's gradient treats C_w^2 + C_h^2 as a constant: gradcheck against the loss with it frozen at the input.
    v3's focusing factor carries no gradient: grad v3 = r * grad v1."""
    pred, target = overlapping_pairs(6, seed=12, dtype=torch.float64)
    cw = torch.maximum(pred[:, 2], target[:, 2]) - torch.minimum(pred[:, 0], target[:, 0])
    ch = torch.maximum(pred[:, 3], target[:, 3]) - torch.minimum(pred[:, 1], target[:, 1])
    c2 = cw**2 + ch**2

    def frozen_reference(p):
        centre = (p[:, :2] + p[:, 2:] - target[:, :2] - target[:, 2:]) / 2
        return torch.exp(centre.pow(2).sum(1) / c2) * (1 - torchvision_aligned_iou(p, target))

    loss = WIoULoss()

    def value_of_reference_gradient_of_ours(p):
        ours = loss(p, target, version=1)
        with torch.no_grad():
            shift = frozen_reference(p) - ours
        return ours + shift

    assert torch.autograd.gradcheck(value_of_reference_gradient_of_ours, (pred.clone().requires_grad_(True),))
    v3 = wiou_with_mean(0.4)
    p = pred.clone().requires_grad_(True)
    (grad_v3,) = torch.autograd.grad(v3(p, target).sum(), p)
    (grad_v1,) = torch.autograd.grad(v3(p, target, version=1).sum(), p)
    beta = (1 - torchvision_aligned_iou(pred, target)) / 0.4
    r = beta / (3 * 1.9 ** (beta - 3))
    torch.testing.assert_close(grad_v3, r[:, None] * grad_v1, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_wiou_degenerate_pairs_finite(version, case):
    a, b = DEGENERATE[case]
    pred = torch.tensor([a], requires_grad=True)
    value = WIoULoss()(pred, torch.tensor([b]), version=version, momentum=1.0)  # the mean is this pair's L_IoU
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all(), (case, value, grad)


def test_wiou_huge_coordinates_and_reductions_and_errors():
    pred = torch.tensor([[1e30, 1e30, 3e30, 2e30]], requires_grad=True)
    target = torch.tensor([[1.5e30, 1.2e30, 4e30, 5e30]])
    value = WIoULoss()(pred, target)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(value, WIoULoss()(pred.detach() / 1e30, target / 1e30))
    pred, target = overlapping_pairs(7, seed=13)
    per_box = wiou_with_mean(0.5)(pred, target)
    assert per_box.shape == (7,)
    torch.testing.assert_close(wiou_with_mean(0.5)(pred, target, reduction="mean"), per_box.mean())
    assert WIoULoss()(pred[:0], target[:0], reduction="mean").item() == 0.0
    with pytest.raises(ValueError, match="version"):
        WIoULoss()(pred, target, version=4)
    with pytest.raises(ValueError, match="momentum"):
        WIoULoss()(pred, target, momentum=0.0)
    with pytest.raises(ValueError, match="keys"):
        WIoULoss().load_state_dict({"avg": torch.tensor(1.0)})


# ------------------------------------------------------------------------------------------------------ GHM-C


def test_ghm_hand_values():
    logits = torch.tensor([LN19, LN19, LN19, 0.0], dtype=torch.float64)
    target = torch.ones(4, dtype=torch.float64)
    bce = torch.tensor([-math.log(0.95)] * 3 + [math.log(2)], dtype=torch.float64)
    plain = GHMCLoss()(logits, target, momentum=0.0)
    torch.testing.assert_close(plain, bce * torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0], dtype=torch.float64))
    loss = GHMCLoss()
    torch.testing.assert_close(loss(logits, target), bce * torch.tensor([8 / 3] * 3 + [8.0], dtype=torch.float64))
    torch.testing.assert_close(loss(logits, target), bce * torch.tensor([4 / 2.625] * 3 + [4 / 0.875],
                                                                        dtype=torch.float64))
    acc = loss.state_dict()["acc"]
    torch.testing.assert_close(acc[[0, 5]], torch.tensor([1.3125, 0.4375]))
    assert acc.sum() == pytest.approx(1.75)  # the eight other bins never filled


def _ghm_reference(calls, bins, momentum):
    """The authors' algorithm: bins by edge comparisons (last edge + 1e-6), a loop over bins, Python-float S."""
    edges = [i / bins for i in range(bins + 1)]
    edges[-1] += 1e-6
    acc, out = [0.0] * bins, []
    for logits, target in calls:
        g = (logits.sigmoid() - target).abs()
        weights, nonempty = torch.zeros_like(logits), 0
        for i in range(bins):
            inds = (g >= edges[i]) & (g < edges[i + 1])
            num = int(inds.sum())
            if num > 0:
                acc[i] = momentum * acc[i] + (1 - momentum) * num if momentum > 0 else num
                weights[inds] = logits.numel() / acc[i]
                nonempty += 1
        out.append(F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weights / nonempty)
    return out


@pytest.mark.parametrize("bins,momentum", [(10, 0.75), (30, 0.75), (10, 0.0), (7, 0.3)])
def test_ghm_matches_the_loop_reference_over_calls(bins, momentum):
    g = torch.Generator().manual_seed(bins)
    calls = [(torch.randn(64, 5, generator=g, dtype=torch.float64) * 3,
              (torch.rand(64, 5, generator=g) < 0.2).double()) for _ in range(4)]
    loss = GHMCLoss()
    for (logits, target), value in zip(calls, _ghm_reference(calls, bins, momentum)):
        torch.testing.assert_close(loss(logits, target, bins=bins, momentum=momentum), value, rtol=1e-6, atol=1e-9)


def test_ghm_eval_uses_the_state_and_gradient_has_detached_weights():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 3, generator=g, dtype=torch.float64) * 2
    target = (torch.rand(40, 3, generator=g) < 0.3).double()
    loss = GHMCLoss()
    loss(logits, target)
    state = loss.state_dict()["acc"].clone()
    loss.eval()
    x = logits.clone().requires_grad_(True)
    value = loss(x, target)
    assert torch.equal(loss.state_dict()["acc"], state)
    (grad,) = torch.autograd.grad(value.sum(), x)
    weight = (value / F.binary_cross_entropy_with_logits(logits, target, reduction="none")).detach()
    torch.testing.assert_close(grad, weight * (logits.sigmoid() - target))  # d BCE / dx = sigmoid(x) - t
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (x,))  # eval: weights fixed by the state


def test_ghm_interface_and_errors():
    logits, target = torch.randn(6, 4), (torch.rand(6, 4) < 0.5).float()
    assert GHMCLoss()(logits, target).shape == (6, 4)
    torch.testing.assert_close(GHMCLoss()(logits, target, reduction="sum"), GHMCLoss()(logits, target).sum())
    empty = GHMCLoss()
    assert empty(logits[:0], target[:0], reduction="mean").item() == 0.0 and empty.state_dict() == {}
    with pytest.raises(ValueError, match="bins"):
        GHMCLoss()(logits, target, bins=0)
    with pytest.raises(ValueError, match="momentum"):
        GHMCLoss()(logits, target, momentum=1.0)
    used = GHMCLoss()
    used(logits, target)
    with pytest.raises(ValueError, match="10 bins, the call asks for 30"):
        used(logits, target, bins=30)


# ------------------------------------------------------------------------------------ specs and the criterion


def test_every_spec_gets_a_fresh_instance():
    a, b = parse_box_loss({"name": "wiou", "momentum": 0.5}), parse_box_loss("wiou")
    assert isinstance(a.fn, WIoULoss) and isinstance(b.fn, WIoULoss) and a.fn is not b.fn
    pred, target = hand_pair()
    a(pred, target)
    assert a.fn.state_dict()["mean"].item() == pytest.approx(5 / 6) and b.fn.state_dict()["mean"].item() == 1.0
    assert isinstance(parse_cls_loss("ghm").fn, GHMCLoss) and BOX["wiou"] is WIoULoss and CLS["ghm"] is GHMCLoss
    assert a.accepts("momentum") and not a.accepts("pred_log_var")
    assert isinstance(LossSpec("wiou", WIoULoss).fn, WIoULoss)


@pytest.fixture(scope="module")
def model_outputs():
    from detector.models import build_yolov5

    torch.manual_seed(0)
    model = build_yolov5("n", num_classes=NUM_CLASSES)
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(images)


def _criterion():
    return DetectionCriterion(CentreCellAssigner(), YOLOv5BoxCoder(), {"name": "wiou", "momentum": 0.5},
                              {"name": "ghm", "momentum": 0.5}, "bce", {"box": 0.05, "obj": 1.0, "cls": 0.5},
                              num_classes=NUM_CLASSES, image_size=IMAGE_SIZE)


def _targets(step: int) -> torch.Tensor:
    shift = 3.0 * step
    return torch.tensor([[0, 3, 4.0 + shift, 6.0, 40.0, 50.0 - shift], [1, 17, 10.0, 20.0 + shift, 60.0, 62.0]])


def test_criterion_state_resumes_exactly(model_outputs):
    straight = _criterion()
    for step in range(3):
        last = straight(model_outputs, _targets(step))
    stopped = _criterion()
    for step in range(2):
        stopped(model_outputs, _targets(step))
    state = stopped.state_dict()
    assert set(state) == {"box", "cls"} and set(state["box"]) == {"mean"} and set(state["cls"]) == {"acc"}
    resumed = _criterion()
    resumed.load_state_dict(state)
    again = resumed(model_outputs, _targets(2))
    for key in ("lbox", "lcls", "loss"):
        assert torch.equal(again[key], last[key]), key
    fresh = _criterion()(model_outputs, _targets(2))
    assert not torch.equal(fresh["lbox"], last["lbox"]) and not torch.equal(fresh["lcls"], last["lcls"])
    with pytest.raises(ValueError, match="stateful losses are"):
        resumed.load_state_dict({"box": state["box"]})


def test_criterion_eval_freezes_the_state(model_outputs):
    crit = _criterion()
    crit(model_outputs, _targets(0))
    before = crit.state_dict()
    crit.eval()(model_outputs, _targets(1))
    after = crit.state_dict()
    assert all(torch.equal(before[t][k], after[t][k]) for t in before for k in before[t])
    crit.train()(model_outputs, _targets(1))
    assert not torch.equal(crit.state_dict()["box"]["mean"], before["box"]["mean"])
    plain = DetectionCriterion(CentreCellAssigner(), YOLOv5BoxCoder(), "ciou", "bce", "bce",
                               {"box": 0.05, "obj": 1.0, "cls": 0.5}, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE)
    assert plain.state_dict() == {} and plain.stateful_losses() == {}
    plain.load_state_dict({})

"""Tests of detector/losses/box.py.

References: torch.nn.functional (mse, l1, smooth_l1, huber, gaussian_nll) and torchvision.ops (IoU losses)
where they exist; otherwise values worked out by hand below, and the defining gradient of the
gradient-designed losses (Balanced L1, Focal-L1) checked against autograd and integrated numerically.

Hand cases (one box pair per case):

* yolov1: pred (cx, cy, w, h) = (1, 1, 4, 9), target (0, 0, 1, 4). Centre term 1 + 1 = 2; size term
  (sqrt 4 - sqrt 1)^2 + (sqrt 9 - sqrt 4)^2 = 1 + 1 = 2; times lambda_coord 5 -> 20.
* yolov3_mse: target (2, 2, 4, 4) in an 8-wide image: scale 2 - (4/8)(4/8) = 1.75. Pred (3, 2, 4, 6): squared
  errors 1 + 0 + 0 + 4 = 5 -> 8.75.
* rmse: error (3, 4, 0, 0) -> sqrt(9 + 16) = 5.
* kl: error 2 on every coordinate (> 1), alpha = ln sigma^2 = 0: per coordinate e^0 (2 - 0.5) + 0 = 1.5, sum 6.
  d/dalpha = -e^-alpha * 1.5 + 1/2 = -1 per coordinate.
  Error 0.5 on every coordinate, alpha = ln 2: per coordinate 0.5 / 2 * 0.25 + ln(2) / 2.
* balanced_l1 (alpha 0.5, gamma 1.5, beta 1): b = e^3 - 1. At |x| = 1 both branches give
  gamma + gamma / b - alpha = 1 + 1.5 / (e^3 - 1).
* focal_l1 (beta = 1/e, alpha = e beta = 1): gradient -x ln(x / e) = x (1 - ln x), 1 at x = 1 and beyond;
  L(1) = -(2 ln(1/e) - 1) / 4 = 3/4, L(2) = 1 * 2 + C with C = (2 ln(1/e) + 1) / 4 = -1/4 -> 7/4.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tvops

from detector.losses.box import BOX
from detector.ops.boxes import aligned_eiou, aligned_iou, cxcywh_to_xyxy

CONTRACT_NAMES = {
    "mse", "rmse", "l1", "smooth_l1", "huber", "balanced_l1", "focal_l1", "yolov1", "yolov3_mse", "kl",
    "iou", "log_iou", "giou", "diou", "ciou", "eiou", "focal_eiou",
}
IOU_FAMILY = ["iou", "log_iou", "giou", "diou", "ciou", "eiou", "focal_eiou"]
# Later IoU-family losses (iou_variants.py, iou_wrappers.py) and the stateful wiou: the same checks, with their own
# hand cases, in test_iou_variant_losses.py and test_stateful_losses.py.
LATER_NAMES = {"ciou_mmdet", "siou", "mpdiou", "shape_iou", "nwd", "inner", "alpha_iou", "wiou",
               "centernet_l1"}  # centernet_l1: tests/losses/test_heatmap_loss.py


def torchvision_aligned_iou(a: torch.Tensor, b: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Row-by-row IoU from torchvision's pairwise box_iou: the diagonals of [block, block] tiles -> Tensor[N]."""
    return torch.cat([tvops.box_iou(a[i:i + block], b[i:i + block]).diagonal() for i in range(0, a.shape[0], block)])


def random_boxes(n: int, generator: torch.Generator, dtype=torch.float32, spread: float = 20.0) -> torch.Tensor:
    """n random valid xyxy boxes (Tensor[n, 4]) with sides in [0.5, spread / 2 + 0.5]."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * spread
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * spread / 2 + 0.5
    return torch.cat((xy, xy + wh), dim=1)


def overlapping_pairs(n: int, seed: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs of valid xyxy boxes, most of them overlapping (the second is a moved, resized first)."""
    g = torch.Generator().manual_seed(seed)
    target = random_boxes(n, g, dtype)
    move = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * 4
    grow = torch.rand(n, 2, generator=g, dtype=dtype) * 2
    pred = torch.cat((target[:, :2] + move, target[:, 2:] + move + grow), dim=1)
    return pred, target


def extra_inputs(name: str, n: int, dtype, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The extra keyword inputs a loss names (pred_log_var, image_size)."""
    params = inspect.signature(BOX[name]).parameters
    extra = {}
    if "pred_log_var" in params:
        extra["pred_log_var"] = torch.randn(n, 4, generator=generator, dtype=dtype)
    if "image_size" in params:
        extra["image_size"] = torch.full((n,), 80.0, dtype=dtype)
    return extra


# --------------------------------------------------------------------------------------------------- interface


def test_box_table_has_exactly_the_contract_names():
    assert set(BOX) == CONTRACT_NAMES | LATER_NAMES


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES))
def test_signature_and_reductions(name):
    fn = BOX[name]
    params = inspect.signature(fn).parameters
    assert params["reduction"].kind is inspect.Parameter.KEYWORD_ONLY and params["reduction"].default == "none"
    assert params["eps"].kind is inspect.Parameter.KEYWORD_ONLY
    pred, target = overlapping_pairs(9, seed=0)
    extra = extra_inputs(name, 9, torch.float32, torch.Generator().manual_seed(0))
    per_box = fn(pred, target, **extra)
    assert per_box.shape == (9,)
    torch.testing.assert_close(fn(pred, target, reduction="sum", **extra), per_box.sum())
    torch.testing.assert_close(fn(pred, target, reduction="mean", **extra), per_box.mean())
    empty_extra = {k: v[:0] for k, v in extra.items()}
    empty_mean = fn(pred[:0], target[:0], reduction="mean", **empty_extra)
    assert empty_mean.shape == () and empty_mean.item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        fn(pred, target, reduction="average", **extra)


def test_perfect_prediction_is_the_minimum_of_the_distance_losses():
    pred, target = overlapping_pairs(50, seed=1)
    for name in ["mse", "l1", "smooth_l1", "huber", "balanced_l1", "focal_l1", "yolov1", "iou", "giou", "diou",
                 "ciou", "eiou", "focal_eiou", "log_iou"]:
        at_target = BOX[name](target, target)
        assert (at_target <= BOX[name](pred, target) + 1e-6).all(), name
        assert at_target.abs().max().item() < 1e-3, name


# ------------------------------------------------------------------------------------------- coordinate losses


def test_coordinate_losses_match_torch_functional():
    pred, target = overlapping_pairs(500, seed=2, dtype=torch.float64)
    torch.testing.assert_close(BOX["mse"](pred, target), F.mse_loss(pred, target, reduction="none").sum(-1))
    torch.testing.assert_close(BOX["l1"](pred, target), F.l1_loss(pred, target, reduction="none").sum(-1))
    for beta in (0.0, 0.11, 1.0, 2.5):
        expected = F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(-1)
        torch.testing.assert_close(BOX["smooth_l1"](pred, target, beta=beta), expected)
    for delta in (0.3, 1.0, 4.0):
        expected = F.huber_loss(pred, target, reduction="none", delta=delta).sum(-1)
        torch.testing.assert_close(BOX["huber"](pred, target, delta=delta), expected)
    expected = (F.mse_loss(pred, target, reduction="none").sum(-1) + 1e-7).sqrt()
    torch.testing.assert_close(BOX["rmse"](pred, target), expected)


def test_rmse_hand_case():
    pred = torch.tensor([[3.0, 4.0, 10.0, 10.0]])
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert BOX["rmse"](pred, target).item() == pytest.approx(5.0, abs=1e-5)


def test_yolov1_hand_case():
    pred = cxcywh_to_xyxy(torch.tensor([[1.0, 1.0, 4.0, 9.0]]))
    target = cxcywh_to_xyxy(torch.tensor([[0.0, 0.0, 1.0, 4.0]]))
    assert BOX["yolov1"](pred, target).item() == pytest.approx(20.0, abs=1e-4)
    assert BOX["yolov1"](pred, target, lambda_coord=1.0).item() == pytest.approx(4.0, abs=1e-4)


def test_yolov3_mse_hand_case_and_scalar_image_size():
    pred = cxcywh_to_xyxy(torch.tensor([[3.0, 2.0, 4.0, 6.0]]))
    target = cxcywh_to_xyxy(torch.tensor([[2.0, 2.0, 4.0, 4.0]]))
    assert BOX["yolov3_mse"](pred, target, image_size=torch.tensor([8.0])).item() == pytest.approx(8.75)
    assert BOX["yolov3_mse"](pred, target, image_size=8.0).item() == pytest.approx(8.75)


def test_kl_hand_cases_and_alpha_gradient():
    target = torch.zeros(1, 4, dtype=torch.float64)
    pred = torch.full((1, 4), 2.0, dtype=torch.float64)
    log_var = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    value = BOX["kl"](pred, target, pred_log_var=log_var)
    assert value.item() == pytest.approx(6.0)
    (grad,) = torch.autograd.grad(value.sum(), log_var)
    torch.testing.assert_close(grad, torch.full((1, 4), -1.0, dtype=torch.float64))

    pred = torch.full((1, 4), 0.5, dtype=torch.float64)
    log_var = torch.full((1, 4), math.log(2.0), dtype=torch.float64)
    expected = 4 * (0.5 / 2 * 0.25 + math.log(2.0) / 2)
    assert BOX["kl"](pred, target, pred_log_var=log_var).item() == pytest.approx(expected)


def test_kl_matches_smooth_l1_and_gaussian_nll():
    """KL = e^-alpha * smooth_l1(beta=1) + alpha/2; below 1 it is the Gaussian negative log-likelihood."""
    g = torch.Generator().manual_seed(3)
    pred, target = overlapping_pairs(400, seed=3, dtype=torch.float64)
    log_var = torch.randn(400, 4, generator=g, dtype=torch.float64)
    expected = (torch.exp(-log_var) * F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
                + log_var / 2).sum(-1)
    torch.testing.assert_close(BOX["kl"](pred, target, pred_log_var=log_var), expected)

    near = target + (torch.rand(400, 4, generator=g, dtype=torch.float64) - 0.5) * 1.8  # |error| < 0.9
    nll = F.gaussian_nll_loss(near, target, log_var.exp(), full=False, eps=1e-12, reduction="none").sum(-1)
    torch.testing.assert_close(BOX["kl"](near, target, pred_log_var=log_var), nll)


def _value_and_grad(fn, errors: torch.Tensor, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate loss and dL/dx at absolute errors x (Tensor[K], float64), via 1-coordinate boxes."""
    pred = torch.zeros(errors.numel(), 4, dtype=torch.float64)
    pred[:, 0] = errors
    pred.requires_grad_(True)
    target = torch.zeros(errors.numel(), 4, dtype=torch.float64)
    value = fn(pred, target, **params)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    return value.detach(), grad[:, 0]


def _integral_from_zero(grad_fn, x: torch.Tensor, steps: int = 200001) -> torch.Tensor:
    """Trapezoid integral of grad_fn from 0 to each x (Tensor[K] float64) -> Tensor[K]."""
    out = []
    for upper in x.tolist():
        grid = torch.linspace(0.0, upper, steps, dtype=torch.float64)
        out.append(torch.trapezoid(grad_fn(grid), grid))
    return torch.stack(out)


def test_balanced_l1_gradient_value_and_continuity():
    """Libra R-CNN defines dL/dx = alpha ln(b x / beta + 1) below beta and gamma above, b = e^(gamma/alpha) - 1."""
    alpha, gamma, beta = 0.5, 1.5, 1.0
    b = math.e ** (gamma / alpha) - 1
    x = torch.tensor([0.1, 0.4, 0.9, 1.5, 3.0], dtype=torch.float64)

    def paper_grad(t):
        return torch.where(t < beta, alpha * torch.log(b * t / beta + 1), torch.full_like(t, gamma))

    value, grad = _value_and_grad(BOX["balanced_l1"], x)
    torch.testing.assert_close(grad, paper_grad(x))
    torch.testing.assert_close(value, _integral_from_zero(paper_grad, x), atol=1e-6, rtol=0)
    at_beta, _ = _value_and_grad(BOX["balanced_l1"], torch.tensor([1.0 - 1e-9, 1.0], dtype=torch.float64))
    expected = gamma + gamma / b - alpha
    torch.testing.assert_close(at_beta, torch.tensor([expected, expected], dtype=torch.float64))
    # Continuous for any beta, too.
    left, _ = _value_and_grad(BOX["balanced_l1"], torch.tensor([2.0 - 1e-9], dtype=torch.float64), beta=2.0)
    right, _ = _value_and_grad(BOX["balanced_l1"], torch.tensor([2.0], dtype=torch.float64), beta=2.0)
    torch.testing.assert_close(left, right, atol=1e-7, rtol=0)


@pytest.mark.parametrize("beta", [1 / math.e, 0.5, 0.8, 1.0])
def test_focal_l1_gradient_continuity_and_integral(beta):
    """EIoU paper: g(x) = -alpha x ln(beta x) for x <= 1, -alpha ln(beta) beyond; alpha = e beta (peak 1)."""
    alpha = math.e * beta

    def paper_grad(t):
        inner = -alpha * t * torch.log(beta * t.clamp(min=1e-300))
        return torch.where(t <= 1, inner, torch.full_like(t, -alpha * math.log(beta)))

    x = torch.tensor([0.05, 0.3, 0.7, 0.99, 1.2, 2.0, 5.0], dtype=torch.float64)
    value, grad = _value_and_grad(BOX["focal_l1"], x, beta=beta)
    torch.testing.assert_close(grad, paper_grad(x))
    # The value is the integral of the gradient from 0: this pins the continuity constant C.
    torch.testing.assert_close(value, _integral_from_zero(paper_grad, x), atol=1e-7, rtol=0)
    both_sides, _ = _value_and_grad(BOX["focal_l1"], torch.tensor([1.0, 1.0 + 1e-12], dtype=torch.float64), beta=beta)
    torch.testing.assert_close(both_sides[0], both_sides[1], atol=1e-9, rtol=0)
    # Peak gradient 1 at x = 1 / (e beta).
    _, peak = _value_and_grad(BOX["focal_l1"], torch.tensor([1 / (math.e * beta)], dtype=torch.float64), beta=beta)
    assert peak.item() == pytest.approx(1.0)
    zero, zero_grad = _value_and_grad(BOX["focal_l1"], torch.zeros(1, dtype=torch.float64), beta=beta)
    assert zero.item() == 0.0 and zero_grad.item() == 0.0


def test_focal_l1_hand_values():
    value, _ = _value_and_grad(BOX["focal_l1"], torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(value, torch.tensor([0.75, 1.75], dtype=torch.float64))


@pytest.mark.parametrize("name, params", [("smooth_l1", {"beta": -1.0}), ("huber", {"delta": 0.0}),
                                          ("balanced_l1", {"alpha": 0.0}), ("focal_l1", {"beta": 1.5}),
                                          ("focal_eiou", {"gamma": -1.0})])
def test_invalid_parameters_raise(name, params):
    pred, target = overlapping_pairs(2, seed=4)
    with pytest.raises(ValueError):
        BOX[name](pred, target, **params)


# ---------------------------------------------------------------------------------------------------- IoU losses


def test_iou_losses_match_torchvision_on_random_pairs():
    pred, target = overlapping_pairs(5000, seed=5)
    g = torch.Generator().manual_seed(5)
    pred = torch.cat((pred, random_boxes(3000, g)))  # plus pairs that mostly do not overlap
    target = torch.cat((target, random_boxes(3000, g)))
    iou = torchvision_aligned_iou(pred, target)
    torch.testing.assert_close(BOX["iou"](pred, target), 1 - iou, atol=1e-5, rtol=0)
    # -ln amplifies float32 rounding of tiny IoUs (the intersection is a difference of coordinates): use float64.
    p64, t64 = pred.double(), target.double()
    expected = -torchvision_aligned_iou(p64, t64).clamp(min=1e-7).log()
    torch.testing.assert_close(BOX["log_iou"](p64, t64), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(BOX["giou"](pred, target), tvops.generalized_box_iou_loss(pred, target),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(BOX["diou"](pred, target), tvops.distance_box_iou_loss(pred, target),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(BOX["ciou"](pred, target), tvops.complete_box_iou_loss(pred, target),
                               atol=1e-5, rtol=0)


def test_eiou_and_focal_eiou_values():
    """EIoU = DIoU loss + width and height terms; Focal-EIoU = IoU^gamma * EIoU."""
    pred, target = overlapping_pairs(3000, seed=6, dtype=torch.float64)
    cw = torch.maximum(pred[:, 2], target[:, 2]) - torch.minimum(pred[:, 0], target[:, 0])
    ch = torch.maximum(pred[:, 3], target[:, 3]) - torch.minimum(pred[:, 1], target[:, 1])
    dw = (pred[:, 2] - pred[:, 0]) - (target[:, 2] - target[:, 0])
    dh = (pred[:, 3] - pred[:, 1]) - (target[:, 3] - target[:, 1])
    eiou = tvops.distance_box_iou_loss(pred, target) + dw**2 / cw**2 + dh**2 / ch**2
    torch.testing.assert_close(BOX["eiou"](pred, target, eps=0.0), eiou, atol=1e-6, rtol=0)
    iou = torchvision_aligned_iou(pred, target)
    for gamma in (0.5, 1.0, 2.0):
        torch.testing.assert_close(BOX["focal_eiou"](pred, target, eps=0.0, gamma=gamma), iou**gamma * eiou,
                                   atol=1e-6, rtol=0)


def test_focal_eiou_weight_is_detached():
    """The gradient of IoU^gamma * EIoU is IoU^gamma times EIoU's gradient: no gradient through the weight."""
    pred, target = overlapping_pairs(200, seed=7, dtype=torch.float64)
    p = pred.clone().requires_grad_(True)
    (grad_focal,) = torch.autograd.grad(BOX["focal_eiou"](p, target, gamma=0.5).sum(), p)
    weight = aligned_iou(pred, target).pow(0.5)
    p = pred.clone().requires_grad_(True)
    (grad_eiou,) = torch.autograd.grad((weight * BOX["eiou"](p, target)).sum(), p)
    torch.testing.assert_close(grad_focal, grad_eiou)


# ---------------------------------------------------------------------------------------------- gradient checks


def _frozen(name: str, pred: torch.Tensor, target: torch.Tensor):
    """The loss with its no-gradient factor held at its value at ``pred`` (ciou's alpha, focal_eiou's weight).

    Adds ``(factor(p) - factor(pred)) * term(p)`` computed without gradient, so the value is the frozen-factor
    function while the autograd gradient stays the loss's own; gradcheck then checks that gradient.
    """
    fn = BOX[name]
    if name == "ciou":
        def correction(p):
            wp, hp = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
            wt, ht = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
            v = 4 / math.pi**2 * (torch.atan(wt / ht) - torch.atan(wp / hp)) ** 2
            iou = torchvision_aligned_iou(p, target)
            return v / (1 - iou + v), v
    elif name == "focal_eiou":
        def correction(p):
            return aligned_iou(p, target).pow(0.5), 1 - aligned_eiou(p, target)
    else:
        return lambda p, *extra: fn(p, target, **dict(zip(extra_names(name), extra)))
    with torch.no_grad():
        factor0, _ = correction(pred)

    def frozen(p):
        with torch.no_grad():
            factor, term = correction(p)
        return fn(p, target) - (factor - factor0) * term  # ciou: + alpha v in the loss; focal_eiou: weight * eiou

    return frozen


def extra_names(name: str) -> list[str]:
    return [k for k in ("pred_log_var", "image_size") if k in inspect.signature(BOX[name]).parameters]


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES))
def test_gradcheck_float64(name):
    pred, target = overlapping_pairs(5, seed=8, dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    pred = pred.clone().requires_grad_(True)
    inputs = [pred]
    for key, tensor in extra_inputs(name, 5, torch.float64, g).items():
        inputs.append(tensor.clone().requires_grad_(key == "pred_log_var"))
    fn = _frozen(name, pred.detach(), target)
    assert torch.autograd.gradcheck(fn, tuple(inputs))


DEGENERATE = {
    "identical": ([10.0, 20, 50, 80], [10.0, 20, 50, 80]),
    "disjoint": ([0.0, 0, 10, 10], [20.0, 30, 40, 45]),
    "touching": ([0.0, 0, 10, 10], [10.0, 0, 20, 10]),
    "zero_width": ([5.0, 0, 5, 10], [0.0, 0, 10, 10]),
    "zero_width_both": ([5.0, 0, 5, 10], [5.0, 2, 5, 12]),
    "points": ([3.0, 3, 3, 3], [3.0, 3, 3, 3]),
    "zero_height": ([0.0, 4, 10, 4], [2.0, 0, 8, 10]),
    "far_apart": ([0.0, 0, 1, 1], [1e5, 1e5, 1e5 + 16, 1e5 + 16]),
    "large_coordinates": ([1e6, 1e6, 1e6 + 50, 1e6 + 80], [1e6 + 10, 1e6, 1e6 + 70, 1e6 + 60]),
}


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES))
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_pairs_finite_value_and_gradient(name, case):
    a, b = DEGENERATE[case]
    pred = torch.tensor([a], requires_grad=True)
    target = torch.tensor([b])
    extra = extra_inputs(name, 1, torch.float32, torch.Generator().manual_seed(9))
    value = BOX[name](pred, target, **extra)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(value).all(), (name, case, value)
    assert torch.isfinite(grad).all(), (name, case, grad)


@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_losses_finite_at_huge_coordinates(name):
    """1e30 in float32: a naive implementation squares to inf; ours works in the pair's frame."""
    pred = torch.tensor([[1e30, 1e30, 3e30, 2e30]], requires_grad=True)
    target = torch.tensor([[1.5e30, 1.2e30, 4e30, 5e30]])
    value = BOX[name](pred, target)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    small = BOX[name](pred.detach() / 1e30, target / 1e30)
    torch.testing.assert_close(value, small, atol=1e-5, rtol=1e-5)

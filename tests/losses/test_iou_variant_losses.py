"""Tests of detector/losses/iou_variants.py and iou_wrappers.py (the stateless later IoU-family names of ``BOX``).

References: torchvision.ops (IoU, DIoU and CIoU losses) where the loss is built from them (``ciou_mmdet``,
``alpha_iou``, ``inner``), and each paper's formula written out literally below (``siou`` with its arcsin angle,
``shape_iou``, ``mpdiou``, ``nwd``), on random pairs in float64. Hand cases (one pair each):

* siou, target (0, 0, 2, 2). Pred (1, 1, 3, 3): centres offset (1, 1), 45 degrees, so Lambda = 1 and gamma = 1;
  IoU 1/7; enclosing box 3 x 3, rho_x = rho_y = 1/9; Delta = 2 (1 - e^(-1/9)); same shape, Omega = 0:
  L = 6/7 + (1 - e^(-1/9)) = 0.9622. Without the angle term (gamma 2) it would be 6/7 + (1 - e^(-2/9)) = 1.0574.
  Pred (1, 0, 3, 2): along x, Lambda = 0, gamma = 2; IoU 1/3; enclosing 3 x 2, rho_x = 1/9, rho_y = 0;
  L = 2/3 + (1 - e^(-2/9)) / 2. Pred (0, 0, 4, 2): centre offset (1, 0) so gamma = 2, enclosing 4 x 2,
  rho_x = 1/16, Delta = 1 - e^(-1/8); omega_w = |4 - 2| / 4 = 1/2, omega_h = 0, Omega = (1 - e^(-1/2))^theta;
  IoU 1/2: L = 1/2 + (1 - e^(-1/8) + (1 - e^(-1/2))^theta) / 2.
* mpdiou, target (0, 0, 4, 4), image side 8 (W^2 + H^2 = 128). Pred A (1, 0, 5, 4): IoU 12/20 = 0.6,
  d_1^2 = d_2^2 = 1, L = 0.4 + 2/128 = 0.415625. Pred B (0, 0, 4, 2.4): IoU 9.6/16 = 0.6 as well, d_1 = 0,
  d_2^2 = 1.6^2 = 2.56, L = 0.4 + 2.56/128 = 0.42. Same IoU, different corners, different losses.
* shape_iou, wide target (0, 0, 4, 2), scale 1: ww = 2*4/6 = 4/3, hh = 2*2/6 = 2/3. Pred shifted by 1 along x,
  (1, 0, 5, 2): IoU 6/10, c^2 = 5^2 + 2^2 = 29, D = hh * 1 / 29, L = 0.4 + 2/87. Shifted by 1 along y,
  (0, 1, 4, 3): IoU 4/12, c^2 = 4^2 + 3^2 = 25, D = ww / 25, L = 2/3 + 4/75: the short side's offset weighs 2x.
  Pred (0, 0, 2, 2): IoU 1/2, centre offset 1 along x, c^2 = 20, D = (2/3) / 20 = 1/30,
  omega_w = hh * 2/4 = 1/3: L = 1/2 + 1/30 + (1 - e^(-1/3))^4 / 2. With scale 0 (ww = hh = 1): 0.4 + 1/29, 2/3 + 1/25.
* nwd, C = 1, target (0, 0, 2, 2). Pred (1, 0, 3, 2): W_2 = 1, L = 1 - 1/e. Pred (0, 0, 4, 2): centre offset 1 and
  half-width offset 1, W_2 = sqrt 2, L = 1 - e^(-sqrt 2). Disjoint pred (3, 0, 5, 2), W_2 = 3: L = 1 - e^-3, with a
  gradient pulling the box back (IoU's is zero there).
* ciou_mmdet, target (0, 0, 4, 4). Pred (0, 0, 4, 3): IoU 0.75 > 0.5, rho^2 = 0.25, c^2 = 32,
  v = 4/pi^2 (atan 1 - atan(4/3))^2, a = v / (0.25 + v): equal to ciou, 0.25 + 0.25/32 + a v. Pred (0, 0, 4, 1.5):
  IoU 0.375 <= 0.5, rho^2 = 1.25^2, a = 0: 0.625 + 1.5625/32, the DIoU loss, below ciou's by its a v.
* inner, target (0, 0, 4, 4), pred (1, 0, 5, 4), IoU 0.6. Ratio 0.5: auxiliary boxes (1, 1, 3, 3) and (2, 1, 4, 3),
  inner IoU 2/6 = 1/3; base iou: (1 - 0.6) + 0.6 - 1/3 = 2/3; base ciou (same aspect, v = 0; rho^2 = 1, enclosing
  5 x 4, c^2 = 41): 0.4 + 1/41 + 0.6 - 1/3. Ratio 1.5: (-1, -1, 5, 5) and (0, -1, 6, 5), inner IoU 30/42 = 5/7,
  base iou: 2/7.
* alpha_iou, alpha 3, target (0, 0, 4, 4), pred (0, 0, 4, 3): IoU 0.75. iou: 1 - 0.75^3 = 37/64; giou: the enclosing
  box is the union, same 37/64; diou: 37/64 + (0.25/32)^3; ciou: that + (a v)^3 with a, v as for ciou_mmdet.
"""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvops

from detector.losses.box import BOX
from detector.losses.iou_wrappers import ALPHA_BASES, INNER_BASES
from test_box_losses import DEGENERATE, overlapping_pairs, random_boxes, torchvision_aligned_iou  # noqa: E402

NAMES = ["ciou_mmdet", "siou", "mpdiou", "shape_iou", "nwd", "inner", "alpha_iou"]
IMAGE = 80.0  # image side passed to mpdiou, in the boxes' unit


def call(name, pred, target, **kwargs):
    """BOX[name] with the image size mpdiou needs."""
    if name == "mpdiou":
        kwargs.setdefault("image_size", torch.full((pred.shape[0],), IMAGE, dtype=pred.dtype))
    return BOX[name](pred, target, **kwargs)


def boxes(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def mixed_pairs(n: int, seed: int, dtype=torch.float64):
    """Mostly overlapping pairs, then as many random (mostly disjoint) ones: Tensor[2n, 4] x2."""
    pred, target = overlapping_pairs(n, seed, dtype)
    g = torch.Generator().manual_seed(seed + 100)
    return torch.cat((pred, random_boxes(n, g, dtype))), torch.cat((target, random_boxes(n, g, dtype)))


def parts(b):
    """xyxy Tensor[N, 4] -> cx, cy, w, h (Tensor[N] each)."""
    return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]


def enclosing_wh(p, t):
    return (torch.maximum(p[:, 2], t[:, 2]) - torch.minimum(p[:, 0], t[:, 0]),
            torch.maximum(p[:, 3], t[:, 3]) - torch.minimum(p[:, 1], t[:, 1]))


# ---------------------------------------------------------------------------------------------- hand cases


def test_siou_hand_cases_and_the_angle_at_45_degrees():
    target = boxes([0, 0, 2, 2])
    at_45 = BOX["siou"](boxes([1, 1, 3, 3]), target).item()
    assert at_45 == pytest.approx(6 / 7 + (1 - math.exp(-1 / 9)), abs=1e-6)
    assert at_45 < 6 / 7 + (1 - math.exp(-2 / 9)) - 0.09  # the angle cost lowers the distance cost's rate
    along_x = BOX["siou"](boxes([1, 0, 3, 2]), target).item()
    assert along_x == pytest.approx(2 / 3 + (1 - math.exp(-2 / 9)) / 2, abs=1e-6)
    wider = boxes([0, 0, 4, 2])
    for theta in (4.0, 2.0):
        expected = 0.5 + (1 - math.exp(-1 / 8) + (1 - math.exp(-0.5)) ** theta) / 2
        assert BOX["siou"](wider, target, theta=theta).item() == pytest.approx(expected, abs=1e-6)


def test_mpdiou_equal_iou_different_corners():
    target = boxes([0, 0, 4, 4], [0, 0, 4, 4])
    pred = boxes([1, 0, 5, 4], [0, 0, 4, 2.4])
    iou_loss = BOX["iou"](pred, target)
    torch.testing.assert_close(iou_loss, torch.tensor([0.4, 0.4], dtype=torch.float64))  # equal IoU 0.6
    loss = BOX["mpdiou"](pred, target, image_size=8.0)
    torch.testing.assert_close(loss, torch.tensor([0.415625, 0.42], dtype=torch.float64))
    torch.testing.assert_close(BOX["mpdiou"](pred, target, image_size=torch.tensor([8.0, 8.0])), loss)


def test_shape_iou_hand_cases():
    target = boxes([0, 0, 4, 2], [0, 0, 4, 2], [0, 0, 4, 2])
    pred = boxes([1, 0, 5, 2], [0, 1, 4, 3], [0, 0, 2, 2])
    expected = [0.4 + 2 / 87, 2 / 3 + 4 / 75, 0.5 + 1 / 30 + (1 - math.exp(-1 / 3)) ** 4 / 2]
    torch.testing.assert_close(BOX["shape_iou"](pred, target, scale=1.0),
                               torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    scale0 = BOX["shape_iou"](pred[:2], target[:2])
    torch.testing.assert_close(scale0, torch.tensor([0.4 + 1 / 29, 2 / 3 + 1 / 25], dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_nwd_hand_cases_and_gradient_for_disjoint_boxes():
    target = boxes([0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2])
    pred = boxes([1, 0, 3, 2], [0, 0, 4, 2], [3, 0, 5, 2]).requires_grad_(True)
    loss = BOX["nwd"](pred, target, constant=1.0)
    expected = [1 - math.exp(-1), 1 - math.exp(-math.sqrt(2)), 1 - math.exp(-3)]
    torch.testing.assert_close(loss.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-9, rtol=0)
    (grad,) = torch.autograd.grad(loss[2], pred)
    assert grad[2, 0] > 0 and grad[2, 2] > 0  # moving the disjoint box left lowers the loss
    (iou_grad,) = torch.autograd.grad(BOX["iou"](pred, target)[2], pred)
    assert iou_grad.abs().sum() == 0
    assert BOX["nwd"](pred[:1].detach(), target[:1]).item() == pytest.approx(1 - math.exp(-1 / 1.6), abs=1e-9)


def test_ciou_mmdet_against_ciou_below_and_above_iou_half():
    target = boxes([0, 0, 4, 4], [0, 0, 4, 4])
    pred = boxes([0, 0, 4, 3], [0, 0, 4, 1.5])
    v_hi = 4 / math.pi**2 * (math.atan(1) - math.atan(4 / 3)) ** 2
    v_lo = 4 / math.pi**2 * (math.atan(1) - math.atan(4 / 1.5)) ** 2
    a_hi, a_lo = v_hi / (0.25 + v_hi), v_lo / (0.625 + v_lo)
    ciou = BOX["ciou"](pred, target)
    torch.testing.assert_close(ciou, torch.tensor([0.25 + 0.25 / 32 + a_hi * v_hi, 0.625 + 1.5625 / 32 + a_lo * v_lo],
                                                  dtype=torch.float64), atol=1e-6, rtol=0)
    mmdet = BOX["ciou_mmdet"](pred, target)
    torch.testing.assert_close(mmdet, torch.tensor([0.25 + 0.25 / 32 + a_hi * v_hi, 0.625 + 1.5625 / 32],
                                                   dtype=torch.float64), atol=1e-6, rtol=0)
    assert mmdet[1] < ciou[1] - 0.007  # by a v = 0.0078


def test_inner_hand_cases():
    target, pred = boxes([0, 0, 4, 4]), boxes([1, 0, 5, 4])
    assert BOX["inner"](pred, target, ratio=0.5, base="iou").item() == pytest.approx(2 / 3, abs=1e-6)
    assert BOX["inner"](pred, target, ratio=1.5, base="iou").item() == pytest.approx(2 / 7, abs=1e-6)
    expected = 0.4 + 1 / 41 + 0.6 - 1 / 3
    assert BOX["inner"](pred, target, ratio=0.5, base="ciou").item() == pytest.approx(expected, abs=1e-6)
    assert BOX["inner"](pred, target, ratio=0.5).item() == pytest.approx(expected, abs=1e-6)  # default base ciou


def test_alpha_iou_hand_cases():
    target, pred = boxes([0, 0, 4, 4]), boxes([0, 0, 4, 3])
    v = 4 / math.pi**2 * (math.atan(1) - math.atan(4 / 3)) ** 2
    a = v / (0.25 + v)
    expected = {"iou": 37 / 64, "giou": 37 / 64, "diou": 37 / 64 + (0.25 / 32) ** 3,
                "ciou": 37 / 64 + (0.25 / 32) ** 3 + (a * v) ** 3}
    for base, value in expected.items():
        assert BOX["alpha_iou"](pred, target, base=base).item() == pytest.approx(value, abs=1e-6), base


# ------------------------------------------------------------------------------ formulas on random pairs


def test_ratio_one_and_alpha_one_give_the_base():
    pred, target = mixed_pairs(500, seed=1)
    for base in INNER_BASES:
        torch.testing.assert_close(BOX["inner"](pred, target, ratio=1.0, base=base), BOX[base](pred, target),
                                   atol=1e-12, rtol=0)
    for base in ALPHA_BASES:
        torch.testing.assert_close(BOX["alpha_iou"](pred, target, alpha=1.0, base=base), BOX[base](pred, target),
                                   atol=1e-12, rtol=0)


def test_alpha_iou_matches_torchvision_terms_raised_to_alpha():
    pred, target = mixed_pairs(500, seed=2)
    iou = torchvision_aligned_iou(pred, target)
    giou_pen = tvops.generalized_box_iou_loss(pred, target) - (1 - iou)
    diou_pen = tvops.distance_box_iou_loss(pred, target) - (1 - iou)
    ciou_pen = tvops.complete_box_iou_loss(pred, target) - tvops.distance_box_iou_loss(pred, target)
    for alpha in (1.5, 2.0, 3.0):
        expected = {"iou": 1 - iou**alpha, "giou": 1 - iou**alpha + giou_pen.clamp(min=0) ** alpha,
                    "diou": 1 - iou**alpha + diou_pen**alpha}
        expected["ciou"] = expected["diou"] + ciou_pen.clamp(min=0) ** alpha
        for base, value in expected.items():
            torch.testing.assert_close(BOX["alpha_iou"](pred, target, alpha=alpha, base=base, eps=0.0), value,
                                       atol=1e-7, rtol=0, msg=f"{base} alpha {alpha}")


def test_inner_matches_auxiliary_boxes_built_by_hand():
    pred, target = mixed_pairs(500, seed=3)
    for ratio in (0.6, 0.75, 1.3):
        aux = []
        for b in (pred, target):
            cx, cy, w, h = parts(b)
            aux.append(torch.stack((cx - w * ratio / 2, cy - h * ratio / 2, cx + w * ratio / 2, cy + h * ratio / 2), 1))
        inner_iou = torchvision_aligned_iou(*aux)
        expected = tvops.distance_box_iou_loss(pred, target) + torchvision_aligned_iou(pred, target) - inner_iou
        torch.testing.assert_close(BOX["inner"](pred, target, ratio=ratio, base="diou", eps=0.0), expected,
                                   atol=1e-7, rtol=0)


def test_ciou_mmdet_is_torchvision_ciou_above_half_and_diou_below():
    pred, target = mixed_pairs(2000, seed=4)
    iou = torchvision_aligned_iou(pred, target)
    expected = torch.where(iou > 0.5, tvops.complete_box_iou_loss(pred, target),
                           tvops.distance_box_iou_loss(pred, target))
    assert (iou > 0.5).sum() > 100 and (iou <= 0.5).sum() > 100
    torch.testing.assert_close(BOX["ciou_mmdet"](pred, target, eps=0.0), expected, atol=1e-7, rtol=0)


def test_siou_matches_the_paper_formula_with_arcsin():
    pred, target = mixed_pairs(2000, seed=5)
    cx, cy, w, h = parts(pred)
    tx, ty, tw, th = parts(target)
    cw, ch = enclosing_wh(pred, target)
    sigma = ((tx - cx) ** 2 + (ty - cy) ** 2).sqrt()
    angle = 1 - 2 * torch.sin(torch.arcsin((ty - cy).abs() / sigma) - math.pi / 4) ** 2
    gamma = 2 - angle
    distance = 2 - torch.exp(-gamma * ((tx - cx) / cw) ** 2) - torch.exp(-gamma * ((ty - cy) / ch) ** 2)
    omega_w, omega_h = (w - tw).abs() / torch.maximum(w, tw), (h - th).abs() / torch.maximum(h, th)
    for theta in (2.0, 4.0, 6.0):
        shape = (1 - torch.exp(-omega_w)) ** theta + (1 - torch.exp(-omega_h)) ** theta
        expected = 1 - torchvision_aligned_iou(pred, target) + (distance + shape) / 2
        torch.testing.assert_close(BOX["siou"](pred, target, theta=theta, eps=0.0), expected, atol=1e-9, rtol=0)


def test_shape_iou_mpdiou_nwd_match_their_formulas():
    pred, target = mixed_pairs(2000, seed=6)
    iou = torchvision_aligned_iou(pred, target)
    cx, cy, w, h = parts(pred)
    tx, ty, tw, th = parts(target)
    cw, ch = enclosing_wh(pred, target)
    for scale in (0.0, 0.5, 1.0, 2.0):
        ww = 2 * tw**scale / (tw**scale + th**scale)
        hh = 2 * th**scale / (tw**scale + th**scale)
        distance = (hh * (tx - cx) ** 2 + ww * (ty - cy) ** 2) / (cw**2 + ch**2)
        omega_w = hh * (w - tw).abs() / torch.maximum(w, tw)
        omega_h = ww * (h - th).abs() / torch.maximum(h, th)
        shape = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
        torch.testing.assert_close(BOX["shape_iou"](pred, target, scale=scale, eps=0.0),
                                   1 - iou + distance + 0.5 * shape, atol=1e-9, rtol=0)
    d1 = (pred[:, 0] - target[:, 0]) ** 2 + (pred[:, 1] - target[:, 1]) ** 2
    d2 = (pred[:, 2] - target[:, 2]) ** 2 + (pred[:, 3] - target[:, 3]) ** 2
    side = torch.rand(pred.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 100 + 20
    expected = 1 - iou + d1 / (2 * side**2) + d2 / (2 * side**2)
    torch.testing.assert_close(BOX["mpdiou"](pred, target, image_size=side, eps=0.0), expected, atol=1e-9, rtol=0)
    w2 = ((cx - tx) ** 2 + (cy - ty) ** 2 + ((w - tw) / 2) ** 2 + ((h - th) / 2) ** 2).sqrt()
    for constant in (0.5, 1.6, 12.8):
        torch.testing.assert_close(BOX["nwd"](pred, target, constant=constant, eps=0.0),
                                   1 - torch.exp(-w2 / constant), atol=1e-9, rtol=0)


# ----------------------------------------------------------------------------------- interface and gradients


@pytest.mark.parametrize("name", NAMES)
def test_signature_reductions_and_empty_input(name):
    pred, target = overlapping_pairs(9, seed=7)
    per_box = call(name, pred, target)
    assert per_box.shape == (9,)
    torch.testing.assert_close(call(name, pred, target, reduction="sum"), per_box.sum())
    torch.testing.assert_close(call(name, pred, target, reduction="mean"), per_box.mean())
    empty = call(name, pred[:0], target[:0], reduction="mean")
    assert empty.shape == () and empty.item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        call(name, pred, target, reduction="average")


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_is_the_minimum(name):
    pred, target = mixed_pairs(200, seed=8)
    at_target = call(name, target, target)
    assert at_target.abs().max() < 1e-4 and (at_target <= call(name, pred, target) + 1e-9).all()  # eps-sized


@pytest.mark.parametrize("name,params", [("siou", {"theta": 0.0}), ("shape_iou", {"scale": -1.0}),
                                         ("nwd", {"constant": 0.0}), ("inner", {"ratio": 0.0}),
                                         ("inner", {"base": "l1"}), ("inner", {"base": "wiou"}),
                                         ("alpha_iou", {"alpha": 0.0}), ("alpha_iou", {"base": "eiou"})])
def test_invalid_parameters_raise(name, params):
    pred, target = overlapping_pairs(2, seed=9)
    with pytest.raises(ValueError, match=name):
        call(name, pred, target, **params)


GRADCHECK = [("siou", {}), ("mpdiou", {}), ("shape_iou", {"scale": 1.0}), ("nwd", {}), ("ciou_mmdet", {}),
             ("inner", {"base": "iou"}), ("inner", {"base": "siou", "ratio": 1.3}), ("alpha_iou", {"base": "iou"}),
             ("alpha_iou", {"base": "giou"}), ("alpha_iou", {"base": "diou", "alpha": 0.5})]


@pytest.mark.parametrize("name,params", GRADCHECK)
def test_gradcheck_float64(name, params):
    """Losses without a detached factor, and ciou_mmdet on pairs below IoU 0.5 (where its a is 0)."""
    pred, target = overlapping_pairs(6, seed=10, dtype=torch.float64)
    if name == "ciou_mmdet":
        pred = pred + torch.tensor([3.0, 0.0, 3.0, 0.0], dtype=torch.float64)
        assert (torchvision_aligned_iou(pred, target) < 0.5).all()
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: call(name, p, target, **params), (pred,))


def test_gradients_of_the_detached_factors():
    """ciou_mmdet above IoU 0.5 has ciou's gradient (checked in test_box_losses); inner-ciou's is inner-iou's plus
    ciou's minus iou's; alpha-ciou's is alpha-diou's plus that of (a v)^alpha with a frozen."""
    pred, target = overlapping_pairs(40, seed=11, dtype=torch.float64)

    def grad(fn):
        p = pred.clone().requires_grad_(True)
        return torch.autograd.grad(fn(p).sum(), p)[0]

    above = torchvision_aligned_iou(pred, target) > 0.5
    assert above.sum() > 5
    mmdet, ciou = grad(lambda p: BOX["ciou_mmdet"](p, target)), grad(lambda p: BOX["ciou"](p, target))
    torch.testing.assert_close(mmdet[above], ciou[above])
    inner = grad(lambda p: BOX["inner"](p, target, base="ciou"))
    torch.testing.assert_close(inner, grad(lambda p: BOX["inner"](p, target, base="iou")) + ciou
                               - grad(lambda p: BOX["iou"](p, target)))
    iou = torchvision_aligned_iou(pred, target)
    v = 4 / math.pi**2 * (torch.atan((target[:, 2] - target[:, 0]) / (target[:, 3] - target[:, 1]))
                          - torch.atan((pred[:, 2] - pred[:, 0]) / (pred[:, 3] - pred[:, 1]))) ** 2
    a = v / (1 - iou + v)

    def frozen_aspect(p):
        v_p = 4 / math.pi**2 * (torch.atan((target[:, 2] - target[:, 0]) / (target[:, 3] - target[:, 1]))
                                - torch.atan((p[:, 2] - p[:, 0]) / (p[:, 3] - p[:, 1]))) ** 2
        return (a * v_p) ** 3

    expected = grad(lambda p: BOX["alpha_iou"](p, target, base="diou")) + grad(frozen_aspect)
    torch.testing.assert_close(grad(lambda p: BOX["alpha_iou"](p, target, base="ciou")), expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_pairs_finite_value_and_gradient(name, case):
    a, b = DEGENERATE[case]
    pred = torch.tensor([a], requires_grad=True)
    target = torch.tensor([b])
    for params in ({}, {"base": "siou"} if name == "inner" else {"alpha": 0.5} if name == "alpha_iou" else {}):
        value = call(name, pred, target, **params)
        (grad,) = torch.autograd.grad(value.sum(), pred)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all(), (name, case, params, value, grad)


@pytest.mark.parametrize("name", NAMES)
def test_finite_at_huge_coordinates(name):
    """1e30 in float32. The frame-evaluated losses equal their value on the pair scaled down by 1e30 (mpdiou with
    the image scaled too); nwd is absolute: a pair 1e30 apart has the loss 1."""
    pred = torch.tensor([[1e30, 1e30, 3e30, 2e30]], requires_grad=True)
    target = torch.tensor([[1.5e30, 1.2e30, 4e30, 5e30]])
    extra = {"image_size": 1e31} if name == "mpdiou" else {}
    value = call(name, pred, target, **extra)
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    if name == "nwd":
        assert value.item() == 1.0
        return
    small = call(name, pred.detach() / 1e30, target / 1e30, **({"image_size": 10.0} if extra else {}))
    torch.testing.assert_close(value, small, atol=1e-5, rtol=1e-5)

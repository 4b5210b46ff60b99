"""Tests for detector/losses/soft_targets.py (Varifocal and Quality Focal loss).

Hand values use sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4.

Varifocal (alpha 0.75, gamma 2, iou_weighted):
* logit 0, q = 0.5:   positive, -0.5 (0.5 ln 0.5 + 0.5 ln 0.5) = 0.5 ln 2.
* logit 0, q = 0:     negative, 0.75 (1/2)^2 ln 2 = 0.1875 ln 2.
* logit ln 3, q = 1:  positive, -1 * ln(3/4) = ln(4/3) (no p^gamma factor on positives).
* logit ln 3, q = 0:  negative, 0.75 (3/4)^2 (-ln(1/4)) = 0.75 * 9/16 * ln 4.
* iou_weighted False, logit 0, q = 0.5: weight 1 -> ln 2.

Quality focal (beta 2):
* logit 0, y = 0.5:   |0.5 - 0.5|^2 = 0 -> 0 (the minimum: score equals target).
* logit ln 3, y = 0.25: (1/2)^2 * -(0.25 ln 0.75 + 0.75 ln 0.25).
* logit ln 3, y = 0:  (3/4)^2 ln 4.
* logit 0, y = 1:     (1/2)^2 ln 2.
"""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detector.losses.soft_targets import quality_focal_loss, varifocal_loss

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)
LOSSES = [varifocal_loss, quality_focal_loss]


def _random(shape, seed=0, hard=False):
    """Logits ~ 3 N(0, 1); soft targets: IoU-like values on ~30 % of the elements, 0 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    pos = torch.rand(shape, generator=g) < 0.3
    value = torch.ones(shape) if hard else torch.rand(shape, generator=g) * 0.9 + 0.05
    return logits, torch.where(pos, value, torch.zeros(shape))


# ---------------------------------------------------------------------------------------------- varifocal
def test_varifocal_hand_values():
    logits = torch.tensor([0.0, 0.0, LN3, LN3])
    target = torch.tensor([0.5, 0.0, 1.0, 0.0])
    expected = torch.tensor([0.5 * LN2, 0.1875 * LN2, math.log(4 / 3), 0.75 * 9 / 16 * LN4])
    torch.testing.assert_close(varifocal_loss(logits, target), expected)
    torch.testing.assert_close(
        varifocal_loss(torch.zeros(1), torch.tensor([0.5]), iou_weighted=False), torch.tensor([LN2])
    )


def test_varifocal_matches_the_paper_formula_for_soft_targets():
    """Eq. 2 of VarifocalNet written with explicit logs of p, in float64 at moderate logits."""
    logits, target = _random((64, 5), seed=1)
    logits, target = logits.double().clamp(-8, 8), target.double()
    p = logits.sigmoid()
    pos = -target * (target * p.log() + (1 - target) * (1 - p).log())
    neg = -0.6 * p.pow(1.5) * (1 - p).log()
    expected = torch.where(target > 0, pos, neg)
    torch.testing.assert_close(varifocal_loss(logits, target, alpha=0.6, gamma=1.5), expected)


@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (0.25, 1.5), (1.0, 0.0)])
def test_varifocal_with_hard_targets_is_focal_without_focusing_on_positives(alpha, gamma):
    """q in {0, 1}: positives -> plain BCE (-log p, i.e. focal with gamma 0 and no alpha); negatives ->
    alpha p^gamma (-log(1 - p)), i.e. torchvision's focal loss with alpha_tv = 1 - alpha (it weights
    negatives by 1 - alpha_tv) and the same gamma."""
    logits, target = _random((200, 4), seed=2, hard=True)
    assert target.sum() > 0 and (target == 0).any()
    positives = sigmoid_focal_loss(logits, target, alpha=-1, gamma=0.0, reduction="none")
    negatives = sigmoid_focal_loss(logits, target, alpha=1.0 - alpha, gamma=gamma, reduction="none")
    expected = torch.where(target == 1, positives, negatives)
    ours = varifocal_loss(logits, target, alpha=alpha, gamma=gamma)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    torch.testing.assert_close(ours[target == 1], bce[target == 1])


def test_varifocal_positive_gradient_is_not_focused():
    """A positive with q = 1 and p = 1/2: d/dx of -log sigmoid(x) is p - 1 = -1/2 (no p^gamma factor).
    A negative at p = 1/2 with alpha 0.75, gamma 2: d/dx [0.75 p^2 softplus(x)] =
    0.75 (2 p (p (1 - p)) ln 2 + p^2 p) = 0.75 (0.25 ln 2 + 0.125)."""
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    varifocal_loss(x, torch.tensor([1.0, 0.0], dtype=torch.float64), reduction="sum").backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, 0.75 * (0.25 * LN2 + 0.125)], dtype=torch.float64))


def test_varifocal_rejects_negative_parameters():
    with pytest.raises(ValueError, match="alpha"):
        varifocal_loss(torch.zeros(2), torch.zeros(2), alpha=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        varifocal_loss(torch.zeros(2), torch.zeros(2), gamma=-1.0)


# ------------------------------------------------------------------------------------------- quality focal
def test_quality_focal_hand_values():
    logits = torch.tensor([0.0, LN3, LN3, 0.0])
    target = torch.tensor([0.5, 0.25, 0.0, 1.0])
    expected = torch.tensor([
        0.0,
        0.25 * -(0.25 * math.log(0.75) + 0.75 * math.log(0.25)),
        9 / 16 * LN4,
        0.25 * LN2,
    ])
    torch.testing.assert_close(quality_focal_loss(logits, target), expected)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5])
def test_quality_focal_with_hard_targets_is_focal_without_alpha(beta):
    logits, target = _random((200, 4), seed=3, hard=True)
    ref = sigmoid_focal_loss(logits, target, alpha=-1, gamma=beta, reduction="none")
    torch.testing.assert_close(quality_focal_loss(logits, target, beta=beta), ref, rtol=1e-5, atol=1e-6)


def test_quality_focal_matches_the_paper_formula_and_is_minimal_at_the_target():
    """Eq. 5 of GFL with explicit logs in float64; and at sigma = y both value-weight and gradient vanish."""
    logits, target = _random((64, 5), seed=4)
    logits, target = logits.double().clamp(-8, 8), target.double()
    s = logits.sigmoid()
    expected = -(target - s).abs().pow(2.0) * ((1 - target) * (1 - s).log() + target * s.log())
    torch.testing.assert_close(quality_focal_loss(logits, target), expected)

    y = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    x = torch.logit(y).requires_grad_()
    loss = quality_focal_loss(x, y, reduction="sum")
    loss.backward()
    assert loss.item() < 1e-20 and x.grad.abs().max() < 1e-12


def test_quality_focal_rejects_negative_beta():
    with pytest.raises(ValueError, match="beta"):
        quality_focal_loss(torch.zeros(2), torch.zeros(2), beta=-1.0)


# -------------------------------------------------------------------------------------------- common checks
@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_reductions_and_shape(fn):
    logits, target = _random((3, 8, 5), seed=5)
    none = fn(logits, target)
    assert none.shape == (3, 8, 5)
    torch.testing.assert_close(fn(logits, target, reduction="mean"), none.mean())
    torch.testing.assert_close(fn(logits, target, reduction="sum"), none.sum())
    with pytest.raises(ValueError, match="reduction"):
        fn(logits, target, reduction="avg")


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_gradcheck(fn):
    logits, target = _random((6, 4), seed=6)
    logits = logits.double().requires_grad_()
    target = target.double()
    assert torch.autograd.gradcheck(lambda x: fn(x, target, reduction="sum"), (logits,))


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_extreme_logits_are_finite(fn):
    """Logits +-50 (sigmoid saturates to 0 / 1 in float32) with targets 0, 0.5 and 1: finite values and gradients.
    A confident wrong answer costs about 50 times its weight (BCE ~ |x|)."""
    x = torch.tensor([50.0, -50.0, 50.0, -50.0, 50.0, -50.0], requires_grad=True)
    t = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    loss = fn(x, t)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    assert loss[0] > 10 and loss[5] > 10  # confident and wrong
    assert loss[1] < 1e-6 and loss[4] < 1e-6  # confident and right


def test_exponent_below_one_keeps_gradients_finite_when_the_sigmoid_underflows():
    """x = -200 in float32: sigmoid(x) is exactly 0 = the target, so |y - sigma|^0.5 and p^0.5 have an infinite
    derivative at a zero base; the clamped base makes that gradient 0, not NaN."""
    for loss_fn, kw in ((quality_focal_loss, {"beta": 0.5}), (varifocal_loss, {"gamma": 0.5})):
        x = torch.tensor([-200.0, -50.0], requires_grad=True)
        loss_fn(x, torch.zeros(2), reduction="sum", **kw).backward()
        assert torch.isfinite(x.grad).all(), loss_fn.__name__


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_empty_inputs(fn):
    logits = torch.zeros(0, 80, requires_grad=True)
    target = torch.zeros(0, 80)
    assert fn(logits, target).shape == (0, 80)
    total = fn(logits, target, reduction="mean")
    assert total.item() == 0.0
    total.backward()
    assert logits.grad.shape == (0, 80)


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_house_signature(fn):
    params = inspect.signature(fn).parameters
    assert list(params)[:2] == ["logits", "target"]
    assert params["reduction"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["reduction"].default == "none"

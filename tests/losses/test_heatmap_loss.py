"""Tests of detector/losses/heatmap.py (CenterNet's penalty-reduced focal loss).

Hand values (alpha 2, beta 4), with sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4:

* logit 0, y = 1 (a centre):          (1/2)^2 ln 2 = 0.25 ln 2.
* logit 0, y = 0.5:                   (1 - 0.5)^4 (1/2)^2 ln 2 = ln 2 / 64.
* logit 0, y = 0:                     (1/2)^2 ln 2.
* logit ln 3, y = 1:                  (1/4)^2 ln(4/3) = ln(4/3) / 16.
* logit ln 3, y = 0:                  (3/4)^2 ln 4 = 9/16 ln 4.
* logit ln 3, y = 0.999 (not a centre): (0.001)^4 (9/16) ln 4.
* CenterNet's clamp (eps 1e-4): logit 30, y = 0 -> p clamped to 1 - 1e-4: (1 - 1e-4)^2 (-ln 1e-4); its gradient is 0.
"""
from __future__ import annotations

import math

import pytest
import torch

from detector.losses.heatmap import penalty_reduced_focal_loss

LN2, LN3 = math.log(2), math.log(3)


def _paper_formula(logits, target, alpha=2.0, beta=4.0):
    """Eq. 1 of the paper, directly on float64 probabilities (moderate logits only)."""
    p = torch.sigmoid(logits.double())
    t = target.double()
    pos = -((1 - p) ** alpha) * torch.log(p)
    neg = -((1 - t) ** beta) * p ** alpha * torch.log(1 - p)
    return torch.where(t == 1, pos, neg)


def _random(shape, seed=0):
    """Logits ~ 3 N(0, 1); a heat-map-like target: ~5 % exact 1s, ~30 % values in (0, 1), the rest 0."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    u = torch.rand(shape, generator=g)
    target = torch.where(u < 0.05, torch.ones(shape), torch.where(u < 0.35, torch.rand(shape, generator=g), 0.0))
    return logits, target


def test_hand_values():
    logits = torch.tensor([0.0, 0.0, 0.0, LN3, LN3, LN3], dtype=torch.float64)
    target = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.0, 0.999], dtype=torch.float64)
    want = [0.25 * LN2, LN2 / 64, 0.25 * LN2, math.log(4 / 3) / 16, 9 / 16 * math.log(4),
            1e-12 * 9 / 16 * math.log(4)]
    got = penalty_reduced_focal_loss(logits, target, eps=0.0)
    assert got.tolist() == pytest.approx(want, rel=1e-9, abs=1e-20)
    # the default clamp changes nothing inside +-9.2
    torch.testing.assert_close(penalty_reduced_focal_loss(logits, target), got)


@pytest.mark.parametrize("alpha, beta", [(2.0, 4.0), (1.0, 2.0), (3.0, 0.5)])
def test_matches_the_paper_formula(alpha, beta):
    logits, target = _random((4, 50, 6))
    got = penalty_reduced_focal_loss(logits.double(), target.double(), alpha=alpha, beta=beta, eps=0.0)
    torch.testing.assert_close(got, _paper_formula(logits, target, alpha, beta), rtol=1e-10, atol=1e-12)
    got32 = penalty_reduced_focal_loss(logits, target, alpha=alpha, beta=beta, eps=0.0)
    assert got32.dtype == torch.float32 and got32.shape == (4, 50, 6)
    torch.testing.assert_close(got32.double(), _paper_formula(logits, target, alpha, beta), rtol=1e-5, atol=1e-6)


def test_centernet_clamp_and_reductions():
    """eps = 1e-4: the same as the paper's formula on p clamped to [1e-4, 1 - 1e-4] (CenterNet's _sigmoid);
    beyond the bound the gradient is 0. Reductions sum / mean the per-element values."""
    logits = torch.tensor([30.0, -30.0, 30.0, 0.3], requires_grad=True)
    target = torch.tensor([0.0, 1.0, 1.0, 0.2])
    loss = penalty_reduced_focal_loss(logits, target)
    p = torch.sigmoid(logits.detach().double()).clamp(1e-4, 1 - 1e-4)
    want = torch.where(target == 1, -((1 - p) ** 2) * p.log(), -((1 - target) ** 4) * p ** 2 * (1 - p).log())
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-7)
    assert float(loss[0].detach()) == pytest.approx((1 - 1e-4) ** 2 * -math.log(1e-4), rel=1e-5)
    loss.sum().backward()
    assert logits.grad[:3].tolist() == [0.0, 0.0, 0.0] and logits.grad[3] != 0
    x, loss = logits.detach(), loss.detach()
    assert float(penalty_reduced_focal_loss(x, target, reduction="sum")) == pytest.approx(float(loss.sum()))
    assert float(penalty_reduced_focal_loss(x, target, reduction="mean")) == pytest.approx(float(loss.mean()))
    assert float(penalty_reduced_focal_loss(torch.zeros(0), torch.zeros(0), reduction="mean")) == 0.0


def test_gradcheck_float64():
    logits, target = _random((3, 7), seed=1)
    logits = logits.double().requires_grad_()
    target = target.double()
    for eps in (0.0, 1e-4):
        assert torch.autograd.gradcheck(
            lambda x: penalty_reduced_focal_loss(x, target, alpha=2.0, beta=4.0, eps=eps), (logits,)
        )
    # the gradient itself, by hand at logit 0 (p = 1/2, dp/dx = 1/4): positive d/dx[-(1-p)^2 ln p]
    # = (2 (1 - p) ln p - (1 - p)^2 / p) / 4 = (ln(1/2) - 1/2) / 4
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    penalty_reduced_focal_loss(x, torch.ones(1, dtype=torch.float64)).sum().backward()
    assert float(x.grad) == pytest.approx((math.log(0.5) - 0.5) / 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_extreme_logits_are_finite(dtype):
    """Without the clamp: a negative at logit +1e4 costs 1e4 (p^2 -> 1, -log(1 - p) -> x), a positive at -1e4
    costs 1e4; the well-predicted ones cost ~0. Values and gradients stay finite in every dtype (float16 logits
    near its limit, 6e4, are computed in float32)."""
    big = 1e4 if dtype != torch.float16 else 6e4
    logits = torch.tensor([big, -big, big, -big, 0.0], dtype=dtype, requires_grad=True)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5], dtype=dtype)
    for eps in (0.0, 1e-4):
        loss = penalty_reduced_focal_loss(logits, target, eps=eps)
        (grad,) = torch.autograd.grad(loss.sum(), logits)
        loss = loss.detach()
        assert loss.dtype == torch.promote_types(dtype, torch.float32) and grad.dtype == dtype
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        assert float(loss[2]) < 2e-12 and float(loss[3]) < 2e-12  # (1e-4)^2 * 1e-4 with the clamp
    unclamped = penalty_reduced_focal_loss(logits.detach(), target, eps=0.0)
    assert float(unclamped[0]) == pytest.approx(big, rel=1e-3) and float(unclamped[1]) == pytest.approx(big, rel=1e-3)


def test_bad_eps():
    for eps in (-1e-4, 0.5, 1.0):
        with pytest.raises(ValueError, match="eps"):
            penalty_reduced_focal_loss(torch.zeros(2), torch.zeros(2), eps=eps)


def test_centernet_l1_by_hand_and_as_masked_means():
    """pred (0.5, 0.5, 10, 4), target (0.25, 0.75, 12, 4): (0.25 + 0.25) / 2 + 0.1 * (2 + 0) / 2 = 0.35. Summed over
    boxes it equals CenterNet's two masked means: offset L1 sum / (2 N) + 0.1 * size L1 sum / (2 N), times N."""
    from detector.losses.heatmap import centernet_l1_loss

    pred, target = torch.tensor([[0.5, 0.5, 10.0, 4.0]]), torch.tensor([[0.25, 0.75, 12.0, 4.0]])
    assert centernet_l1_loss(pred, target).item() == pytest.approx(0.35)
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    masked_means = (p[:, :2] - t[:, :2]).abs().sum() / 14 + 0.1 * (p[:, 2:] - t[:, 2:]).abs().sum() / 14
    torch.testing.assert_close(centernet_l1_loss(p, t, reduction="sum") / 7, masked_means)
    assert centernet_l1_loss(p[:0], t[:0], reduction="mean").item() == 0.0

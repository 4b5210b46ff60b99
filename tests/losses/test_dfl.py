"""Tests for detector/losses/dfl.py (Distribution Focal Loss).

Hand cases, K = 4 bins (0, 1, 2, 3):

* target 1.25 on one side: y_l = 1, y_r = 2, weights 0.75 on bin 1 and 0.25 on bin 2. Uniform logits give
  CE = ln 4 at every bin, so the side costs 0.75 ln 4 + 0.25 ln 4 = ln 4. Logits (0, ln 3, ln 1, 0) -> softmax
  (1/6, 3/6, 1/6, 1/6): 0.75 ln 2 + 0.25 ln 6.
* The result is the mean over the 4 sides: sides costing (ln 4, 0.75 ln 2 + 0.25 ln 6, ln 4, ln 4) average to
  (3 ln 4 + 0.75 ln 2 + 0.25 ln 6) / 4.
* An integer target y = 2: weight 1 on bin 2, 0 on bin 3 -> plain CE(logits, 2).
* Target 3 = K - 1 (and anything above) is clamped to 2.99: weight 0.01 on bin 2, 0.99 on bin 3. A negative
  target is clamped to 0 (weight 1 on bin 0).
* Minimum: logits = log of the two-hot t (mass 0.75 / 0.25 for 1.25) reproduce S = t; the loss is then the
  entropy H(t) = -(0.75 ln 0.75 + 0.25 ln 0.25) and the gradient (S - t) / 4 is zero.
"""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from detector.losses.dfl import distribution_focal_loss
from detector.ops.point_coders import dfl_expectation

LN2, LN4, LN6 = math.log(2), math.log(4), math.log(6)


def _two_hot(target, bins):
    """Independent two-hot: interpolate linearly between one-hot rows of floor(y) and ceil(y) (clamped)."""
    y = target.clamp(0, bins - 1 - 0.01)
    lo, hi = y.floor().long(), y.ceil().long()
    frac = (y - lo).unsqueeze(-1)
    return (1 - frac) * F.one_hot(lo, bins).to(y.dtype) + frac * F.one_hot(hi, bins).to(y.dtype)  # (M, 4, K)


def _reference(logits, target, bins):
    """Soft-label F.cross_entropy over (M * 4) rows against the two-hot distribution, then mean over sides."""
    t = _two_hot(target, bins)
    rows = F.cross_entropy(logits.reshape(-1, bins), t.reshape(-1, bins), reduction="none")  # (M * 4,)
    return rows.view(-1, 4).mean(-1)


def test_hand_value_target_1_25():
    uniform = torch.zeros(1, 4, 4)
    target = torch.full((1, 4), 1.25)
    torch.testing.assert_close(distribution_focal_loss(uniform, target), torch.tensor([LN4]))

    logits = torch.zeros(1, 4, 4)
    logits[0, 1] = torch.tensor([0.0, math.log(3), 0.0, 0.0])  # side t: softmax (1/6, 1/2, 1/6, 1/6)
    expected = (3 * LN4 + 0.75 * LN2 + 0.25 * LN6) / 4
    torch.testing.assert_close(distribution_focal_loss(logits, target), torch.tensor([expected]))


def test_flat_and_split_layouts_agree():
    """Tensor[M, 4 * K] is side-major: logits[:, s * K + k] is bin k of side s (dfl_expectation's layout)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 16, generator=g)
    target = torch.rand(5, 4, generator=g) * 15
    flat = distribution_focal_loss(logits.flatten(1), target)
    torch.testing.assert_close(flat, distribution_focal_loss(logits, target))


def test_integer_target_is_plain_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 4, generator=g)
    target = torch.tensor([[0.0, 1.0, 2.0, 2.0], [1.0, 1.0, 0.0, 2.0], [2.0, 0.0, 1.0, 1.0]])
    ce = F.cross_entropy(logits.reshape(-1, 4), target.long().reshape(-1), reduction="none").view(3, 4)
    torch.testing.assert_close(distribution_focal_loss(logits, target), ce.mean(-1))


def test_targets_are_clamped_to_the_last_bin_minus_0_01():
    """K = 4: targets 3 and 7 behave as 2.99 (0.01 CE(., 2) + 0.99 CE(., 3)); -1 behaves as 0 (CE(., 0))."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 4, 4, generator=g)
    target = torch.tensor([[3.0, 7.0, -1.0, 2.99]])
    rows = logits[0]  # (4, K)
    ce = lambda side, k: F.cross_entropy(rows[side : side + 1], torch.tensor([k]))  # noqa: E731
    expected = (
        (0.01 * ce(0, 2) + 0.99 * ce(0, 3))
        + (0.01 * ce(1, 2) + 0.99 * ce(1, 3))
        + ce(2, 0)
        + (0.01 * ce(3, 2) + 0.99 * ce(3, 3))
    ) / 4
    torch.testing.assert_close(distribution_focal_loss(logits, target), expected.view(1), rtol=1e-5, atol=1e-6)


def test_minimum_at_the_two_hot_distribution():
    """S = t: value H(t) per side (so H(t) as the mean too), gradient (S - t) / 4 = 0, and any nudge costs more.
    Non-target bins get logit -60 (probability ~e^-60, negligible in float64)."""
    target = torch.tensor([[1.25, 1.25, 1.25, 1.25]], dtype=torch.float64)
    t = _two_hot(target, 4)  # (1, 4, 4): 0.75 on bin 1, 0.25 on bin 2
    logits = torch.where(t > 0, t.clamp_min(1e-300).log(), torch.full_like(t, -60.0)).requires_grad_()
    loss = distribution_focal_loss(logits, target)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(loss, torch.tensor([entropy], dtype=torch.float64))
    loss.sum().backward()
    assert logits.grad.abs().max() < 1e-12
    # and the expectation of that distribution is the target (the coder decodes it back)
    torch.testing.assert_close(dfl_expectation(logits.detach().flatten(1), 4), target)
    nudged = logits.detach().clone()
    nudged[0, 0, 1] += 0.1
    assert distribution_focal_loss(nudged, target).item() > entropy


def test_gradient_is_softmax_minus_two_hot_over_4():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 4, 8, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(6, 4, generator=g, dtype=torch.float64) * 7
    distribution_focal_loss(logits, target, reduction="sum").backward()
    expected = (logits.detach().softmax(-1) - _two_hot(target, 8)) / 4
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("bins", [2, 4, 16])
def test_matches_soft_label_cross_entropy(bins):
    g = torch.Generator().manual_seed(bins)
    logits = torch.randn(32, 4 * bins, generator=g) * 3
    target = torch.rand(32, 4, generator=g) * (bins + 1) - 0.5  # some below 0 and above K - 1: clamped
    ours = distribution_focal_loss(logits, target)
    torch.testing.assert_close(ours, _reference(logits, target, bins), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distribution_focal_loss(logits, target, reduction="mean"), ours.mean())
    torch.testing.assert_close(distribution_focal_loss(logits, target, reduction="sum"), ours.sum())


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 4 * 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(3, 4, generator=g, dtype=torch.float64) * 3.9
    assert torch.autograd.gradcheck(lambda x: distribution_focal_loss(x, target, reduction="sum"), (logits,))


def test_extreme_logits_are_finite():
    logits = torch.tensor([[50.0, -50.0, -50.0, -50.0]]).repeat(4, 1).view(1, 16).requires_grad_()
    target = torch.full((1, 4), 2.5)  # all the mass on bin 0, the target wants bins 2 and 3
    loss = distribution_focal_loss(logits, target)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(loss, torch.tensor([100.0]))  # CE = 50 - (-50) at both bins


def test_empty_and_bad_shapes():
    logits = torch.zeros(0, 64, requires_grad=True)
    assert distribution_focal_loss(logits, torch.zeros(0, 4)).shape == (0,)
    total = distribution_focal_loss(logits, torch.zeros(0, 4), reduction="mean")
    assert total.item() == 0.0
    total.backward()
    with pytest.raises(ValueError, match="4 \\* K"):
        distribution_focal_loss(torch.zeros(2, 10), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="4 \\* K"):
        distribution_focal_loss(torch.zeros(2, 4, 1), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target"):
        distribution_focal_loss(torch.zeros(2, 16), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="reduction"):
        distribution_focal_loss(torch.zeros(2, 16), torch.zeros(2, 4), reduction="avg")


def test_house_signature():
    params = inspect.signature(distribution_focal_loss).parameters
    assert list(params)[:2] == ["logits", "target"]
    assert params["reduction"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["reduction"].default == "none"

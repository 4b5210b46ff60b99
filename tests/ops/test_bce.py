"""detector.ops.bce against torch's own binary_cross_entropy_with_logits / logsigmoid, evaluated in float64."""
import doctest

import pytest
import torch
import torch.nn.functional as F

from detector.ops import bce
from detector.ops.bce import binary_cross_entropy_with_logits, log1p_exp_neg_abs, log_sigmoid

F32_EPS = torch.finfo(torch.float32).eps


def logits_and_targets(dtype=torch.float64, n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(n, generator=g) * 8, torch.tensor([0.0, -0.0, 1e-9, -1e-9, 16.6, -16.6, 40.0, -40.0,
                                                                  88.0, -88.0, 200.0, -200.0])]).to(dtype)
    t = torch.rand(x.shape, generator=g, dtype=dtype)
    t[::3] = 0.0
    t[1::3] = 1.0  # hard targets, and soft ones in between
    return x, t


def test_docstring_examples():
    assert doctest.testmod(bce).failed == 0


@pytest.mark.parametrize("pos_weight", [None, 1.0, 2.5, "per_column"])
def test_values_equal_torch_in_float64(pos_weight):
    x, t = logits_and_targets()
    x, t = x.view(-1, 4), t.view(-1, 4)
    if pos_weight == "per_column":  # broadcast over the last dimension, as F's pos_weight does
        pw = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    else:
        pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    ours = binary_cross_entropy_with_logits(x, t, pw)
    ref = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_float32_error_no_larger_than_torchs():
    """Both float32 evaluations against the float64 one: ours within a few ulp of the terms' magnitude."""
    x64, t64 = logits_and_targets()
    ref = F.binary_cross_entropy_with_logits(x64, t64, reduction="none")
    x, t = x64.float(), t64.float()
    scale = x64.abs() + ref.abs() + 1.0  # the size of the terms that cancel in (1 - t) x - log sigmoid(x)
    ours_err = ((binary_cross_entropy_with_logits(x, t).double() - ref).abs() / scale).max()
    torch_err = ((F.binary_cross_entropy_with_logits(x, t, reduction="none").double() - ref).abs() / scale).max()
    assert ours_err <= 4 * F32_EPS
    assert ours_err <= 2 * torch_err + F32_EPS


def test_log1p_exp_neg_abs_keeps_log1p_accuracy_where_one_plus_e_rounds():
    # |x| <= 87: exp(-|x|) is a normal float32 there (beyond it, exp's own result is subnormal and inexact)
    x = torch.cat([torch.linspace(-30, 30, 6001), torch.tensor([0.0, 17.0, 50.0, 80.0, -87.0])])
    ref = torch.log1p(torch.exp(-x.double().abs()))
    rel = ((log1p_exp_neg_abs(x).double() - ref).abs() / ref.clamp(min=1e-300)).max()
    assert rel < 4 * F32_EPS  # log(1 + e) alone is off by 100% once 1 + e rounds to 1 (|x| > 16.6)
    naive = torch.log(1 + torch.exp(-x.abs())).double()
    assert ((naive - ref).abs() / ref.clamp(min=1e-300)).max() > 0.5


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_gradient(pos_weight):
    x, t = logits_and_targets(n=60)
    x = x[:-4].clone().requires_grad_()  # drop +-200: gradcheck's finite differences lose them to rounding
    t = t[:-4]
    pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: binary_cross_entropy_with_logits(a, t, pw), (x,))
    g = torch.randn(x.shape, dtype=torch.float64)
    (ours,) = torch.autograd.grad(binary_cross_entropy_with_logits(x, t, pw), x, g)
    (ref,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw), x, g)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)


def test_gradient_at_saturated_logits_is_finite_and_exact():
    x = torch.tensor([-200.0, -40.0, 40.0, 200.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    binary_cross_entropy_with_logits(x, t).sum().backward()
    torch.testing.assert_close(x.grad, torch.sigmoid(x.detach()) - t)


def test_target_that_needs_a_gradient_gets_one():
    """The fast path gives the target no gradient; a target that requires one goes to torch's function."""
    x, t = logits_and_targets(n=20)
    t = t.clone().requires_grad_()
    binary_cross_entropy_with_logits(x, t).sum().backward()
    torch.testing.assert_close(t.grad, -x)  # d/dt [(1 - t) x - log sigmoid(x)] = -x


def test_empty_and_shapes():
    x = torch.zeros(0, 80, requires_grad=True)
    out = binary_cross_entropy_with_logits(x, torch.zeros(0, 80))
    assert out.shape == (0, 80)
    out.sum().backward()
    assert x.grad.shape == (0, 80)
    y = torch.randn(2, 3, 5)
    assert binary_cross_entropy_with_logits(y, torch.ones(2, 3, 5)).shape == (2, 3, 5)


def test_log_sigmoid_equals_torch_with_its_gradient():
    x, _ = logits_and_targets()
    torch.testing.assert_close(log_sigmoid(x), F.logsigmoid(x), rtol=1e-12, atol=1e-14)
    xs = x[:50].clone().requires_grad_()
    assert torch.autograd.gradcheck(log_sigmoid, (xs,))
    x32 = x.float()
    err = ((log_sigmoid(x32).double() - F.logsigmoid(x)).abs() / (F.logsigmoid(x).abs() + 1)).max()
    assert err <= 4 * F32_EPS

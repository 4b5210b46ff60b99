"""detector.ops.focal: the fused sigmoid focal loss against torchvision.ops.sigmoid_focal_loss (autograd form)."""
import doctest

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as torchvision_focal

from detector.ops import focal
from detector.ops.focal import sigmoid_focal_loss


def inputs(n=3000, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(n, generator=g, dtype=dtype) * 5, torch.tensor([0.0, 30.0, -30.0, 80.0], dtype=dtype)])
    t = torch.rand(x.shape, generator=g, dtype=dtype)
    t[::2] = (t[::2] > 0.5).to(dtype)  # hard targets on half, soft ones on the rest
    return x, t


def test_docstring_examples():
    assert doctest.testmod(focal).failed == 0


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 1.5), (0.5, 0.0), (0.25, 0.5), (0.75, 1.0), (0.25, 3.0)])
def test_values_and_gradient_equal_torchvision(alpha, gamma):
    x, t = inputs()
    x.requires_grad_()
    ours = sigmoid_focal_loss(x, t, alpha, gamma)
    ref = torchvision_focal(x, t, alpha, gamma, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    g = torch.randn(x.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(ours, x, g)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_gradcheck(gamma):
    x, t = inputs(n=40)
    x = x[:40].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t[:40], 0.25, gamma), (x,))


def test_float32_error_no_larger_than_the_autograd_forms():
    x, t = inputs()
    ref = torchvision_focal(x, t, 0.25, 2.0, reduction="none")
    ours = sigmoid_focal_loss(x.float(), t.float(), 0.25, 2.0).double()
    theirs = torchvision_focal(x.float(), t.float(), 0.25, 2.0, reduction="none").double()
    ours_err = ((ours - ref).abs() / (ref.abs() + 1e-6)).max()
    assert ours_err < 3e-5
    assert ours_err <= 2 * ((theirs - ref).abs() / (ref.abs() + 1e-6)).max()  # no worse than the autograd form


def test_saturated_logit_on_its_target_has_zero_finite_gradient_below_gamma_one():
    x = torch.tensor([-120.0, 120.0], requires_grad=True)
    t = torch.tensor([0.0, 1.0])
    sigmoid_focal_loss(x, t, 0.25, 0.5).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs() < 1e-20).all()


def test_empty_and_soft_target_with_gradient():
    x = torch.zeros(0, 80, requires_grad=True)
    out = sigmoid_focal_loss(x, torch.zeros(0, 80))
    out.sum().backward()
    assert out.shape == (0, 80) and x.grad.shape == (0, 80)
    # a target that needs a gradient takes the autograd form, and gets one
    xs, ts = inputs(n=10)
    ts = ts.clone().requires_grad_()
    sigmoid_focal_loss(xs, ts).sum().backward()
    assert ts.grad is not None and torch.isfinite(ts.grad).all()

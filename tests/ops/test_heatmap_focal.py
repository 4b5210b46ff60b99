"""detector.ops.heatmap_focal: the fused penalty-reduced focal loss against the paper's formula under autograd."""
import doctest

import pytest
import torch

from detector.ops import heatmap_focal
from detector.ops.heatmap_focal import penalty_focal_loss


def paper_formula(x, y, a, b):
    p = torch.sigmoid(x)
    return torch.where(y == 1, -(1 - p) ** a * torch.log(p), -(1 - y) ** b * p ** a * torch.log(1 - p))


def heat_map(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * 4).clamp(-15, 15)  # float64 log(1 - p) stays exact
    y = torch.rand(n, generator=g, dtype=torch.float64)
    y[::5] = 1.0  # centres
    y[1::5] = 0.0  # far from any centre
    return x, y


def test_docstring_examples():
    assert doctest.testmod(heatmap_focal).failed == 0


@pytest.mark.parametrize("a,b", [(2.0, 4.0), (1.0, 2.0), (3.0, 0.5)])
def test_values_and_gradient_equal_the_paper_formula(a, b):
    x, y = heat_map()
    x.requires_grad_()
    ours, ref = penalty_focal_loss(x, y, a, b), paper_formula(x, y, a, b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
    g = torch.randn(x.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(ours, x, g)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-14)


def test_gradcheck_and_saturated_logits():
    x, y = heat_map(n=40)
    assert torch.autograd.gradcheck(lambda z: penalty_focal_loss(z, y), (x.clone().requires_grad_(),))
    big = torch.tensor([-200.0, 200.0, -200.0, 200.0], requires_grad=True)
    out = penalty_focal_loss(big, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(big.grad).all()
    # a centre scored -200 and a background cell scored +200 cost 200 each; the two right answers cost 0
    torch.testing.assert_close(out.detach(), torch.tensor([200.0, 0.0, 0.0, 200.0]))


def test_float32_and_empty():
    x, y = heat_map()
    ref = paper_formula(x, y, 2.0, 4.0)
    ours = penalty_focal_loss(x.float(), y.float()).double()
    assert ((ours - ref).abs() / (ref.abs() + 1e-6)).max() < 1e-4
    e = torch.zeros(0, 80, requires_grad=True)
    penalty_focal_loss(e, torch.zeros(0, 80)).sum().backward()
    assert e.grad.shape == (0, 80)

"""Tests of the NWD similarity of detector/ops/boxes.py: ``aligned_nwd`` and the pairwise ``box_nwd``.

NWD = exp(-W_2 / C), W_2 = ||(cx, cy, w/2, h/2) - (cx', cy', w'/2, h'/2)|| (Wang et al. 2021). Hand-worked pairs
(xyxy, C = 12.8 unless said):

1. A box against itself: W_2 = 0, NWD = 1 (IoU 1 too).
2. Tiny boxes A = (0, 0, 2, 2), B = (3, 0, 5, 2): a 1 px gap, IoU 0. Centres (1, 1), (4, 1), same size:
   W_2 = 3, NWD = exp(-3 / 12.8) = exp(-0.234375) = 0.791065.
3. A = (0, 0, 4, 4), B = (5, 0, 9, 4): IoU 0, W_2 = 5, NWD = exp(-0.390625) = 0.676634 (box_nwd's docstring).
4. Sizes differ: A = (0, 0, 2, 2), B = (0, 0, 4, 6). Centres (1, 1), (2, 3); half sizes (1, 1), (2, 3):
   W_2^2 = 1 + 4 + 1 + 4 = 10, NWD = exp(-sqrt(10) / 12.8) = exp(-0.247053) = 0.781099.
5. W_2 = C gives 1 / e: A = (0, 0, 2, 2), B = (12.8, 0, 14.8, 2).
6. One-pixel shift of a 4 x 4 box: IoU 12 / 20 = 0.6; of a 40 x 40 box: IoU 1560 / 1640 = 0.9512. NWD is
   exp(-1 / 12.8) = 0.924849 for both: it measures the shift in pixels, not relative to the box size.
"""
from __future__ import annotations

import math

import pytest
import torch

from detector.losses.iou_variants import nwd_loss
from detector.ops.boxes import NWD_CONSTANT, aligned_nwd, box_iou, box_nwd


def boxes(*rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype).reshape(-1, 4)


def random_boxes(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    """n random xyxy boxes (Tensor[n, 4] float64), sides 0.5 .. 20.5 px: many tiny ones."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 20 + 0.5
    return torch.cat((xy, xy + wh), 1)


def reference_nwd(a: list[float], b: list[float], constant: float) -> float:
    """The paper's formula with Python floats: Gaussians N((cx, cy), diag(w^2, h^2) / 4)."""
    ga = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2, (a[2] - a[0]) / 2, (a[3] - a[1]) / 2)
    gb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2)
    return math.exp(-math.dist(ga, gb) / constant)


def test_default_constant_is_the_papers():
    assert NWD_CONSTANT == 12.8


def test_hand_cases_pairwise_and_aligned():
    """Cases 1-5 of the module docstring, as the pairwise matrix and as aligned pairs."""
    a = boxes([0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 2, 2])
    b = boxes([3, 0, 5, 2], [5, 0, 9, 4], [0, 0, 4, 6], [12.8, 0, 14.8, 2])
    expected = torch.tensor([0.791065, 0.676634, 0.781099, math.exp(-1)], dtype=torch.float64)
    torch.testing.assert_close(box_nwd(a, b).diagonal(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(aligned_nwd(a, b, eps=0.0), expected, atol=1e-6, rtol=0)
    assert box_iou(a[:2], b[:2]).diagonal().tolist() == [0.0, 0.0]  # cases 2 and 3: disjoint, yet NWD > 0.67
    assert box_nwd(a, a).diagonal().tolist() == [1.0] * 4  # case 1, exactly
    assert aligned_nwd(a, a, eps=0.0).tolist() == [1.0] * 4


def test_one_pixel_shift_is_size_independent():
    """Case 6: IoU of a 1 px shift is 0.6 for a 4 x 4 box and 0.9512 for a 40 x 40 box; NWD 0.924849 for both."""
    a = boxes([0, 0, 4, 4], [0, 0, 40, 40])
    b = a + torch.tensor([1.0, 0, 1, 0], dtype=torch.float64)
    torch.testing.assert_close(box_iou(a, b).diagonal(), torch.tensor([0.6, 1560 / 1640], dtype=torch.float64))
    torch.testing.assert_close(box_nwd(a, b).diagonal(), torch.full((2,), 0.924849, dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_pairwise_matches_the_formula_and_the_aligned_form():
    """Every entry of box_nwd against the paper's formula in Python floats, for several C; the aligned form on
    a[:, None], b[None] gives the same matrix."""
    a, b = random_boxes(13, seed=1), random_boxes(7, seed=2)
    for constant in (1.6, 12.8, 40.0):
        expected = torch.tensor([[reference_nwd(x, y, constant) for y in b.tolist()] for x in a.tolist()],
                                dtype=torch.float64)
        got = box_nwd(a, b, constant)
        assert got.shape == (13, 7) and got.dtype == torch.float64
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(aligned_nwd(a[:, None], b[None], constant, eps=0.0), expected,
                                   atol=1e-12, rtol=0)
    torch.testing.assert_close(box_nwd(b, a), box_nwd(a, b).T)


def test_diagonal_equals_one_minus_the_nwd_loss():
    """The loss is 1 - aligned_nwd: the diagonal of box_nwd (with the loss's eps) equals 1 - nwd_loss, for the
    loss's grid-cell C (1.6) and the pixel C (12.8), identical pairs included (value exp(-eps / C) there)."""
    a, b = random_boxes(50, seed=3), random_boxes(50, seed=4)
    b[:5] = a[:5]
    for constant in (1.6, 12.8):
        for eps in (1e-7, 1e-3):
            loss = nwd_loss(a, b, constant=constant, eps=eps)
            torch.testing.assert_close(box_nwd(a, b, constant, eps=eps).diagonal(), 1 - loss, atol=1e-12, rtol=0)
            torch.testing.assert_close(aligned_nwd(a, b, constant, eps=eps), 1 - loss, atol=1e-15, rtol=0)
        assert loss[:5].tolist() == pytest.approx([1 - math.exp(-1e-3 / constant)] * 5, abs=1e-15)


def test_empty_inputs():
    some = boxes([0, 0, 2, 2], [1, 1, 3, 3], [4, 4, 6, 9])
    assert box_nwd(some[:0], some).shape == (0, 3)
    assert box_nwd(some, some[:0]).shape == (3, 0)
    assert box_nwd(some[:0], some[:0]).shape == (0, 0)
    assert aligned_nwd(some[:0], some[:0]).shape == (0,)


def test_float32_precision_for_near_identical_boxes_far_from_the_origin():
    """Boxes at x = 1000 shifted by 0.01 px: W_2 = 0.01, NWD = exp(-0.01 / 12.8) = 0.999219. A Euclidean distance
    through the matrix product (|x|^2 + |y|^2 - 2 x.y, cdist's shortcut for large sets) cancels ~1e6 px^2 in float32
    and could not resolve it; box_nwd must, also when both sets are large."""
    a = torch.tensor([[1000.0, 1000.0, 1004.0, 1004.0]]).repeat(40, 1)
    b = a + torch.tensor([0.01, 0.0, 0.01, 0.0])
    got = box_nwd(a, b)
    assert got.dtype == torch.float32 and got.shape == (40, 40)
    torch.testing.assert_close(got, torch.full((40, 40), math.exp(-0.01 / 12.8)), atol=1e-6, rtol=0)
    assert box_nwd(a, a).eq(1.0).all()


def test_huge_and_degenerate_boxes_stay_finite():
    """1e30 px apart (float32): W_2 / C overflows nothing that matters, NWD 0. A zero-area box is a point Gaussian:
    (1, 1, 1, 1) against (0, 0, 2, 2) has W_2 = sqrt(1 + 1) = 1.414. An inverted box counts as zero size:
    (3, 3, 1, 1) is the point (2, 2), W_2 = sqrt(1 + 1 + 1 + 1) = 2."""
    far = box_nwd(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1e30, 1e30, 3e30, 2e30]]))
    assert far.item() == 0.0
    pred = torch.tensor([[1e30, 1e30, 3e30, 2e30]], requires_grad=True)
    value = aligned_nwd(pred, torch.tensor([[0.0, 0, 2, 2]]))
    (grad,) = torch.autograd.grad(value.sum(), pred)
    assert value.item() == 0.0 and torch.isfinite(grad).all()
    point = boxes([1, 1, 1, 1], [3, 3, 1, 1])
    other = boxes([0, 0, 2, 2], [0, 0, 2, 2])
    torch.testing.assert_close(box_nwd(point, other).diagonal(),
                               torch.tensor([math.exp(-math.sqrt(2) / 12.8), math.exp(-2 / 12.8)],
                                            dtype=torch.float64))


def test_aligned_nwd_gradcheck_including_identical_boxes():
    """float64 gradcheck of aligned_nwd (eps 1e-7 keeps identical boxes differentiable), against both inputs."""
    a = random_boxes(6, seed=5)
    b = random_boxes(6, seed=6)
    b[0] = a[0]
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: aligned_nwd(x, y, 12.8, eps=1e-7), (a, b))

"""Tests of detector/ops/boxes.py: pairwise IoU and the aligned IoU family.

Hand-worked pairs (xyxy):

1. A = (0, 0, 2, 2), B = (1, 1, 3, 3). Intersection 1, union 4 + 4 - 1 = 7, IoU = 1/7. Enclosing box
   (0, 0, 3, 3): area 9, diagonal^2 18. GIoU = 1/7 - (9 - 7)/9 = -5/63. Centres (1, 1), (2, 2): rho^2 = 2,
   DIoU = 1/7 - 2/18 = 2/63. Same aspect ratio and same size, so CIoU = EIoU = DIoU.
2. A = (0, 0, 4, 2), B = (0, 0, 2, 2). Intersection 4, union 8, IoU = 1/2. Enclosing (0, 0, 4, 2): area 8,
   diagonal^2 20, GIoU = 1/2. Centres (2, 1), (1, 1): rho^2 = 1, DIoU = 1/2 - 1/20 = 9/20.
   EIoU = 9/20 - (4 - 2)^2 / 4^2 - 0 = 1/5. CIoU: v = 4/pi^2 (atan(2/2) - atan(4/2))^2,
   alpha = v / (1 - 1/2 + v), CIoU = 9/20 - alpha v.
3. A = (0, 0, 1, 1), B = (2, 0, 3, 1): disjoint, IoU 0. Enclosing (0, 0, 3, 1): area 3, diagonal^2 10;
   GIoU = 0 - (3 - 2)/3 = -1/3. Centres 2 apart: DIoU = -4/10. Same shape: CIoU = EIoU = DIoU.
"""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tvops

from detector.ops.boxes import (
    aligned_ciou,
    aligned_diou,
    aligned_eiou,
    aligned_giou,
    aligned_iou,
    box_iou,
)

FAMILY = [aligned_iou, aligned_giou, aligned_diou, aligned_ciou, aligned_eiou]


def torchvision_aligned_iou(a: torch.Tensor, b: torch.Tensor, block: int = 256) -> torch.Tensor:
    """Row-by-row IoU from torchvision's pairwise box_iou: the diagonals of [block, block] tiles -> Tensor[N]."""
    return torch.cat([tvops.box_iou(a[i:i + block], b[i:i + block]).diagonal() for i in range(0, a.shape[0], block)])


def random_boxes(n: int, generator: torch.Generator, dtype=torch.float32, spread: float = 100.0) -> torch.Tensor:
    """n random valid xyxy boxes (Tensor[n, 4]) with sides in [0.5, spread / 2 + 0.5]."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * spread
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * spread / 2 + 0.5
    return torch.cat((xy, xy + wh), dim=1)


def _ciou_case2() -> float:
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1 - 0.5 + v)
    return 9 / 20 - alpha * v


HAND = [
    # (box a, box b, {function: expected})
    ((0, 0, 2, 2), (1, 1, 3, 3), {aligned_iou: 1 / 7, aligned_giou: -5 / 63, aligned_diou: 2 / 63,
                                  aligned_ciou: 2 / 63, aligned_eiou: 2 / 63}),
    ((0, 0, 4, 2), (0, 0, 2, 2), {aligned_iou: 1 / 2, aligned_giou: 1 / 2, aligned_diou: 9 / 20,
                                  aligned_ciou: _ciou_case2(), aligned_eiou: 1 / 5}),
    ((0, 0, 1, 1), (2, 0, 3, 1), {aligned_iou: 0.0, aligned_giou: -1 / 3, aligned_diou: -2 / 5,
                                  aligned_ciou: -2 / 5, aligned_eiou: -2 / 5}),
]


@pytest.mark.parametrize("a, b, expected", HAND)
def test_aligned_family_hand_cases(a, b, expected):
    ta = torch.tensor([a], dtype=torch.float64)
    tb = torch.tensor([b], dtype=torch.float64)
    for fn, value in expected.items():
        assert fn(ta, tb).item() == pytest.approx(value, abs=1e-6), fn.__name__
        assert fn(tb, ta).item() == pytest.approx(value, abs=1e-6), fn.__name__ + " (swapped)"


def test_box_iou_hand_matrix():
    """Rows A = (0,0,2,2), A' = (0,0,4,2); columns B = (1,1,3,3), B' = (0,0,2,2).

    IoU(A, B) = 1/7, IoU(A, B') = 1 (identical), IoU(A', B) = overlap (1..3)x(1..2) = 2, union 8 + 4 - 2 = 10
    -> 1/5, IoU(A', B') = 4 / 8 = 1/2.
    """
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 4, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2]])
    expected = torch.tensor([[1 / 7, 1.0], [1 / 5, 1 / 2]])
    torch.testing.assert_close(box_iou(a, b), expected, atol=1e-6, rtol=0)


def test_box_iou_matches_torchvision_and_empty():
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(300, g), random_boxes(200, g)
    torch.testing.assert_close(box_iou(a, b), tvops.box_iou(a, b), atol=1e-5, rtol=0)
    assert box_iou(a[:0], b).shape == (0, 200)
    assert box_iou(a, b[:0]).shape == (300, 0)


def test_aligned_family_matches_torchvision_on_random_pairs():
    """Thousands of random pairs, to 1e-5: IoU vs box_iou's diagonal, GIoU/DIoU/CIoU vs torchvision's losses."""
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(5000, g), random_boxes(5000, g)
    # Half the pairs overlap heavily: a shifted by up to 3 and its far corner moved by up to 0.25 (still valid).
    shift = (torch.rand(5000, 2, generator=g) * 3).repeat(1, 2)
    jitter = torch.cat((torch.zeros(5000, 2), torch.rand(5000, 2, generator=g) * 0.25), dim=1)
    a, b = torch.cat((a, a)), torch.cat((b, a + shift + jitter))
    torch.testing.assert_close(aligned_iou(a, b), torchvision_aligned_iou(a, b), atol=1e-5, rtol=0)
    torch.testing.assert_close(1 - aligned_giou(a, b), tvops.generalized_box_iou_loss(a, b), atol=1e-5, rtol=0)
    torch.testing.assert_close(1 - aligned_diou(a, b), tvops.distance_box_iou_loss(a, b), atol=1e-5, rtol=0)
    torch.testing.assert_close(1 - aligned_ciou(a, b), tvops.complete_box_iou_loss(a, b), atol=1e-5, rtol=0)


def test_eiou_matches_diou_plus_side_terms():
    """EIoU = DIoU - (w - w')^2 / C_w^2 - (h - h')^2 / C_h^2, with DIoU from torchvision and C from min/max.

    Compared with ``eps=0``: our ``eps`` lives in the pair's enclosing-box frame, so on a pair whose enclosing
    box is 30x wider than high it weighs ``eps * 30^2`` on the height term, more than torchvision's pixel ``eps``.
    """
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(4000, g, torch.float64), random_boxes(4000, g, torch.float64)
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    dw = (a[:, 2] - a[:, 0]) - (b[:, 2] - b[:, 0])
    dh = (a[:, 3] - a[:, 1]) - (b[:, 3] - b[:, 1])
    expected = 1 - tvops.distance_box_iou_loss(a, b) - dw**2 / cw**2 - dh**2 / ch**2
    torch.testing.assert_close(aligned_eiou(a, b, eps=0.0), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(aligned_eiou(a, b), expected, atol=1e-4, rtol=0)


def test_gradients_match_torchvision():
    """The enclosing-frame normalisation (no gradient) must leave the gradient exact: compare with torchvision."""
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes(500, g, torch.float64), random_boxes(500, g, torch.float64)
    b = torch.cat((b[:250], a[250:] + 2.0))  # half of the pairs overlap
    pairs = [
        (aligned_giou, tvops.generalized_box_iou_loss),
        (aligned_diou, tvops.distance_box_iou_loss),
        (aligned_ciou, tvops.complete_box_iou_loss),
    ]
    for ours, theirs in pairs:
        x = a.clone().requires_grad_(True)
        (grad_ours,) = torch.autograd.grad((1 - ours(x, b)).sum(), x)
        x = a.clone().requires_grad_(True)
        (grad_theirs,) = torch.autograd.grad(theirs(x, b).sum(), x)
        torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-6, rtol=1e-4, msg=ours.__name__)


def test_broadcasting_gives_pairwise():
    g = torch.Generator().manual_seed(4)
    a, b = random_boxes(7, g), random_boxes(5, g)
    torch.testing.assert_close(aligned_iou(a[:, None], b[None]), box_iou(a, b), atol=1e-6, rtol=0)
    torch.testing.assert_close(aligned_diou(a[:, None], b[None]), tvops.distance_box_iou(a, b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fn", FAMILY)
def test_invariant_to_translation_and_scale_even_for_huge_coordinates(fn):
    """Every member is invariant to a common shift and scale; at 1e30 a naive float32 square overflows."""
    g = torch.Generator().manual_seed(5)
    a, b = random_boxes(200, g), random_boxes(200, g)
    reference = fn(a, b)
    for scale, shift in ((1e-3, 7.0), (1e3, -5e4), (1e30, 3e30)):
        value = fn(a * scale + shift, b * scale + shift)
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, reference, atol=2e-4, rtol=0)


DEGENERATE = {
    "identical": ([10.0, 20, 50, 80], [10.0, 20, 50, 80]),
    "disjoint": ([0.0, 0, 10, 10], [20.0, 30, 40, 45]),
    "touching": ([0.0, 0, 10, 10], [10.0, 0, 20, 10]),
    "zero_width": ([5.0, 0, 5, 10], [0.0, 0, 10, 10]),
    "both_zero_width_same_line": ([5.0, 0, 5, 10], [5.0, 2, 5, 12]),
    "both_points_same_place": ([3.0, 3, 3, 3], [3.0, 3, 3, 3]),
    "points_apart": ([3.0, 3, 3, 3], [7.0, 9, 7, 9]),
    "zero_height": ([0.0, 4, 10, 4], [2.0, 0, 8, 10]),
    "far_apart": ([0.0, 0, 1, 1], [1e7, 1e7, 1e7 + 16, 1e7 + 16]),
    "huge": ([1e30, 1e30, 3e30, 2e30], [1.5e30, 1.2e30, 4e30, 5e30]),
    "tiny": ([0.0, 0, 1e-6, 1e-6], [5e-7, 0, 2e-6, 1e-6]),
}


@pytest.mark.parametrize("fn", FAMILY)
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_pairs_finite_value_and_gradient(fn, case):
    a, b = DEGENERATE[case]
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([a], dtype=dtype, requires_grad=True)
        y = torch.tensor([b], dtype=dtype, requires_grad=True)
        value = fn(x, y)
        gx, gy = torch.autograd.grad(value.sum(), (x, y))
        assert torch.isfinite(value).all(), (case, value)
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all(), (case, gx, gy)
        assert -3.0 <= value.item() <= 1.0


def test_identical_boxes_are_one_and_points_are_zero_iou():
    box = torch.tensor([[10.0, 20, 50, 80]])
    for fn in FAMILY:
        assert fn(box, box).item() == pytest.approx(1.0, abs=1e-6)
    point = torch.tensor([[3.0, 3, 3, 3]])
    assert aligned_iou(point, point).item() == 0.0


def _ciou_alpha_v_reference(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CIoU's alpha and v from the paper's formulas, IoU from torchvision: Tensor[N, 4] x2 -> (Tensor[N], Tensor[N])."""
    wp, hp = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    wq, hq = q[:, 2] - q[:, 0], q[:, 3] - q[:, 1]
    v = 4 / math.pi**2 * (torch.atan(wq / hq) - torch.atan(wp / hp)) ** 2
    iou = torchvision_aligned_iou(p, q)
    return v / (1 - iou + v), v


def _pairs_for_gradcheck(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Six float64 pairs, three overlapping and three random, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    a = random_boxes(6, g, torch.float64, spread=10.0)
    b = torch.cat((a[:3] + torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.3,
                   random_boxes(3, g, torch.float64, 10.0)))
    return a.requires_grad_(True), b.requires_grad_(True)


@pytest.mark.parametrize("fn", [aligned_iou, aligned_giou, aligned_diou, aligned_eiou])
def test_gradcheck_float64(fn):
    a, b = _pairs_for_gradcheck(6)
    assert torch.autograd.gradcheck(lambda p, q: fn(p, q), (a, b))


def test_gradcheck_ciou_with_alpha_held_constant():
    """CIoU's alpha carries no gradient by design, so its gradient is that of ``IoU - rho^2/c^2 - alpha_0 v``.

    gradcheck that: add ``(alpha(p) - alpha_0) * v(p)`` computed without gradient (alpha_0 = alpha at the base
    point). The sum's value is the frozen-alpha function and its autograd gradient is aligned_ciou's.
    """
    a, b = _pairs_for_gradcheck(7)
    with torch.no_grad():
        alpha0, _ = _ciou_alpha_v_reference(a, b)

    def frozen(p, q):
        with torch.no_grad():
            alpha, v = _ciou_alpha_v_reference(p, q)
        return aligned_ciou(p, q) + (alpha - alpha0) * v

    assert torch.autograd.gradcheck(frozen, (a, b))

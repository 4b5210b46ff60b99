"""Tests of detector/assigners/centernet.py (CornerNet's Gaussian radius, the heat-map renderer, CenterNet's targets).

Radius, hand-worked (``o = 0.7``):

* square of side ``a``: case 2 gives ``(a - 2r)^2 = o a^2``, ``r = a (1 - sqrt(o)) / 2`` (corrected rule, the
  smallest case); the released rule is ``sqrt(o^2 (2a)^2 + 4 o (1 - o) a^2) - 2 o a = 2 a (sqrt(o) - o)``.
  ``a = 10``: ``5 (1 - 0.836660) = 0.816699`` and ``20 (0.836660 - 0.7) = 2.733201``.
* ``h = 4, w = 16`` (``h + w = 20``, ``hw = 64``), corrected: case 1 ``r^2 - 20 r + 64 * 0.3 / 1.7 = 0`` ->
  ``(20 - sqrt(400 - 45.1765)) / 2 = 0.58164``; case 2 ``4 r^2 - 40 r + 19.2 = 0`` -> ``(40 - sqrt(1292.8)) / 8
  = 0.50558``; case 3 ``2.8 r^2 + 28 r - 19.2 = 0`` -> ``(-28 + sqrt(999.04)) / 5.6 = 0.64421``; min 0.50558.
  Released: ``2.8 * 0.64421 = 1.80380``.

Maps: one level of stride 4 on a 32 x 32 input (8 x 8 cells, prior ``gy * 8 + gx``, centre ``4 g + 2``).
Radius 1 means sigma 0.5: side neighbours ``exp(-1 / 0.5) = e^-2``, diagonal ``e^-4``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detector.assigners.centernet import (
    CenterNetAssigner, assign_centernet, gaussian_radius, render_gaussian_heatmap,
)
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.structures import Predictions

E2, E4 = math.exp(-2), math.exp(-4)


def level(h=8, w=8, stride=4):
    return PointPriorGenerator([stride])([(h, w)])


def rows(*boxes):
    """Target rows from (image, class, x1, y1, x2, y2) tuples."""
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 6)


def pairs(a):
    return list(zip(a.batch_index.tolist(), a.prior_index.tolist(), a.gt_index.tolist()))


def _radius_by_numpy_roots(h, w, o, rule):
    """Each case's quadratic solved by ``numpy.roots``; the released code's root of case i is the larger root
    times ``a_i`` (it halves ``-b + sqrt(b^2 - 4ac)`` instead of dividing by ``2 a``)."""
    cases = [(1.0, -(h + w), w * h * (1 - o) / (1 + o)), (4.0, -2 * (h + w), (1 - o) * w * h),
             (4 * o, 2 * o * (h + w), (o - 1) * w * h)]
    roots = [np.sort(np.roots(c).real) for c in cases]
    if rule == "corrected":
        return min(roots[0][0], roots[1][0], roots[2][1])
    return min(a * r[1] for (a, _, _), r in zip(cases, roots))


def test_radius_hand_values():
    for a in (1.0, 4.0, 10.0, 37.0):
        assert float(gaussian_radius(a, a)) == pytest.approx(2 * a * (math.sqrt(0.7) - 0.7), rel=1e-6)
        assert float(gaussian_radius(a, a, rule="corrected")) == pytest.approx(a * (1 - math.sqrt(0.7)) / 2, rel=1e-5)
    assert float(gaussian_radius(10.0, 10.0)) == pytest.approx(2.733201, abs=1e-5)
    assert float(gaussian_radius(10.0, 10.0, rule="corrected")) == pytest.approx(0.816699, abs=1e-5)
    assert float(gaussian_radius(4.0, 16.0, rule="corrected")) == pytest.approx(0.50558, abs=1e-4)
    assert float(gaussian_radius(4.0, 16.0)) == pytest.approx(1.80380, abs=1e-4)
    # broadcasting, integer input
    got = gaussian_radius(torch.tensor([[10], [4]]), torch.tensor([10, 16]))
    assert got.shape == (2, 2) and got.dtype == torch.float32


@pytest.mark.parametrize("rule", ["centernet", "corrected"])
@pytest.mark.parametrize("o", [0.3, 0.5, 0.7, 0.9])
def test_radius_matches_numpy_roots(rule, o):
    sizes = torch.tensor([1.0, 2.0, 3.0, 7.0, 16.0, 50.0, 151.0], dtype=torch.float64)
    h, w = sizes[:, None].expand(7, 7), sizes[None, :].expand(7, 7)
    got = gaussian_radius(h, w, o, rule)
    want = torch.tensor([[_radius_by_numpy_roots(float(a), float(b), o, rule) for b in sizes] for a in sizes],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_corrected_radius_keeps_the_overlap_of_moved_corners():
    """At the corrected radius, the three corner moves give boxes of IoU >= o with the ground truth (computed by
    torchvision's box_iou), and the tightest one reaches o: it is the largest such radius."""
    o = 0.7
    for h, w in [(10.0, 10.0), (4.0, 16.0), (30.0, 5.0), (100.0, 80.0)]:
        h64, w64 = torch.tensor(h, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
        r = float(gaussian_radius(h64, w64, o, rule="corrected"))
        gt = torch.tensor([[0.0, 0.0, w, h]], dtype=torch.float64)
        moved = torch.tensor([[r, r, w + r, h + r], [r, r, w - r, h - r], [-r, -r, w + r, h + r]],
                             dtype=torch.float64)  # cases 1, 2, 3
        iou = box_iou(gt, moved)[0]
        assert bool((iou >= o - 1e-9).all()) and float(iou.min()) == pytest.approx(o, abs=1e-9)
        # the released rule is wider: its inner box (case 2) falls below o
        big = float(gaussian_radius(h64, w64, o))
        assert big > r and float(box_iou(gt, torch.tensor([[big, big, w - big, h - big]], dtype=torch.float64))) < o


def test_radius_bad_arguments():
    with pytest.raises(ValueError, match="rule"):
        gaussian_radius(1.0, 1.0, rule="paper")
    for o in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="min_overlap"):
            gaussian_radius(1.0, 1.0, o)


def _render_loop(centers, radius, image, classes, b, c, h, w):
    """A slow reference: each object's full-grid Gaussian, cut to its square, combined by np.maximum."""
    out = np.zeros((b, c, h, w))
    ys, xs = np.mgrid[0:h, 0:w]
    for (gx, gy), r, i, k in zip(centers.tolist(), radius.tolist(), image.tolist(), classes.tolist()):
        sigma = (2 * r + 1) / 6
        g = np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * sigma ** 2))
        g[(np.abs(xs - gx) > r) | (np.abs(ys - gy) > r)] = 0
        out[i, k] = np.maximum(out[i, k], g)
    return torch.from_numpy(out)


def test_render_hand_values():
    """Radius 1 at the corner (0, 0) of a 3 x 3 map: [[1, e^-2, 0], [e^-2, e^-4, 0], [0, 0, 0]] (the window is
    cut by the border); radius 0 at (2, 1) of class 1: only that cell, 1."""
    heat = render_gaussian_heatmap(torch.tensor([[0, 0], [2, 1]]), torch.tensor([1, 0]), torch.tensor([0, 0]),
                                   torch.tensor([0, 1]), 1, 2, 3, 3)
    assert heat.shape == (1, 2, 3, 3) and heat.dtype == torch.float32
    torch.testing.assert_close(heat[0, 0], torch.tensor([[1, E2, 0], [E2, E4, 0], [0, 0, 0]]))
    assert heat[0, 1].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_render_overlaps_take_the_maximum_and_match_a_loop():
    """Two radius-1 Gaussians of one class at (1, 1) and (2, 1): the shared cells take the larger value, e.g.
    (2, 1) is 1 (the second centre), (1, 0) is max(e^-2, e^-4) = e^-2. Then 60 random objects against a loop."""
    heat = render_gaussian_heatmap(torch.tensor([[1, 1], [2, 1]]), torch.tensor([1, 1]), torch.tensor([0, 0]),
                                   torch.tensor([0, 0]), 1, 1, 3, 4)[0, 0]
    torch.testing.assert_close(heat, torch.tensor([[E4, E2, E2, E4], [E2, 1, 1, E2], [E4, E2, E2, E4]]))
    g = torch.Generator().manual_seed(0)
    n, b, c, h, w = 60, 3, 4, 20, 25
    centers = torch.stack((torch.randint(0, w, (n,), generator=g), torch.randint(0, h, (n,), generator=g)), 1)
    radius, image = torch.randint(0, 7, (n,), generator=g), torch.randint(0, b, (n,), generator=g)
    classes = torch.randint(0, c, (n,), generator=g)
    got = render_gaussian_heatmap(centers, radius, image, classes, b, c, h, w, dtype=torch.float64)
    torch.testing.assert_close(got, _render_loop(centers, radius, image, classes, b, c, h, w), rtol=0, atol=1e-12)
    assert int((got == 1).sum()) == len({(i, k, x, y) for (x, y), i, k in
                                          zip(centers.tolist(), image.tolist(), classes.tolist())})


def test_worked_example():
    """The docstring's box (0, 4, 24, 20), class 1: cell (3, 3) = prior 27, 6 x 4 cells, radius 1."""
    result = assign_centernet(level(), rows((0, 1, 0, 4, 24, 20)), batch_size=1, num_classes=2)
    assert pairs(result) == [(0, 27, 0)]
    assert result.weight is None and result.ignore is None and result.score is None
    heat = result.extras["heatmap"]
    assert heat.shape == (1, 64, 2) and heat.dtype == torch.float32 and heat.is_contiguous()
    want = torch.zeros(8, 8)
    want[2:5, 2:5] = torch.tensor([[E4, E2, E4], [E2, 1, E2], [E4, E2, E4]])
    torch.testing.assert_close(heat[0, :, 1].reshape(8, 8), want)
    assert heat[0, :, 0].abs().sum() == 0
    # the corrected rule: case 2 of 4 x 6 cells, (20 - sqrt(400 - 115.2)) / 8 = 0.39 -> radius 0, a single cell
    small = assign_centernet(level(), rows((0, 1, 0, 4, 24, 20)), 1, 2, radius_rule="corrected")
    assert int((small.extras["heatmap"] > 0).sum()) == 1 and float(small.extras["heatmap"][0, 27, 1]) == 1.0


def test_two_centres_in_one_cell():
    """Boxes (0, 0, 8, 8) and (2, 2, 6, 6) both have centre (4, 4) -> cell (1, 1), prior 9. Both pairs are kept
    (CenterNet regresses both sizes at that cell); with one class the heat map has one peak, with two classes
    one peak per channel."""
    same = assign_centernet(level(), rows((0, 0, 0, 0, 8, 8), (0, 0, 2, 2, 6, 6)), 1, 2)
    assert pairs(same) == [(0, 9, 0), (0, 9, 1)]
    assert int((same.extras["heatmap"] == 1).sum()) == 1
    other = assign_centernet(level(), rows((0, 0, 0, 0, 8, 8), (0, 1, 2, 2, 6, 6)), 1, 2)
    assert pairs(other) == [(0, 9, 0), (0, 9, 1)]
    assert (other.extras["heatmap"] == 1).nonzero().tolist() == [[0, 9, 0], [0, 9, 1]]


def test_batch_order_degenerate_and_border_boxes():
    """Rows: 0 image 1 box centre (14, 14) -> prior 27; 1 image 0 zero-width box (skipped: no pair, no peak);
    2 image 0 centre (30, 6) -> cell (7, 1), prior 15; 3 image 1 box half outside the input, centre (35, 35) ->
    cell (8, 8) clamped to (7, 7), prior 63; 4 image 0 centre (2, 2) -> prior 0. Image 2 has no boxes."""
    targets = rows((1, 0, 10, 10, 18, 18), (0, 0, 5, 5, 5, 9), (0, 1, 28, 4, 32, 8), (1, 1, 30, 30, 40, 40),
                   (0, 0, 0, 0, 4, 4))
    result = assign_centernet(level(), targets, batch_size=3, num_classes=2)
    assert pairs(result) == [(0, 0, 4), (0, 15, 2), (1, 27, 0), (1, 63, 3)]
    heat = result.extras["heatmap"]
    assert (heat == 1).nonzero().tolist() == [[0, 0, 0], [0, 15, 1], [1, 27, 0], [1, 63, 1]]
    assert heat[2].abs().sum() == 0


def test_empty_targets_and_all_degenerate():
    for targets in (torch.zeros(0, 6), rows((0, 0, 4, 4, 4, 12))):
        result = assign_centernet(level(4, 5), targets, batch_size=2, num_classes=3)
        assert result.num_pos == 0 and result.prior_index.dtype == torch.long
        assert result.extras["heatmap"].shape == (2, 20, 3) and result.extras["heatmap"].abs().sum() == 0


def test_matches_a_loop_reference_on_coco128(coco128_targets):
    """Real boxes (8 images at 320, 80 classes, stride 4 -> 80 x 80): the heat map equals the loop renderer fed
    with CenterNet's per-box rule (numpy-roots radius of the ceiled cell sizes, floored; the centre cell)."""
    targets = coco128_targets(8, 320)
    result = assign_centernet(level(80, 80), targets, batch_size=8, num_classes=80)
    t = targets.double()
    size = (t[:, 4:6] - t[:, 2:4]) / 4
    keep = (size > 0).all(1)
    radius = torch.tensor([max(0, int(_radius_by_numpy_roots(math.ceil(hh), math.ceil(ww), 0.7, "centernet")))
                           for ww, hh in size[keep].tolist()])
    centers = ((t[keep, 2:4] + t[keep, 4:6]) / 8).floor().long().clamp(0, 79)
    want = _render_loop(centers, radius, t[keep, 0].long(), t[keep, 1].long(), 8, 80, 80, 80)
    got = result.extras["heatmap"].reshape(8, 80, 80, 80).permute(0, 3, 1, 2)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)
    assert result.num_pos == int(keep.sum()) == 30  # every coco128 box of these images has a size
    assert torch.equal(result.prior_index, (centers[:, 1] * 80 + centers[:, 0])[torch.argsort(
        t[keep, 0].long() * 6400 + centers[:, 1] * 80 + centers[:, 0], stable=True)])


def test_class_wrapper_and_errors():
    assigner = CenterNetAssigner(num_classes=2, min_overlap=0.5, radius_rule="corrected")
    assert assigner.needs_predictions is False and assigner.needs_anchors is False
    assert repr(assigner) == "CenterNetAssigner(num_classes=2, min_overlap=0.5, radius_rule='corrected')"
    targets = rows((0, 1, 0, 4, 24, 20), (1, 0, 2, 2, 30, 12))
    pred = Predictions(boxes=torch.zeros(2, 64, 4), scores=torch.zeros(2, 64, 2))
    got, want = assigner(level(), targets, 2, pred=pred), assign_centernet(level(), targets, 2, 2, 0.5, "corrected")
    assert pairs(got) == pairs(want) and torch.equal(got.extras["heatmap"], want.extras["heatmap"])
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_classes"):
            CenterNetAssigner(num_classes=bad)
    with pytest.raises(ValueError, match="rule"):
        CenterNetAssigner(2, radius_rule="paper")
    with pytest.raises(ValueError, match="one level of point priors"):
        assigner(PointPriorGenerator([4, 8])([(8, 8), (4, 4)]), targets, 2)
    with pytest.raises(ValueError, match="one level of point priors"):
        assigner(AnchorPriorGenerator([[10, 13, 16, 30]], [4])([(8, 8)]), targets, 2)
    with pytest.raises(ValueError, match="num_classes=2"):
        assigner(level(), rows((0, 2, 0, 0, 8, 8)), 1)
    with pytest.raises(ValueError, match="image_index"):
        assigner(level(), targets, 1)

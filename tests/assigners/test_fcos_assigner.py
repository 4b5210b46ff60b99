"""Tests of detector/assigners/fcos.py (FCOS's point assignment with centre sampling, as torchvision).

Conventions used in the hand-worked cases:

* ``one_level()``: one level of stride 8 on an 80 x 80 input, 10 x 10 points with centres ``8 * g + 4``
  (4, 12, 20, ..., 76), prior ``gy * 10 + gx``; its default range is ``(0, inf)`` (first lower bound 0, last
  upper bound inf), so only "inside the box" and centre sampling decide.
* ``three_levels()``: strides 8 / 16 / 32 on a 128 x 128 input: 16 x 16 points (centres ``8g + 4``, prior
  ``gy * 16 + gx``), 8 x 8 (centres ``16g + 8``, prior ``256 + gy * 8 + gx``), 4 x 4 (centres ``32g + 16``,
  prior ``320 + gy * 4 + gx``); default ranges ``(0, 64), (64, 128), (128, inf)``.

The centre-sampling radius is 1.5 strides = 12 px at stride 8 unless a test says otherwise.
"""
from __future__ import annotations

import math
import types

import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.fcos import FCOS

from detector.assigners.fcos import FCOSAssigner, assign_fcos, fcos_centerness, fcos_default_ranges
from detector.models.priors import PointPriorGenerator
from detector.structures import Assignment, Predictions


def one_level():
    return PointPriorGenerator([8])([(10, 10)])


def three_levels():
    return PointPriorGenerator([8, 16, 32])([(16, 16), (8, 8), (4, 4)])


def rows(*boxes):
    """Target rows (image, class, x1, y1, x2, y2) from (image, x1, y1, x2, y2) tuples, class 0."""
    return torch.tensor([[b[0], 0.0, *b[1:]] for b in boxes], dtype=torch.float32).reshape(-1, 6)


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return sorted(zip(assignment.batch_index.tolist(), assignment.prior_index.tolist(), assignment.gt_index.tolist()))


def grid_pairs(xs, ys, gt, width=10, image=0, offset=0):
    return sorted((image, offset + y * width + x, gt) for x in xs for y in ys)


def test_docstring_worked_example():
    """Box (0, 0, 60, 40), centre (30, 20). Inside: x centres 4..52 (60 is on the border), y 4..36.
    Within 12 px of the centre: x in {20, 28, 36} (gx 2..4; 12 is 18 px away, 44 is 14), y in {12, 20, 28}
    (gy 1..3). 9 positives. Centerness worked by hand:
    (20, 12): ltrb (20, 12, 40, 28) -> sqrt(20/40 * 12/28) = sqrt(3/14) = 0.46291;
    (28, 20): ltrb (28, 20, 32, 20) -> sqrt(28/32) = 0.93541;
    (36, 28): ltrb (36, 28, 24, 12) -> sqrt(24/36 * 12/28) = sqrt(2/7) = 0.53452.
    """
    result = assign_fcos(one_level(), rows((0, 0, 0, 60, 40)), batch_size=1)
    assert pairs(result) == grid_pairs([2, 3, 4], [1, 2, 3], gt=0)
    assert result.batch_index.dtype == result.prior_index.dtype == result.gt_index.dtype == torch.long
    assert result.weight is None and result.ignore is None and result.negative is None and result.score is None
    centerness = dict(zip(result.prior_index.tolist(), result.extras["centerness"].tolist()))
    assert centerness[12] == pytest.approx(math.sqrt(3 / 14), abs=1e-6)
    assert centerness[23] == pytest.approx(math.sqrt(28 / 32), abs=1e-6)
    assert centerness[34] == pytest.approx(math.sqrt(2 / 7), abs=1e-6)
    # the paper's rule without centre sampling: every point strictly inside, 7 x 5 = 35
    paper = assign_fcos(one_level(), rows((0, 0, 0, 60, 40)), batch_size=1, center_radius=None)
    assert pairs(paper) == grid_pairs(range(7), range(5), gt=0)


def test_points_on_the_border_are_not_inside():
    """Box (20, 20, 44, 36): the x centres 20 and 44 and the y centres 20 and 36 lie on its edges (a distance
    of 0 is not > 0), leaving (28, 28) and (36, 28) -> cells (3, 3), (4, 3) = priors 33, 34 (both within 12 px
    of the centre (32, 28)). Each has ltrb with min(l, r) / max(l, r) = 8 / 16 and t = b = 8: centerness
    sqrt(0.5)."""
    result = assign_fcos(one_level(), rows((0, 20, 20, 44, 36)), batch_size=1)
    assert pairs(result) == [(0, 33, 0), (0, 34, 0)]
    assert result.extras["centerness"].tolist() == pytest.approx([math.sqrt(0.5)] * 2, abs=1e-6)


@pytest.mark.parametrize(
    "radius, xs, ys",
    [
        # 12 px: x in {28, 36} (20 and 44 are exactly 12 px away: not < 12), y in {12, 20} (4 and 28 exactly 12)
        (1.5, [3, 4], [1, 2]),
        # 12.8 px: the points exactly 12 px away join: x in {20, ..., 44}, y in {4, ..., 28}
        (1.6, [2, 3, 4, 5], [0, 1, 2, 3]),
        # no centre sampling: every centre strictly inside, x 4..60, y 4..28
        (None, list(range(8)), [0, 1, 2, 3]),
    ],
)
def test_centre_sampling_radius_edge(radius, xs, ys):
    """Box (0, 0, 64, 32), centre (32, 16), one level: the Chebyshev distance must be strictly below
    radius * stride."""
    result = assign_fcos(one_level(), rows((0, 0, 0, 64, 32)), batch_size=1, center_radius=radius)
    assert pairs(result) == grid_pairs(xs, ys, gt=0)


def test_nested_boxes_smallest_area_wins():
    """Big (0, 0, 64, 64), area 4096, centre (32, 32): candidates x, y in {28, 36} (cells 3, 4). Small
    (8, 8, 32, 32), area 576, centre (20, 20): candidates x, y in {12, 20, 28} (cells 1..3). They share the
    point (28, 28) = prior 33, which goes to the smaller box whatever the row order. The big box keeps
    priors 34, 43, 44."""
    big, small = (0, 0, 0, 64, 64), (0, 8, 8, 32, 32)
    for order in ((big, small), (small, big)):
        result = assign_fcos(one_level(), rows(*order), batch_size=1)
        big_row, small_row = order.index(big), order.index(small)
        expected = sorted(grid_pairs([1, 2, 3], [1, 2, 3], gt=small_row) + [(0, p, big_row) for p in (34, 43, 44)])
        assert pairs(result) == expected
        assert result.prior_index.unique().numel() == result.num_pos  # one box per point


def test_equal_areas_first_row_wins():
    """A (0, 0, 32, 32) and B (8, 8, 40, 40), both 1024 px^2. A's candidates: x, y in {12, 20} (4 and 28 are
    12 px from its centre 16); B's: x, y in {20, 28}. They share (20, 20) = prior 22, which goes to the box
    listed first in its image (torchvision: first maximum of 1e8 - area). Exact duplicates: the first takes
    every point."""
    a, b = (0, 0, 0, 32, 32), (0, 8, 8, 40, 40)
    a_points = [11, 12, 21, 22]
    b_points = [22, 23, 32, 33]
    first_a = pairs(assign_fcos(one_level(), rows(a, b), batch_size=1))
    assert first_a == sorted([(0, p, 0) for p in a_points] + [(0, p, 1) for p in b_points if p != 22])
    first_b = pairs(assign_fcos(one_level(), rows(b, a), batch_size=1))
    assert first_b == sorted([(0, p, 0) for p in b_points] + [(0, p, 1) for p in a_points if p != 22])
    duplicates = pairs(assign_fcos(one_level(), rows(a, a), batch_size=1))
    assert duplicates == [(0, p, 0) for p in a_points]


def test_range_edges_exactly_64_at_stride_8_and_16():
    """Box (8, 0, 76, 16), no centre sampling, three levels.

    Stride 8: inside x centres 12..68 (gx 1..8), y 4, 12 (gy 0, 1). max(l, t, r, b): x = 12 -> r = 64, not
    < 64 (excluded); x = 20..68 -> 56 .. 60 < 64 (positive): 7 x 2 = 14 points.
    Stride 16: inside x centres 24, 40, 56, 72 (gx 1..4), y 8 (gy 0): max 52, 36, 48, and 64 at x = 72
    (l = 64, not > 64): none. Stride 32: the y centre 16 is on the bottom edge: none.
    With the bounds moved half a pixel ((0, 64.5), (63.5, 128)) both edge points become positive:
    (12, 4), (12, 12) at stride 8 and (72, 8) at stride 16 (prior 256 + 4), as with the paper's / FCOS
    repo's inclusive bounds.
    """
    targets = rows((0, 8, 0, 76, 16))
    strict = pairs(assign_fcos(three_levels(), targets, batch_size=1, center_radius=None))
    assert strict == grid_pairs(range(2, 9), [0, 1], gt=0, width=16)
    widened = assign_fcos(
        three_levels(), targets, batch_size=1, ranges=[(0, 64.5), (63.5, 128), (128, math.inf)], center_radius=None
    )
    assert pairs(widened) == sorted(grid_pairs(range(1, 9), [0, 1], gt=0, width=16) + [(0, 256 + 4, 0)])


def test_large_box_goes_to_a_coarser_level():
    """Box (0, 0, 128, 128), centre (64, 64). Stride 8 (radius 12): x, y in {60, 68}, max distance 68 > 64:
    not at level 0. Stride 16 (radius 24): x, y in {56, 72} (40 and 88 are 24 px away), max 72 in (64, 128):
    4 positives, priors 256 + gy * 8 + gx for gx, gy in {3, 4}. Stride 32 (radius 48): x, y in {48, 80}, max
    80 not > 128: none. With the range (0, 64) at every level, each candidate's max distance (68, 72, 80) is
    too large: no pairs."""
    targets = rows((0, 0, 0, 128, 128))
    result = assign_fcos(three_levels(), targets, batch_size=1)
    assert pairs(result) == grid_pairs([3, 4], [3, 4], gt=0, width=8, offset=256)
    too_small = assign_fcos(three_levels(), targets, batch_size=1, ranges=[(0, 64)] * 3)
    assert too_small.num_pos == 0


def test_box_smaller_than_a_cell():
    """(5, 5, 7, 7) and (0, 0, 3, 3) contain no point centre (the nearest is (4, 4)): no pairs. (3, 3, 5, 5)
    contains (4, 4) at its centre: prior 0, ltrb (1, 1, 1, 1), centerness 1."""
    assert assign_fcos(one_level(), rows((0, 5, 5, 7, 7), (0, 0, 0, 3, 3)), batch_size=1).num_pos == 0
    result = assign_fcos(one_level(), rows((0, 3, 3, 5, 5)), batch_size=1)
    assert pairs(result) == [(0, 0, 0)]
    assert result.extras["centerness"].tolist() == pytest.approx([1.0])


def test_batch_layout_rows_and_an_empty_image():
    """Rows in image order [1, 0, 1] with B = 3 (image 2 has no boxes): row 0 = the border box of image 1
    (priors 33, 34), row 1 = the worked-example box in image 0 (9 priors), row 2 = the tiny box (3, 3, 5, 5)
    in image 1 (prior 0). gt_index refers to the rows of ``targets``."""
    targets = rows((1, 20, 20, 44, 36), (0, 0, 0, 60, 40), (1, 3, 3, 5, 5))
    result = assign_fcos(one_level(), targets, batch_size=3)
    expected = grid_pairs([2, 3, 4], [1, 2, 3], gt=1) + [(1, 0, 2), (1, 33, 0), (1, 34, 0)]
    assert pairs(result) == sorted(expected)
    # pairs come ordered by image then prior, and the centerness follows that order
    assert result.batch_index.tolist() == [0] * 9 + [1] * 3
    assert result.prior_index.tolist() == [12, 13, 14, 22, 23, 24, 32, 33, 34, 0, 33, 34]
    assert result.extras["centerness"][9:].tolist() == pytest.approx([1.0, math.sqrt(0.5), math.sqrt(0.5)])
    assert result.positive_mask(3, 100)[2].sum() == 0


def test_empty_targets():
    """No ground truth at all: zero pairs, an empty centerness tensor, the right device."""
    for priors in (one_level(), three_levels()):
        result = assign_fcos(priors, torch.zeros(0, 6), batch_size=2)
        assert result.num_pos == 0
        assert result.extras["centerness"].shape == (0,)
        assert result.prior_index.dtype == torch.long


def test_centerness_function():
    """Worked values: centre -> 1; ltrb (1, 2, 3, 4) -> sqrt(1/3 * 2/4) = sqrt(1/6); (10, 5, 10, 20) ->
    sqrt(1 * 0.25) = 0.5; broadcasting over leading dimensions."""
    ltrb = torch.tensor([[[5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0], [10.0, 5.0, 10.0, 20.0]]])  # (1, 3, 4)
    assert fcos_centerness(ltrb).shape == (1, 3)
    assert fcos_centerness(ltrb)[0].tolist() == pytest.approx([1.0, math.sqrt(1 / 6), 0.5])


def test_default_ranges():
    assert fcos_default_ranges([8, 16, 32]) == [(0.0, 64.0), (64.0, 128.0), (128.0, math.inf)]
    assert fcos_default_ranges([8, 16, 32, 64, 128]) == [
        (0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf)
    ]
    assert fcos_default_ranges([8]) == [(0.0, math.inf)]


def test_class_matches_function_and_ignores_predictions():
    priors = three_levels()
    targets = rows((0, 8, 0, 76, 16), (1, 0, 0, 128, 128), (1, 20, 20, 44, 36))
    assigner = FCOSAssigner(ranges=[(0, 64), (64, 128), (128, "inf")], center_radius=2.0)
    assert assigner.needs_predictions is False and assigner.needs_anchors is False
    assert repr(assigner) == ("FCOSAssigner(ranges=[(0.0, 64.0), (64.0, 128.0), (128.0, inf)], center_radius=2.0, "
                              "weight_by_centerness=True)")
    pred = Predictions(boxes=torch.zeros(2, len(priors), 4), scores=torch.zeros(2, len(priors), 1))
    got = assigner(priors, targets, 2, pred=pred)
    want = assign_fcos(priors, targets, 2, ranges=[(0, 64), (64, 128), (128, math.inf)], center_radius=2.0)
    assert pairs(got) == pairs(want) and got.num_pos > 0
    assert torch.equal(got.extras["centerness"], want.extras["centerness"])
    assert want.weight is None and torch.equal(got.weight, got.extras["centerness"])  # box loss weighted by it
    assert FCOSAssigner(weight_by_centerness=False)(priors, targets, 2).weight is None
    assert repr(FCOSAssigner()) == "FCOSAssigner(ranges=None, center_radius=1.5, weight_by_centerness=True)"


def test_bad_inputs_raise_clear_errors():
    for radius in (0, -1.0, True, "1.5"):
        with pytest.raises(ValueError, match="center_radius"):
            FCOSAssigner(center_radius=radius)
    for ranges in ([(64, 0)], [(-1, 64)], [(0,)], [], "0-64"):
        with pytest.raises(ValueError, match="ranges"):
            FCOSAssigner(ranges=ranges)
    with pytest.raises(ValueError, match="2 ranges for 3 levels"):
        assign_fcos(three_levels(), rows((0, 0, 0, 8, 8)), 1, ranges=[(0, 64), (64, math.inf)])
    with pytest.raises(ValueError, match="image_index"):
        assign_fcos(one_level(), rows((3, 0, 0, 8, 8)), batch_size=2)
    with pytest.raises(ValueError, match="Tensor\\[n, 6\\]"):
        assign_fcos(one_level(), torch.zeros(2, 5), batch_size=2)


def _torchvision_matches(priors, targets, batch_size, center_radius):
    """torchvision's ``FCOS.compute_loss`` matching, captured from the ``matched_idxs`` it hands to its head.

    torchvision's anchor centres sit at ``grid * stride`` (its AnchorGenerator), ours at ``(grid + 0.5) *
    stride``; so we give it one anchor per point of size ``stride`` centred on our centre (its "anchor size",
    the scale of the centre-sampling radius and of the ranges, is then the stride, as in torchvision's FCOS).
    Returns (Tensor[B, P] per-image box index or -1, list of the per-image anchors, list of per-image targets).
    """
    captured = {}
    head = types.SimpleNamespace(compute_loss=lambda tg, outputs, anchors, matched: captured.setdefault("m", matched))
    model = types.SimpleNamespace(center_sampling_radius=center_radius, head=head)
    centres, strides = priors.centers, priors.strides[:, None]
    anchors = torch.cat((centres - strides / 2, centres + strides / 2), dim=1)  # (P, 4)
    per_image = [
        {"boxes": targets[targets[:, 0] == b, 2:], "labels": targets[targets[:, 0] == b, 1].long()}
        for b in range(batch_size)
    ]
    num_per_level = [a * h * w for a, h, w in priors.level_shapes]
    FCOS.compute_loss(model, per_image, {}, [anchors] * batch_size, num_per_level)
    return torch.stack(captured["m"]), anchors, per_image


@pytest.mark.parametrize(
    "strides, ranges, center_radius, tv_radius",
    [
        ((8, 16, 32), None, 1.5, 1.5),
        ((8, 16, 32), [(0, 64), (64, 128), (128, math.inf)], 2.5, 2.5),
        # the paper's P3-P7 ranges, written out (the default rule gives the same)
        ((8, 16, 32, 64, 128), [(0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)], 1.5, 1.5),
        # no centre sampling: torchvision has no switch, an enormous radius is the same rule
        ((8, 16, 32), None, None, 1e9),
    ],
)
def test_agrees_with_torchvision_point_for_point(coco128_batch, strides, ranges, center_radius, tv_radius):
    """Real coco128 boxes (16 images letterboxed to 640, plus a 17th image without boxes): our pairs give
    exactly torchvision's ``matched_idxs`` for every point of every image, and our centerness equals the one
    torchvision's head computes from its own ltrb encoding (``BoxLinearCoder``) of the matched boxes."""
    targets, batch_size, img_size = coco128_batch
    batch_size += 1  # image 16 has no rows
    priors = PointPriorGenerator(strides)([(img_size // s, img_size // s) for s in strides])
    result = assign_fcos(priors, targets, batch_size, ranges=ranges, center_radius=center_radius)
    reference, anchors, per_image = _torchvision_matches(priors, targets, batch_size, tv_radius)

    # our gt_index (a row of targets) -> index of that box within its image, in row order
    image = targets[:, 0].long()
    position = torch.arange(len(image))
    earlier_same_image = (image[None, :] == image[:, None]) & (position[None, :] < position[:, None])  # (n, n)
    index_in_image = earlier_same_image.sum(1)  # (n,)
    ours = torch.full((batch_size, len(priors)), -1, dtype=torch.long)
    ours[result.batch_index, result.prior_index] = index_in_image[result.gt_index]
    assert result.prior_index.numel() == (ours >= 0).sum()  # one box per point
    assert torch.equal(ours, reference)
    assert int((reference >= 0).sum()) > 300  # a real comparison, not two empty maps
    assert (reference[-1] == -1).all()

    coder = tv_det_utils.BoxLinearCoder(normalize_by_size=True)
    matched_boxes = torch.cat([im["boxes"][reference[b][reference[b] >= 0]] for b, im in enumerate(per_image)])
    assert torch.equal(matched_boxes, targets[result.gt_index, 2:])  # (M, 4), torchvision's boxes in our pair order
    ltrb = coder.encode(anchors[result.prior_index][None], matched_boxes[None])[0]  # (M, 4) in strides
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    tv_centerness = torch.sqrt(lr.min(-1)[0] / lr.max(-1)[0] * (tb.min(-1)[0] / tb.max(-1)[0]))
    torch.testing.assert_close(result.extras["centerness"], tv_centerness, rtol=1e-5, atol=1e-6)

"""Tests of detector/assigners/yolov5.py (YOLOv5's ratio + neighbour-cell assignment).

Conventions used in the hand-worked cases: one level of stride 8 with ``(A, H, W) = (3, 10, 10)``
(an 80 x 80 input) and YOLOv5's P3 anchors ``(10, 13), (16, 30), (33, 23)`` px, so the flat prior
index of anchor ``a`` at cell ``(x, y)`` is ``(a * 10 + y) * 10 + x``.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from detector.assigners import YOLOv5Assigner, assign_yolov5_ratio
from detector.structures import Assignment, Priors

P3 = [(10.0, 13.0), (16.0, 30.0), (33.0, 23.0)]
P4 = [(30.0, 61.0), (62.0, 45.0), (59.0, 119.0)]
P5 = [(116.0, 90.0), (156.0, 198.0), (373.0, 326.0)]


def make_priors(shapes, strides, anchors, with_level_anchors=True) -> Priors:
    """Anchor priors in the documented flat order: per level (A, H, W), levels concatenated."""
    grids, stride_list, anchor_list, levels, anchor_ids = [], [], [], [], []
    for level, ((a, h, w), stride, anc) in enumerate(zip(shapes, strides, anchors)):
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (H, W)
        cell = torch.stack((gx, gy), dim=-1).float().reshape(1, h * w, 2).expand(a, h * w, 2)  # (A, H*W, 2)
        grids.append(cell.reshape(-1, 2))  # (A*H*W, 2)
        anc_t = torch.tensor(anc, dtype=torch.float32)  # (A, 2)
        anchor_list.append(anc_t[:, None, :].expand(a, h * w, 2).reshape(-1, 2))  # (A*H*W, 2)
        stride_list.append(torch.full((a * h * w,), float(stride)))
        levels.append(torch.full((a * h * w,), level, dtype=torch.long))
        anchor_ids.append(torch.arange(a).repeat_interleave(h * w))
    return Priors(
        grid=torch.cat(grids),
        strides=torch.cat(stride_list),
        anchors=torch.cat(anchor_list),
        level=torch.cat(levels),
        anchor_id=torch.cat(anchor_ids),
        level_shapes=list(shapes),
        level_anchors=[torch.tensor(a, dtype=torch.float32) for a in anchors] if with_level_anchors else None,
    )


def one_level_priors() -> Priors:
    return make_priors([(3, 10, 10)], [8], [P3])


def box(cx, cy, w, h, image=0, cls=0):
    """One target row (image, class, x1, y1, x2, y2) from a centre and a size."""
    return [image, cls, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return sorted(
        zip(
            assignment.batch_index.tolist(),
            assignment.prior_index.tolist(),
            assignment.gt_index.tolist(),
        )
    )


def idx(a, x, y, h=10, w=10, offset=0):
    return offset + (a * h + y) * w + x


def test_docstring_worked_example():
    """Box 8 x 6 centred at (27, 44): only anchor 0 passes (30/6 = 5 and 33/8 = 4.125 fail).

    (gx, gy) = (3.375, 5.5): own cell (3, 5), left cell (2, 5) since 0.375 < 0.5 and 3.375 > 1; no
    right cell ((10 - 3.375) % 1 = 0.625); gy on a cell centre, so no vertical neighbour.
    Prior indices (0*10+5)*10+3 = 53 and 52.
    """
    targets = torch.tensor([[0, 3, 23, 41, 31, 47]], dtype=torch.float32)
    result = assign_yolov5_ratio(one_level_priors(), targets, batch_size=1)
    assert pairs(result) == [(0, 52, 0), (0, 53, 0)]
    assert result.batch_index.dtype == result.prior_index.dtype == result.gt_index.dtype == torch.long
    assert result.ignore is None and result.negative is None and result.weight is None


def test_right_and_up_neighbours_all_anchors():
    """Box 20 x 26 centred at (30, 35): ratios anchor 0 (2, 2), anchor 1 (1.25, 1.15), anchor 2
    (1.65, 1.13) all pass. (gx, gy) = (3.75, 4.375): x frac 0.75 -> no left; W - gx = 6.25, frac 0.25
    < 0.5 -> right cell 4. y frac 0.375 < 0.5 and gy > 1 -> upper cell 3; H - gy = 5.625 -> no lower.
    Cells (3, 4), (4, 4), (3, 3) for each of the 3 anchors: 9 pairs.
    """
    priors = one_level_priors()
    targets = torch.tensor([box(30, 35, 20, 26)])
    result = assign_yolov5_ratio(priors, targets, batch_size=1)
    expected = sorted((0, idx(a, x, y), 0) for a in range(3) for x, y in [(3, 4), (4, 4), (3, 3)])
    assert pairs(result) == expected
    # the flat indices agree with the priors' own grid and anchor id
    assert priors.grid[result.prior_index].tolist() == [
        [float(x), float(y)] for x, y in ((p % 10, (p // 10) % 10) for p in result.prior_index.tolist())
    ]
    assert set(priors.anchor_id[result.prior_index].tolist()) == {0, 1, 2}


def test_centre_of_cell_gets_no_neighbours():
    """Centre (28, 44) -> (gx, gy) = (3.5, 5.5): 3.5 % 1 = 0.5 is not < 0.5 and (10 - 3.5) % 1 = 0.5 is
    not < 0.5 either (YOLOv5's strict inequalities), same in y: only the own cell (3, 5), anchor 0 only
    (8 x 6 box), prior 53."""
    targets = torch.tensor([box(28, 44, 8, 6)])
    assert pairs(assign_yolov5_ratio(one_level_priors(), targets, batch_size=1)) == [(0, 53, 0)]


@pytest.mark.parametrize(
    "cx, expected_x",
    [
        # gx = 0.25: frac < 0.5 but gx > 1 fails -> no left; W-gx = 9.75, frac 0.75 -> no right
        (2.0, [0]),
        # gx = 0.75: W-gx = 9.25, frac 0.25 and > 1 -> right cell int(1.25) = 1
        (6.0, [0, 1]),
        # gx = 1.25: frac 0.25, gx > 1 -> left cell int(0.75) = 0
        (10.0, [1, 0]),
        # gx = 8.75: W-gx = 1.25, frac 0.25 and > 1 -> right cell 9
        (70.0, [8, 9]),
        # gx = 9.25: frac 0.25, gx > 1 -> left cell 8; W-gx = 0.75 -> no right
        (74.0, [9, 8]),
        # gx = 9.75: frac 0.75 -> no left; W-gx = 0.25 not > 1 -> no right
        (78.0, [9]),
        # gx = 3.0 (cell border): frac 0 < 0.5 -> left int(2.5) = 2; W-gx = 7.0, frac 0 < 0.5 -> "right"
        # int(3.5) = 3, the own cell again (YOLOv5 keeps the duplicate)
        (24.0, [3, 2, 3]),
        # gx = 1.0: gx > 1 fails (strict) -> no left; W-gx = 9, frac 0 -> "right" int(1.5) = 1, own cell again
        (8.0, [1, 1]),
        # gx = 0 (left image border): no left (gx > 1 fails); W-gx = 10, frac 0 -> "right" int(0.5) = 0
        (0.0, [0, 0]),
        # gx = 10 (right image border): own int(10) = 10 clamped to 9; left int(9.5) = 9; W-gx = 0 -> no right
        (80.0, [9, 9]),
    ],
)
def test_horizontal_neighbours_and_border_clamping(cx, expected_x):
    """The y centre is 44 (gy = 5.5, no vertical neighbour); box 8 x 6 matches anchor 0 only."""
    targets = torch.tensor([box(cx, 44, 8, 6)])
    result = assign_yolov5_ratio(one_level_priors(), targets, batch_size=1)
    assert sorted(result.prior_index.tolist()) == sorted(idx(0, x, 5) for x in expected_x)


def test_vertical_border_clamping():
    """Centre (28, 80): gx = 3.5 (no horizontal neighbour), gy = 10 = H: own int(10) clamped to 9, upper
    int(9.5) = 9, no lower (H - gy = 0): prior (0*10+9)*10+3 = 93 twice."""
    targets = torch.tensor([box(28, 80, 8, 6)])
    result = assign_yolov5_ratio(one_level_priors(), targets, batch_size=1)
    assert result.prior_index.tolist() == [93, 93]


def test_ratio_boundary_is_strict():
    """Box 40 x 13 against anchor 0 (10, 13): w ratio exactly 40 / 10 = 4, not < 4, so anchor 0 fails;
    anchor 1 (2.5, 2.31) and anchor 2 (1.21, 1.77) pass. With 39.5 x 13 anchor 0 passes (3.95).
    Box 2.5 x 13: anchor 0 has inverse ratio 10 / 2.5 = 4 -> fails; anchors 1, 2 fail by more.
    The centre (28, 44) is a cell centre, so each anchor gives exactly one prior: idx(a, 3, 5)."""
    priors = one_level_priors()
    at_bound = assign_yolov5_ratio(priors, torch.tensor([box(28, 44, 40, 13)]), batch_size=1)
    assert sorted(at_bound.prior_index.tolist()) == [idx(1, 3, 5), idx(2, 3, 5)]
    inside = assign_yolov5_ratio(priors, torch.tensor([box(28, 44, 39.5, 13)]), batch_size=1)
    assert sorted(inside.prior_index.tolist()) == [idx(0, 3, 5), idx(1, 3, 5), idx(2, 3, 5)]
    inverse_bound = assign_yolov5_ratio(priors, torch.tensor([box(28, 44, 2.5, 13)]), batch_size=1)
    assert inverse_bound.num_pos == 0
    # a looser threshold lets the boundary case through
    looser = assign_yolov5_ratio(priors, torch.tensor([box(28, 44, 40, 13)]), batch_size=1, anchor_t=4.01)
    assert sorted(looser.prior_index.tolist()) == [idx(0, 3, 5), idx(1, 3, 5), idx(2, 3, 5)]


def test_one_box_three_levels_batch_index():
    """Input 128 x 96, strides 8/16/32: grids (H, W) = (12, 16), (6, 8), (3, 4); level offsets 0, 576, 720.
    One 40 x 40 box centred at (52, 44) in image 2 of 3.
    Ratios: P3 anchor 0 has 40/10 = 4 (fails), anchors 1, 2 pass; P4 all three pass (max ratios 1.53,
    1.55, 2.98); P5 anchor 0 passes (2.9), anchors 1 (198/40 = 4.95) and 2 fail.
    P3 (gx, gy) = (6.5, 5.5): cell centre, own cell only -> (1*12+5)*16+6 = 278, (2*12+5)*16+6 = 470.
    P4 (3.25, 2.75): left cell 2 (frac 0.25); y: frac 0.75 no upper, H-gy = 3.25 frac 0.25 -> lower 3.
      cells (3,2), (2,2), (3,3) -> 576 + (a*6+y)*8+x: a0 595 594 603, a1 643 642 651, a2 691 690 699.
    P5 (1.625, 1.375): x frac 0.625 no left, W-gx = 2.375 -> right 2; y frac 0.375, gy > 1 -> upper 0.
      cells (1,1), (2,1), (1,0), anchor 0 -> 720 + y*4 + x: 725, 726, 721.
    """
    priors = make_priors([(3, 12, 16), (3, 6, 8), (3, 3, 4)], [8, 16, 32], [P3, P4, P5])
    targets = torch.tensor([box(52, 44, 40, 40, image=2, cls=7)])
    result = assign_yolov5_ratio(priors, targets, batch_size=3)
    expected = [278, 470, 595, 594, 603, 643, 642, 651, 691, 690, 699, 725, 726, 721]
    assert sorted(result.prior_index.tolist()) == sorted(expected)
    assert result.batch_index.tolist() == [2] * len(expected)
    assert result.gt_index.tolist() == [0] * len(expected)


def reference_assign(shapes, strides, anchors, targets, anchor_t=4.0):
    """Loop per target, per level, per anchor, per candidate cell, from the plain-language rules:
    left if frac(gx) < 0.5 and gx > 1, right if frac(gx) > 0.5 and gx < W - 1 (same in y), cells clamped."""
    out = []
    offset = 0
    level_offsets = []
    for a, h, w in shapes:
        level_offsets.append(offset)
        offset += a * h * w
    for t, (image, _, x1, y1, x2, y2) in enumerate(targets.tolist()):
        bw, bh, cx, cy = x2 - x1, y2 - y1, (x1 + x2) / 2, (y1 + y2) / 2
        for (num_a, h, w), stride, level_anchors, start in zip(shapes, strides, anchors, level_offsets):
            gx, gy = cx / stride, cy / stride
            fx, fy = gx - math.floor(gx), gy - math.floor(gy)
            own = (math.floor(gx), math.floor(gy))
            cells = [own]
            if fx < 0.5 and gx > 1:
                cells.append((own[0] - 1, own[1]))
            if fy < 0.5 and gy > 1:
                cells.append((own[0], own[1] - 1))
            if fx > 0.5 and gx < w - 1:
                cells.append((own[0] + 1, own[1]))
            if fy > 0.5 and gy < h - 1:
                cells.append((own[0], own[1] + 1))
            for a, (aw, ah) in enumerate(level_anchors):
                if max(bw / aw, aw / bw, bh / ah, ah / bh) >= anchor_t:
                    continue
                for x, y in cells:
                    x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
                    out.append((int(image), start + (a * h + y) * w + x, t))
    return out


def random_targets(generator, n, batch_size, img_w, img_h, strides, anchors, anchor_t=4.0):
    """Random boxes (centres inside the image, log-uniform sizes 2..400 px), dropping the measure-zero
    ties (frac exactly 0 or 0.5, ratio exactly anchor_t) where float32 and float64 rounding could differ."""
    image = torch.randint(0, batch_size, (n,), generator=generator).float()
    cls = torch.randint(0, 80, (n,), generator=generator).float()
    cx = torch.rand(n, generator=generator) * img_w
    cy = torch.rand(n, generator=generator) * img_h
    wh = torch.exp(torch.rand(n, 2, generator=generator) * (math.log(400) - math.log(2)) + math.log(2))
    rows = torch.stack(
        (image, cls, cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2), dim=1
    )
    keep = []
    all_anchors = [a for level in anchors for a in level]
    for r in rows.tolist():
        c = ((r[2] + r[4]) / 2, (r[3] + r[5]) / 2)
        fracs = [(v / s) % 0.5 for v in c for s in strides]
        size = (r[4] - r[2], r[5] - r[3])
        ratios = [max(size[0] / aw, aw / size[0], size[1] / ah, ah / size[1]) for aw, ah in all_anchors]
        keep.append(min(min(f, 0.5 - f) for f in fracs) > 1e-4 and min(abs(q - anchor_t) for q in ratios) > 1e-4)
    return rows[torch.tensor(keep)]


@pytest.mark.parametrize("with_level_anchors", [True, False])
def test_matches_loop_reference_on_random_targets(with_level_anchors):
    """Random targets over 4 images and 3 non-square levels: same multiset of (image, prior, gt) pairs."""
    generator = torch.Generator().manual_seed(0)
    shapes, strides, anchors = [(3, 12, 20), (3, 6, 10), (3, 3, 5)], [8, 16, 32], [P3, P4, P5]
    priors = make_priors(shapes, strides, anchors, with_level_anchors=with_level_anchors)
    targets = random_targets(generator, 300, 4, img_w=160, img_h=96, strides=strides, anchors=anchors)
    assert targets.shape[0] > 250
    result = assign_yolov5_ratio(priors, targets, batch_size=4)
    got = Counter(zip(result.batch_index.tolist(), result.prior_index.tolist(), result.gt_index.tolist()))
    expected = Counter(reference_assign(shapes, strides, anchors, targets))
    assert got == expected
    # the random draw exercises every branch: several levels, neighbours, ratio rejections
    assert len(set(priors.level[result.prior_index].tolist())) == 3
    assert result.num_pos > 3 * targets.shape[0]
    assert len(set(result.gt_index.tolist())) < targets.shape[0]  # some boxes match no anchor at all
    assert result.prior_index.max() < len(priors)


def test_empty_targets():
    priors = one_level_priors()
    result = assign_yolov5_ratio(priors, torch.zeros(0, 6), batch_size=2)
    assert result.num_pos == 0
    assert result.prior_index.dtype == torch.long and result.prior_index.shape == (0,)


def test_class_matches_function_and_ignores_predictions():
    generator = torch.Generator().manual_seed(1)
    shapes, strides, anchors = [(3, 8, 8), (3, 4, 4)], [8, 16], [P3, P4]
    priors = make_priors(shapes, strides, anchors)
    targets = random_targets(generator, 20, 2, img_w=64, img_h=64, strides=strides, anchors=anchors)
    assigner = YOLOv5Assigner(anchor_t=3.0)
    pred = torch.rand(2, len(priors), 4)
    a = assigner(priors, targets, 2, pred=pred)
    b = assign_yolov5_ratio(priors, targets, 2, anchor_t=3.0)
    assert pairs(a) == pairs(b) and a.num_pos > 0
    assert pairs(a) != pairs(assign_yolov5_ratio(priors, targets, 2, anchor_t=4.0))
    assert "anchor_t=3.0" in repr(assigner)


def test_bad_inputs_raise_clear_errors():
    priors = one_level_priors()
    with pytest.raises(ValueError, match=r"Tensor\[n, 6\]"):
        assign_yolov5_ratio(priors, torch.zeros(3, 5), batch_size=1)
    with pytest.raises(ValueError, match="batch_size=2"):
        assign_yolov5_ratio(priors, torch.tensor([box(28, 44, 8, 6, image=2)]), batch_size=2)
    with pytest.raises(ValueError, match="anchor_t"):
        YOLOv5Assigner(anchor_t=1.0)
    point_priors = Priors(
        grid=priors.grid, strides=priors.strides, anchors=None, level=priors.level,
        anchor_id=priors.anchor_id, level_shapes=priors.level_shapes,
    )
    with pytest.raises(ValueError, match="anchors is None"):
        assign_yolov5_ratio(point_priors, torch.tensor([box(28, 44, 8, 6)]), batch_size=1)

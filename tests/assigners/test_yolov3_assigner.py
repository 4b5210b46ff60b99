"""Tests of detector/assigners/yolov3.py (YOLOv3 / YOLOv2: best-shaped anchor over all levels + ignore rule).

Conventions of the hand-worked cases: YOLOv5's anchors ``(10,13) (16,30) (33,23) / (30,61) (62,45) (59,119) /
(116,90) (156,198) (373,326)`` at strides 8 / 16 / 32 on a 64 x 64 input, built by the real
:class:`AnchorPriorGenerator`: ``(A, H, W)`` = ``(3, 8, 8)``, ``(3, 4, 4)``, ``(3, 2, 2)``, level offsets
0, 192, 240, ``P = 252``. Anchor ``a`` at cell ``(x, y)`` of level ``l`` is ``offset_l + (a * H + y) * W + x``.
Shape IoU of a ``w x h`` box with an anchor ``(aw, ah)``: ``min(w, aw) * min(h, ah) / (w*h + aw*ah - inter)``.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import Tensor

from detector.assigners.yolov3 import YOLOv2Assigner, YOLOv3Assigner, assign_yolov3, yolov3_ignore_mask
from detector.models.priors import AnchorPriorGenerator
from detector.structures import Assignment, Predictions, Priors

YOLOV5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
STRIDES = [8, 16, 32]


def make_priors(size: int = 64) -> Priors:
    """Real anchor priors of a square ``size`` input at strides 8 / 16 / 32."""
    generator = AnchorPriorGenerator(YOLOV5_ANCHORS, STRIDES)
    return generator([(size // s, size // s) for s in STRIDES])


def idx(level, a, x, y, size=64):
    """Flat prior index of anchor ``a`` at cell ``(x, y)`` of ``level`` on a square ``size`` input."""
    offset = sum(3 * (size // s) ** 2 for s in STRIDES[:level])
    n = size // STRIDES[level]
    return offset + (a * n + y) * n + x


def box(cx, cy, w, h, image=0, cls=0):
    """One target row (image, class, x1, y1, x2, y2) from a centre and a size."""
    return [image, cls, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return sorted(
        zip(assignment.batch_index.tolist(), assignment.prior_index.tolist(), assignment.gt_index.tolist())
    )


def test_docstring_worked_example():
    """Box 40 x 40 (area 1600) centred at (36, 20). Shape IoUs:
    level 0: 130/1600 = 0.081, 480/1600 = 0.30, 759/1600 = 0.474;
    level 1: (30,61) 1200/(1600+1830-1200) = 0.538, (62,45) 1600/(1600+2790-1600) = 0.573,
             (59,119) 1600/7021 = 0.228;
    level 2: (116,90) 1600/10440 = 0.153, less for the two larger ones.
    Winner level 1 anchor 1, stride 16, cell (int(2.25), int(1.25)) = (2, 1): 192 + (1*4+1)*4+2 = 214.
    A prediction equal to the box at prior 0 is ignored; at prior 214 it is positive, so not ignored.
    """
    priors = make_priors()
    assert priors.level_offsets == [0, 192, 240, 252]
    targets = torch.tensor([box(36, 20, 40, 40, cls=5)])
    pred = torch.zeros(1, len(priors), 4)
    pred[0, 0] = pred[0, 214] = torch.tensor([16.0, 0.0, 56.0, 40.0])
    result = assign_yolov3(priors, targets, 1, pred_boxes=pred, ignore_thresh=0.5)
    assert pairs(result) == [(0, 214, 0)]
    assert priors.anchors[214].tolist() == [62.0, 45.0] and priors.grid[214].tolist() == [2.0, 1.0]
    assert result.ignore.nonzero().tolist() == [[0, 0]]
    assert result.batch_index.dtype == result.prior_index.dtype == result.gt_index.dtype == torch.long
    assert result.negative is None and result.weight is None and result.score is None


@pytest.mark.parametrize(
    "cx, cy, w, h, expected",
    [
        # 12 x 14: (10,13) 130/168 = 0.774 beats (16,30) 168/480 = 0.35 and (33,23) 168/759 = 0.22;
        # level 0 anchor 0, cell (int(2.5), int(3.5)) = (2, 3) -> (0*8+3)*8+2 = 26
        (20, 28, 12, 14, idx(0, 0, 2, 3)),
        # 30 x 50 (area 1500): level 0 best (33,23) 690/1569 = 0.44; level 1 (30,61) 1500/1830 = 0.82 wins over
        # (62,45) 1350/2940 = 0.46; stride 16 cell (1, 1) -> 192 + (0*4+1)*4+1 = 197
        (20, 28, 30, 50, idx(1, 0, 1, 1)),
        # 150 x 200: (156,198) 29700/(30000+30888-29700) = 0.952; (373,326) 30000/121598 = 0.25;
        # stride 32 cell (1, 1) -> 240 + (1*2+1)*2+1 = 247
        (40, 40, 150, 200, idx(2, 1, 1, 1)),
        # larger than every anchor, 500 x 400 (area 200000): (373,326) 121598/200000 = 0.608 beats
        # (156,198) 30888/200000 = 0.154: the largest anchor's level; cell (int(1.25), int(0.75)) = (1, 0) -> 245
        (40, 24, 500, 400, idx(2, 2, 1, 0)),
        # smaller than a cell, 4 x 4: inter = 16 with every anchor, so IoU = 16 / anchor area and the
        # smallest anchor (10,13) (area 130, IoU 0.123) wins; cell (int(1.625), int(2.625)) = (1, 2) -> 17
        (13, 21, 4, 4, idx(0, 0, 1, 2)),
    ],
)
def test_best_anchor_over_all_levels(cx, cy, w, h, expected):
    """One positive per box, on the level of its best anchor only (see the parameters for the arithmetic)."""
    priors = make_priors()
    result = assign_yolov3(priors, torch.tensor([box(cx, cy, w, h)]), 1)
    assert pairs(result) == [(0, expected, 0)]
    assert result.ignore is None  # no predictions, no ignore rule


@pytest.mark.parametrize(
    "cx, cy, expected_xy",
    [
        (16.0, 28.0, (2, 3)),  # gx = 2.0 exactly on the border of cells 1 and 2: int() gives cell 2
        (15.99, 28.0, (1, 3)),  # just left of the border: cell 1
        (20.0, 24.0, (2, 3)),  # gy = 3.0 on a horizontal border: cell 3
        (64.0, 28.0, (7, 3)),  # right image border: int(8) = 8 clamped to 7
        (20.0, 64.0, (2, 7)),  # bottom image border: clamped to row 7
        (64.0, 64.0, (7, 7)),  # bottom-right corner
        (0.0, 0.0, (0, 0)),  # top-left corner
    ],
)
def test_centre_on_cell_border_and_image_border(cx, cy, expected_xy):
    """A 12 x 14 box (level 0, anchor 0 as above) centred on cell and image borders."""
    result = assign_yolov3(make_priors(), torch.tensor([box(cx, cy, 12, 14)]), 1)
    assert result.prior_index.tolist() == [idx(0, 0, *expected_xy)]


def test_two_ground_truths_compete_for_one_prior():
    """Rows 0 and 1 (image 0): 12 x 14 boxes centred at (20, 28) and (22, 30), both level 0 anchor 0 in cell
    (2, 3) -> prior 26. Both pairs are kept (Darknet would keep only the last one written).
    Row 2: the same box in image 1 -> (1, 26, 2), a different image, so no competition.
    Row 3: 30 x 20 in the same cell of image 0: (33,23) 600/759 = 0.79 beats (16,30) 320/760 = 0.42 ->
    level 0 anchor 2, prior (2*8+3)*8+2 = 154: same cell, different anchor, no competition.
    """
    priors = make_priors()
    targets = torch.tensor([box(20, 28, 12, 14), box(22, 30, 12, 14), box(20, 28, 12, 14, image=1),
                            box(20, 28, 30, 20)])
    result = assign_yolov3(priors, targets, 2)
    assert pairs(result) == [(0, 26, 0), (0, 26, 1), (0, 154, 3), (1, 26, 2)]
    assert result.gt_index.tolist() == [0, 1, 2, 3]  # pairs follow the target rows
    assert int(result.positive_mask(2, len(priors)).sum()) == 3


def test_ignore_rule_threshold_and_positives():
    """Batch of 3. Image 0: gt 20 x 20 at (8, 8, 28, 28): (16,30) 320/560 = 0.571 beats (33,23) 400/759 = 0.527
    and (10,13) 130/400 = 0.325 -> level 0 anchor 1, cell (2, 2), prior (1*8+2)*8+2 = 82.
    Image 1: no boxes. Image 2: gt 12 x 14 centred at (20, 28) -> prior 26.
    Predictions (all others are the empty box (0,0,0,0), IoU 0):
      (0, 0)   (8, 8, 28, 19): IoU 20*11/400 = 0.55  -> ignored at 0.5, not at 0.6;
      (0, 200) (8, 8, 28, 18): IoU 200/400 = 0.5     -> not ignored at 0.5 (strict >), ignored at 0.45;
      (0, 82)  (8, 8, 28, 28): IoU 1, but prior 82 is positive -> never ignored;
      (1, 0)   (8, 8, 28, 28): IoU 1 with image 0's box, but image 1 has none -> not ignored;
      (2, 5)   (8, 8, 28, 28): image 2's box (14, 21, 26, 35) overlaps it 12*7 = 84, IoU 84/(400+168-84) = 0.17;
               image 0's box does not count for image 2 -> not ignored.
    """
    priors = make_priors()
    targets = torch.tensor([[0, 1, 8, 8, 28, 28], box(20, 28, 12, 14, image=2)])
    pred = torch.zeros(3, len(priors), 4)
    pred[0, 0] = torch.tensor([8.0, 8, 28, 19])
    pred[0, 200] = torch.tensor([8.0, 8, 28, 18])
    pred[0, 82] = pred[1, 0] = pred[2, 5] = torch.tensor([8.0, 8, 28, 28])

    at_05 = assign_yolov3(priors, targets, 3, pred_boxes=pred, ignore_thresh=0.5)
    assert pairs(at_05) == [(0, 82, 0), (2, 26, 1)]
    assert at_05.ignore.shape == (3, len(priors)) and at_05.ignore.dtype == torch.bool
    assert at_05.ignore.nonzero().tolist() == [[0, 0]]
    at_06 = assign_yolov3(priors, targets, 3, pred_boxes=pred, ignore_thresh=0.6)
    assert not at_06.ignore.any()
    at_045 = assign_yolov3(priors, targets, 3, pred_boxes=pred, ignore_thresh=0.45)
    assert at_045.ignore.nonzero().tolist() == [[0, 0], [0, 200]]
    # the raw mask does flag the positive prior 82; the assignment clears it
    raw = yolov3_ignore_mask(pred, targets, 3, 0.5)
    assert raw.nonzero().tolist() == [[0, 0], [0, 82]]
    # the threshold 1.0 ignores nothing (IoU cannot exceed 1)
    assert not assign_yolov3(priors, targets, 3, pred_boxes=pred, ignore_thresh=1.0).ignore.any()


@pytest.mark.parametrize("with_pred", [False, True])
def test_no_ground_truth(with_pred):
    """No targets: zero pairs; with predictions an all-False (B, P) ignore mask, without them None."""
    priors = make_priors()
    pred = torch.rand(2, len(priors), 4) * 64 if with_pred else None
    result = assign_yolov3(priors, torch.zeros(0, 6), 2, pred_boxes=pred)
    assert result.num_pos == 0 and result.prior_index.dtype == torch.long and result.prior_index.shape == (0,)
    if with_pred:
        assert result.ignore.shape == (2, len(priors)) and not result.ignore.any()
    else:
        assert result.ignore is None


def test_zero_area_box_gets_no_pair():
    """Row 0 has zero width (shape IoU 0 with every anchor): no pair. Row 1 (12 x 14 at (20, 28)) -> prior 26,
    and its gt_index still points at row 1."""
    targets = torch.tensor([[0, 0, 10, 10, 10, 30], box(20, 28, 12, 14)])
    assert pairs(assign_yolov3(make_priors(), targets, 1)) == [(0, 26, 1)]


def test_tie_goes_to_the_first_anchor():
    """A 10 x 10 box against anchors (20, 10) and (10, 20): both 100 / 200 = 0.5. The first in level order wins
    (Darknet's strict >): anchor 0 of level 0. 32 x 32 input, stride 8 grid 4 x 4, centre (12, 12) -> cell
    (1, 1): prior (0*4+1)*4+1 = 5 (anchor 1 would be 21; level 1 would be 32 + ...)."""
    targets = torch.tensor([box(12, 12, 10, 10)])
    same_level = AnchorPriorGenerator([[20, 10, 10, 20], [40, 40]], [8, 16])([(4, 4), (2, 2)])
    assert assign_yolov3(same_level, targets, 1).prior_index.tolist() == [5]
    across_levels = AnchorPriorGenerator([[20, 10], [10, 20]], [8, 16])([(4, 4), (2, 2)])
    assert assign_yolov3(across_levels, targets, 1).prior_index.tolist() == [5]
    swapped = AnchorPriorGenerator([[10, 20], [20, 10]], [8, 16])([(4, 4), (2, 2)])
    assert assign_yolov3(swapped, targets, 1).prior_index.tolist() == [5]


def reference_yolov3(targets, batch_size, level_anchors, strides, grid_sizes, pred_boxes, ignore_thresh):
    """Plain loop over boxes, from the written rule: best shape IoU over all anchors (first on a tie), centre
    cell int(c / s) clamped; ignore = torchvision's box_iou of the image's predictions with its boxes, max over
    boxes, > thresh, minus positives. Returns (list of (image, prior, row), Tensor[B, P] bool)."""
    offsets, total = [], 0
    for anchors, (h, w) in zip(level_anchors, grid_sizes):
        offsets.append(total)
        total += len(anchors) * h * w
    out = []
    for row, (image, _, x1, y1, x2, y2) in enumerate(targets.tolist()):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        best_iou, best = -1.0, None
        for level, anchors in enumerate(level_anchors):
            for a, (aw, ah) in enumerate(anchors):
                inter = min(bw, aw) * min(bh, ah)
                iou = inter / (bw * bh + aw * ah - inter)
                if iou > best_iou:
                    best_iou, best = iou, (level, a)
        level, a = best
        (h, w), s = grid_sizes[level], strides[level]
        gx = min(max(int((x1 + x2) / 2 / s), 0), w - 1)
        gy = min(max(int((y1 + y2) / 2 / s), 0), h - 1)
        out.append((int(image), offsets[level] + (a * h + gy) * w + gx, row))
    ignore = torch.zeros(batch_size, total, dtype=torch.bool)
    for b in range(batch_size):
        gts = targets[targets[:, 0] == b, 2:6]
        if gts.shape[0]:
            ignore[b] = torchvision.ops.box_iou(pred_boxes[b], gts).amax(dim=1) > ignore_thresh
    for b, p, _ in out:
        ignore[b, p] = False
    return out, ignore


def jittered_anchor_boxes(priors: Priors, batch_size: int, generator: torch.Generator) -> Tensor:
    """Predictions like an untrained network's: each prior's anchor at its cell centre, centre moved by up to
    half a stride and size scaled by exp(N(0, 0.3)): Tensor[B, P, 4] xyxy."""
    num = len(priors)
    centre = priors.centers + (torch.rand(batch_size, num, 2, generator=generator) - 0.5) * priors.strides[:, None]
    wh = priors.anchors * torch.exp(0.3 * torch.randn(batch_size, num, 2, generator=generator))
    return torch.cat((centre - wh / 2, centre + wh / 2), dim=-1)  # (B, P, 4)



def test_matches_loop_reference_on_coco128(coco128_batch):
    """Real coco128 boxes (16 images, letterboxed to 640), YOLOv5 anchors, grids 80 / 40 / 20, plus an empty
    image 16 and a copy of row 0 (a second ground truth on the same prior): same pairs and ignore mask as
    the loop reference, and the draw exercises every branch (all levels, ignored priors, positives that the
    raw rule would have ignored, a shared prior). Threshold 0.5 (YOLOv3's); the hand-worked cases cover others."""
    ignore_thresh = 0.5
    targets, batch_size, img_size = coco128_batch
    targets = torch.cat((targets, targets[:1]))  # row n duplicates row 0
    batch_size += 1  # image 16 has no boxes
    priors = make_priors(img_size)
    pred = jittered_anchor_boxes(priors, batch_size, torch.Generator().manual_seed(0))

    result = assign_yolov3(priors, targets, batch_size, pred_boxes=pred, ignore_thresh=ignore_thresh)
    level_anchors = [torch.tensor(a, dtype=torch.float64).reshape(-1, 2).tolist() for a in YOLOV5_ANCHORS]
    grids = [(img_size // s, img_size // s) for s in STRIDES]
    expected, expected_ignore = reference_yolov3(
        targets, batch_size, level_anchors, STRIDES, grids, pred, ignore_thresh
    )
    assert pairs(result) == sorted(expected)
    assert torch.equal(result.ignore, expected_ignore)

    assert result.num_pos == targets.shape[0]  # coco boxes all have area: one pair each
    assert set(priors.level[result.prior_index].tolist()) == {0, 1, 2}
    assert int(result.ignore.sum()) > 100 and not result.ignore[16].any()
    raw = yolov3_ignore_mask(pred, targets, batch_size, ignore_thresh)
    assert bool(raw[result.batch_index, result.prior_index].any())  # the positive exemption is exercised
    assert not result.ignore[result.batch_index, result.prior_index].any()
    first, copy = result.prior_index[0], result.prior_index[-1]
    assert result.gt_index[-1] == targets.shape[0] - 1 and first == copy


def test_level_anchors_or_flat_anchors_give_the_same_result(coco128_batch):
    """Anchors read from ``priors.anchors`` (level_anchors None) give the same pairs as ``level_anchors``."""
    targets, batch_size, img_size = coco128_batch
    priors = make_priors(img_size)
    flat = dataclasses.replace(priors, level_anchors=None)
    assert pairs(assign_yolov3(flat, targets, batch_size)) == pairs(assign_yolov3(priors, targets, batch_size))


def test_yolov3_assigner_class():
    """The class reads pred.boxes; with pred None there is no ignore mask. Same 0.55 case as above."""
    priors = make_priors()
    targets = torch.tensor([[0, 1, 8, 8, 28, 28]])
    boxes = torch.zeros(1, len(priors), 4, requires_grad=True)
    with torch.no_grad():
        boxes[0, 0] = torch.tensor([8.0, 8, 28, 19])
    pred = Predictions(boxes=boxes, scores=torch.rand(1, len(priors), 80))
    assigner = YOLOv3Assigner()
    assert assigner.needs_predictions and assigner.needs_anchors
    assert repr(assigner) == "YOLOv3Assigner(ignore_thresh=0.5)"
    result = assigner(priors, targets, 1, pred=pred)
    assert pairs(result) == [(0, 82, 0)] and result.ignore.nonzero().tolist() == [[0, 0]]
    assert assigner(priors, targets, 1).ignore is None
    assert not YOLOv3Assigner(ignore_thresh=0.6)(priors, targets, 1, pred=pred).ignore.any()


def test_yolov2_assigner_single_level_five_anchors():
    """YOLOv2: one level, stride 32, 160 x 160 input (5 x 5 cells), anchors (32,32) (64,128) (128,64) (160,160)
    (320,320). Box 100 x 60 (area 6000) centred at (80, 48): IoUs 1024/6000 = 0.171,
    3840/(6000+8192-3840) = 0.371, 6000/8192 = 0.732, 6000/25600 = 0.234, 6000/102400 = 0.059 -> anchor 2,
    cell (int(2.5), int(1.5)) = (2, 1): prior (2*5+1)*5+2 = 57.
    A prediction (30, 18, 130, 51) at prior 0 overlaps the box (30, 18, 130, 78) by 100*33 / 6000 = 0.55:
    ignored by YOLOv3's default 0.5, not by YOLOv2's default 0.6.
    """
    priors = AnchorPriorGenerator([[32, 32, 64, 128, 128, 64, 160, 160, 320, 320]], [32])([(5, 5)])
    targets = torch.tensor([box(80, 48, 100, 60)])
    boxes = torch.zeros(1, len(priors), 4)
    boxes[0, 0] = torch.tensor([30.0, 18, 130, 51])
    pred = Predictions(boxes=boxes, scores=torch.rand(1, len(priors), 20))
    v2 = YOLOv2Assigner()
    assert v2.ignore_thresh == 0.6 and v2.needs_predictions and v2.needs_anchors
    assert repr(v2) == "YOLOv2Assigner(ignore_thresh=0.6)"
    result = v2(priors, targets, 1, pred=pred)
    assert pairs(result) == [(0, 57, 0)] and not result.ignore.any()
    assert YOLOv3Assigner()(priors, targets, 1, pred=pred).ignore.nonzero().tolist() == [[0, 0]]


def test_bad_inputs_raise_clear_errors():
    priors = make_priors()
    target = torch.tensor([box(20, 28, 12, 14)])
    for thresh in (-0.1, 1.5):
        with pytest.raises(ValueError, match="ignore_thresh"):
            YOLOv3Assigner(ignore_thresh=thresh)
        with pytest.raises(ValueError, match="ignore_thresh"):
            YOLOv2Assigner(ignore_thresh=thresh)
        with pytest.raises(ValueError, match="ignore_thresh"):
            assign_yolov3(priors, target, 1, ignore_thresh=thresh)
    with pytest.raises(ValueError, match=r"Tensor\[n, 6\]"):
        assign_yolov3(priors, torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="batch_size=1"):
        assign_yolov3(priors, torch.tensor([box(20, 28, 12, 14, image=1)]), 1)
    with pytest.raises(ValueError, match=r"pred_boxes must be Tensor\[B, P, 4\]"):
        assign_yolov3(priors, target, 1, pred_boxes=torch.zeros(2, len(priors), 4))
    point_priors = dataclasses.replace(priors, anchors=None, level_anchors=None)
    with pytest.raises(ValueError, match="anchors is None"):
        assign_yolov3(point_priors, target, 1)

"""Tests of detector/assigners/max_iou.py (generic IoU matcher, RPN / RetinaNet / SSD assigners).

Conventions of the hand-worked assigner cases: one level of stride 16 with one ``16 x 16`` anchor per cell on a
``2 x 2`` grid (a 32 x 32 input), built by :class:`AnchorPriorGenerator`, so the anchors are the tiles

    prior 0 = [0, 0, 16, 16]     prior 1 = [16, 0, 32, 16]
    prior 2 = [0, 16, 16, 32]    prior 3 = [16, 16, 32, 32]

and the IoU of a box with a tile is ``inter / (256 + area - inter)``.

Torchvision's per-anchor encoding, used to compare: matched gt index within the image, ``-1`` negative, ``-2``
between the thresholds (ignored).
"""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import Matcher, SSDMatcher
from torchvision.ops import box_iou as tv_box_iou

from detector.assigners.max_iou import (
    MaxIoUAssigner,
    SSDAssigner,
    anchor_boxes,
    assign_max_iou,
    assign_ssd,
    gt_prior_iou,
    match_max_iou,
    match_ssd,
    retinanet_assigner,
    rpn_assigner,
    ssd_assigner,
)
from detector.assigners.common import pad_targets
from detector.models.priors import AnchorPriorGenerator
from detector.structures import Assignment, Priors

RPN_LABELS = ([0.3, 0.7], [0, -1, 1])


def tile_priors() -> Priors:
    return AnchorPriorGenerator([[[16, 16]]], [16])([(2, 2)])


def targets_of(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return sorted(
        zip(assignment.batch_index.tolist(), assignment.prior_index.tolist(), assignment.gt_index.tolist())
    )


def ignored(assignment: Assignment) -> list[tuple[int, int]]:
    return [tuple(x) for x in assignment.ignore.nonzero().tolist()]


# ----------------------------------------------------------------------------------------------- match_max_iou


def test_match_max_iou_docstring_example():
    """Best gt / IoU per prior: 0/0.9, 1/0.6, 1/0.25, 0/0.0 (tie -> lowest index), 1/0.28.
    Thresholds give labels 1, -1, 0, 0, 0. Low quality: gt 0's best prior 0 is positive already, gt 1's best
    prior 1 (0.6, ignore band) becomes positive. Without low-quality matches prior 1 stays ignored."""
    iou = torch.tensor([[[0.9, 0.5, 0.1, 0.0, 0.2], [0.2, 0.6, 0.25, 0.0, 0.28]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    matched, label = match_max_iou(iou, valid, *RPN_LABELS, allow_low_quality_matches=True)
    assert matched.tolist() == [[0, 1, 1, 0, 1]] and matched.dtype == torch.long
    assert label.tolist() == [[1, 1, 0, 0, 0]] and label.dtype == torch.int8
    matched, label = match_max_iou(iou, valid, *RPN_LABELS, allow_low_quality_matches=False)
    assert matched.tolist() == [[0, 1, 1, 0, 1]]
    assert label.tolist() == [[1, -1, 0, 0, 0]]


def test_match_max_iou_threshold_boundaries_are_half_open():
    """IoU exactly at a threshold belongs to the interval above it: 0.3 -> ignored, 0.7 -> positive; 0.2999 is
    negative, 0.6999 ignored. A single threshold [0.5] with labels [0, 1] is plain max-IoU matching."""
    iou = torch.tensor([[[0.2999, 0.3, 0.6999, 0.7, 1.0]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    _, label = match_max_iou(iou, valid, *RPN_LABELS, allow_low_quality_matches=False)
    assert label.tolist() == [[0, -1, -1, 1, 1]]
    _, label = match_max_iou(iou, valid, [0.5], [0, 1], allow_low_quality_matches=False)
    assert label.tolist() == [[0, 0, 1, 1, 1]]


def test_low_quality_matches_include_ties():
    """gt 0's highest IoU 0.4 is reached by priors 0 and 1: both become positive (ties included); prior 2 (0.1)
    stays negative."""
    iou = torch.tensor([[[0.4, 0.4, 0.1]]])
    matched, label = match_max_iou(iou, torch.ones(1, 1, dtype=torch.bool), *RPN_LABELS, True)
    assert matched.tolist() == [[0, 0, 0]] and label.tolist() == [[1, 1, 0]]


def test_low_quality_prior_goes_to_its_own_best_gt_as_torchvision():
    """gt 0's best prior is prior 0 (0.5), but prior 0 overlaps gt 1 more (0.6): torchvision keeps prior 0
    matched to gt 1 (its argmax), so prior 0 is a positive of gt 1 and gt 0 gets no positive. gt 1's best prior
    is also prior 0. Prior 1: best 0.1 -> negative."""
    iou = torch.tensor([[[0.5, 0.1], [0.6, 0.05]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    matched, label = match_max_iou(iou, valid, *RPN_LABELS, True)
    assert matched.tolist() == [[1, 0]] and label.tolist() == [[1, 0]]
    reference = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou[0].clone())
    assert reference.tolist() == [1, -1]


def test_padding_never_wins_and_empty_images_are_negative():
    """Image 0: gt 0 real (IoU 0.2, 0.8), the padding row holds 1.0 everywhere but is not valid, so prior 0
    matches gt 0 (0.2 < 0.3 negative) and prior 1 gt 0 (0.8 positive); the padding row gets no low-quality
    match either. Image 1 has no gt: matched -1, label labels[0] = 0 everywhere, even with labels whose
    lowest interval is not 0 for real IoUs."""
    iou = torch.tensor([[[0.2, 0.8], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    valid = torch.tensor([[True, False], [False, False]])
    matched, label = match_max_iou(iou, valid, *RPN_LABELS, True)
    assert matched.tolist() == [[0, 0], [-1, -1]]
    assert label.tolist() == [[0, 1], [0, 0]]


def test_gt_overlapping_nothing_gets_no_low_quality_match():
    """gt 1 has IoU 0 with every prior (a zero-area box). torchvision treats every zero-IoU prior as a tie of
    its best and makes all of them positive (matched to their argmax gt); we do not: only prior 0 (gt 0's best,
    0.5) is positive. min_pos_iou = 0.6 also removes gt 0's low-quality match (0.5 < 0.6): prior 0 is ignored."""
    iou = torch.tensor([[[0.5, 0.1, 0.0], [0.0, 0.0, 0.0]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    matched, label = match_max_iou(iou, valid, *RPN_LABELS, True)
    assert label.tolist() == [[1, 0, 0]] and matched.tolist() == [[0, 0, 0]]
    assert Matcher(0.7, 0.3, True)(iou[0].clone()).tolist() == [0, 0, 0]  # torchvision: all positive
    _, label = match_max_iou(iou, valid, *RPN_LABELS, True, min_pos_iou=0.6)
    assert label.tolist() == [[-1, 0, 0]]  # back to the ignore band


def test_match_max_iou_rejects_bad_configuration():
    iou, valid = torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="one entry more"):
        match_max_iou(iou, valid, [0.3, 0.7], [0, 1], True)
    with pytest.raises(ValueError, match="non-decreasing"):
        match_max_iou(iou, valid, [0.7, 0.3], [0, -1, 1], True)
    with pytest.raises(ValueError, match=r"-1 \(ignore\)"):
        match_max_iou(iou, valid, [0.5], [0, 2], True)
    with pytest.raises(ValueError, match=r"Tensor\[B, G, P\]"):
        match_max_iou(iou[0], valid, [0.5], [0, 1], True)


# --------------------------------------------------------------------------------------------------- match_ssd


def test_match_ssd_docstring_example_and_torchvision():
    """Step 1: prior 0 -> gt 1 (0.7), prior 1 -> gt 0 (0.55), priors 2, 3 below 0.5. Step 2: both gts have
    prior 0 as best; gt 1, the later, takes it. Result [1, 0, -1, -1], as torchvision's SSDMatcher."""
    iou = torch.tensor([[[0.6, 0.55, 0.1, 0.0], [0.7, 0.3, 0.2, 0.2]]])
    matched = match_ssd(iou, torch.ones(1, 2, dtype=torch.bool), 0.5)
    assert matched.tolist() == [[1, 0, -1, -1]]
    assert SSDMatcher(0.5)(iou[0].clone()).tolist() == matched[0].tolist()


def test_match_ssd_later_gt_wins_a_shared_best_prior_even_with_lower_iou():
    """All three gts have prior 0 as best (gt 2 ties priors 0 and 1 at 0.4: argmax takes prior 0). torchvision
    writes gt 0, 1, 2 in turn, so gt 2 (IoU 0.4) takes prior 0 from gt 0 (0.6). Prior 1: best 0.4 < 0.5 -> -1."""
    iou = torch.tensor([[[0.6, 0.1], [0.5, 0.2], [0.4, 0.4]]])
    matched = match_ssd(iou, torch.ones(1, 3, dtype=torch.bool), 0.5)
    assert matched.tolist() == [[2, -1]]
    assert SSDMatcher(0.5)(iou[0].clone()).tolist() == [2, -1]


def test_match_ssd_padding_and_zero_overlap_force_nothing():
    """Image 0: gt 0 real (best prior 1, IoU 0.3 < 0.5 but forced), padding row 1 (IoU 0.9 everywhere) is
    ignored. Image 1: its only gt overlaps nothing: torchvision would force prior 0, we force nothing."""
    iou = torch.tensor([[[0.1, 0.3, 0.2], [0.9, 0.9, 0.9]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, False], [True, False]])
    assert match_ssd(iou, valid, 0.5).tolist() == [[-1, 0, -1], [-1, -1, -1]]
    assert SSDMatcher(0.5)(iou[1, :1].clone()).tolist() == [0, -1, -1]  # the torchvision behaviour we avoid


# --------------------------------------------------------------------------------------- assigners, tile anchors


def test_anchor_boxes_and_iou_layout():
    """Anchor boxes are centre -+ size / 2; gt_prior_iou is (B, G, P) with 0 for padding rows. Target
    (1, 0, 0, 0, 16, 8) in image 1: IoU with tile 0 = 128 / 256 = 0.5, with the others 0."""
    priors = tile_priors()
    assert anchor_boxes(priors).tolist() == [[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]]
    padded = pad_targets(targets_of([1, 0, 0, 0, 16, 8]), 2)
    iou = gt_prior_iou(priors, padded)
    assert iou.shape == (2, 1, 4) and iou.dtype == torch.float32
    torch.testing.assert_close(iou, torch.tensor([[[0.0, 0, 0, 0]], [[0.5, 0, 0, 0]]]))


def test_rpn_docstring_example_ignore_band_and_low_quality():
    """Target (4, 0, 20, 16): IoU tile 0 = 12*16 / (512 - 192) = 0.6 (ignore band of RPN), tile 1 = 64 / 448
    = 0.14 (negative), tiles 2, 3 = 0. With low-quality matches tile 0 (its best) is positive and nothing is
    ignored; without, no positive and tile 0 ignored. RetinaNet (0.5 / 0.4): 0.6 is positive outright."""
    priors, targets = tile_priors(), targets_of([0, 3, 4, 0, 20, 16])
    result = rpn_assigner()(priors, targets, 1)
    assert pairs(result) == [(0, 0, 0)] and result.ignore.shape == (1, 4) and not result.ignore.any()
    assert result.negative is None
    strict = MaxIoUAssigner(0.7, 0.3, allow_low_quality_matches=False)(priors, targets, 1)
    assert pairs(strict) == [] and ignored(strict) == [(0, 0)]
    assert pairs(MaxIoUAssigner(0.5, 0.4, allow_low_quality_matches=False)(priors, targets, 1)) == [(0, 0, 0)]


def test_two_gts_and_gt_index_is_the_targets_row():
    """Rows (targets order): row 0 image 1 box (16, 16, 32, 30): IoU tile 3 = 224 / 256 = 0.875 -> positive.
    Row 1 image 0 box (0, 0, 16, 16) = tile 0 exactly (IoU 1). Row 2 image 1 box (20, 0, 32, 16): IoU tile 1
    = 192 / 256 = 0.75 -> positive. gt_index names the targets row, not the index within the image."""
    targets = targets_of([1, 0, 16, 16, 32, 30], [0, 0, 0, 0, 16, 16], [1, 0, 20, 0, 32, 16])
    result = rpn_assigner()(tile_priors(), targets, 2)
    assert pairs(result) == [(0, 0, 1), (1, 1, 2), (1, 3, 0)]
    assert result.ignore.shape == (2, 4) and not result.ignore.any()


def test_box_smaller_than_every_anchor():
    """Box (2, 2, 6, 6), area 16: IoU tile 0 = 16 / 256 = 0.0625, below every threshold. Low-quality (RPN,
    RetinaNet) and SSD's forcing still make tile 0 its positive; without low-quality matches it has none."""
    priors, targets = tile_priors(), targets_of([0, 0, 2, 2, 6, 6])
    assert pairs(rpn_assigner()(priors, targets, 1)) == [(0, 0, 0)]
    assert pairs(retinanet_assigner()(priors, targets, 1)) == [(0, 0, 0)]
    assert pairs(ssd_assigner()(priors, targets, 1)) == [(0, 0, 0)]
    assert pairs(MaxIoUAssigner(0.7, 0.3, allow_low_quality_matches=False)(priors, targets, 1)) == []


def test_box_larger_than_every_anchor():
    """Box (0, 0, 32, 32) covers all four tiles: IoU 256 / 1024 = 0.25 with each, a four-way tie below 0.3.
    Low-quality matches take all the ties: four positives. SSD forces only the argmax (lowest index), tile 0;
    0.25 < 0.5 leaves the others negative."""
    priors, targets = tile_priors(), targets_of([0, 0, 0, 0, 32, 32])
    assert pairs(rpn_assigner()(priors, targets, 1)) == [(0, p, 0) for p in range(4)]
    assert pairs(ssd_assigner()(priors, targets, 1)) == [(0, 0, 0)]


def test_box_on_a_cell_border():
    """Box (8, 0, 24, 16) straddles tiles 0 and 1: IoU 128 / 384 = 1/3 with each (exact tie). RPN: 1/3 is in
    the ignore band, but both are the gt's best -> both positive. RetinaNet: below 0.4 -> negative, again both
    positive by low quality. Without low quality under RPN both are ignored. SSD: tile 0 forced, tile 1
    negative (1/3 < 0.5)."""
    priors, targets = tile_priors(), targets_of([0, 0, 8, 0, 24, 16])
    assert pairs(rpn_assigner()(priors, targets, 1)) == [(0, 0, 0), (0, 1, 0)]
    assert pairs(retinanet_assigner()(priors, targets, 1)) == [(0, 0, 0), (0, 1, 0)]
    strict = MaxIoUAssigner(0.7, 0.3, allow_low_quality_matches=False)(priors, targets, 1)
    assert pairs(strict) == [] and ignored(strict) == [(0, 0), (0, 1)]
    assert pairs(ssd_assigner()(priors, targets, 1)) == [(0, 0, 0)]


def test_two_gts_competing_for_one_prior():
    """Row 0 box (0, 0, 16, 12): IoU tile 0 = 0.75. Row 1 box (0, 0, 16, 10): IoU tile 0 = 0.625. Tile 0 is
    the best prior of both. RPN: tile 0 goes to row 0 (highest IoU, >= 0.7); row 1's low-quality match is tile
    0 too, which stays with row 0, so row 1 has no positive. SSD (torchvision's write order): the later gt,
    row 1, takes tile 0."""
    priors, targets = tile_priors(), targets_of([0, 0, 0, 0, 16, 12], [0, 1, 0, 0, 16, 10])
    assert pairs(rpn_assigner()(priors, targets, 1)) == [(0, 0, 0)]
    assert pairs(ssd_assigner()(priors, targets, 1)) == [(0, 0, 1)]


def test_no_gt_and_an_image_without_boxes():
    """No targets: zero pairs, ignore all False of shape (B, P). Targets only in image 1 (box = tile 3): image 0
    is all negative (no pair, nothing ignored), image 1 has its pair."""
    priors = tile_priors()
    for assigner in (rpn_assigner(), retinanet_assigner(), ssd_assigner()):
        empty = assigner(priors, torch.zeros(0, 6), 3)
        assert empty.num_pos == 0 and empty.prior_index.dtype == torch.long
        if isinstance(assigner, MaxIoUAssigner):
            assert empty.ignore.shape == (3, 4) and not empty.ignore.any()
        result = assigner(priors, targets_of([1, 0, 16, 16, 32, 32]), 2)
        assert pairs(result) == [(1, 3, 0)]
        if result.ignore is not None:
            assert not result.ignore.any()


def test_classes_repr_and_validation():
    assert repr(rpn_assigner()) == (
        "MaxIoUAssigner(pos_iou=0.7, neg_iou=0.3, allow_low_quality_matches=True, min_pos_iou=0.0)"
    )
    assert "pos_iou=0.5, neg_iou=0.4" in repr(retinanet_assigner())
    assert repr(ssd_assigner()) == "SSDAssigner(iou_threshold=0.5)"
    for cls in (MaxIoUAssigner, SSDAssigner):
        assert cls.needs_anchors and not cls.needs_predictions
    with pytest.raises(ValueError, match="neg_iou <= pos_iou"):
        MaxIoUAssigner(0.3, 0.7)
    with pytest.raises(ValueError, match="min_pos_iou"):
        MaxIoUAssigner(0.7, 0.3, min_pos_iou=1.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        SSDAssigner(-0.1)
    priors = tile_priors()
    point_priors = Priors(grid=priors.grid, strides=priors.strides, anchors=None, level=priors.level,
                          anchor_id=priors.anchor_id, level_shapes=priors.level_shapes)
    with pytest.raises(ValueError, match="anchors is None"):
        assign_max_iou(point_priors, targets_of([0, 0, 0, 0, 8, 8]), 1, 0.7, 0.3)
    with pytest.raises(ValueError, match="batch_size=1"):
        assign_ssd(priors, targets_of([1, 0, 0, 0, 8, 8]), 1)


# ------------------------------------------------------------------------------- agreement with torchvision


def our_encoding(result: Assignment, targets: torch.Tensor, batch_size: int, num_priors: int) -> torch.Tensor:
    """Assignment -> torchvision's per-anchor encoding Tensor[B, P]: gt index within its image, -1 negative,
    -2 ignored. Fails if an anchor appears in two pairs (a matcher gives each anchor one gt)."""
    image = targets[:, 0].long()
    local = torch.zeros_like(image)
    for b in range(batch_size):
        rows = (image == b).nonzero().flatten()
        local[rows] = torch.arange(rows.numel())
    encoded = torch.full((batch_size, num_priors), -1, dtype=torch.long)
    if result.ignore is not None:
        encoded[result.ignore] = -2
    flat = result.batch_index * num_priors + result.prior_index
    assert flat.unique().numel() == flat.numel()
    assert (image[result.gt_index] == result.batch_index).all()
    encoded[result.batch_index, result.prior_index] = local[result.gt_index]
    return encoded


def torchvision_encoding(matcher, targets: torch.Tensor, batch_size: int, anchors: torch.Tensor) -> torch.Tensor:
    encoded = torch.full((batch_size, anchors.shape[0]), -1, dtype=torch.long)
    for b in range(batch_size):
        gt = targets[targets[:, 0] == b, 2:6]
        if gt.shape[0]:  # torchvision raises on an image without boxes; ours are all negative there
            encoded[b] = matcher(tv_box_iou(gt, anchors))
    return encoded


YOLO_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def retinanet_anchors(strides):
    """9 anchors per level as torchvision's RetinaNet: sizes 4 * stride * 2^(k/3), aspect ratios h/w 0.5, 1, 2."""
    levels = []
    for stride in strides:
        level = []
        for ratio in (0.5, 1.0, 2.0):
            for k in range(3):
                size = 4 * stride * 2 ** (k / 3)
                level.append([size / ratio**0.5, size * ratio**0.5])
        levels.append(level)
    return levels


@pytest.mark.parametrize(
    "setting",
    ["yolo_640", "retinanet_320"],
)
def test_agreement_with_torchvision_on_coco128(coco128_batch, setting):
    """Real coco128 boxes, per image: rpn == Matcher(0.7, 0.3, True), retinanet == Matcher(0.5, 0.4, True),
    ssd == SSDMatcher(0.5), on the same anchor boxes. Image 5's boxes are dropped so that one image of the batch
    has none (all negative on both sides)."""
    targets, batch_size, img_size = coco128_batch
    targets = targets[targets[:, 0] != 5]
    if setting == "yolo_640":
        strides = [8, 16, 32]
        generator = AnchorPriorGenerator(YOLO_ANCHORS, strides)
    else:
        img_size, strides = 320, [8, 16, 32, 64, 128]
        targets = torch.cat((targets[:, :2], targets[:, 2:] * 0.5), dim=1)
        generator = AnchorPriorGenerator(retinanet_anchors(strides), strides)
    priors = generator([(-(-img_size // s), -(-img_size // s)) for s in strides])
    anchors = anchor_boxes(priors)
    num_priors = len(priors)

    checks = [
        (rpn_assigner(), Matcher(0.7, 0.3, allow_low_quality_matches=True)),
        (retinanet_assigner(), Matcher(0.5, 0.4, allow_low_quality_matches=True)),
        (ssd_assigner(), SSDMatcher(0.5)),
    ]
    for ours, reference in checks:
        got = our_encoding(ours(priors, targets, batch_size), targets, batch_size, num_priors)
        expected = torchvision_encoding(reference, targets, batch_size, anchors)
        assert torch.equal(got, expected), repr(ours)
        # the data exercise every branch: positives in every image with boxes, ignored anchors, and an empty image
        assert (got[5] == -1).all()
        has_boxes = torch.bincount(targets[:, 0].long(), minlength=batch_size) > 0
        assert ((got >= 0).any(dim=1) == has_boxes).all()
        if isinstance(ours, MaxIoUAssigner):
            assert (got == -2).any()

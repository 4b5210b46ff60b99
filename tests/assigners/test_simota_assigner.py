"""Tests of detector/assigners/simota.py (SimOTA, YOLOX).

Hand-worked cases use point priors of one stride-8 level built by :class:`PointPriorGenerator`: on a ``1 x 5``
grid the prior centres are ``x = 4, 12, 20, 28, 36`` at ``y = 4`` (prior index = column). The worked example is
the one of :func:`assign_simota`'s docstring.

The reference (:func:`reference_simota`) is a plain loop over images, then over ground truths, written from
YOLOX's ``get_in_boxes_info`` / ``dynamic_k_matching`` (IoU from torchvision, class cost from
``F.binary_cross_entropy``), with the one documented difference: ground truths without a candidate prior of
their own are dropped.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou as tv_box_iou

from detector.assigners.common import pad_targets
from detector.assigners.simota import (
    SimOTAAssigner,
    assign_simota,
    simota_candidates,
    simota_cost,
    simota_dynamic_k,
    simota_matching,
)
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.structures import Assignment, Predictions

INF = float("inf")


def targets_of(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return sorted(
        zip(assignment.batch_index.tolist(), assignment.prior_index.tolist(), assignment.gt_index.tolist())
    )


def row_priors():
    return PointPriorGenerator([8])([(1, 5)])


# the worked example: ground truths A (class 0) and B (class 1); predictions of the five priors
WORKED_TARGETS = targets_of([0, 0, 0, 0, 16, 8], [0, 1, 8, 0, 32, 8])
WORKED_BOXES = torch.tensor([[[0, 0, 16, 8], [1, 0, 17, 8], [8, 0, 32, 8], [16, 0, 32, 8], [28, 0, 44, 8]]],
                            dtype=torch.float32)
WORKED_SCORES = torch.tensor([[[0.25, 0.25], [0.01, 0.81], [0.25, 0.25], [0.81, 0.01], [0.25, 0.25]]])


# ------------------------------------------------------------------------------------------------ worked example

def test_worked_example_candidates_costs_dynamic_k():
    """Centre squares (r = 1.5, 12 px): A around x = 8 -> (-4, 20) holds priors 0, 1 (x = 20 fails, strict);
    B around x = 20 -> (8, 32) holds priors 1, 2, 3. Boxes: A (0, 16) holds priors 0, 1; B (8, 32) holds 1, 2, 3.
    In both: A {0, 1}, B {1, 2, 3}; prior 4 (x = 36) is in nothing.

    IoUs of the predicted boxes: with A ``1, 120/136 = 0.882, 64/256 = 0.25, 0, 0``; with B ``0.25, 72/248 = 0.290,
    1, 128/192 = 0.667, 32/288 = 0.111``.
    Class cost, sqrt(scores): (0.5, 0.5) gives ``2 ln 2 = 1.386`` for either class; prior 1 (0.1, 0.9) gives
    ``-ln 0.1 - ln 0.1 = 4.605`` for A (class 0) and ``-2 ln 0.9 = 0.211`` for B; prior 3 (0.9, 0.1) the reverse.
    Costs (iou_weight 3): A ``[1.386, 4.605 + 3 * 0.1252, 1e5 + 1.386 + 3 ln 4, 1e5 + 0.211 - 3 ln 1e-8]``,
    B ``[1e5 + 1.386 + 3 ln 4, 0.211 + 3 * 1.2367, 1.386, 4.605 + 3 ln 1.5]``.
    Dynamic k: A ``int(1 + 0.882 + 0.25 + 0) = 2``, B ``int(1 + 0.667 + 0.290 + 0.25) = 2``.
    """
    priors = row_priors()
    padded = pad_targets(WORKED_TARGETS, 1)
    in_box, in_centre = simota_candidates(priors.centers, priors.strides, padded.boxes, center_radius=1.5)
    assert in_box[0].tolist() == [[True, True, False, False, False], [False, True, True, True, False]]
    assert in_centre[0].tolist() == [[True, True, False, False, False], [False, True, True, True, False]]

    cost, iou = simota_cost(WORKED_BOXES, WORKED_SCORES, padded.boxes, padded.labels, in_box & in_centre)
    assert iou[0, 0].tolist() == pytest.approx([1, 120 / 136, 0.25, 0, 0], abs=1e-6)
    assert iou[0, 1].tolist() == pytest.approx([0.25, 72 / 248, 1, 2 / 3, 1 / 9], abs=1e-6)
    ln = math.log
    u, bad, good = 2 * ln(2), -2 * ln(0.1), -2 * ln(0.9)
    expected_a = [u, bad - 3 * ln(120 / 136), 1e5 + u + 3 * ln(4), 1e5 + good - 3 * ln(1e-8)]
    expected_b = [1e5 + u + 3 * ln(4), good - 3 * ln(72 / 248), u, bad - 3 * ln(2 / 3)]
    assert cost.dtype == torch.float64
    assert cost[0, 0, :4].tolist() == pytest.approx(expected_a, abs=1e-3)
    assert cost[0, 1, :4].tolist() == pytest.approx(expected_b, abs=1e-3)
    assert expected_b[1] < expected_a[1]  # prior 1 is cheaper for B although its IoU with A is higher

    usable = iou[:, :, :4]  # the candidates of the image: priors 0..3
    assert simota_dynamic_k(usable, torch.tensor([[True, True]])).tolist() == [[2, 2]]


def test_worked_example_assignment():
    """A takes its two cheapest priors 0 (1.386) and 1 (4.981); B takes 2 (1.386) and 1 (3.921). Prior 1 is taken
    twice and goes to B (3.921 < 4.981). Pairs: 0 -> A (IoU 1), 1 -> B (0.290), 2 -> B (1); priors 3, 4 negative."""
    result = assign_simota(row_priors(), WORKED_TARGETS, 1, WORKED_BOXES, WORKED_SCORES, center_radius=1.5)
    assert pairs(result) == [(0, 0, 0), (0, 1, 1), (0, 2, 1)]
    assert result.prior_index.tolist() == [0, 1, 2]  # ordered by image, then prior
    assert result.score.tolist() == pytest.approx([1.0, 72 / 248, 1.0], abs=1e-5)
    assert result.batch_index.dtype == result.prior_index.dtype == result.gt_index.dtype == torch.long
    assert result.score.dtype == torch.float32
    assert result.ignore is None and result.negative is None and result.weight is None
    # prior 1's scores flipped to favour class 0: now A keeps prior 1 and B, with k = 2, has no cheaper
    # alternative than prior 3 (B's cost there 5.822 < its cost at prior 0, 1e5 + 5.5)
    flipped = WORKED_SCORES.clone()
    flipped[0, 1] = torch.tensor([0.81, 0.01])
    result = assign_simota(row_priors(), WORKED_TARGETS, 1, WORKED_BOXES, flipped, center_radius=1.5)
    assert pairs(result) == [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 1)]


# ------------------------------------------------------------------------------------------------ candidates

def test_candidates_in_box_versus_centre_square():
    """10 x 10 grid of stride 8 (prior (gx, gy) at centre ((gx + 0.5) * 8, (gy + 0.5) * 8), index gy * 10 + gx),
    radius 2.5 strides = 20 px.

    * Big box (0, 0, 80, 40), centre (40, 20): prior (0, 0) at (4, 4) is inside the box but 36 px from the
      centre -> in box only; prior (4, 2) at (36, 20) is in both.
    * Tiny box (60, 60, 62, 62), centre (61, 61): no prior centre inside; prior (8, 8) at (68, 68) is 7 px from
      the centre in x and y -> in the centre square only.
    * Boundaries are strict: box (4, 4, 20, 20) has prior (0, 0) at (4, 4) on its corner -> not in the box;
      prior (1, 1) at (12, 12) inside. Centre (40, 40): prior (7, 4) at (60, 36) is exactly 20 px away in x -> not
      in the centre square; prior (6, 4) at (52, 36) is.
    """
    priors = PointPriorGenerator([8])([(10, 10)])
    boxes = torch.tensor([[[0, 0, 80, 40], [60, 60, 62, 62], [4, 4, 20, 20], [30, 30, 50, 50]]], dtype=torch.float32)
    in_box, in_centre = simota_candidates(priors.centers, priors.strides, boxes, center_radius=2.5)
    assert in_box.shape == in_centre.shape == (1, 4, 100)

    def at(gx, gy):
        return gy * 10 + gx

    assert in_box[0, 0, at(0, 0)] and not in_centre[0, 0, at(0, 0)]
    assert in_box[0, 0, at(4, 2)] and in_centre[0, 0, at(4, 2)]
    assert int(in_box[0, 0].sum()) == 50  # all 10 x 5 prior centres of the top half
    assert not in_box[0, 1].any() and in_centre[0, 1, at(8, 8)]
    assert not in_box[0, 2, at(0, 0)] and in_box[0, 2, at(1, 1)]
    assert not in_centre[0, 3, at(7, 4)] and in_centre[0, 3, at(6, 4)]
    # centre square of (40, 40): x and y in (20, 60) strictly -> columns and rows 3..6 (centres 28..52)
    assert sorted(in_centre[0, 3].nonzero().flatten().tolist()) == [at(x, y) for y in range(3, 7) for x in range(3, 7)]


def test_in_box_only_priors_come_after_in_both_priors():
    """Big box (0, 0, 80, 40) on the 10 x 10 grid, centre (40, 20), centre square x in (20, 60), y in (0, 40).
    In the box: rows 0..4 (y = 4 .. 36), all columns: 50 priors. In both: columns 3..6 (x = 28 .. 52) of those
    rows, 20 priors; in the box only: columns 0..2 and 7..9, 30 priors. Every prediction equals the box (IoU 1,
    k = 10). The in-box-only priors get the best class score (0.9), ten in-both priors 0.5, the other ten 0.3:
    the 10 taken are the ten in-both priors at 0.5, since the 1e5 term outweighs any class cost.
    """
    priors = PointPriorGenerator([8])([(10, 10)])
    targets = targets_of([0, 0, 0, 0, 80, 40])
    boxes = torch.tensor([0.0, 0, 80, 40]).expand(1, 100, 4).clone()
    x = priors.centers[:, 0]
    y = priors.centers[:, 1]
    in_both = (x > 20) & (x < 60) & (y < 40)
    in_box_only = (y < 40) & ~in_both
    scores = torch.full((1, 100, 1), 0.3)
    scores[0, in_box_only, 0] = 0.9
    # among the in-both priors, the first ten (by index) score a little better
    both_index = in_both.nonzero().flatten()
    scores[0, both_index[:10], 0] = 0.5
    result = assign_simota(priors, targets, 1, boxes, scores)
    assert sorted(result.prior_index.tolist()) == both_index[:10].tolist()
    # with everything predicted far away (IoU 0, k = 1) the one prior is still in both
    far = torch.tensor([500.0, 500, 510, 510]).expand(1, 100, 4)
    result = assign_simota(priors, targets, 1, far, scores)
    assert result.num_pos == 1 and bool(in_both[result.prior_index[0]])
    assert result.score.tolist() == [0.0]


def test_box_smaller_than_a_cell_takes_centre_priors():
    """Tiny box (60, 60, 62, 62) holds no prior centre, so nothing is in both and every candidate costs 1e5 + ...;
    the candidates are the centre square x, y in (61 - 20, 61 + 20) = (41, 81): prior centres 44 .. 76, columns
    and rows 5..9, 25 priors. With predictions equal to the box the IoUs are 1, k = 10: it takes 10 of them."""
    priors = PointPriorGenerator([8])([(10, 10)])
    targets = targets_of([0, 3, 60, 60, 62, 62])
    boxes = torch.tensor([60.0, 60, 62, 62]).expand(1, 100, 4)
    scores = torch.full((1, 100, 4), 0.2)
    result = assign_simota(priors, targets, 1, boxes, scores)
    assert result.num_pos == 10
    square = [gy * 10 + gx for gy in range(5, 10) for gx in range(5, 10)]
    assert set(result.prior_index.tolist()) <= set(square)


# ------------------------------------------------------------------------------------------------ dynamic k

def test_dynamic_k_truncates_and_is_at_least_one():
    """Rows: top-3 IoUs summing to 2.9 -> 2; 0.6 * 3 = 1.8 -> 1; all zero -> 1 (clamped); 1, 1, 1 with
    candidate_topk 3 -> 3; an inactive row -> 0."""
    iou = torch.tensor([[[0.95, 0.95, 1.0, 0.1], [0.6, 0.6, 0.6, 0.0], [0.0, 0.0, 0.0, 0.0],
                         [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]])
    active = torch.tensor([[True, True, True, True, False]])
    assert simota_dynamic_k(iou, active, candidate_topk=3).tolist() == [[2, 1, 1, 3, 0]]
    # fewer candidates than candidate_topk: the sum runs over all of them
    assert simota_dynamic_k(iou, active, candidate_topk=10).tolist() == [[3, 1, 1, 4, 0]]


@pytest.mark.parametrize("candidate_topk, expected", [(10, 10), (3, 3), (1, 1)])
def test_dynamic_k_from_perfect_predictions(candidate_topk, expected):
    """Every prediction equals the box (IoU 1 with all 50 in-box candidates): k = candidate_topk."""
    priors = PointPriorGenerator([8])([(10, 10)])
    targets = targets_of([0, 0, 0, 0, 80, 40])
    boxes = torch.tensor([0.0, 0, 80, 40]).expand(1, 100, 4)
    result = assign_simota(priors, targets, 1, boxes, torch.rand(1, 100, 2), candidate_topk=candidate_topk)
    assert result.num_pos == expected
    assert result.score.tolist() == pytest.approx([1.0] * expected)


def test_dynamic_k_at_least_one_with_hopeless_predictions():
    """Two boxes, every prediction far away (IoU 0 -> k = max(1, 0) = 1): each box takes exactly one prior, the
    in-both prior with the best score for its class (prior (4, 2) for class 0, prior (7, 7) for class 1)."""
    priors = PointPriorGenerator([8])([(10, 10)])
    targets = targets_of([0, 0, 0, 0, 80, 40], [0, 1, 48, 48, 72, 72])
    far = torch.tensor([500.0, 500, 510, 510]).expand(1, 100, 4)
    scores = torch.full((1, 100, 2), 0.1)
    scores[0, 2 * 10 + 4, 0] = 0.8
    scores[0, 7 * 10 + 7, 1] = 0.8
    result = assign_simota(priors, targets, 1, far, scores)
    assert pairs(result) == [(0, 24, 0), (0, 77, 1)]


# ------------------------------------------------------------------------------------------------ matching

def test_matching_conflicts_go_to_the_cheapest_ground_truth_of_the_image():
    """Costs (3 ground truths x 3 slots), k = (2, 1, 2):
    A [1, 3, 9] takes slots 0, 1; B [9, 2, 0.5] takes slot 2; C [9, 2.5, 1] takes slots 2, 1.
    Slot 1 is taken by A and C; YOLOX's argmin runs over the whole column [3, 2, 2.5] -> B, which did not take
    it. Slot 2 is taken by B and C -> B (0.5). Slot 0 -> A."""
    cost = torch.tensor([[[1.0, 3, 9], [9, 2, 0.5], [9, 2.5, 1]]], dtype=torch.float64)
    matched, positive = simota_matching(cost, torch.tensor([[2, 1, 2]]))
    assert positive.tolist() == [[True, True, True]]
    assert matched.tolist() == [[0, 1, 1]]


def test_matching_never_takes_infinite_cost_and_handles_zero_k():
    """k = 3 for a row with only 2 finite slots takes those 2; padding rows (k = 0, cost inf) take nothing."""
    cost = torch.tensor([[[1.0, INF, 2.0, INF], [INF, INF, INF, INF]]], dtype=torch.float64)
    matched, positive = simota_matching(cost, torch.tensor([[3, 0]]))
    assert positive.tolist() == [[True, False, True, False]]
    assert matched[positive].tolist() == [0, 0]
    matched, positive = simota_matching(cost, torch.tensor([[0, 0]]))
    assert not positive.any() and matched.shape == (1, 4)


# ------------------------------------------------------------------------------------------------ empty cases

def test_no_ground_truth():
    priors = row_priors()
    result = assign_simota(priors, torch.zeros(0, 6), 2, torch.rand(2, 5, 4), torch.rand(2, 5, 3))
    assert result.num_pos == 0 and result.prior_index.dtype == torch.long and result.prior_index.shape == (0,)
    assert result.score is not None and result.score.shape == (0,)


def test_images_without_boxes_and_batch_independence():
    """The worked example placed in image 1 of 3 (images 0 and 2 empty, with other predictions) gives the same
    pairs in image 1 with the same gt rows, and nothing in images 0, 2."""
    targets = WORKED_TARGETS.clone()
    targets[:, 0] = 1
    boxes = torch.cat((torch.rand(1, 5, 4) * 8, WORKED_BOXES, torch.rand(1, 5, 4) * 8)).sort(-1).values
    boxes[1] = WORKED_BOXES[0]
    scores = torch.cat((torch.rand(1, 5, 2), WORKED_SCORES, torch.rand(1, 5, 2)))
    result = assign_simota(row_priors(), targets, 3, boxes, scores, center_radius=1.5)
    assert pairs(result) == [(1, 0, 0), (1, 1, 1), (1, 2, 1)]


def test_ground_truth_without_candidate_prior():
    """A box entirely outside the 1 x 5 grid (centre (200, 200), far more than 1.5 strides from every prior
    centre) has no candidate: alone it gives no pair; next to the worked example (as row 1 between A and B) it
    changes nothing and is never matched."""
    priors = row_priors()
    lone = targets_of([0, 0, 196, 196, 204, 204])
    result = assign_simota(priors, lone, 1, WORKED_BOXES, WORKED_SCORES, center_radius=1.5)
    assert result.num_pos == 0 and result.score.shape == (0,)
    mixed = torch.cat((WORKED_TARGETS[:1], lone, WORKED_TARGETS[1:]))
    result = assign_simota(priors, mixed, 1, WORKED_BOXES, WORKED_SCORES, center_radius=1.5)
    assert pairs(result) == [(0, 0, 0), (0, 1, 2), (0, 2, 2)]



def test_ground_truth_without_candidate_never_wins_a_conflict():
    """Tiny boxes A (class 0, (10, 3, 11, 5)) and B (class 1, (13, 3, 14, 5)) hold no prior centre; their centre
    squares (r = 1.5, 12 px around x = 10.5 / 13.5) hold priors 0, 1, 2, so each costs 1e5 + ... everywhere.
    Every prediction is the box of a third ground truth O far outside the grid, so A and B have IoU 0 (k = 1,
    cost 1e5 + cls + 3 * 18.42) and both take prior 1: sqrt(scores) are 0.01 for every class except prior 1's
    (0.9, 0.8, 0.01), so the class cost is ``-ln 0.01 - 2 ln 0.99 = 4.625`` at priors 0, 2 and, at prior 1,
    ``-ln 0.9 - ln 0.2 - ln 0.99 = 1.725`` for A, ``-ln 0.8 - ln 0.1 - ln 0.99 = 2.536`` for B. O has IoU 1 with
    every prediction, so its cost at prior 1 (1e5 + cls, no IoU term) is the lowest of the column; but O has no
    candidate of its own and is out of the contest: prior 1 goes to A (1.725 < 2.536)."""
    targets = targets_of([0, 0, 10, 3, 11, 5], [0, 1, 13, 3, 14, 5], [0, 2, 196, 196, 204, 204])
    boxes = torch.tensor([196.0, 196, 204, 204]).expand(1, 5, 4)
    scores = torch.full((1, 5, 3), 1e-4)
    scores[0, 1, :2] = torch.tensor([0.81, 0.64])
    result = assign_simota(row_priors(), targets, 1, boxes, scores, center_radius=1.5)
    assert pairs(result) == [(0, 1, 0)]
    assert result.score.tolist() == [0.0]


# ------------------------------------------------------------------------------------------------ reference

def reference_simota(priors, targets, batch_size, pred_boxes, pred_scores, center_radius=2.5, candidate_topk=10,
                     iou_weight=3.0, cls_weight=1.0):
    """YOLOX's per-image SimOTA, one image and one ground truth at a time -> {(image, prior, gt row): IoU}, and
    the number of priors taken by more than one ground truth (to check the conflict branch runs)."""
    x, y = priors.centers[:, 0], priors.centers[:, 1]
    reach = center_radius * priors.strides
    out, conflicts = {}, 0
    for b in range(batch_size):
        rows = (targets[:, 0] == b).nonzero().flatten()
        if rows.numel() == 0:
            continue
        gt = targets[rows, 2:6]
        x1, y1, x2, y2 = (gt[:, i : i + 1] for i in range(4))
        in_box = (x - x1 > 0) & (x2 - x > 0) & (y - y1 > 0) & (y2 - y > 0)  # (G, P)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        in_centre = (x - (cx - reach) > 0) & ((cx + reach) - x > 0) & (y - (cy - reach) > 0) & ((cy + reach) - y > 0)
        own = in_box | in_centre
        keep = own.any(1)  # the documented difference: ground truths without a candidate are dropped
        rows, gt, in_box, in_centre, own = rows[keep], gt[keep], in_box[keep], in_centre[keep], own[keep]
        if rows.numel() == 0:
            continue
        fg = own.any(0)  # (P,) candidates of the image
        both = in_box[:, fg] & in_centre[:, fg]
        ious = tv_box_iou(gt, pred_boxes[b][fg])  # (G, Q)
        labels = targets[rows, 1].long()
        q = pred_scores[b][fg].sqrt()
        num_gt, num_cand = ious.shape
        one_hot = F.one_hot(labels, pred_scores.shape[-1]).float()
        cls_cost = F.binary_cross_entropy(
            q[None].expand(num_gt, -1, -1), one_hot[:, None].expand(-1, num_cand, -1), reduction="none"
        ).sum(-1)
        cost = (cls_weight * cls_cost + iou_weight * -torch.log(ious + 1e-8)).double() + 1e5 * (~both).double()
        top = torch.topk(ious, min(candidate_topk, num_cand), dim=1).values
        ks = top.sum(1).int().clamp(min=1).tolist()
        matching = torch.zeros(num_gt, num_cand, dtype=torch.uint8)
        for g in range(num_gt):
            matching[g, torch.topk(cost[g], k=ks[g], largest=False).indices] = 1
        multiple = matching.sum(0) > 1
        conflicts += int(multiple.sum())
        if multiple.any():
            winner = cost[:, multiple].argmin(0)
            matching[:, multiple] = 0
            matching[winner, multiple] = 1
        positive = matching.sum(0) > 0
        candidate_ids = fg.nonzero().flatten()
        for slot in positive.nonzero().flatten().tolist():
            g = int(matching[:, slot].argmax())
            out[(b, int(candidate_ids[slot]), int(rows[g]))] = float(ious[g, slot])
    return out, conflicts


def plausible_predictions(priors, targets, batch_size, num_classes, generator):
    """Boxes around each prior (centre +- half a stride, size ~ e^(1 +- 0.5) strides); priors whose centre lies in
    a ground truth predict that box jittered by 10 % of its size. Scores uniform, squared (sqrt is uniform)."""
    num_priors = len(priors)
    stride = priors.strides[None, :, None]  # (1, P, 1)
    centre = priors.centers[None] + torch.randn(batch_size, num_priors, 2, generator=generator) * stride * 0.5
    size = stride * torch.exp(1.0 + 0.5 * torch.randn(batch_size, num_priors, 2, generator=generator))
    boxes = torch.cat((centre - size / 2, centre + size / 2), -1)  # (B, P, 4)
    padded = pad_targets(targets, batch_size)
    x, y = priors.centers[:, 0], priors.centers[:, 1]
    gtb = padded.boxes
    inside = (x > gtb[..., 0:1]) & (x < gtb[..., 2:3]) & (y > gtb[..., 1:2]) & (y < gtb[..., 3:4])
    inside &= padded.valid[..., None]  # (B, G, P)
    first = inside.to(torch.uint8).argmax(1)  # (B, P)
    gt_box = gtb.gather(1, first[..., None].expand(-1, -1, 4))  # (B, P, 4)
    wh = (gt_box[..., 2:] - gt_box[..., :2]).repeat(1, 1, 2)
    jittered = gt_box + 0.1 * wh * torch.randn(batch_size, num_priors, 4, generator=generator)
    boxes = torch.where(inside.any(1)[..., None], jittered, boxes)
    low, high = boxes[..., :2], boxes[..., 2:]
    boxes = torch.cat((torch.minimum(low, high), torch.maximum(low, high)), -1)  # x1 <= x2, y1 <= y2
    scores = torch.rand(batch_size, num_priors, num_classes, generator=generator) ** 2
    return boxes, scores


def test_matches_per_image_reference_on_coco128(coco128_batch):
    """Real coco128 boxes (16 images, 640 px) with point priors 8/16/32 (P = 8400), image 5 emptied and a box
    without candidates added to image 0: the same pairs and IoU scores as the per-image loop."""
    targets, batch_size, img_size = coco128_batch
    targets = targets[targets[:, 0] != 5]
    targets = torch.cat((targets, targets_of([0, 3, 700, 700, 720, 720])))
    priors = PointPriorGenerator([8, 16, 32])([(img_size // s, img_size // s) for s in (8, 16, 32)])
    generator = torch.Generator().manual_seed(0)
    boxes, scores = plausible_predictions(priors, targets, batch_size, 80, generator)

    result = assign_simota(priors, targets, batch_size, boxes, scores)
    got = {(b, p, g): s for b, p, g, s in zip(result.batch_index.tolist(), result.prior_index.tolist(),
                                               result.gt_index.tolist(), result.score.tolist())}
    expected, conflicts = reference_simota(priors, targets, batch_size, boxes, scores)
    assert len(got) == result.num_pos  # one pair per prior
    assert got.keys() == expected.keys()
    keys = sorted(got)
    assert [got[k] for k in keys] == pytest.approx([expected[k] for k in keys], abs=1e-5)
    # the draw exercises the branches: conflicts, k > 1, an empty image, the box without candidates; most real
    # boxes are matched (SimOTA does not promise every box a prior: one can lose all its priors to conflicts)
    assert conflicts > 0
    assert result.num_pos > 2 * (targets.shape[0] - 1)
    assert 5 not in set(result.batch_index.tolist())
    assert targets.shape[0] - 1 not in set(result.gt_index.tolist())
    assert len(set(result.gt_index.tolist())) > 0.8 * (targets.shape[0] - 1)
    assert len(set(priors.level[result.prior_index].tolist())) == 3
    # pairs ordered by image, then prior
    order = result.batch_index * len(priors) + result.prior_index
    assert bool((order[1:] > order[:-1]).all())


# ------------------------------------------------------------------------------------------------ cost, class

def test_cost_matches_direct_formula():
    """Random boxes and scores: cost = sum over classes of BCE(q, one_hot) + 3 * -log(IoU + 1e-8) + 1e5 outside,
    with q = sqrt(score) (default) or the score itself (score_sqrt=False); IoU as torchvision's."""
    generator = torch.Generator().manual_seed(3)
    pred = torch.rand(2, 7, 4, generator=generator) * 50
    pred = torch.cat((pred[..., :2], pred[..., :2] + pred[..., 2:] + 1), -1)
    gt = torch.rand(2, 3, 4, generator=generator) * 50
    gt = torch.cat((gt[..., :2], gt[..., :2] + gt[..., 2:] + 1), -1)
    labels = torch.randint(0, 5, (2, 3), generator=generator)
    scores = torch.rand(2, 7, 5, generator=generator)
    outside = torch.rand(2, 3, 7, generator=generator) < 0.5
    for score_sqrt in (True, False):
        cost, iou = simota_cost(pred, scores, gt, labels, ~outside, iou_weight=2.0, cls_weight=0.5,
                                score_sqrt=score_sqrt)
        q = scores.sqrt() if score_sqrt else scores
        for b in range(2):
            expected_iou = tv_box_iou(gt[b], pred[b])
            assert torch.allclose(iou[b], expected_iou, atol=1e-5)
            bce = F.binary_cross_entropy(q[b][None].expand(3, -1, -1),
                                         F.one_hot(labels[b], 5).float()[:, None].expand(-1, 7, -1),
                                         reduction="none").sum(-1)
            expected = 0.5 * bce + 2.0 * -torch.log(expected_iou + 1e-8) + 1e5 * outside[b]
            assert torch.allclose(cost[b].float(), expected, atol=1e-3)


def test_class_matches_function_and_reads_predictions():
    priors = AnchorPriorGenerator([[[10, 13], [16, 30]]], [8])([(1, 5)])  # anchors: only centres are used
    assigner = SimOTAAssigner(center_radius=1.5)
    assert assigner.needs_predictions is True and assigner.needs_anchors is False
    boxes = WORKED_BOXES.repeat(1, 2, 1)  # (1, 10, 4): anchor 0 then anchor 1 of the five cells
    scores = WORKED_SCORES.repeat(1, 2, 1)
    a = assigner(priors, WORKED_TARGETS, 1, pred=Predictions(boxes=boxes, scores=scores))
    b = assign_simota(priors, WORKED_TARGETS, 1, boxes, scores, center_radius=1.5)
    assert pairs(a) == pairs(b) and a.num_pos > 0
    assert pairs(a) != pairs(assign_simota(priors, WORKED_TARGETS, 1, boxes, scores, center_radius=1.5,
                                           candidate_topk=1))
    assert repr(assigner) == ("SimOTAAssigner(center_radius=1.5, candidate_topk=10, iou_weight=3.0, "
                              "cls_weight=1.0, score_sqrt=True)")
    with pytest.raises(ValueError, match="needs predictions"):
        assigner(priors, WORKED_TARGETS, 1)


def test_half_precision_predictions():
    result = assign_simota(row_priors(), WORKED_TARGETS, 1, WORKED_BOXES.half(), WORKED_SCORES.half(),
                           center_radius=1.5)
    assert pairs(result) == [(0, 0, 0), (0, 1, 1), (0, 2, 1)] and result.score.dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    priors = row_priors()
    with pytest.raises(ValueError, match="center_radius"):
        SimOTAAssigner(center_radius=0)
    with pytest.raises(ValueError, match="candidate_topk"):
        SimOTAAssigner(candidate_topk=0)
    with pytest.raises(ValueError, match="candidate_topk"):
        SimOTAAssigner(candidate_topk=2.5)
    with pytest.raises(ValueError, match="iou_weight"):
        SimOTAAssigner(iou_weight=-1)
    with pytest.raises(ValueError, match="cls_weight"):
        assign_simota(priors, WORKED_TARGETS, 1, WORKED_BOXES, WORKED_SCORES, cls_weight=-1)
    with pytest.raises(ValueError, match=r"Tensor\[n, 6\]"):
        assign_simota(priors, torch.zeros(2, 5), 1, WORKED_BOXES, WORKED_SCORES)
    with pytest.raises(ValueError, match="batch_size=1"):
        assign_simota(priors, targets_of([1, 0, 0, 0, 8, 8]), 1, WORKED_BOXES, WORKED_SCORES)
    with pytest.raises(ValueError, match="pred_boxes"):
        assign_simota(priors, WORKED_TARGETS, 1, WORKED_BOXES[:, :4], WORKED_SCORES)
    with pytest.raises(ValueError, match="pred_scores"):
        assign_simota(priors, WORKED_TARGETS, 1, WORKED_BOXES, WORKED_SCORES[0])
    with pytest.raises(ValueError, match=r"C=2"):
        assign_simota(priors, targets_of([0, 2, 0, 0, 8, 8]), 1, WORKED_BOXES, WORKED_SCORES)

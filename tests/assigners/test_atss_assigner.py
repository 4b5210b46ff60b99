"""Tests of detector/assigners/atss.py (ATSS: nearest candidates per level, IoU threshold mean + unbiased std).

Conventions of the hand-worked cases: point priors of stride 8 on a 4 x 4 grid (a 32 x 32 input), so prior
``gy * 4 + gx`` sits at centre ``(8 gx + 4, 8 gy + 4)``; with ``anchor_scale = 1`` each prior's box is its own
8 x 8 cell ``(8 gx, 8 gy, 8 gx + 8, 8 gy + 8)``, which keeps the IoUs simple fractions. A second level of stride 16
on a 2 x 2 grid (priors 16..19, boxes 16 x 16 with ``anchor_scale = 1``) is added where a case needs two levels.
``std`` is always the unbiased (``N - 1``) one.
"""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from detector.assigners.atss import ATSSAssigner, assign_atss, prior_boxes
from detector.models.priors import AnchorPriorGenerator, PointPriorGenerator
from detector.ops.boxes import box_iou
from detector.structures import Assignment

YOLOV5_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def one_level():
    return PointPriorGenerator([8])([(4, 4)])


def two_levels():
    return PointPriorGenerator([8, 16])([(4, 4), (2, 2)])


def rows(*boxes, image=0):
    """Target rows (image, class, x1, y1, x2, y2) from xyxy boxes."""
    return torch.tensor([[image, 0, *b] for b in boxes], dtype=torch.float32)


def pairs(assignment: Assignment) -> list[tuple[int, int, int]]:
    return list(zip(assignment.batch_index.tolist(), assignment.prior_index.tolist(), assignment.gt_index.tolist()))


def test_docstring_worked_example():
    """Box (0, 0, 16, 16), centre (8, 8), topk 9, one level, cell boxes.

    Squared distances: cells 0, 1, 4, 5 (centres (4, 4), (12, 4), (4, 12), (12, 12)) have 16 + 16 = 32; cells 2, 6,
    8, 9 (centres (20, 4), (20, 12), (4, 20), (12, 20)) have 144 + 16 = 160; cell 10 (20, 20) has 288; then cells 3,
    12 with 416. Candidates: 0, 1, 4, 5, 2, 6, 8, 9, 10 (no tie at the 9th).
    IoUs: cells 0, 1, 4, 5 lie inside the box, 64 / 256 = 1/4; the other five touch it at most on an edge: 0.
    mean = 1/9 = 0.1111; squared deviations 4 (1/4 - 1/9)^2 + 5 (1/9)^2 = 4 (5/36)^2 + 5/81 = 5/36;
    unbiased variance 5/36 / 8 = 5/288, std 0.1318; threshold 0.1111 + 0.1318 = 0.2429.
    Cells 0, 1, 4, 5: 0.25 >= 0.2429 and centres 4 px inside -> positive. The rest: 0 < 0.2429 -> negative.
    """
    targets = rows((0, 0, 16, 16))
    result = assign_atss(one_level(), targets, batch_size=1, topk=9, anchor_scale=1)
    assert pairs(result) == [(0, 0, 0), (0, 1, 0), (0, 4, 0), (0, 5, 0)]
    assert result.extras["iou"].tolist() == [0.25] * 4
    threshold = 1 / 9 + math.sqrt(5 / 288)
    assert threshold == pytest.approx(0.2429, abs=1e-4)
    assert result.extras["iou_threshold"].tolist() == pytest.approx([threshold] * 4, abs=1e-6)
    assert result.batch_index.dtype == result.prior_index.dtype == result.gt_index.dtype == torch.long
    assert result.ignore is None and result.negative is None and result.weight is None


def test_std_is_unbiased():
    """Box (0, 2, 8, 18), centre (4, 10). Squared distances: cell 4 (4, 12): 4; cell 0 (4, 4): 36;
    cell 5 (12, 12): 68; cells 1 (12, 4) and 8 (4, 20): 100; cell 9 (12, 20): 164.

    topk 3: candidates 4, 0, 5. IoUs: cell 4 (0..8, 8..16) lies inside the box: 64 / 128 = 1/2; cell 0 (0..8, 0..8)
    overlaps y 2..8: 48 / (128 + 64 - 48) = 1/3; cell 5 starts at x = 8: 0.
    mean 5/18 = 0.2778; squared deviations (4/18)^2 + (1/18)^2 + (5/18)^2 = 42/324 = 7/54.
    Unbiased std sqrt(7/54 / 2) = 0.2546 -> threshold 0.5324 > 1/2: no positive at all (as mmdetection).
    A population std sqrt(7/54 / 3) = 0.2079 would give 0.4856 and make cell 4 positive.

    topk 5 (candidates 4, 0, 5, 1, 8; no tie at the 5th, cell 9 is at 164): cell 1 does not overlap, 0; cell 8
    (0..8, 16..24) overlaps y 16..18: 16 / 176 = 1/11. mean (1/2 + 1/3 + 1/11) / 5 = 0.1848, sum of squares
    0.3694 - 5 * 0.1848^2 = 0.1985, std sqrt(0.1985 / 4) = 0.2228, threshold 0.4076: cell 4 positive.
    """
    targets = rows((0, 2, 8, 18))
    assert assign_atss(one_level(), targets, 1, topk=3, anchor_scale=1).num_pos == 0
    population = 5 / 18 + math.sqrt(7 / 54 / 3)
    assert population < 0.5 < 5 / 18 + math.sqrt(7 / 54 / 2)
    result = assign_atss(one_level(), targets, 1, topk=5, anchor_scale=1)
    assert pairs(result) == [(0, 4, 0)]
    assert result.extras["iou_threshold"].item() == pytest.approx(0.4076, abs=1e-4)


def test_centre_inside_rule_rejects_the_highest_iou_candidates():
    """Box (0, 6, 11, 10) (11 x 4, centre (5.5, 8)), two levels, topk 4, cell boxes.

    Level 0 candidates (squared distances): cells 0 (4, 4) and 4 (4, 12): 18.25; cells 1 (12, 4) and 5 (12, 12):
    58.25; next 226.25. Level 1 has 4 priors: all four are candidates (16..19).
    IoUs (box area 44): cell 0 overlaps 8 x 2 = 16 -> 16 / (44 + 64 - 16) = 4/23 = 0.1739, cell 4 likewise;
    cells 1, 5 overlap 3 x 2 = 6 -> 6 / 102 = 1/17 = 0.0588; prior 16 (0..16, 0..16) contains the box -> 44 / 256 =
    11/64 = 0.1719; priors 17, 18, 19: 0.
    mean (8/23 + 2/17 + 11/64) / 8 = 0.0797; sum of squares 0.09695 - 8 * 0.0797^2 = 0.04618; std
    sqrt(0.04618 / 7) = 0.0812; threshold 0.1609.
    Cells 0 and 4 have the highest IoU (0.1739 >= 0.1609) but their centres (y = 4 and y = 12) lie 2 px outside
    the box (y in [6, 10]): rejected. Prior 16 (0.1719, centre (8, 8) 2 px inside) is the only positive.
    """
    targets = rows((0, 6, 11, 10))
    result = assign_atss(two_levels(), targets, 1, topk=4, anchor_scale=1)
    assert pairs(result) == [(0, 16, 0)]
    threshold = result.extras["iou_threshold"].item()
    assert threshold == pytest.approx(0.1609, abs=1e-4)
    assert 4 / 23 >= threshold and result.extras["iou"].item() == pytest.approx(11 / 64) and 11 / 64 < 4 / 23


def test_centre_on_the_box_border_is_outside():
    """Box (0, 4, 4, 20) with 16 x 16 prior boxes (anchor_scale 2), topk 3: centre (2, 12); candidates cell 4
    (4, 12): 4, cell 0 (4, 4) and cell 8 (4, 20): 68 (cell 5 is at 100).
    IoUs: cell 4's box (-4..12, 4..20) contains the box: 64 / 256 = 1/4; cells 0, 8 overlap 4 x 8 = 32:
    32 / (64 + 256 - 32) = 1/9. mean 0.1574, squared deviations 0.0926^2 + 2 * 0.0463^2 = 0.01286, std
    sqrt(0.01286 / 2) = 0.0802, threshold 0.2376:
    cell 4 passes the IoU test, but its centre x = 4 lies exactly on the box's right edge (margin 0, not > 0.01):
    no positive. Shifting the box right by 0.5 px (margin 0.5) makes cell 4 positive.
    """
    assert assign_atss(one_level(), rows((0, 4, 4, 20)), 1, topk=3, anchor_scale=2).num_pos == 0
    shifted = assign_atss(one_level(), rows((0.5, 4, 4.5, 20)), 1, topk=3, anchor_scale=2)
    assert pairs(shifted) == [(0, 4, 0)]


@pytest.mark.parametrize("topk", [9, 100])
def test_topk_larger_than_a_level(topk):
    """Box (0, 0, 16, 16), two levels, cell boxes. Level 0: the 9 candidates of the worked example (four 1/4, five 0)
    with topk 9, all 16 priors (four 1/4, twelve 0) with topk 100. Level 1 has 4 < topk priors: all are candidates;
    prior 16 (0..16, 0..16) equals the box, IoU 1; priors 17..19: 0.
    topk 9: K = 13, mean 2/13 = 0.1538, sum of squares 4/16 + 1 - 13 (2/13)^2 = 0.9423, std sqrt(0.9423 / 12) =
    0.2802, threshold 0.4341. topk 100: K = 20, mean 0.1, sum of squares 1.25 - 20 * 0.01 = 1.05, std
    sqrt(1.05 / 19) = 0.2351, threshold 0.3351. Either way only prior 16 (IoU 1) passes: the 1/4 cells fail.
    """
    result = assign_atss(two_levels(), rows((0, 0, 16, 16)), 1, topk=topk, anchor_scale=1)
    assert pairs(result) == [(0, 16, 0)]
    assert result.extras["iou"].tolist() == [1.0]
    expected = {9: 2 / 13 + math.sqrt((1.25 - 4 / 13) / 12), 100: 0.1 + math.sqrt(1.05 / 19)}[topk]
    assert result.extras["iou_threshold"].item() == pytest.approx(expected, abs=1e-6)
    # one level of 16 priors with topk 100: candidates are all 16, threshold 1/16 + sqrt(0.1875 / 15) = 0.1743
    single = assign_atss(one_level(), rows((0, 0, 16, 16)), 1, topk=100, anchor_scale=1)
    assert pairs(single) == [(0, 0, 0), (0, 1, 0), (0, 4, 0), (0, 5, 0)]
    assert single.extras["iou_threshold"][0].item() == pytest.approx(1 / 16 + math.sqrt(0.1875 / 15), abs=1e-6)


def test_two_ground_truths_compete_highest_iou_wins():
    """Box A (0, 0, 16, 16) takes cells 0, 1, 4, 5 with IoU 1/4 (worked example).
    Box B (0, 0, 10, 10), centre (5, 5), topk 9: candidates 0 (2), 1, 4 (50), 5 (98), 2, 8 (226), 6, 9 (274),
    10 (450); next 3, 12 (530). IoUs: cell 0: 64 / 100 = 0.64; cells 1, 4: 16 / 148 = 0.1081; cell 5:
    4 / 160 = 0.025; the rest 0. mean 0.0979, std 0.2084, threshold 0.3063: only cell 0 is positive for B.
    Cell 0 is positive for both: B's IoU 0.64 beats A's 0.25, so cell 0 -> B, cells 1, 4, 5 -> A, whatever the
    order of the rows.
    """
    priors = one_level()
    a, b = (0, 0, 16, 16), (0, 0, 10, 10)
    result = assign_atss(priors, rows(a, b), 1, topk=9, anchor_scale=1)
    assert pairs(result) == [(0, 0, 1), (0, 1, 0), (0, 4, 0), (0, 5, 0)]
    assert result.extras["iou"].tolist() == pytest.approx([0.64, 0.25, 0.25, 0.25])
    swapped = assign_atss(priors, rows(b, a), 1, topk=9, anchor_scale=1)
    assert pairs(swapped) == [(0, 0, 0), (0, 1, 1), (0, 4, 1), (0, 5, 1)]
    # B alone: threshold 0.3063 computed by hand above
    alone = assign_atss(priors, rows(b), 1, topk=9, anchor_scale=1)
    assert pairs(alone) == [(0, 0, 0)]
    assert alone.extras["iou_threshold"].item() == pytest.approx(0.3063, abs=1e-4)


def test_exact_iou_tie_goes_to_the_first_row():
    """Two identical boxes (0, 0, 16, 16) in image 1, after a row of image 0: both make cells 0, 1, 4, 5 positive
    with IoU 1/4; the tie goes to the first of the two rows (row 1), never to both."""
    targets = torch.cat((rows((16, 16, 32, 32), image=0), rows((0, 0, 16, 16), (0, 0, 16, 16), image=1)))
    result = assign_atss(one_level(), targets, 2, topk=9, anchor_scale=1)
    assert pairs(result) == [(0, 10, 0), (0, 11, 0), (0, 14, 0), (0, 15, 0),
                             (1, 0, 1), (1, 1, 1), (1, 4, 1), (1, 5, 1)]


def test_equal_ious_all_reach_the_threshold():
    """Box (0, 0, w, w) with w in 24.25 .. 26.25 on an 8 x 8 grid of stride 8, cell boxes, topk 9: the candidates are
    the 3 x 3 cells nearest the centre (w/2, w/2), all inside the box (the next cell, centre (28, 12), is farther), so
    all nine IoUs are 64 / w^2 and the std is 0: the threshold is their common IoU and all nine are positive.
    In float32 the mean plus std of nine copies of such an IoU can round above it and reject every one; at least
    one of these widths does so (checked below, in the (B, G, K) layout of the assigner), hence the float64 mean."""
    priors = PointPriorGenerator([8])([(8, 8)])
    float32_rejects = []
    for w in (24.25, 24.5, 25.5, 26.25):
        result = assign_atss(priors, rows((0, 0, w, w)), 1, topk=9, anchor_scale=1)
        assert sorted(result.prior_index.tolist()) == [0, 1, 2, 8, 9, 10, 16, 17, 18], w
        iou = torch.tensor(64 / w**2, dtype=torch.float32)
        assert result.extras["iou"].tolist() == [iou.item()] * 9
        nine = iou.repeat(1, 1, 9)  # (B, G, K)
        float32_rejects.append(bool((nine.mean(-1) + nine.std(-1) > iou).item()))
    assert any(float32_rejects)  # the rounding this case guards against does occur


def test_empty_targets_and_images_without_boxes():
    """No ground truth: empty Assignment. An image without boxes between two with boxes gets no pair, and the
    other images get exactly what they get alone (padding rows of the (B, G) layout assign nothing)."""
    priors = two_levels()
    empty = assign_atss(priors, torch.zeros(0, 6), batch_size=2)
    assert empty.num_pos == 0 and empty.prior_index.dtype == torch.long and empty.prior_index.shape == (0,)

    image0 = rows((0, 0, 16, 16), (0, 0, 10, 10), (3, 17, 29, 30), image=0)
    image2 = rows((5, 5, 20, 14), image=2)
    batch = assign_atss(priors, torch.cat((image0, image2)), batch_size=3, anchor_scale=1)
    assert 1 not in batch.batch_index.tolist()
    alone0 = assign_atss(priors, image0, 1, anchor_scale=1)
    image2_alone = image2.clone()
    image2_alone[:, 0] = 0
    alone2 = assign_atss(priors, image2_alone, 1, anchor_scale=1)
    expected = pairs(alone0) + [(2, p, g + 3) for _, p, g in pairs(alone2)]
    assert pairs(batch) == expected and alone0.num_pos > 0 and alone2.num_pos > 0
    assert batch.extras["iou"].tolist() == alone0.extras["iou"].tolist() + alone2.extras["iou"].tolist()
    # a batch whose only boxes are in the last image
    last = assign_atss(priors, image2, batch_size=3, anchor_scale=1)
    assert set(last.batch_index.tolist()) == {2} and last.prior_index.tolist() == alone2.prior_index.tolist()


def test_prior_boxes_points_and_anchors():
    """Point prior of stride 8 at cell (2, 1), centre (20, 12): side 8 * 8 = 64 -> (-12, -20, 52, 44); side
    5 * 8 = 40 -> (0, -8, 40, 32). Anchor prior 11 of AnchorPriorGenerator's example (anchor (16, 30) at centre
    (20, 12)) -> (12, -3, 28, 27)."""
    points = PointPriorGenerator([8])([(2, 3)])
    index = 1 * 3 + 2
    assert prior_boxes(points)[index].tolist() == [-12, -20, 52, 44]
    assert prior_boxes(points, anchor_scale=5)[index].tolist() == [0, -8, 40, 32]
    anchors = AnchorPriorGenerator([[10, 13, 16, 30, 33, 23]], [8])([(2, 3)])
    assert prior_boxes(anchors)[11].tolist() == [12, -3, 28, 27]
    assert prior_boxes(anchors, anchor_scale=5)[11].tolist() == [12, -3, 28, 27]  # unused for anchors


# ----------------------------------------------------------------------------------------------------------------
# independent reference: plain Python over images and boxes


def reference_atss(level_shapes, strides, level_anchors, targets, batch_size, topk, anchor_scale):
    """ATSS written from the rules, one image and one box at a time.

    Prior geometry is rebuilt in plain Python from ``(A, H, W)``, the strides and the anchors (``None`` for point
    priors), in the documented flat order; IoUs and margins in Python floats (float64); mean and unbiased std
    with :mod:`statistics`; candidates by a stable sort of the squared distances (torch, float64, one box at a time).

    Returns ``(matches, flagged, contested)``: ``matches`` maps ``(image, prior)`` to ``(target row, IoU)``;
    ``flagged`` holds the target rows whose outcome float32 rounding or ``torch.topk``'s tie order could change (a
    candidate IoU within 1e-5 of its threshold, a tie at the topk-th distance, a margin within 1e-4 of 0.01, two
    rows' IoUs within 1e-6 for one prior); ``contested`` counts the priors positive for more than one row.
    """
    prior_list = []  # (level, cx, cy, x1, y1, x2, y2)
    for level, ((num_a, h, w), stride) in enumerate(zip(level_shapes, strides)):
        for a in range(num_a):
            if level_anchors is None:
                half_w = half_h = anchor_scale * stride / 2
            else:
                half_w, half_h = level_anchors[level][a][0] / 2, level_anchors[level][a][1] / 2
            for gy in range(h):
                for gx in range(w):
                    cx, cy = (gx + 0.5) * stride, (gy + 0.5) * stride
                    prior_list.append((level, cx, cy, cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    centres = torch.tensor([p[1:3] for p in prior_list], dtype=torch.float64)
    level_of = torch.tensor([p[0] for p in prior_list])
    level_ranges = [(level_of == l).nonzero().flatten() for l in range(len(level_shapes))]

    matches, flagged, contested = {}, set(), 0
    for image in range(batch_size):
        claims = {}  # prior -> list of (iou, row)
        for row, (b, _, x1, y1, x2, y2) in enumerate(targets.tolist()):
            if int(b) != image:
                continue
            gx, gy = (x1 + x2) / 2, (y1 + y2) / 2
            dist2 = (centres[:, 0] - gx) ** 2 + (centres[:, 1] - gy) ** 2
            candidates = []
            for indices in level_ranges:
                d = dist2[indices]
                order = torch.argsort(d, stable=True)
                k = min(topk, len(indices))
                if k < len(indices) and abs(float(d[order[k - 1]] - d[order[k]])) < 1e-3:
                    flagged.add(row)
                candidates += indices[order[:k]].tolist()
            ious, margins = [], []
            for p in candidates:
                _, cx, cy, px1, py1, px2, py2 = prior_list[p]
                inter = max(0.0, min(x2, px2) - max(x1, px1)) * max(0.0, min(y2, py2) - max(y1, py1))
                union = (x2 - x1) * (y2 - y1) + (px2 - px1) * (py2 - py1) - inter
                ious.append(inter / union)
                margins.append(min(cx - x1, cy - y1, x2 - cx, y2 - cy))
            threshold = statistics.mean(ious) + (statistics.stdev(ious) if len(ious) > 1 else 0.0)
            for p, iou, margin in zip(candidates, ious, margins):
                if abs(iou - threshold) < 1e-5 or abs(margin - 0.01) < 1e-4:
                    flagged.add(row)
                if iou >= threshold and margin > 0.01:
                    claims.setdefault(p, []).append((iou, row))
        for p, claim in claims.items():
            contested += len(claim) > 1
            best = max(claim, key=lambda c: (c[0], -c[1]))  # highest IoU, then the first row
            for iou, row in claim:
                if row != best[1] and abs(iou - best[0]) < 1e-6:
                    flagged.update((row, best[1]))
            matches[(image, p)] = (best[1], best[0])
    return matches, flagged, contested


def compare_with_reference(priors, level_anchors, targets, batch_size, topk, anchor_scale):
    result = assign_atss(priors, targets, batch_size, topk=topk, anchor_scale=anchor_scale)
    strides = [int(priors.strides[start]) for start in priors.level_offsets[:-1]]
    matches, flagged, contested = reference_atss(
        priors.level_shapes, strides, level_anchors, targets, batch_size, topk, anchor_scale
    )
    got = {(b, p): (g, s) for (b, p, g), s in zip(pairs(result), result.extras["iou"].tolist())}
    assert len(flagged) <= 2, f"too many rounding-sensitive boxes for a meaningful comparison: {sorted(flagged)}"
    for key in set(got) | set(matches):
        g, r = got.get(key), matches.get(key)
        rows_involved = {x[0] for x in (g, r) if x is not None}
        if rows_involved & flagged:
            continue
        assert g is not None and r is not None and g[0] == r[0], (key, g, r)
        assert g[1] == pytest.approx(r[1], abs=1e-5)
    return result, contested


@pytest.mark.parametrize("anchor_scale", [8.0, 5.0])
def test_matches_loop_reference_point_priors(coco128_batch, anchor_scale):
    """Real coco128 boxes letterboxed to 640, point priors at strides 8 / 16 / 32, with ATSS's 8 and YOLOv6's 5;
    one image's boxes removed, so the batch also holds an image without boxes."""
    targets, batch_size, img_size = coco128_batch
    targets = targets[targets[:, 0] != 3]
    shapes = [(img_size // s, img_size // s) for s in (8, 16, 32)]
    priors = PointPriorGenerator([8, 16, 32])(shapes)
    result, contested = compare_with_reference(priors, None, targets, batch_size, topk=9, anchor_scale=anchor_scale)
    # the data exercises the rules: most boxes get positives, on several levels, several per box, none in image 3,
    # and some priors are positive for two boxes of one image (the highest-IoU rule decides)
    assert contested > 0
    assert len(set(result.gt_index.tolist())) > 0.8 * targets.shape[0]
    assert set(priors.level[result.prior_index].tolist()) == {0, 1, 2}
    assert result.num_pos > 3 * targets.shape[0]
    assert 3 not in result.batch_index.tolist()


def test_matches_loop_reference_anchor_priors(coco128_batch):
    """The same batch with YOLOv5's anchors (3 per location): IoUs against the anchor boxes."""
    targets, batch_size, img_size = coco128_batch
    shapes = [(img_size // s, img_size // s) for s in (8, 16, 32)]
    generator = AnchorPriorGenerator(YOLOV5_ANCHORS, [8, 16, 32])
    priors = generator(shapes)
    level_anchors = [a.tolist() for a in generator.anchors]
    result, contested = compare_with_reference(priors, level_anchors, targets, batch_size, topk=9, anchor_scale=8.0)
    assert contested > 0
    assert len(set(result.gt_index.tolist())) > 0.8 * targets.shape[0]
    assert len(set(priors.anchor_id[result.prior_index].tolist())) == 3
    # the anchor boxes, not squares, are used: the scores are the IoUs with the anchor boxes
    iou = torch.diag(box_iou(targets[result.gt_index, 2:], prior_boxes(priors)[result.prior_index]))
    assert torch.allclose(result.extras["iou"], iou, atol=1e-5)


def test_class_matches_function_and_ignores_predictions(coco128_batch):
    targets, batch_size, img_size = coco128_batch
    priors = PointPriorGenerator([8, 16, 32])([(img_size // s, img_size // s) for s in (8, 16, 32)])
    assigner = ATSSAssigner(topk=7, anchor_scale=5)
    assert assigner.needs_predictions is False and assigner.needs_anchors is False
    assert repr(assigner) == "ATSSAssigner(topk=7, anchor_scale=5.0)"
    assert repr(ATSSAssigner()) == "ATSSAssigner(topk=9, anchor_scale=8.0)"
    a = assigner(priors, targets, batch_size, pred=object())
    b = assign_atss(priors, targets, batch_size, topk=7, anchor_scale=5)
    assert pairs(a) == pairs(b) and torch.equal(a.extras["iou"], b.extras["iou"]) and a.num_pos > 0
    assert pairs(a) != pairs(assign_atss(priors, targets, batch_size))


def test_bad_inputs_raise_clear_errors():
    priors = one_level()
    with pytest.raises(ValueError, match="topk"):
        ATSSAssigner(topk=0)
    with pytest.raises(ValueError, match="topk"):
        ATSSAssigner(topk=2.5)
    with pytest.raises(ValueError, match="anchor_scale"):
        ATSSAssigner(anchor_scale=0)
    with pytest.raises(ValueError, match="anchor_scale"):
        assign_atss(priors, rows((0, 0, 8, 8)), 1, anchor_scale=float("nan"))
    with pytest.raises(ValueError, match=r"Tensor\[n, 6\]"):
        assign_atss(priors, torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="batch_size=1"):
        assign_atss(priors, rows((0, 0, 8, 8), image=1), 1)

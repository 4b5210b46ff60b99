"""FCOS's label assignment for point priors (Tian et al. 2019), with the centre sampling of the FCOS repository.

The rule is the one torchvision's ``FCOS.compute_loss`` applies inline, written as a pure function of tensors and
vectorised over the batch through :func:`detector.assigners.common.pad_targets`. Shape letters as in
:mod:`detector.structures` (``B`` images, ``G`` padded boxes per image, ``P`` priors, ``M`` pairs, ``L`` levels).

Centres: a point prior's centre here is ``(grid + 0.5) * stride`` (:attr:`Priors.centers`). torchvision's anchor
generator puts its anchor centres at ``grid * stride`` instead, so its assignment of the same image is the same
rule on points shifted by half a stride; ``tests/assigners/test_fcos_assigner.py`` feeds torchvision anchors of
size ``stride`` centred on our centres to compare the two point for point.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detector.assigners.common import assignment_from_matches, check_targets, pad_targets
from detector.ops.boxes import box_area
from detector.structures import Assignment, Predictions, Priors


def fcos_default_ranges(strides: Sequence[float]) -> list[tuple[float, float]]:
    """torchvision's regression ranges: ``(4 * s, 8 * s)`` per level, first lower bound 0, last upper bound inf.

    Example: strides ``(8, 16, 32)`` give ``[(0, 64), (64, 128), (128, inf)]``; the paper's P3-P7 strides
    ``(8, 16, 32, 64, 128)`` give its ranges ``[(0, 64), (64, 128), (128, 256), (256, 512), (512, inf)]``.
    """
    ranges = [(4.0 * float(s), 8.0 * float(s)) for s in strides]
    if ranges:
        ranges[0] = (0.0, ranges[0][1])
        ranges[-1] = (ranges[-1][0], math.inf)
    return ranges


def _check_ranges(ranges: Sequence[Sequence[float]], where: str) -> list[tuple[float, float]]:
    """Ranges as a list of ``(lower, upper)`` floats with ``0 <= lower < upper`` (``upper`` may be inf)."""
    try:
        out = [(float(lo), float(hi)) for lo, hi in ranges]
    except (TypeError, ValueError):
        out = None
    if not out or any(not (0 <= lo < hi) or math.isnan(lo) for lo, hi in out):
        raise ValueError(
            f"{where}: ranges must be a non-empty list of (lower, upper) pairs, one per level, with "
            f"0 <= lower < upper (upper may be inf), e.g. [(0, 64), (64, 128), (128, inf)]; got {ranges!r}"
        )
    return out


def _check_center_radius(center_radius: float | None, where: str) -> None:
    if center_radius is not None and (
        isinstance(center_radius, bool) or not isinstance(center_radius, (int, float)) or not center_radius > 0
    ):
        raise ValueError(
            f"{where}: center_radius must be a positive number of strides (FCOS repo / torchvision use 1.5) "
            f"or None to turn centre sampling off (the original paper); got {center_radius!r}"
        )


def fcos_centerness(ltrb: Tensor) -> Tensor:
    """ltrb (Tensor[..., 4]) positive distances ``(l, t, r, b)`` from a point to its box -> Tensor[...] centerness
    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` in ``(0, 1]`` (1 at the box centre).

    Example: the point ``(28, 20)`` in the box ``(0, 0, 60, 40)`` has ``ltrb = (28, 20, 32, 20)`` and centerness
    ``sqrt(28 / 32 * 20 / 20) = 0.9354``.
    """
    left_right = ltrb[..., 0::2]  # (..., 2) l, r
    top_bottom = ltrb[..., 1::2]  # (..., 2) t, b
    ratio = (left_right.amin(-1) / left_right.amax(-1)) * (top_bottom.amin(-1) / top_bottom.amax(-1))
    return ratio.sqrt()


def assign_fcos(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    ranges: Sequence[Sequence[float]] | None = None,
    center_radius: float | None = 1.5,
) -> Assignment:
    """Assign each point prior to at most one ground truth: the smallest box it is a candidate of.

    With ``(px, py)`` a prior's centre, ``s`` its stride and ``(l, t, r, b) = (px - x1, py - y1, x2 - px, y2 - py)``
    its distances to a box, the point is a candidate of the box when all of

    * it is strictly inside the box: ``min(l, t, r, b) > 0`` (points on the border are not);
    * centre sampling, unless ``center_radius`` is None: ``max(|px - cx|, |py - cy|) < center_radius * s``
      (Chebyshev distance to the box centre ``(cx, cy)``, strict, as torchvision);
    * the box's scale fits the point's level: ``lower < max(l, t, r, b) < upper`` (both strict, as torchvision;
      the paper and the FCOS repo / mmdet use ``<=`` on both sides, which differs only for a distance exactly
      on a bound).

    A point that is a candidate of several boxes takes the one of smallest area; among equal areas the first
    box of its image in ``targets`` row order wins (torchvision takes the first maximum of ``1e8 - area``, the
    same box; its float32 ``1e8 - area`` can only round two areas within a few px^2 of each other into a
    tie, which never changed a match on coco128). There is no ignore region: every prior not in a pair is negative.

    Ranges: ``ranges[l] = (lower, upper)`` in pixels for level ``l``. None gives torchvision's rule from the
    strides (:func:`fcos_default_ranges`): ``(4 * s, 8 * s)`` with the first lower bound 0 and the last upper
    bound inf, i.e. ``(0, 64), (64, 128), (128, inf)`` for strides 8/16/32. The paper's P3-P7 ranges are the
    default for strides ``(8, 16, 32, 64, 128)``, or explicitly
    ``ranges=[(0, 64), (64, 128), (128, 256), (256, 512), (512, float("inf"))]``.

    Worked example: one level of stride 8 on an 80 x 80 input (10 x 10 points, centres ``8 * g + 4``), one box
    ``(0, 0, 60, 40)`` of centre ``(30, 20)``, ``center_radius = 1.5`` (12 px). Inside the box: x centres
    4..52, y centres 4..36. Within 12 px of the centre: x in ``{20, 28, 36}`` (12 is 18 px away, 44 is 14),
    y in ``{12, 20, 28}``. Every ``max(l, t, r, b) <= 36 < 64``. So the 9 points of cells ``gx in {2, 3, 4}``,
    ``gy in {1, 2, 3}`` are positive, prior ``gy * 10 + gx`` in ``{12, 13, 14, 22, 23, 24, 32, 33, 34}``.
    The point ``(28, 20)`` (prior 23) has ``ltrb = (28, 20, 32, 20)``, centerness ``sqrt(28 / 32) = 0.9354``.
    Without centre sampling (``center_radius=None``) all 7 x 5 = 35 points inside the box are positive.

    Args:
        priors (Priors): point priors of all levels (``PointPriorGenerator``); anchor priors also work (each
            anchor is then a point at its cell centre).
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input-image pixels.
        batch_size (int): B; every ``image_index`` must lie in ``[0, B)``.
        ranges (list[tuple[float, float]] | None): per-level ``(lower, upper)`` bounds of ``max(l, t, r, b)`` in
            pixels, one per level of ``priors``; None for torchvision's default.
        center_radius (float | None): centre-sampling radius in strides (1.5 in torchvision and the FCOS repo);
            None turns centre sampling off (the original paper).

    Returns:
        Assignment: pairs ``batch_index``, ``prior_index``, ``gt_index`` (Tensor[M] long, on the targets'
        device) ordered by image, then prior; each prior in at most one pair. ``extras["centerness"]``
        (Tensor[M] float) holds each pair's centerness target (:func:`fcos_centerness`); ``weight``,
        ``score``, ``ignore`` and ``negative`` are None (the criterion decides how to use centerness).
    """
    where = "assign_fcos"
    check_targets(targets, batch_size, where)
    _check_center_radius(center_radius, where)
    level_ranges = fcos_default_ranges(_level_strides(priors)) if ranges is None else _check_ranges(ranges, where)
    if len(level_ranges) != priors.num_levels:
        raise ValueError(
            f"{where}: got {len(level_ranges)} ranges for {priors.num_levels} levels of priors; give one "
            f"(lower, upper) pair per level"
        )
    device = targets.device
    dtype = torch.promote_types(torch.promote_types(targets.dtype, priors.strides.dtype), torch.float32)
    if targets.shape[0] == 0 or len(priors) == 0:
        empty = Assignment.empty(device)
        empty.extras["centerness"] = torch.zeros(0, dtype=dtype, device=device)
        return empty

    padded = pad_targets(targets.to(dtype), batch_size)  # boxes (B, G, 4)
    points = priors.centers.to(device=device, dtype=dtype)  # (P, 2)
    strides = priors.strides.to(device=device, dtype=dtype)  # (P,)
    bounds = torch.tensor(level_ranges, device=device, dtype=dtype)[priors.level.to(device)]  # (P, 2)

    boxes = padded.boxes[:, :, None, :]  # (B, G, 1, 4)
    left_top = points - boxes[..., :2]  # (B, G, P, 2)
    right_bottom = boxes[..., 2:] - points  # (B, G, P, 2)
    ltrb = torch.cat((left_top, right_bottom), dim=-1)  # (B, G, P, 4)
    candidate = (ltrb.amin(-1) > 0) & padded.valid[:, :, None]  # (B, G, P)
    max_distance = ltrb.amax(-1)  # (B, G, P)
    del ltrb, left_top, right_bottom
    candidate &= (max_distance > bounds[:, 0]) & (max_distance < bounds[:, 1])
    if center_radius is not None:
        box_centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, G, 1, 2)
        offset = (points - box_centres).abs().amax(-1)  # (B, G, P)
        candidate &= offset < center_radius * strides

    # smallest area among the candidates; the first box (lowest j) among equal areas
    area = box_area(padded.boxes)[:, :, None]  # (B, G, 1)
    candidate_area = torch.where(candidate, area, math.inf)  # (B, G, P)
    smallest = candidate_area.amin(dim=1, keepdim=True)  # (B, 1, P)
    num_boxes = padded.max_boxes
    box_index = torch.arange(num_boxes, device=device)[None, :, None]  # (1, G, 1)
    first = torch.where(candidate & (candidate_area == smallest), box_index, num_boxes).amin(dim=1)  # (B, P)
    matched = torch.where(first < num_boxes, first, -1)  # (B, P), -1 for negatives

    result = assignment_from_matches(matched, padded)
    pair_boxes = padded.boxes[result.batch_index, matched[result.batch_index, result.prior_index]]  # (M, 4)
    pair_points = points[result.prior_index]  # (M, 2)
    pair_ltrb = torch.cat((pair_points - pair_boxes[:, :2], pair_boxes[:, 2:] - pair_points), dim=-1)  # (M, 4)
    result.extras["centerness"] = fcos_centerness(pair_ltrb)
    return result


def _level_strides(priors: Priors) -> list[float]:
    """Stride of each level, read from the first prior of the level."""
    offsets = priors.level_offsets
    return [float(priors.strides[offsets[level]]) for level in range(priors.num_levels)]


class FCOSAssigner:
    """Callable wrapper of :func:`assign_fcos` with the assigner interface of :mod:`detector.assigners.common`.

    Args:
        ranges: per-level ``(lower, upper)`` bounds of ``max(l, t, r, b)`` in pixels, or None for torchvision's
            ``(4 * s, 8 * s)`` rule (first lower 0, last upper inf).
        center_radius: centre-sampling radius in strides (1.5), or None for the paper's rule without it.
        weight_by_centerness: also set ``Assignment.weight`` to the centerness target, so the box loss is a
            centerness-weighted mean (mmdetection's FCOS; torchvision weights all positives equally).

    ``pred`` is accepted and ignored: FCOS's assignment depends on ground-truth geometry only.
    """

    needs_predictions = False
    needs_anchors = False

    def __init__(
        self, ranges: Sequence[Sequence[float]] | None = None, center_radius: float | None = 1.5,
        weight_by_centerness: bool = True,
    ) -> None:
        _check_center_radius(center_radius, "FCOSAssigner")
        self.ranges = None if ranges is None else _check_ranges(ranges, "FCOSAssigner")
        self.center_radius = center_radius
        self.weight_by_centerness = bool(weight_by_centerness)

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        assignment = assign_fcos(priors, targets, batch_size, ranges=self.ranges, center_radius=self.center_radius)
        if self.weight_by_centerness:
            assignment.weight = assignment.extras["centerness"]
        return assignment

    def __repr__(self) -> str:
        return (f"FCOSAssigner(ranges={self.ranges}, center_radius={self.center_radius}, "
                f"weight_by_centerness={self.weight_by_centerness})")

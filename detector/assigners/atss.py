"""ATSS: Adaptive Training Sample Selection (Zhang et al., CVPR 2020, arXiv 1912.02424).

The rules of ``ATSSAssigner`` in mmdetection (``task_modules/assigners/atss_assigner.py``) and of the authors' code
(``sfzhang15/ATSS``, ``POSITIVE_TYPE == 'ATSS'``), as a pure function vectorised over the batch:

1. candidates: for every ground truth and every level, the ``min(topk, P_l)`` priors of that level whose centres
   are nearest (Euclidean) to the box centre;
2. threshold: ``mean + std`` of the candidates' IoUs with that ground truth, ``std`` the *unbiased* (Bessel,
   ``N - 1``) standard deviation, as ``torch.std`` computes it by default and as both references use;
3. positive: a candidate whose IoU is ``>=`` the threshold **and** whose centre lies inside the box by more than
   ``0.01`` px on all four sides (``min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01``, both references' margin);
4. a prior positive for several ground truths of its image keeps the one it has the highest IoU with.

The IoU is the one between a ground truth and the prior's own box: the anchor box ``centre +- anchors / 2`` for
anchor priors; for point priors (``priors.anchors`` None) a square of side ``anchor_scale * stride`` centred on the
point, the single square anchor per location of ATSS's anchor-free form (mmdetection's ATSS config:
``octave_base_scale=8, scales_per_octave=1, ratios=[1.0]``), hence the default ``anchor_scale = 8``. YOLOv6 and
PP-YOLOE, whose ATSS warm-up works on point priors, use ``5`` (``grid_cell_size=5.0``); pass ``anchor_scale=5`` for
their boxes.

``similarity="nwd"`` runs rules 2 and 4 on the NWD ``exp(-W_2 / C)`` between the ground truth and the prior's box
instead of the IoU (:mod:`detector.assigners.similarity`; ``C = nwd_constant`` pixels). A tiny box lies inside the
boxes of all its candidates of a level, so their IoUs are equal per level and only the level (the size of the
prior box) separates them, and the mean + std threshold can exceed them all; NWD also ranks the candidates of a
level by their distance to the box, markedly so when ``C`` is near the object size (tests/assigners/
test_nwd_similarity.py: a 4 px box that IoU leaves unmatched is matched with ``C = 6.4``, not with 12.8).

Shape letters as in :mod:`detector.structures` (``B, G, P, M``); here also ``K`` = candidates per ground truth over
all levels (``sum_l min(topk, P_l)``) and ``P_l`` the priors of one level.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from detector.assigners.common import assignment_from_matches, check_targets, pad_targets
from detector.assigners.similarity import aligned_similarity, check_similarity
from detector.ops.boxes import NWD_CONSTANT
from detector.structures import Assignment, Predictions, Priors

INSIDE_MARGIN = 0.01
"""Pixels by which a candidate's centre must lie inside its ground truth on every side (both references)."""


def _check_params(topk: int, anchor_scale: float, where: str) -> None:
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"{where}: topk must be an integer >= 1 (ATSS uses 9), got {topk!r}")
    if not (isinstance(anchor_scale, (int, float)) and math.isfinite(anchor_scale) and anchor_scale > 0):
        raise ValueError(
            f"{where}: anchor_scale must be a finite number > 0 (side of a point prior's box in strides; ATSS's "
            f"anchor-free form uses 8, YOLOv6 / PP-YOLOE use 5), got {anchor_scale!r}"
        )


def prior_boxes(priors: Priors, anchor_scale: float = 8.0) -> Tensor:
    """The box each prior stands for, against which ATSS measures IoU: Tensor[P, 4] xyxy pixels.

    Anchor priors: ``centre +- anchors / 2``. Point priors (``anchors`` None): a square of side
    ``anchor_scale * stride`` centred on the point. Example: a point prior of stride 8 at cell ``(2, 1)`` (centre
    ``(20, 12)``) with ``anchor_scale = 8`` gives ``(-12, -20, 52, 44)``.
    """
    centers = priors.centers  # (P, 2)
    if priors.anchors is not None:
        half = priors.anchors / 2  # (P, 2)
    else:
        half = (priors.strides * (anchor_scale / 2))[:, None].expand(-1, 2)  # (P, 2)
    return torch.cat((centers - half, centers + half), dim=-1)  # (P, 4)


def assign_atss(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    topk: int = 9,
    anchor_scale: float = 8.0,
    similarity: str = "iou",
    nwd_constant: float = NWD_CONSTANT,
) -> Assignment:
    """Assign ground truths to priors by ATSS's adaptive IoU threshold (mean + unbiased std of the candidates).

    See the module docstring for the four rules. Details that decide edge cases:

    * distances are between the prior centre ``(grid + 0.5) * stride`` and the box centre; all ``A`` anchors of a
      location share its centre, so ``topk`` counts priors (anchors), not locations, as in both references;
      ties at the ``topk``-th distance are broken by ``torch.topk`` (implementation-defined, as in the references);
    * a level with fewer than ``topk`` priors gives all its priors as candidates;
    * with a single candidate in all (``K = 1``) the unbiased std is undefined; it is taken as 0 here (the
      references get NaN and so no positive);
    * IoUs are float32 in pixel units, so candidates with the same overlap geometry (a big box containing all its
      candidates' boxes on one level) get bitwise-equal IoUs, and the mean and std are taken in float64 (float32 on
      MPS, which lacks float64), so that such equal IoUs (std 0) all reach the threshold: in float32 the rounded
      mean can exceed their common IoU by one ulp and reject every one of them;
    * the highest-IoU rule compares float32 IoUs; an exact tie goes to the ground truth that comes first in
      ``targets`` among the image's rows;
    * images without boxes and padding rows of :func:`pad_targets` get no positive.

    Worked example: one level of stride 8, ``(A, H, W) = (1, 4, 4)`` point priors with ``anchor_scale = 1`` (each
    prior's box is its own 8 x 8 cell), ``topk = 9``, one box ``(0, 0, 16, 16)`` (centre ``(8, 8)``). Squared
    distances: the cells (0, 0), (1, 0), (0, 1), (1, 1) have 32; (2, 0), (2, 1), (0, 2), (1, 2) have 160; (2, 2)
    has 288, the 9th, then 416. IoUs: the four inner cells lie inside the box, ``64 / 256 = 0.25``; the other five
    do not overlap it, 0. Mean ``1 / 9 = 0.1111``; squared deviations ``4 (5/36)^2 + 5 (1/9)^2 = 5/36``, unbiased
    variance ``5/36 / 8``, std ``0.1318``; threshold ``0.2429``. The four inner cells pass (0.25 >= 0.2429, centres
    4 px inside): ``prior_index = [0, 1, 4, 5]``, ``extras["iou"] = [0.25] * 4``.

    Args:
        priors (Priors): anchor or point priors of all levels.
        targets (Tensor[n, 6]): ``(image_index, class, x1, y1, x2, y2)`` in input-image pixels.
        batch_size (int): B; every ``image_index`` must lie in ``[0, B)``.
        topk (int): candidates per level and ground truth (ATSS: 9).
        anchor_scale (float): side of a point prior's square box, in strides (ATSS: 8; YOLOv6 / PP-YOLOE: 5).
            Unused for anchor priors.
        similarity (str): ``"iou"`` (ATSS) or ``"nwd"``: the overlap of rules 2 and 4, then also in ``extras``.
        nwd_constant (float): NWD's ``C`` in pixels (``similarity="nwd"`` only).

    Returns:
        Assignment: one pair per positive prior, ordered by image, then prior (``batch_index``, ``prior_index``,
        ``gt_index`` Tensor[M] long, on the targets' device); ``extras["iou"]`` (Tensor[M] float) is the IoU
        between the ground truth and the prior's box (see :func:`prior_boxes`; the NWD with ``similarity="nwd"``);
        ``extras["iou_threshold"]`` (Tensor[M] float) the ATSS threshold of the pair's ground truth. ``score`` is
        None: ATSS proposes no soft class target (the criterion's hard target, or ``loss.cls_target: iou`` for
        quality / varifocal losses).
        ``ignore``, ``negative`` and ``weight`` are None: every prior that is not positive is negative. No
        targets or no priors give :meth:`Assignment.empty`.
    """
    _check_params(topk, anchor_scale, "assign_atss")
    check_similarity(similarity, nwd_constant, "assign_atss")
    check_targets(targets, batch_size, "assign_atss")
    device = targets.device
    num_priors = len(priors)
    if targets.shape[0] == 0 or num_priors == 0:
        return Assignment.empty(device)

    padded = pad_targets(targets.float(), batch_size)
    gt_boxes = padded.boxes  # (B, G, 4)
    gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # (B, G, 2)
    centers = priors.centers.to(device=device, dtype=torch.float32)  # (P, 2)
    boxes = prior_boxes(priors, anchor_scale).to(device=device, dtype=torch.float32)  # (P, 4)

    # 1. candidates: the nearest min(topk, P_l) priors of each level (squared distance: same order, no sqrt)
    offsets = priors.level_offsets
    candidate_parts = []
    for start, end in zip(offsets[:-1], offsets[1:]):
        dx = gt_centers[..., 0, None] - centers[None, None, start:end, 0]  # (B, G, P_l)
        dy = gt_centers[..., 1, None] - centers[None, None, start:end, 1]  # (B, G, P_l)
        dist2 = (dx * dx).addcmul_(dy, dy)  # (B, G, P_l)
        nearest = dist2.topk(min(topk, end - start), dim=-1, largest=False).indices  # (B, G, k_l)
        candidate_parts.append(nearest + start)
    candidates = torch.cat(candidate_parts, dim=-1)  # (B, G, K)
    num_candidates = candidates.shape[-1]

    # 2. threshold from the candidates' IoUs with their ground truth
    cand_boxes = boxes[candidates]  # (B, G, K, 4)
    # IoU (or NWD) in pixel units (not aligned_iou's per-pair frame): candidates with the same overlap geometry then
    # get bitwise-equal values, which the float64 mean / std below turn into a threshold they all reach
    ious = aligned_similarity(gt_boxes[:, :, None, :], cand_boxes, similarity, nwd_constant)  # (B, G, K)
    ious64 = ious.to(torch.float32 if device.type == "mps" else torch.float64)
    threshold = ious64.mean(-1)  # (B, G)
    if num_candidates > 1:
        threshold = threshold + ious64.std(-1, correction=1)

    # 3. positives: above the threshold and centred inside the box
    cand_centers = centers[candidates]  # (B, G, K, 2)
    margins = torch.cat(
        (cand_centers - gt_boxes[:, :, None, :2], gt_boxes[:, :, None, 2:] - cand_centers), dim=-1
    )  # (B, G, K, 4) left, top, right, bottom
    inside = margins.amin(-1) > INSIDE_MARGIN  # (B, G, K)
    positive = (ious64 >= threshold[..., None]) & inside & padded.valid[..., None]  # (B, G, K)

    # 4. one ground truth per prior: the highest IoU, then the first row
    b_idx, g_idx, k_idx = positive.nonzero(as_tuple=True)  # (M', ) each
    flat_prior = b_idx * num_priors + candidates[b_idx, g_idx, k_idx]  # (M',) index into (B * P)
    pair_iou = ious[b_idx, g_idx, k_idx]  # (M',)
    best_iou = ious.new_full((batch_size * num_priors,), -1.0)
    best_iou.scatter_reduce_(0, flat_prior, pair_iou, reduce="amax")  # (B * P,)
    wins = pair_iou == best_iou[flat_prior]  # (M',)
    max_boxes = padded.max_boxes
    matched = torch.full((batch_size * num_priors,), max_boxes, dtype=torch.long, device=device)
    matched.scatter_reduce_(0, flat_prior[wins], g_idx[wins], reduce="amin")  # (B * P,)
    matched = torch.where(matched < max_boxes, matched, -1).view(batch_size, num_priors)  # (B, P)

    pos_image, pos_prior = (matched >= 0).nonzero(as_tuple=True)  # (M,), (M,): row-major, the pair order
    pos_gt = matched[pos_image, pos_prior]  # (M,) index into G
    return assignment_from_matches(
        matched,
        padded,
        extras={"iou": best_iou.view(batch_size, num_priors)[pos_image, pos_prior],
                "iou_threshold": threshold.float()[pos_image, pos_gt]},
    )


class ATSSAssigner:
    """Callable wrapper of :func:`assign_atss` with the assigner interface of :mod:`detector.assigners.common`.

    Works with anchor priors (IoU with the anchor boxes) and point priors (IoU with squares of side
    ``anchor_scale * stride``). ``pred`` is accepted and ignored: ATSS depends on ground-truth and prior geometry
    only. ``similarity="nwd"`` (config ``assigner: {name: atss, similarity: nwd}``) thresholds NWD instead of IoU.
    """

    needs_predictions = False
    needs_anchors = False

    def __init__(self, topk: int = 9, anchor_scale: float = 8.0, similarity: str = "iou",
                 nwd_constant: float = NWD_CONSTANT):
        _check_params(topk, anchor_scale, "ATSSAssigner")
        check_similarity(similarity, nwd_constant, "ATSSAssigner")
        self.topk = topk
        self.anchor_scale = float(anchor_scale)
        self.similarity = similarity
        self.nwd_constant = nwd_constant

    def __call__(
        self, priors: Priors, targets: Tensor, batch_size: int, pred: Predictions | None = None
    ) -> Assignment:
        return assign_atss(priors, targets, batch_size, topk=self.topk, anchor_scale=self.anchor_scale,
                           similarity=self.similarity, nwd_constant=self.nwd_constant)

    def __repr__(self) -> str:
        nwd = f", similarity={self.similarity!r}, nwd_constant={self.nwd_constant}" if self.similarity != "iou" else ""
        return f"ATSSAssigner(topk={self.topk}, anchor_scale={self.anchor_scale}{nwd})"

"""The four steps of SimOTA (YOLOX, Ge et al. 2021) as pure functions of padded batch tensors: candidates, cost,
dynamic k and matching. :func:`detector.assigners.simota.assign_simota` gathers each image's candidate priors into
slots and runs them in that order.

Letters as in :mod:`detector.structures`; here also ``Q`` = the most candidate priors in one image of the batch
(the candidate slots of image ``b`` are ``cand[b, :count[b]]``, the rest padding) and ``K`` = the largest
possible dynamic k, ``min(candidate_topk, Q)``.

Which YOLOX this follows. The YOLOX code released with the paper (``get_in_boxes_info`` +
``dynamic_k_matching``) and mmdetection's ``SimOTAAssigner``: a prior is a candidate of a ground truth when its
centre is strictly inside the box OR strictly inside the square of half-side ``center_radius * stride`` (2.5)
around the box centre; the cost adds ``1e5`` where the prior is not in BOTH. Later YOLOX
(``get_geometry_constraint`` + ``simota_matching``) dropped the in-box test: candidates are the centre square
only, with ``center_radius = 1.5``, and the cost adds ``1e6`` outside it. This module implements the first; the
matching step (dynamic k, lowest cost, conflicts) is the same in both.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.boxes import aligned_iou

OUTSIDE_CENTRE_COST = 1e5  # YOLOX's constant for a candidate prior not both in the box and in the centre square
IOU_COST_EPS = 1e-8  # YOLOX's ``-log(IoU + 1e-8)``
BCE_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps each log at -100


def simota_candidates(
    centers: Tensor, strides: Tensor, gt_boxes: Tensor, center_radius: float = 2.5
) -> tuple[Tensor, Tensor]:
    """Which priors lie inside each ground-truth box, and inside its centre square.

    Args:
        centers (Tensor[P, 2]): prior centres ``(x, y)`` in pixels (:attr:`Priors.centers`).
        strides (Tensor[P]): stride in pixels of each prior.
        gt_boxes (Tensor[B, G, 4]): xyxy pixels.
        center_radius: half-side of the centre square, in strides of the prior's level.

    Returns:
        in_box (Tensor[B, G, P] bool): ``x1 < x < x2`` and ``y1 < y < y2`` (strict, as YOLOX).
        in_centre (Tensor[B, G, P] bool): ``|x - cx| < r * s`` and ``|y - cy| < r * s`` (strict), with ``(cx, cy)``
            the box centre, ``r = center_radius`` and ``s`` the prior's stride; computed as YOLOX does,
            ``x > cx - r * s`` and ``x < cx + r * s``.

    Example: a stride-8 prior centred at ``(12, 4)`` and the box ``(0, 0, 16, 8)`` (centre ``(8, 4)``): in the box;
    in the centre square for ``r = 1.5`` (``-4 < 12 < 20``) but not for ``r = 0.5`` (``12 < 12`` is false).
    """
    x = centers[:, 0]  # (P,)
    y = centers[:, 1]
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    in_box = (x > x1) & (x < x2) & (y > y1) & (y < y2)  # (B, G, P)
    cx = (x1 + x2) / 2
    cy = (y1 + y2) / 2
    reach = center_radius * strides  # (P,)
    in_centre = (x > cx - reach) & (x < cx + reach) & (y > cy - reach) & (y < cy + reach)  # (B, G, P)
    return in_box, in_centre


def simota_cost(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    in_box_and_centre: Tensor,
    iou_weight: float = 3.0,
    cls_weight: float = 1.0,
    score_sqrt: bool = True,
) -> tuple[Tensor, Tensor]:
    """SimOTA's cost of assigning each prior to each ground truth of its image, and their IoU.

    ``cost = cls_weight * cls_cost + iou_weight * -log(IoU + 1e-8) + 1e5 * (not in_box_and_centre)``, where
    ``cls_cost`` is the binary cross-entropy of the score ``q`` against the one-hot class of the ground truth
    (target 1 at its class, 0 elsewhere, NOT scaled by the IoU), summed over the ``C`` classes:
    ``-log(q[gt class]) - sum over the other classes of log(1 - q[c])``, each log clamped at -100 as torch's
    ``binary_cross_entropy``. This is YOLOX's (``F.binary_cross_entropy(score.sqrt(), one_hot).sum(-1)``) and
    mmdetection's cost. ``q = sqrt(pred_scores)`` when ``score_sqrt`` (YOLOX scores ``sqrt(p_cls * p_obj)`` and
    :func:`detection_scores` gives ``p_cls * p_obj`` for an objectness head); ``q = pred_scores`` otherwise (a
    head whose scores are already the square root, e.g. FCOS centerness). The ``1e5`` is added in float64,
    so that it does not round the rest of the cost to float32's step of 1/128 at 1e5 (YOLOX adds it in float32).

    Args:
        pred_boxes (Tensor[B, Q, 4]): decoded xyxy pixels of the candidate priors.
        pred_scores (Tensor[B, Q, C]): class probabilities in ``[0, 1]`` of the candidate priors.
        gt_boxes (Tensor[B, G, 4]): xyxy pixels.
        gt_labels (Tensor[B, G] long): class in ``[0, C)``.
        in_box_and_centre (Tensor[B, G, Q] bool): prior inside both the box and its centre square.

    Returns:
        cost (Tensor[B, G, Q] float64) and iou (Tensor[B, G, Q] float32) of each prior's predicted box with each box.
    """
    pred_boxes = pred_boxes.float()
    # eps = 0 as YOLOX's bboxes_iou: identical boxes have IoU exactly 1 (so k = candidate_topk for perfect
    # predictions, not one less); the 0 / 0 of two zero-area boxes becomes 0
    iou = aligned_iou(gt_boxes.float()[:, :, None, :], pred_boxes[:, None, :, :], eps=0.0)  # (B, G, Q)
    iou = iou.nan_to_num(nan=0.0)
    iou_cost = -torch.log(iou + IOU_COST_EPS)

    q = pred_scores.float().clamp(0.0, 1.0)
    if score_sqrt:
        q = q.sqrt()
    log_pos = torch.log(q).clamp(min=BCE_LOG_MIN)  # (B, Q, C)
    log_neg = torch.log(1.0 - q).clamp(min=BCE_LOG_MIN)  # (B, Q, C)
    all_negative = -log_neg.sum(-1)  # (B, Q): the cross-entropy if every class had target 0
    index = gt_labels[:, :, None].expand(-1, -1, q.shape[1])  # (B, G, Q)
    log_pos_gt = log_pos.transpose(1, 2).gather(1, index)  # (B, C, Q) -> (B, G, Q)
    log_neg_gt = log_neg.transpose(1, 2).gather(1, index)  # (B, G, Q)
    cls_cost = all_negative[:, None, :] + log_neg_gt - log_pos_gt  # (B, G, Q): the gt class has target 1

    cost = (cls_weight * cls_cost + iou_weight * iou_cost).double()
    cost = cost + OUTSIDE_CENTRE_COST * (~in_box_and_centre).double()
    return cost, iou


def simota_dynamic_k(iou: Tensor, active: Tensor, candidate_topk: int = 10) -> Tensor:
    """Number of priors each ground truth takes: ``max(1, int(sum of its candidate_topk largest IoUs))``.

    The IoUs are those of the ground truth with the predicted boxes of every candidate prior of its image
    (the union of all its ground truths' candidates, as YOLOX), padding slots holding 0. With fewer than
    ``candidate_topk`` candidates the sum runs over all of them, as YOLOX's ``min(10, num_candidates)``.
    ``int`` truncates, so ``k <= min(candidate_topk, number of candidates)``.

    Args:
        iou (Tensor[B, G, Q]): IoU in ``[0, 1]``; 0 at padding slots.
        active (Tensor[B, G] bool): ground truths that take priors (real and with at least one candidate).
        candidate_topk: how many of the largest IoUs are summed.

    Returns:
        Tensor[B, G] long: ``k`` for active ground truths, 0 for the others.

    Example: top IoUs ``1, 0.88, 0.25, 0`` give ``k = int(2.13) = 2``; all IoUs 0 give ``k = 1``.
    """
    num = min(int(candidate_topk), iou.shape[-1])
    top = iou.topk(num, dim=-1).values.sum(-1)  # (B, G)
    k = top.int().long().clamp(min=1)  # truncation toward 0, as YOLOX's .int()
    return torch.where(active, k, torch.zeros_like(k))


def simota_matching(cost: Tensor, dynamic_k: Tensor) -> tuple[Tensor, Tensor]:
    """Each ground truth takes its ``k`` lowest-cost priors; a prior taken by several keeps one ground truth.

    As YOLOX's ``dynamic_k_matching`` / ``simota_matching``: a prior taken by two or more ground truths goes to
    the ground truth of lowest cost for that prior among ALL ground truths of the image (YOLOX's ``argmin`` over
    the whole cost column, so in rare cases one that did not take it, when its cost there is lower still). Rows
    and slots that must never match carry ``+inf`` cost; ties go to the lower index.

    Args:
        cost (Tensor[B, G, Q]): matching cost (float64 from :func:`simota_cost`), ``+inf`` at padding.
        dynamic_k (Tensor[B, G] long): priors to take per ground truth (0 for padding), at most the number of
            finite-cost slots of its row.

    Returns:
        matched (Tensor[B, Q] long): index into ``G`` of the ground truth of each slot (0 where not positive).
        positive (Tensor[B, Q] bool): slots taken by at least one ground truth.

    Example (one image, two ground truths, four priors): costs ``A = [1.39, 4.98, 1e5 + 5.5, 1e5 + 55.5]``,
    ``B = [1e5 + 5.5, 3.92, 1.39, 5.82]`` and ``k = (2, 2)``: A takes priors 0, 1; B takes 2, 1. Prior 1 is
    taken twice and goes to B (3.92 < 4.98): matched ``[A, B, B, -]``, positive ``[T, T, T, F]``.
    """
    num = int(dynamic_k.max()) if dynamic_k.numel() else 0
    num = min(num, cost.shape[-1])
    batch, num_gts, num_slots = cost.shape
    if num == 0:
        zeros = torch.zeros(batch, num_slots, dtype=torch.long, device=cost.device)
        return zeros, zeros.bool()
    lowest = cost.topk(num, dim=-1, largest=False)  # (B, G, K) values and slot indices, ascending cost
    rank = torch.arange(num, device=cost.device)  # (K,)
    take = (rank < dynamic_k[:, :, None]) & torch.isfinite(lowest.values)  # (B, G, K)
    taken = torch.zeros(batch, num_gts, num_slots, dtype=torch.bool, device=cost.device)
    taken.scatter_(2, lowest.indices, take)  # (B, G, Q); indices of a row are distinct
    claims = taken.sum(1)  # (B, Q)
    only = taken.to(torch.uint8).argmax(1)  # (B, Q): the ground truth of a slot taken once
    cheapest = cost.argmin(1)  # (B, Q): the ground truth of lowest cost, for a slot taken several times
    matched = torch.where(claims > 1, cheapest, only)
    return matched, claims > 0

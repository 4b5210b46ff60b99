"""The steps of task-aligned assignment (TOOD, Feng et al. 2021), as ultralytics' ``TaskAlignedAssigner`` runs
them for YOLOv8 and YOLO26, vectorised over the batch with padded ``(B, G, P)`` tensors.
:func:`detector.assigners.tal.assign_tal` checks its inputs and runs them through :func:`task_aligned_assignment`.

Shape letters as in :mod:`detector.structures`; here also ``K`` = (gt, prior) candidate pairs of the batch (prior
centre inside the gt box), ``k`` = the top-k width. Boxes are xyxy pixels of the network input.

The rules, in the order they run:

1. **Candidates.** Prior ``p`` is a candidate of gt ``g`` when its centre lies strictly inside the box by more than
   ``eps``: ``min(cx - x1, cy - y1, x2 - cx, y2 - cy) > eps`` (ultralytics' ``select_candidates_in_gts``, eps 1e-9;
   a centre on the border is not a candidate). With STAL (``stal_min_size``, YOLO26's small-target-aware
   assignment) each side of the gt box shorter than ``stal_min_size`` pixels is set to ``stal_size`` pixels about
   the box centre first, for this test only (the IoU below uses the real box).
2. **Metric.** For candidates, ``t = s^alpha * u^beta`` with ``s = pred_scores[b, p, class of g]`` and
   ``u = IoU(pred_boxes[b, p], gt)`` (CIoU for YOLOv8 / YOLO26, clamped at 0; plain IoU for TOOD / PP-YOLOE;
   NWD ``exp(-W_2 / nwd_constant)`` with ``iou_type="nwd"``, :mod:`detector.assigners.similarity`);
   ``t = 0`` elsewhere.
3. **Top-k.** Each gt keeps its ``topk`` candidates of largest ``t``, among those with ``t > 0``.
4. **Conflicts.** A prior kept by several gts goes to the gt with the highest ``u`` among all gts it is a
   candidate of (``select_highest_overlaps``; first gt of the image on exact ties).
5. **Second top-k** (``topk2``, YOLO26's one-to-one head): each gt keeps at most ``topk2`` of its remaining
   positives, those of largest ``t``; the others become negatives.
6. **Soft target.** Pair ``(g, p)`` gets ``score = t[g, p] * max_q u[g, q] / (max_q t[g, q] + eps)``, maxima over
   the final positives ``q`` of ``g``: the best-aligned prior of a gt learns that gt's best IoU.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from detector.assigners.common import pad_targets
from detector.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from detector.structures import Assignment, Priors


def stal_enlarge(boxes: Tensor, min_size: float, size: float) -> Tensor:
    """YOLO26's small-target-aware enlargement: every side shorter than ``min_size`` becomes ``size``, about the
    box centre; the other side is kept.

    boxes (Tensor[..., 4]) xyxy -> Tensor[..., 4] xyxy. Example with ``(min_size, size) = (8, 16)``: ``(5, 5, 7, 27)``
    (2 x 22, centre (6, 16)) -> ``(-2, 5, 14, 27)``; a side of exactly 8 or of 10 is kept.
    """
    cxcywh = xyxy_to_cxcywh(boxes)  # (..., 4)
    wh = cxcywh[..., 2:]
    wh = torch.where(wh < min_size, torch.full_like(wh, size), wh)  # (..., 2)
    return cxcywh_to_xyxy(torch.cat((cxcywh[..., :2], wh), dim=-1))


def centres_inside(centres: Tensor, boxes: Tensor, eps: float) -> Tensor:
    """Which prior centres lie inside which boxes, by more than ``eps`` from every side.

    centres (Tensor[P, 2]) ``(x, y)``, boxes (Tensor[B, G, 4]) xyxy -> Tensor[B, G, P] bool,
    ``min(x - x1, y - y1, x2 - x, y2 - y) > eps``.
    """
    x, y = centres[:, 0], centres[:, 1]  # (P,)
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    inside = (x - x1) > eps  # (B, G, P)
    inside &= (y - y1) > eps
    inside &= (x2 - x) > eps
    inside &= (y2 - y) > eps
    return inside


def task_aligned_assignment(
    priors: Priors,
    targets: Tensor,
    batch_size: int,
    pred_boxes: Tensor,
    pred_scores: Tensor,
    topk: int,
    alpha: float,
    beta: float,
    eps: float,
    overlap: Callable[[Tensor, Tensor], Tensor],
    stal_min_size: float | None,
    stal_size: float | None,
    topk2: int | None,
) -> Assignment:
    """Steps 1-6 of the module docstring on checked inputs; :func:`detector.assigners.tal.assign_tal`, which calls
    it under ``torch.no_grad``, documents the arguments and the result and works an example by hand.

    ``pred_boxes`` (Tensor[B, P, 4] float) and ``pred_scores`` (Tensor[B, P, C]) are detached, ``targets`` has at
    least one row and ``P >= 1``; ``overlap`` is the aligned IoU, CIoU or NWD of ``(pred box, gt box)`` pairs
    (Tensor[K, 4] each -> Tensor[K]). Returns the :class:`Assignment` that ``assign_tal`` returns.
    """
    dtype = pred_boxes.dtype
    padded = pad_targets(targets, batch_size)
    gt_boxes = padded.boxes.to(dtype)  # (B, G, 4)
    num_gts = gt_boxes.shape[1]
    num_priors = pred_boxes.shape[1]
    centres = priors.centers.to(device=gt_boxes.device, dtype=dtype)  # (P, 2)

    # 1. candidates: prior centre strictly inside the (STAL-enlarged) gt box
    region = gt_boxes
    if stal_min_size is not None:
        region = stal_enlarge(gt_boxes, stal_min_size, stal_size if stal_size is not None else 2 * stal_min_size)
    candidate = centres_inside(centres, region, eps)  # (B, G, P)
    candidate &= padded.valid[..., None]

    # 2. metric on the K candidate pairs only; overlaps is -1 off the candidates, so that an argmax over the gts
    # never picks a non-candidate
    flat = candidate.view(-1).nonzero().squeeze(1)  # (K,)
    del candidate
    b = flat // (num_gts * num_priors)  # (K,)
    g = flat // num_priors % num_gts
    p = flat % num_priors
    pair_iou = overlap(pred_boxes[b, p], gt_boxes[b, g]).clamp_(min=0)  # (K,) IoU, CIoU or NWD
    pair_score = pred_scores[b, p, padded.labels[b, g]].to(dtype)  # (K,)
    pair_metric = pair_score.pow(alpha) * pair_iou.pow(beta)  # (K,)
    del b, g, p, pair_score
    overlaps = torch.full((batch_size * num_gts * num_priors,), -1.0, dtype=dtype, device=gt_boxes.device)
    overlaps[flat] = pair_iou
    overlaps = overlaps.view(batch_size, num_gts, num_priors)  # (B, G, P)
    metric = torch.zeros(batch_size * num_gts * num_priors, dtype=dtype, device=gt_boxes.device)
    metric[flat] = pair_metric
    metric = metric.view(batch_size, num_gts, num_priors)  # (B, G, P)
    del flat, pair_iou, pair_metric

    # 3. top-k per gt among metric > 0 (the metric is 0 off the candidates and on padding)
    top_values, top_index = metric.topk(min(topk, num_priors), dim=-1)  # (B, G, k)
    positive = torch.zeros(metric.shape, dtype=torch.bool, device=metric.device)  # (B, G, P)
    positive.scatter_(-1, top_index, top_values > 0)

    # 4. a prior kept by several gts goes to its candidate gt of highest IoU
    multi = positive.sum(1) > 1  # (B, P)
    winner = overlaps.argmax(1)  # (B, P)
    gt_slots = torch.arange(num_gts, device=metric.device)[None, :, None]  # (1, G, 1)
    positive = torch.where(multi[:, None, :], gt_slots == winner[:, None, :], positive)  # (B, G, P)
    del multi, winner

    # 5. optional second top-k per gt among its remaining positives (metric reused as the ranking, in place)
    if topk2 is not None and topk2 != topk:
        ranking = metric.masked_fill_(~positive, -1.0)  # (B, G, P); positives >= 0 rank first
        keep_index = ranking.topk(min(topk2, num_priors), dim=-1).indices  # (B, G, k)
        keep = torch.zeros_like(positive).scatter_(-1, keep_index, True)
        positive &= keep
        del keep, keep_index

    # 6. pairs ordered by (image, prior), and the normalised soft target
    batch_index, slot, prior_index = positive.nonzero(as_tuple=True)  # ordered by (B, G, P)
    matched = torch.full((batch_size, num_priors), -1, dtype=torch.long, device=metric.device)  # (B, P)
    matched[batch_index, prior_index] = slot
    batch_index, prior_index = (matched >= 0).nonzero(as_tuple=True)  # (M,), (M,)
    slot = matched[batch_index, prior_index]  # (M,)
    pair_metric = metric[batch_index, slot, prior_index]  # (M,)
    pair_iou = overlaps[batch_index, slot, prior_index]  # (M,)
    gt_key = batch_index * num_gts + slot  # (M,) flat (B, G) index
    zeros = pair_metric.new_zeros(batch_size * num_gts)
    max_metric = zeros.scatter_reduce(0, gt_key, pair_metric, reduce="amax")  # (B*G,)
    max_iou = zeros.scatter_reduce(0, gt_key, pair_iou, reduce="amax")  # (B*G,)
    score = pair_metric * max_iou[gt_key] / (max_metric[gt_key] + eps)  # (M,)
    return Assignment(
        batch_index=batch_index,
        prior_index=prior_index,
        gt_index=padded.row[batch_index, slot],
        score=score,
        extras={"iou": pair_iou, "align_metric": pair_metric},
    )

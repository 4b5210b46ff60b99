"""Variance voting, :func:`variance_vote` (He et al., "Bounding Box Regression with Uncertainty for Accurate Object
Detection", CVPR 2019), refines each kept box with the boxes of its group that overlap it (IoU > 0, suppressed
ones included): per coordinate, the average weighted by ``exp(-(1 - IoU)^2 / sigma_t) / sigma^2``, ``sigma^2``
the predicted variance of that coordinate.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detector.ops.boxes import aligned_iou


def variance_vote(
    kept_boxes: Tensor,
    kept_groups: Tensor,
    boxes: Tensor,
    groups: Tensor,
    log_var: Tensor,
    sigma_t: float = 0.02,
    *,
    max_elements: int = 1 << 22,
    eps: float = 1e-7,
) -> Tensor:
    """Refine kept boxes by variance voting (He et al. 2019).

    For kept box ``b`` and each candidate ``b_i`` of its group with ``IoU(b, b_i) > 0`` (``b`` itself included,
    weight 1 when its variance is 1), per coordinate ``k``:

        ``x_k = sum_i w_ik x_ik / sum_i w_ik``,  ``w_ik = exp(-(1 - IoU(b, b_i))^2 / sigma_t) / sigma_ik^2``

    computed as a softmax of ``-(1 - IoU)^2 / sigma_t - log_var`` over the candidates (no overflow of
    ``1 / sigma^2``). A kept box with no overlapping candidate (a zero-area box) is returned unchanged.

    Args:
        kept_boxes (Tensor[D, 4]): xyxy boxes to refine.
        kept_groups (Tensor[D] long): group key of each kept box.
        boxes (Tensor[K, 4]): xyxy candidates that vote (all candidates before NMS).
        groups (Tensor[K] long): their group keys.
        log_var (Tensor[K, 4]): predicted ``ln sigma^2`` of each candidate coordinate.
        sigma_t: the IoU tolerance of the weights (the paper's ``sigma_t``).
        max_elements: kept boxes are processed in chunks of at most this many (kept, candidate) pairs.
        eps: passed to the IoU.

    Returns:
        Tensor[D, 4]: the voted xyxy boxes.
    """
    if kept_boxes.numel() == 0:
        return kept_boxes.clone()
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    start = torch.searchsorted(sorted_groups, kept_groups, right=False)  # (D,)
    length = torch.searchsorted(sorted_groups, kept_groups, right=True) - start  # (D,)
    width = max(int(length.max()), 1)
    offsets = torch.arange(width, device=boxes.device)
    rows = max(1, max_elements // width)
    voted = []
    for first in range(0, kept_boxes.shape[0], rows):
        chunk = slice(first, first + rows)
        candidate = order[(start[chunk, None] + offsets).clamp(max=order.numel() - 1)]  # (d, width)
        in_group = offsets < length[chunk, None]  # (d, width)
        member = boxes[candidate]  # (d, width, 4)
        iou = aligned_iou(kept_boxes[chunk, None, :], member, eps)  # (d, width)
        vote = in_group & (iou > 0)
        logits = (-(1 - iou).pow(2) / sigma_t)[..., None] - log_var[candidate]  # (d, width, 4)
        logits = logits.masked_fill(~vote[..., None], float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # rows with no vote are all -inf -> NaN -> 0
        refined = (weights * member).sum(1)  # (d, 4)
        voted.append(torch.where(vote.any(1, keepdim=True), refined, kept_boxes[chunk]))
    return torch.cat(voted)

"""Exact greedy class-aware NMS with an IoU, DIoU or NWD criterion, vectorised by blocks (no loop over boxes).

``method="iou"`` uses :func:`torchvision.ops.batched_nms`. ``"diou"`` and ``"nwd"`` use :func:`greedy_nms`, an exact
greedy NMS (it keeps exactly what the classic loop keeps) written with tensor operations: candidates are taken in
blocks in score order; each block is first suppressed by the boxes already kept, then resolved inside itself by
Cluster-NMS (Zheng et al., "Enhancing Geometric Factors in Model Learning and Inference for Object Detection and
Instance Segmentation", 2021): iterate ``keep_i = alive_i and not any_{j<i}(keep_j and S_ji)`` until it stops
changing. ``keep_i`` depends only on earlier entries, so the iteration reaches the greedy answer after at most as
many rounds as the longest chain of suppressions (usually 2 or 3). DIoU-NMS (Zheng et al., "Distance-IoU Loss",
AAAI 2020) suppresses when ``IoU - rho^2 / c^2 > threshold``: two overlapping boxes with distant centres are
likely two objects, so they survive where plain NMS would drop one. NWD-NMS (Wang et al., "A Normalized Gaussian
Wasserstein Distance for Tiny Object Detection", 2021) suppresses when ``exp(-W_2 / C) > threshold``
(:func:`detector.ops.boxes.box_nwd`, ``C`` in pixels, 12.8 by default): two tiny boxes a few pixels apart, whose
IoU is 0 or jumps with a one-pixel shift, are compared by their distance instead.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from detector.ops.boxes import NWD_CONSTANT, aligned_diou, box_iou, box_nwd

NMS_METHODS = ("iou", "diou", "nwd")


def _pairwise_similarity(boxes_a: Tensor, boxes_b: Tensor, method: str, eps: float, nwd_constant: float) -> Tensor:
    """Tensor[Ka, 4], Tensor[Kb, 4] xyxy -> Tensor[Ka, Kb]: IoU (``"iou"``), DIoU (``"diou"``) or NWD (``"nwd"``)."""
    if method == "iou":
        return box_iou(boxes_a, boxes_b, eps)
    if method == "nwd":
        return box_nwd(boxes_a, boxes_b, nwd_constant)
    return aligned_diou(boxes_a[:, None, :], boxes_b[None, :, :], eps)  # (Ka, Kb)


def _suppression_matrix(
    boxes_a: Tensor, groups_a: Tensor, boxes_b: Tensor, groups_b: Tensor, threshold: float, similarity
) -> Tensor:
    """Tensor[Ka, 4], Tensor[Ka], Tensor[Kb, 4], Tensor[Kb] -> Tensor[Ka, Kb] bool: ``a`` would suppress ``b``.

    Same group and ``similarity(boxes_a, boxes_b)`` (Tensor[Ka, Kb]) above ``threshold``.
    """
    return (similarity(boxes_a, boxes_b) > threshold) & (groups_a[:, None] == groups_b[None, :])


def _resolve_block(suppress: Tensor, alive: Tensor) -> Tensor:
    """Greedy NMS inside one score-ordered block by Cluster-NMS iteration.

    Args:
        suppress (Tensor[L, L] bool): ``suppress[j, i]`` when box ``j`` would suppress box ``i`` (any order; only
            ``j < i`` is used, earlier = higher score).
        alive (Tensor[L] bool): boxes not already suppressed by boxes kept in earlier blocks.

    Returns:
        Tensor[L] bool: the boxes greedy NMS keeps.
    """
    upper = suppress.triu(diagonal=1).to(torch.float32)  # (L, L), j < i only
    keep = alive
    for _ in range(alive.numel() + 1):  # converges in (longest suppression chain + 1) rounds
        suppressed = (keep.to(torch.float32) @ upper) > 0  # (L,)
        new_keep = alive & ~suppressed
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def greedy_nms(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    threshold: float,
    *,
    method: str = "diou",
    batch_index: Tensor | None = None,
    max_per_image: int | None = None,
    block_size: int = 512,
    eps: float = 1e-7,
    nwd_constant: float = NWD_CONSTANT,
) -> Tensor:
    """Exact greedy class-aware NMS with an IoU, DIoU or NWD criterion, vectorised by blocks.

    Keeps the same boxes as :func:`torchvision.ops.batched_nms` with ``method="iou"`` (up to score ties).

    Args:
        boxes (Tensor[K, 4]): xyxy boxes.
        scores (Tensor[K]): higher first.
        groups (Tensor[K] long): boxes interact only inside a group (image * C + class).
        threshold: suppress a box when its similarity to a kept, higher-scored box of its group is ``> threshold``.
        method: ``"iou"``, ``"diou"`` (similarity ``IoU - rho^2 / c^2``) or ``"nwd"`` (``exp(-W_2 / C)``).
        batch_index (Tensor[K] long) and max_per_image: optional early stop; once an image has ``max_per_image``
            kept boxes its remaining candidates are dropped (they could not make the top ``max_per_image``).
        block_size: candidates resolved at once; memory is ``O(block_size * (block_size + kept))``.
        eps: passed to the IoU family.
        nwd_constant: NWD's ``C`` (> 0) in the unit of the boxes, for ``method="nwd"``.

    Returns:
        Tensor[D] long: indices of the kept boxes, by decreasing score.
    """
    if method not in NMS_METHODS:
        raise ValueError(f"NMS method must be one of {NMS_METHODS}; got {method!r}")
    if not nwd_constant > 0:
        raise ValueError(f"nwd_constant (eval.nwd_constant) must be > 0 pixels (the paper: 12.8); got {nwd_constant}")
    similarity = functools.partial(_pairwise_similarity, method=method, eps=eps, nwd_constant=nwd_constant)
    if (batch_index is None) != (max_per_image is None):
        raise ValueError("greedy_nms needs both batch_index and max_per_image, or neither")
    order = torch.argsort(scores, descending=True, stable=True)
    kept_index = [order[:0]]
    kept_boxes, kept_groups = boxes[:0], groups[:0]
    kept_per_image = present = None
    if batch_index is not None:
        present = torch.bincount(batch_index) > 0  # (images,) images that have candidates at all
        kept_per_image = torch.zeros_like(present, dtype=torch.long)
    for start in range(0, order.numel(), block_size):
        index = order[start:start + block_size]
        if kept_per_image is not None:
            open_images = kept_per_image < max_per_image
            if not (open_images & present).any():
                break
            index = index[open_images[batch_index[index]]]
            if index.numel() == 0:
                continue
        block_boxes, block_groups = boxes[index], groups[index]
        earlier = _suppression_matrix(kept_boxes, kept_groups, block_boxes, block_groups, threshold, similarity)
        alive = ~earlier.any(0)  # (L,)
        inside = _suppression_matrix(block_boxes, block_groups, block_boxes, block_groups, threshold, similarity)
        keep = _resolve_block(inside, alive)
        kept_index.append(index[keep])
        kept_boxes = torch.cat((kept_boxes, block_boxes[keep]))
        kept_groups = torch.cat((kept_groups, block_groups[keep]))
        if kept_per_image is not None:
            kept_per_image += torch.bincount(batch_index[index[keep]], minlength=kept_per_image.numel())
    return torch.cat(kept_index)

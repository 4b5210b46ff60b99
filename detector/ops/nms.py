"""Post-processing: scores -> confidence filter -> top-k -> class-aware NMS (IoU, DIoU or NWD) -> max_det.

Letters (see :mod:`detector.structures`): B images, P priors, C classes; K candidates (prior, class) pairs that
pass the confidence filter, over the whole batch; D detections kept.

Class awareness works on a *group* key ``image * C + class``: two candidates can suppress (or vote for) each
other only when they share image and class, so the whole batch goes through NMS at once, without a loop over
images.

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

Variance voting, :func:`variance_vote` (He et al., "Bounding Box Regression with Uncertainty for Accurate Object
Detection", CVPR 2019), refines each kept box with the boxes of its group that overlap it (IoU > 0, suppressed
ones included): per coordinate, the average weighted by ``exp(-(1 - IoU)^2 / sigma_t) / sigma^2``, ``sigma^2``
the predicted variance of that coordinate.
"""
from __future__ import annotations

import functools

import torch
import torchvision
from torch import Tensor

from detector.ops.boxes import NWD_CONSTANT, aligned_diou, aligned_iou, box_iou, box_nwd

NMS_METHODS = ("iou", "diou", "nwd")


def _rank_within_groups(sorted_keys: Tensor, num_groups: int) -> Tensor:
    """Position of each element inside its run of equal keys.

    sorted_keys (Tensor[K] long, non-decreasing, values in ``[0, num_groups)``) -> Tensor[K] long, 0 for the first
    element of each key, 1 for the second, ...
    """
    counts = torch.bincount(sorted_keys, minlength=num_groups)  # (num_groups,)
    starts = counts.cumsum(0) - counts
    return torch.arange(sorted_keys.numel(), device=sorted_keys.device) - starts[sorted_keys]


def top_k_per_image(batch_index: Tensor, scores: Tensor, k: int, batch_size: int) -> Tensor:
    """Indices of the ``k`` highest scores of each image, grouped by image, by decreasing score inside an image.

    Args:
        batch_index (Tensor[K] long): image of each element, in ``[0, batch_size)``.
        scores (Tensor[K] float): ranking score.
        k: how many to keep per image (all of them when an image has fewer).
        batch_size: B.

    Returns:
        Tensor[K'] long into the K elements; ties keep their input order.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(batch_index[order], stable=True)]  # image-major, score-descending inside
    rank = _rank_within_groups(batch_index[order], batch_size)
    return order[rank < k]


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


def _candidates(scores: Tensor, conf_thres: float, multi_label: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scores (Tensor[B, P, C]) -> (batch_index, prior_index, class, score), each Tensor[K], above ``conf_thres``.

    ``multi_label``: every (prior, class) pair above the threshold is a candidate (a prior may yield several
    classes); otherwise only each prior's best class.
    """
    if multi_label:
        b, p, c = (scores > conf_thres).nonzero(as_tuple=True)
        return b, p, c, scores[b, p, c]
    best, cls = scores.max(-1)  # (B, P)
    b, p = (best > conf_thres).nonzero(as_tuple=True)
    return b, p, cls[b, p], best[b, p]


@torch.no_grad()
def postprocess(
    boxes: Tensor,
    cls_logits: Tensor,
    obj_logits: Tensor | None,
    **kwargs,
) -> list[Tensor]:
    """:func:`postprocess_scores` for a sigmoid head: score = ``sigmoid(cls)``, times ``sigmoid(obj)`` (YOLOv5)
    when ``obj_logits`` (Tensor[B, P]) is given. Other heads: :func:`detector.structures.detection_scores`."""
    batch_size, num_priors, _ = cls_logits.shape
    if obj_logits is not None and obj_logits.shape != (batch_size, num_priors):
        raise ValueError(f"obj_logits must be [B, P] = {[batch_size, num_priors]}; got {list(obj_logits.shape)}")
    scores = cls_logits.sigmoid()  # (B, P, C)
    if obj_logits is not None:
        scores = scores * obj_logits.sigmoid()[..., None]
    return postprocess_scores(boxes, scores, **kwargs)


@torch.no_grad()
def postprocess_scores(
    boxes: Tensor,
    scores: Tensor,
    *,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    multi_label: bool = True,
    method: str = "iou",
    max_candidates: int = 30000,
    box_log_var: Tensor | None = None,
    variance_voting: bool = False,
    voting_sigma: float = 0.02,
    nwd_constant: float = NWD_CONSTANT,
) -> list[Tensor]:
    """Decoded boxes and per-class probabilities -> detections per image.

    Args:
        boxes (Tensor[B, P, 4]): decoded xyxy boxes (pixels of the network input).
        scores (Tensor[B, P, C]): per-class probabilities (``detection_scores``: scored as the head was trained).
        conf_thres: candidates need a score ``> conf_thres``.
        iou_thres: NMS threshold (on IoU, on DIoU for ``method="diou"``, on NWD for ``method="nwd"``).
        max_det: detections kept per image.
        multi_label: every class above ``conf_thres`` of a prior is a candidate; False: only its best class.
        method: ``"iou"`` (torchvision), ``"diou"`` or ``"nwd"`` (:func:`greedy_nms`) or ``"none"``: no
            suppression, the ``max_det`` highest-scoring (prior, class) candidates (a one-to-one head, YOLOv10's
            post-processing).
        max_candidates: candidates per image entering NMS (the highest scores).
        box_log_var (Tensor[B, P, 4] | None): predicted ``ln sigma^2`` per coordinate; needed for voting.
        variance_voting: refine kept boxes by variance voting (He et al. 2019).
        voting_sigma: ``sigma_t`` of variance voting.
        nwd_constant: NWD's ``C`` in pixels of the network input (``eval.nwd_constant``), for ``method="nwd"``.

    Returns:
        list of B Tensor[D_b, 6]: rows ``(x1, y1, x2, y2, score, class)`` by decreasing score, in ``boxes``'s
        dtype; ``D_b <= max_det``.
    """
    batch_size, num_priors, num_classes = scores.shape
    if boxes.shape != (batch_size, num_priors, 4):
        raise ValueError(f"boxes must be [B, P, 4] = {[batch_size, num_priors, 4]}; got {list(boxes.shape)}")
    if method not in (*NMS_METHODS, "none"):
        raise ValueError(f"method must be one of {(*NMS_METHODS, 'none')}; got {method!r}")
    if variance_voting and box_log_var is None:
        raise ValueError("variance_voting=True needs box_log_var (a head that predicts box uncertainty)")

    b, p, c, score = _candidates(scores, conf_thres, multi_label)  # (K,) each
    top = top_k_per_image(b, score, max_candidates, batch_size)
    b, p, c, score = b[top], p[top], c[top], score[top]
    cand_boxes = boxes[b, p]  # (K, 4)
    groups = b * num_classes + c

    if method == "none":  # NMS-free heads (one-to-one assignment): the highest scores are the detections
        keep = torch.arange(score.numel(), device=score.device)
    elif method == "iou":
        keep = torchvision.ops.batched_nms(cand_boxes, score, groups, iou_thres)
    else:
        keep = greedy_nms(cand_boxes, score, groups, iou_thres, method=method, batch_index=b, max_per_image=max_det,
                          nwd_constant=nwd_constant)
    keep = keep[top_k_per_image(b[keep], score[keep], max_det, batch_size)]  # (D,) image-major

    kept_boxes = cand_boxes[keep]
    if variance_voting:
        kept_boxes = variance_vote(kept_boxes, groups[keep], cand_boxes, groups, box_log_var[b, p], voting_sigma)
    rows = torch.cat((kept_boxes, score[keep, None].to(boxes.dtype), c[keep, None].to(boxes.dtype)), dim=1)
    counts = torch.bincount(b[keep], minlength=batch_size).tolist()
    return list(rows.split(counts))

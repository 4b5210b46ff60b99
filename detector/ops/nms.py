"""Post-processing: scores -> confidence filter -> top-k -> class-aware NMS (IoU, DIoU or NWD) -> max_det.

Letters (see :mod:`detector.structures`): B images, P priors, C classes; K candidates (prior, class) pairs that
pass the confidence filter, over the whole batch; D detections kept.

Class awareness works on a *group* key ``image * C + class``: two candidates can suppress (or vote for) each
other only when they share image and class, so the whole batch goes through NMS at once, without a loop over
images.

``method="iou"`` uses :func:`torchvision.ops.batched_nms`; ``"diou"`` and ``"nwd"`` use
:func:`detector.ops.greedy_nms.greedy_nms`; variance voting is :func:`detector.ops.voting.variance_vote`.
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from detector.ops.boxes import NWD_CONSTANT
from detector.ops.greedy_nms import NMS_METHODS, greedy_nms
from detector.ops.voting import variance_vote

__all__ = ["NMS_METHODS", "greedy_nms", "nms_on_prefixes", "postprocess", "postprocess_scores", "top_k_per_image",
           "variance_vote"]


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


def nms_on_prefixes(suppress, batch_index: Tensor, batch_size: int, max_per_image: int,
                    first: int | None = None) -> Tensor:
    """What ``suppress`` (greedy NMS) keeps of the candidates that can be among each image's first
    ``max_per_image`` kept ones, computed on the shortest score prefixes that decide them.

    Greedy NMS decides a candidate from the higher-scored candidates of its group alone, so on the ``n``
    best-scored candidates of an image it keeps exactly what it keeps of them on all of them. When an image's
    prefix yields ``max_per_image`` kept boxes, its top ``max_per_image`` are settled; otherwise its prefix grows
    4-fold, for the unsettled images only, until it holds all their candidates. At conf 0.001 a trained model
    gives about 14,000 candidates per BCCD image of which a few thousand survive NMS; the first prefix of
    ``4 * max_per_image`` settles nearly every image, and NMS, quadratic per group, runs on a tenth of the boxes.

    Args:
        suppress: ``index (Tensor[k] long) -> Tensor[k'] long``, the candidates among ``index`` that NMS keeps.
        batch_index (Tensor[K] long): image of each candidate; candidates sorted image-major, by decreasing score
            inside an image (as :func:`top_k_per_image` returns them).
        batch_size: B; max_per_image: the detections an image keeps; first: the first prefix length
            (default ``4 * max_per_image``).

    Returns:
        Tensor[D'] long: kept candidates (each image's kept ones among its settled prefix), in no particular order;
        the top ``max_per_image`` per image by score are those the full NMS would keep (up to score ties).
    """
    rank = _rank_within_groups(batch_index, batch_size)  # (K,) position inside the image's score order
    counts = torch.bincount(batch_index, minlength=batch_size)  # (B,) candidates per image
    limit = torch.full_like(counts, first if first is not None else 4 * max_per_image)  # (B,) prefix lengths
    open_images = counts > 0  # (B,) images not settled yet
    kept = [batch_index[:0]]
    while bool(open_images.any()):
        index = (open_images[batch_index] & (rank < limit[batch_index])).nonzero().squeeze(1)  # (k,)
        keep = suppress(index)  # (k',)
        n_kept = torch.bincount(batch_index[keep], minlength=batch_size)  # (B,)
        settled = open_images & ((n_kept >= max_per_image) | (limit >= counts))  # (B,)
        kept.append(keep[settled[batch_index[keep]]])
        open_images &= ~settled
        limit *= 4
    return torch.cat(kept)


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
    else:
        def suppress(index: Tensor) -> Tensor:  # candidates (Tensor[k] long) -> those NMS keeps among them
            if method == "iou":
                return index[torchvision.ops.batched_nms(cand_boxes[index], score[index], groups[index], iou_thres)]
            return index[greedy_nms(cand_boxes[index], score[index], groups[index], iou_thres, method=method,
                                    batch_index=b[index], max_per_image=max_det, nwd_constant=nwd_constant)]

        keep = nms_on_prefixes(suppress, b, batch_size, max_det)
    keep = keep[top_k_per_image(b[keep], score[keep], max_det, batch_size)]  # (D,) image-major

    kept_boxes = cand_boxes[keep]
    if variance_voting:
        kept_boxes = variance_vote(kept_boxes, groups[keep], cand_boxes, groups, box_log_var[b, p], voting_sigma)
    rows = torch.cat((kept_boxes, score[keep, None].to(boxes.dtype), c[keep, None].to(boxes.dtype)), dim=1)
    counts = torch.bincount(b[keep], minlength=batch_size).tolist()
    return list(rows.split(counts))
